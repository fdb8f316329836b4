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


def _check_writable(out: Path) -> None:
    """Fail before any work if `out` (a file or folder) cannot be written."""
    import tempfile

    from autolabel.types import UsageError

    folder = out if (out.is_dir() or not out.suffix) else out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {folder}: {e.strerror or e}") from None


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="image files or folders (searched recursively)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="labels.parquet, or a folder for 300-W .pts files")],
    fmt: Annotated[Optional[str], typer.Option("--format", help="parquet | pts (default: from --out)")] = None,
    model: Annotated[Optional[Path], typer.Option(help="model file (default: the shipped one)")] = None,
    detector: Annotated[str, typer.Option(help="hog | cnn (cnn: dlib MMOD, slow on CPU)")] = "hog",
    upsample: Annotated[str, typer.Option(help="detector upsampling: auto, 0, 1, 2 (each step finds 2x smaller faces, 4x slower)")] = "auto",
    max_side: Annotated[int, typer.Option(help="detect on a copy downscaled to this longer side (0 = never)")] = 1024,
    min_face_size: Annotated[float, typer.Option(help="drop faces smaller than this (pixels)")] = 0.0,
    workers: Annotated[Optional[int], typer.Option(help="decode/detect processes (default: CPU cores; 0 = in-process)")] = None,
    glob: Annotated[Optional[list[str]], typer.Option("--glob", help="only files matching (repeatable), e.g. '*.jpg'")] = None,
    overwrite: Annotated[bool, typer.Option(help="start over instead of resuming")] = False,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="skip flip averaging (faster; no confidence score)")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
):
    """Detect every face and predict 68 points; write Parquet or .pts files.

    Exit status: 0 all images read, 1 some images failed (error rows), 2 usage error.
    Rerunning with the same --out resumes: images already labelled are skipped.
    """
    import json

    from autolabel import __version__
    from autolabel.formats import guess_format, make_writer
    from autolabel.types import UsageError

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    if upsample != "auto" and not (upsample.isdigit() and int(upsample) <= 4):
        raise UsageError(f"--upsample must be auto or 0-4, not {upsample!r}")
    if max_side < 0 or min_face_size < 0:
        raise UsageError("--max-side and --min-face-size must be >= 0")
    upsample = upsample if upsample == "auto" else int(upsample)
    kind = guess_format(out, fmt)
    if kind == "parquet" and out.is_dir():
        raise UsageError(f"{out} is a folder; give a .parquet file name or --format pts")
    _check_writable(out if kind == "parquet" else out / "x")

    from autolabel.model import Predictor, load_model
    from autolabel.pipeline import label_paths

    lm = load_model(model)
    predictor = Predictor(lm, flip=not no_flip, threads=None)
    det_kw = {"upsample": upsample, "max_side": max_side, "min_face_size": min_face_size}
    meta = {"autolabel_version": __version__, "model_version": lm.model_id, "model_path": str(model or "shipped"),
            "detector": {"name": detector, **det_kw}, "command": " ".join(["autolabel"] + sys.argv[1:])}
    writer = make_writer(kind, out, metadata=meta, overwrite=overwrite) if kind == "parquet" else make_writer(kind, out, overwrite=overwrite)
    if kind == "pts":
        (out / "run.json").write_text(json.dumps(meta, indent=1))
    summary = None
    try:
        summary = label_paths(paths, writer, predictor, detector, det_kw, workers, glob, resume=not overwrite, progress=not quiet)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished batches are saved; rerun the same command to resume", err=True)
        raise typer.Exit(130)
    finally:
        if summary is not None:
            writer.close()
    if summary.images == 0 and summary.skipped_done == 0:
        typer.echo(f"warning: no images found in {', '.join(map(str, paths))}", err=True)
    typer.echo(summary.text(), err=True)
    typer.echo(f"wrote {out}")
    raise typer.Exit(summary.exit_code)


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="recipe TOML (the shipped model's: model/recipe.toml)")] = Path("model/recipe.toml"),
    out: Annotated[Path, typer.Option(help="run folder: checkpoints, plots; rerun to resume")] = Path("runs/train"),
    data: Annotated[Optional[Path], typer.Option(help="data root the recipe's paths are relative to")] = None,
    export_to: Annotated[Optional[Path], typer.Option("--export", help="also write the best weights as a model file here")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="override the recipe's epochs")] = None,
    init: Annotated[Optional[Path], typer.Option(help="start from these weights (a model file) instead of random ones")] = None,
    quiet: bool = False,
):
    """Train LandmarkNet on 300-W style folders (from scratch, or from --init weights)."""
    from autolabel.train import TrainConfig
    from autolabel.training_job import train_model

    cfg = TrainConfig.from_toml(recipe, epochs=epochs)
    res = train_model(cfg, out, export_to, data, command=" ".join(["autolabel"] + sys.argv[1:]), progress=not quiet, init=init)
    if res.get("interrupted"):
        typer.echo(f"interrupted; rerun the same command to resume from {out / 'last.pt'}")
        raise typer.Exit(130)
    typer.echo(f"done: {out}" + (f"; model {res.get('model_id')} -> {export_to}" if export_to else ""))


