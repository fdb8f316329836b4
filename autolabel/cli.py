"""The `autolabel` command line: a thin typer layer over the library.

    autolabel run ./photos --out labels.parquet
    autolabel train --recipe model/recipe_v2.toml --out runs/v2
    autolabel eval --data ../shared/data/300w/helen/testset
    autolabel export labels.parquet --to coco --out faces.json
    autolabel audit ../shared/data/300w/helen/testset --out audit.parquet
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from autolabel import catalog, evaluate, labelling
from autolabel.detectors import DEFAULT_SETTINGS, DETECTORS
from autolabel.formats import READERS, WRITERS
from autolabel.formats.corrections import export_300w
from autolabel.formats.pts_folder import is_run_folder
from autolabel.runtimes import RUNTIME_NAMES, TRAIN_EXTRA, has_torch
from autolabel.types import AutolabelError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Batch 68-point facial landmark labelling.")

# Options that mean the same on every command that takes them (hf-CLI style shared aliases).
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")]
Refine = Annotated[bool, typer.Option("--refine/--no-refine", help="two stages (the default): the model's trained "
                                      "second stage (model/landmarks.stage2.pt) predicts again on a crop placed by the first "
                                      "answer and rotated so the eyes are level (a model without one: itself again, averaged); "
                                      "--no-refine: one stage, ~2.2x faster landmarks")]
Model = Annotated[Optional[Path], typer.Option("--model", "-m", help="model file (default: the shipped one; see autolabel models)")]
Workers = Annotated[Optional[int], typer.Option("--workers", "-w", help="decode/detect processes (default: CPU cores; 0 = in-process)")]
Runtime = Annotated[str, typer.Option("--runtime", help=f"{' | '.join(RUNTIME_NAMES)}: landmark inference engine "
                                      "(auto: the model's int8 ONNX export when there is one, else torch)")]


def _needs_torch(command: str) -> None:
    """One line instead of an ImportError when the training stack is not installed."""
    if not has_torch():
        raise UsageError(f"{command} needs PyTorch (the training stack): {TRAIN_EXTRA}")


@app.callback()
def _root() -> None:
    """Batch 68-point facial landmark labelling: run, review, finetune."""


def _command() -> str:
    return " ".join(["autolabel"] + sys.argv[1:])


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="image files or folders (searched recursively)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="labels.parquet (.json: COCO, .xml: dlib, .csv), or a folder for 300-W .pts files")],
    fmt: Annotated[Optional[str], typer.Option("--format", help=f"{' | '.join(WRITERS)} (default: from --out)")] = None,
    model: Model = None,
    runtime: Runtime = "auto",
    detector: Annotated[str, typer.Option(help=f"{' | '.join(DETECTORS)} (cnn: dlib MMOD, slow on CPU)")] = "hog",
    upsample: Annotated[str, typer.Option(help="detector upsampling: auto, 0, 1, 2 (each step finds 2x smaller faces, 4x slower)")] = str(DEFAULT_SETTINGS["upsample"]),
    max_side: Annotated[int, typer.Option(help="detect on a copy downscaled to this longer side (0 = never)")] = DEFAULT_SETTINGS["max_side"],
    min_face_size: Annotated[float, typer.Option(help="drop faces smaller than this (pixels)")] = DEFAULT_SETTINGS["min_face_size"],
    workers: Workers = None,
    glob: Annotated[Optional[list[str]], typer.Option("--glob", help="only files matching (repeatable), e.g. '*.jpg'")] = None,
    overwrite: Annotated[bool, typer.Option(help="start over instead of resuming")] = False,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="skip flip averaging (by default the labelling stage averages each crop with its mirror image): one network pass per stage; a v2 model scores confidence from its predicted error scale alone")] = False,
    refine: Refine = True,
    quiet: Quiet = False,
    engine: Annotated[str, typer.Option(help=f"{' | '.join(labelling.ENGINES)}: this machine, or a Ray cluster (needs the ray extra of autolabel)")] = "local",
    address: Annotated[str | None, typer.Option(help="with --engine ray: the cluster, auto or HOST:PORT (default: start Ray here)")] = None,
):
    """Detect every face and predict 68 points; write Parquet, .pts, COCO, dlib XML, CSV or Label Studio.

    Exit status: 0 all images read, 1 some images failed (error rows), 2 usage error.
    Rerunning with the same --out resumes: images already labelled are skipped.
    """
    if upsample != "auto" and not (upsample.isdigit() and int(upsample) <= 4):
        raise UsageError(f"--upsample must be auto or 0-4, not {upsample!r}")
    if max_side < 0 or min_face_size < 0:
        raise UsageError("--max-side and --min-face-size must be >= 0")
    det_kw = {"upsample": upsample if upsample == "auto" else int(upsample), "max_side": max_side, "min_face_size": min_face_size}
    try:
        summary = labelling.run(paths, out, fmt, model, runtime=runtime, detector=detector, detector_kw=det_kw, workers=workers, globs=glob,
                                overwrite=overwrite, flip=not no_flip, refine=refine, progress=not quiet, command=_command(), engine=engine, address=address)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished batches are saved; rerun the same command to resume", err=True)
        raise typer.Exit(130)
    if summary.images == 0 and summary.skipped_done == 0:
        typer.echo(f"warning: no images found in {', '.join(map(str, paths))}", err=True)
    typer.echo(summary.text(), err=True)
    typer.echo(f"wrote {out}")
    raise typer.Exit(summary.exit_code)


@app.command()
def train(
    recipe: Annotated[Path, typer.Option(help="recipe TOML (the shipped model's: model/recipe_v2.toml)")] = Path("model/recipe_v2.toml"),
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder: checkpoints, plots; rerun to resume")] = Path("runs/train"),
    data: Annotated[Optional[Path], typer.Option(help="data root the recipe's paths are relative to")] = None,
    export_to: Annotated[Optional[Path], typer.Option("--export", help="also write the best weights as a model file here")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="override the recipe's epochs")] = None,
    init: Annotated[Optional[Path], typer.Option(help="start from these weights (a model file) instead of random ones")] = None,
    quiet: Quiet = False,
):
    """Train LandmarkNet on 300-W style folders (from scratch, or from --init weights)."""
    _needs_torch("train")
    from autolabel.training.job import train_model  # torch
    from autolabel.training.loop import TrainConfig

    res = train_model(TrainConfig.from_toml(recipe, epochs=epochs), out, export_to, data, command=_command(), progress=not quiet, init=init)
    if res.interrupted:
        typer.echo(f"interrupted; rerun the same command to resume from {out / 'last.pt'}")
        raise typer.Exit(130)
    typer.echo(f"done: {out}" + (f"; model {res.model_id} -> {export_to}" if export_to else ""))


@app.command("eval")
def eval_(
    data: Annotated[list[Path], typer.Option("--data", help="300-W style folder(s): images with .pts files")],
    model: Model = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for eval.json, eval.txt and ced.png")] = Path("runs/eval"),
    protocol: Annotated[list[str], typer.Option(help="det and/or gt")] = ["det", "gt"],
    no_dlib: Annotated[bool, typer.Option("--no-dlib", help="skip dlib's predictor baseline")] = False,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="no test-time flip averaging")] = False,
    refine: Refine = True,
    runtime: Runtime = "auto",
    quiet: Quiet = False,
):
    """Score a model (and dlib's 68-point predictor) on annotated faces."""
    rep = evaluate.eval_model(data, out, model, runtime=runtime, protocols=tuple(protocol), with_dlib=not no_dlib, flip=not no_flip,
                              refine=refine, progress=not quiet)
    typer.echo(evaluate.table(rep))
    typer.echo(f"wrote {out / 'eval.json'}, {out / 'ced.png'}")


@app.command()
def review(
    labels: Annotated[Path, typer.Argument(help="labels.parquet (autolabel run or audit), a --format pts run folder, or labels in any readable format")],
    corrections: Annotated[Path, typer.Option(help="folder for the corrections journal and state")] = Path("corrections"),
    root: Annotated[Optional[Path], typer.Option(help="folder the labels' relative image paths start from (if the images moved)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on (default: this machine only)")] = "127.0.0.1",
    port: int = 7860,
    auth: Annotated[Optional[str], typer.Option(help="user:password required to open the app (visible in ps: prefer --auth-file)")] = None,
    auth_file: Annotated[Optional[Path], typer.Option(help="file of user:password lines (or set $AUTOLABEL_AUTH)")] = None,
    user: Annotated[Optional[str], typer.Option(help="reviewer name written in each journal record (default: the login name)")] = None,
    model: Model = None,
    open_browser: Annotated[bool, typer.Option("--open", help="open a browser tab")] = False,
):
    """Review and correct labels in the browser; every action is saved as it happens (--model predicts faces added by a box)."""
    _check_port(host, port)  # before loading anything: a busy port is one line, not a traceback
    from autolabel.review.access import credentials

    creds = credentials(auth, auth_file)
    if root is not None and not root.is_dir():
        raise UsageError(f"--root {root}: no such folder")
    from autolabel.review.app import review_lock, serve  # gradio

    read = read_reviewable(labels, root)  # checks what it is before the folder is made
    lock = review_lock(corrections)  # before anything is written into the folder
    try:
        labels = as_reviewable(labels, corrections, read)
    except BaseException:
        lock.release()
        raise
    # Gradio's own start-up text ends in a `share=True` hint a CLI user cannot act on: start it
    # quietly and say where it listens.
    demo, _ = serve(labels, corrections, root, host, port, creds, model, open_browser, user=user, block=False, lock=lock)
    typer.echo(f"reviewing {labels} at {demo.local_url} (Ctrl+C to stop)")
    try:
        while demo.is_running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        demo.close()


def read_reviewable(labels: Path, root: Path | None):
    """What review will open, checked without writing anything: `labels` itself (a labels
    Parquet or a run folder) or the LabelSet read from labels in another readable format."""
    from autolabel.formats import detect_format, read_labels_any

    accepts = "review opens what `autolabel run` or `autolabel audit` wrote (labels.parquet, a --format pts folder) or labels in any readable format"
    if not labels.exists():
        raise UsageError(f"{labels}: no such file; {accepts}")
    if (labels.is_file() and labels.suffix.lower() == ".parquet") or is_run_folder(labels):
        return labels
    fmt = detect_format(labels)
    if fmt == "corrections":
        raise UsageError(f"{labels}: a corrections folder; {accepts} (autolabel export turns corrections into any of them)")
    read = read_labels_any(labels, fmt, root)
    if not read.n_faces:
        raise UsageError(f"{labels}: no labelled faces read from it as {fmt} ({len(read.skipped)} items skipped); {accepts}")
    typer.echo(read.summary(), err=True)
    return read


def as_reviewable(labels: Path, corrections: Path, read) -> Path:
    """The labels file review opens: `read_reviewable`'s Path as is; its LabelSet converted
    (again, each time) into the corrections folder's `labels.parquet`."""
    from autolabel.formats import write_labels

    if isinstance(read, Path):
        return read
    converted = corrections / "labels.parquet"
    write_labels(read, converted, "parquet", metadata={"converted_from": str(labels.absolute()), "format": read.format})
    return converted


def _check_port(host: str, port: int) -> None:
    """UsageError unless this process can listen on host:port (as the server will, address reuse on)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UsageError(f"--host {host}: {e.strerror or e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} on {host} is in use (another review?); choose another with --port") from None
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="labels: a labels Parquet, a corrections folder, a 300-W folder, or a COCO / dlib XML / CSV / Label Studio file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the file (or, for pts, the folder) to write; nothing is written outside it")],
    to: Annotated[str | None, typer.Option("--to", help=f"{' | '.join(WRITERS)} (default: from --out: .parquet, .json = coco, .xml = dlib, .csv; else pts)")] = None,
    from_format: Annotated[str | None, typer.Option("--from-format", help=f"{' | '.join(READERS)} (default: found from SOURCE)")] = None,
    root: Annotated[Path | None, typer.Option(help="folder the labels' image paths start from (if the images moved)")] = None,
):
    """Convert labels between formats (read -> faces -> write); e.g. reviewed corrections to COCO.

    A corrections folder gives its accepted and corrected faces; as pts (a folder --out) it is
    written as a 300-W copy, image + .pts per face. Items that cannot be read (another keypoint
    count, missing points, missing images) are skipped and listed. Exit status 1 when a face is
    refused because its file would go outside --out.
    """
    from autolabel.formats import detect_format, guess_format
    from autolabel.formats import export as convert

    if root is not None and not root.is_dir():
        raise UsageError(f"--root {root}: no such folder")
    fmt = from_format or detect_format(source)
    if fmt == "corrections" and guess_format(out, to) == "pts":
        res = export_300w(source, out)
        typer.echo(f"wrote {res.faces} faces to {out}" + (f"; {len(res.missing_images)} images missing" if res.missing_images else ""))
        refused = list(res.refused)
    else:
        labels, refused = convert(source, out, to, fmt, root, metadata={"command": _command(), "source": str(source)})
        typer.echo(labels.summary(), err=True)
        typer.echo(f"wrote {labels.n_faces} faces in {len(labels.images) - len(refused)} images to {out}")
    if refused:
        for why in refused[:10]:
            typer.echo(f"  refused: {why}", err=True)
        typer.echo(f"{len(refused)} refused: their files would go outside {out}", err=True)
        raise typer.Exit(1)


@app.command()
def audit(
    dataset: Annotated[Path, typer.Argument(help="labels to check, in any readable format (a 300-W folder, COCO, dlib XML, ...)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the audit file (a labels Parquet, worst first)")] = Path("audit.parquet"),
    model: Model = None,
    from_format: Annotated[str | None, typer.Option("--from-format", help=f"{' | '.join(READERS)} (default: found from DATASET)")] = None,
    root: Annotated[Path | None, typer.Option(help="folder the labels' image paths start from (if the images moved)")] = None,
    quiet: Quiet = False,
):
    """Find the wrong labels in a dataset: predict every labelled face, rank by disagreement.

    Then `autolabel review audit.parquet` shows the worst first.
    """
    from autolabel.audit import audit as run_audit
    from autolabel.formats import read_labels_any
    from autolabel.predictor import Predictor
    from autolabel.runtimes import make_runtime

    if out.suffix.lower() != ".parquet":
        raise UsageError(f"--out {out}: the audit is written as Parquet; give a .parquet name")
    if root is not None and not root.is_dir():
        raise UsageError(f"--root {root}: no such folder")
    labels = read_labels_any(dataset, from_format, root)
    res = run_audit(labels, Predictor(make_runtime("auto", model)), out, metadata={"command": _command()}, progress=not quiet)
    typer.echo(res.text(), err=True)
    typer.echo(f"wrote {out}")


@app.command()
def finetune(
    source: Annotated[Path, typer.Option("--from", help="corrections folder (autolabel review), a 300-W folder (image + .pts) or labels in any readable format")],
    model: Model = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="folder for the new model version (default: models/ft-<time>)")] = None,
    replay: Annotated[Optional[list[Path]], typer.Option(help="original training faces to mix in (300-W folders)")] = None,
    eval_data: Annotated[Optional[list[Path]], typer.Option("--eval", help="reference set scored before and after")] = None,
    epochs: int = 15,
    lr: float = 1.5e-4,
    holdout: Annotated[float, typer.Option(help="share of corrections held out (at least 10 faces)")] = 0.2,
    force: Annotated[bool, typer.Option(help="mark the model usable even if it got worse")] = False,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="also export it to ONNX (fp32, int8) for the fast runtime")] = True,
    refine: Annotated[bool, typer.Option("--refine/--no-refine", help="also finetune the model's second stage (X.stage2.pt beside it), "
                                         "as run refines with it by default; --no-refine: the first stage only (twice as fast)")] = True,
    quiet: Quiet = False,
):
    """Finetune a model (--model, default: the shipped one) on reviewed corrections; writes a new model version with its lineage."""
    _needs_torch("finetune")
    from autolabel.training import finetune as ft  # torch

    out = out or Path("models") / time.strftime("ft-%Y%m%d-%H%M%S")
    for p in (replay or []) + (eval_data or []):
        if not p.exists():
            raise UsageError(f"no such folder: {p}")
    res = ft.finetune(source, out, model, replay, eval_data, epochs, lr, holdout, force=force, command=_command(), progress=not quiet,
                      export_onnx=onnx, refine=refine)
    if res.interrupted:
        typer.echo(f"interrupted; no model written. Rerun the same command to resume ({out / 'work'})", err=True)
        raise typer.Exit(130)
    lin = res.lineage
    typer.echo(ft.table(lin))
    typer.echo(json.dumps({k: getattr(lin, k) for k in ("model_version", "stage2_version", "model_path", "usable", "before", "after", "skipped")}))
    if not lin.usable:
        typer.echo("NOT marked usable: " + "; ".join(lin.refused_because) + " (use --force to override)", err=True)
        raise typer.Exit(1)


@app.command()
def models(folders: Annotated[Optional[list[Path]], typer.Argument(help="where finetuned versions live")] = None):
    """List the model versions autolabel knows, with their metrics."""
    for m in catalog.list_models(folders or [Path("models")]):
        nme = ", ".join(f"{k} {100 * v:.2f}%" for k, v in m.nme.items())
        typer.echo(f"{m.version}  {'usable ' if m.usable else 'UNUSABLE'}  {m.kind:28}  {nme}  {m.path}")


def main() -> None:
    try:
        app()
    except AutolabelError as e:
        if os.environ.get("AUTOLABEL_DEBUG"):
            raise
        typer.echo(f"autolabel: error: {e}", err=True)
        sys.exit(2 if isinstance(e, UsageError) else 1)


if __name__ == "__main__":
    main()
