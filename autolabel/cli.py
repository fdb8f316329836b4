"""The `autolabel` command line: a thin typer layer over the library.

    autolabel run ./photos --out labels.parquet
    autolabel train --recipe model/recipe.toml --out runs/shipped
    autolabel eval --data ../shared/data/300w/helen/testset
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Batch 68-point facial landmark labelling.")


@app.callback()
def _root() -> None:
    """Batch 68-point facial landmark labelling: run, review, finetune."""


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="recipe TOML (the shipped model's: model/recipe.toml)")] = Path("model/recipe.toml"),
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, plots; rerun to resume")] = Path("runs/train"),
    data: Annotated[Optional[Path], typer.Option(help="data root the recipe's paths are relative to")] = None,
    export_to: Annotated[Optional[Path], typer.Option("--export", help="also write the best weights as a model file here")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="override the recipe's epochs")] = None,
    quiet: bool = False,
):
    """Train LandmarkNet from scratch on 300-W style folders."""
    from autolabel.train import TrainConfig
    from autolabel.training_job import train_model

    cfg = TrainConfig.from_toml(recipe, epochs=epochs)
    res = train_model(cfg, out, export_to, data, command=" ".join(["autolabel"] + sys.argv[1:]), progress=not quiet)
    if res.get("interrupted"):
        typer.echo(f"interrupted; rerun the same command to resume from {out / 'last.pt'}")
        raise typer.Exit(130)
    typer.echo(f"done: {out}" + (f"; model {res.get('model_id')} -> {export_to}" if export_to else ""))


def main() -> None:
    from autolabel.types import AutolabelError, UsageError

    try:
        app()
    except AutolabelError as e:
        if os.environ.get("AUTOLABEL_DEBUG"):
            raise
        typer.echo(f"autolabel: error: {e}", err=True)
        sys.exit(2 if isinstance(e, UsageError) else 1)


if __name__ == "__main__":
    main()