@app.command("eval")
def eval_(
    data: Annotated[list[Path], typer.Option("--data", help="300-W style folder(s): images with .pts files")],
    model: Annotated[Optional[Path], typer.Option(help="model file (default: the shipped one)")] = None,
    out: Annotated[Path, typer.Option(help="folder for eval.json, eval.txt and ced.png")] = Path("runs/eval"),
    protocol: Annotated[list[str], typer.Option(help="det and/or gt")] = ["det", "gt"],
    no_dlib: Annotated[bool, typer.Option("--no-dlib", help="skip dlib's predictor baseline")] = False,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="no test-time flip averaging")] = False,
    quiet: bool = False,
):
    """Score a model (and dlib's 68-point predictor) on annotated faces."""
    from autolabel.evaluate import evaluate, table, write_report
    from autolabel.model import Predictor, load_model
    from autolabel.types import UsageError

    for d in data:
        if not d.exists():
            raise UsageError(f"no such folder: {d}")
    bad = set(protocol) - {"det", "gt"}
    if bad:
        raise UsageError(f"unknown protocol {', '.join(bad)} (det, gt)")
    pred = Predictor(load_model(model), flip=not no_flip)
    rep = evaluate(data, pred, tuple(protocol), with_dlib=not no_dlib, cache=out / "boxes.json", progress=not quiet)
    write_report(rep, out)
    typer.echo(table(rep))
    typer.echo(f"wrote {out / 'eval.json'}, {out / 'ced.png'}")


@app.command()
def review(
    labels: Annotated[Path, typer.Argument(help="labels.parquet written by autolabel run")],
    corrections: Annotated[Path, typer.Option(help="folder for the corrections journal and state")] = Path("corrections"),
    root: Annotated[Optional[Path], typer.Option(help="folder the labels' relative image paths start from (if the images moved)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on (default: this machine only)")] = "127.0.0.1",
    port: int = 7860,
    auth: Annotated[Optional[str], typer.Option(help="user:password required to open the app")] = None,
    model: Annotated[Optional[Path], typer.Option(help="model for faces added by drawing a box (default: shipped)")] = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open a browser tab")] = False,
):
    """Review and correct labels in the browser; every action is saved as it happens."""
    from autolabel.review.app import serve
    from autolabel.types import UsageError

    creds = None
    if auth:
        if ":" not in auth:
            raise UsageError("--auth must be user:password")
        creds = tuple(auth.split(":", 1))
    if root is not None and not root.is_dir():
        raise UsageError(f"--root {root}: no such folder")
    serve(labels, corrections, root, host, port, creds, model, open_browser)


@app.command()
def export(
    corrections: Annotated[Path, typer.Argument(help="corrections folder written by autolabel review")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the 300-W copy (image + .pts per face)")],
):
    """Write accepted and corrected faces as a 300-W folder (what finetune and other tools read)."""
    from autolabel.review.state import export_300w

    res = export_300w(corrections, out)
    typer.echo(f"wrote {res['faces']} faces to {out}" + (f"; {len(res['missing_images'])} images missing" if res["missing_images"] else ""))


@app.command()
def finetune(
    source: Annotated[Path, typer.Option("--from", help="corrections folder (autolabel review) or a 300-W folder (image + .pts)")],
    base: Annotated[Optional[Path], typer.Option(help="model to start from (default: the shipped one)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="folder for the new model version (default: models/ft-<time>)")] = None,
    replay: Annotated[Optional[list[Path]], typer.Option(help="original training faces to mix in (300-W folders)")] = None,
    eval_data: Annotated[Optional[list[Path]], typer.Option("--eval", help="reference set scored before and after")] = None,
    epochs: int = 15,
    lr: float = 1.5e-4,
    holdout: Annotated[float, typer.Option(help="share of corrections held out (at least 10 faces)")] = 0.2,
    force: Annotated[bool, typer.Option(help="mark the model usable even if it got worse")] = False,
    quiet: bool = False,
):
    """Finetune a model on reviewed corrections; writes a new model version with its lineage."""
    import json
    import time

    from autolabel.finetune import finetune as run_ft
    from autolabel.finetune import table

    out = out or Path("models") / time.strftime("ft-%Y%m%d-%H%M%S")
    for p in (replay or []) + (eval_data or []):
        if not p.exists():
            from autolabel.types import UsageError

            raise UsageError(f"no such folder: {p}")
    lin = run_ft(source, out, base, replay, eval_data, epochs, lr, holdout, force=force,
                 command=" ".join(["autolabel"] + sys.argv[1:]), progress=not quiet)
    if lin.get("interrupted"):
        typer.echo(f"interrupted; no model written. Rerun the same command to resume ({out / 'work'})", err=True)
        raise typer.Exit(130)
    typer.echo(table(lin))
    typer.echo(json.dumps({k: lin[k] for k in ("model_version", "model_path", "usable", "before", "after", "skipped")}))
    if not lin["usable"]:
        typer.echo("NOT marked usable: " + "; ".join(lin["refused_because"]) + " (use --force to override)", err=True)
        raise typer.Exit(1)


@app.command()
def models(folders: Annotated[Optional[list[Path]], typer.Argument(help="where finetuned versions live")] = None):
    """List the model versions autolabel knows, with their metrics."""
    from autolabel.finetune import list_models

    for m in list_models(folders or [Path("models")]):
        nme = ", ".join(f"{k} {100 * v:.2f}%" for k, v in m["nme"].items())
        typer.echo(f"{m['version']}  {'usable ' if m['usable'] else 'UNUSABLE'}  {m['kind']:28}  {nme}  {m['path']}")


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
