"""`autolabel train` as a library call: data -> boxes -> canvases -> fit -> export + report."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from autolabel.datasets import Canvases, Sample, build_canvases, detect_boxes, find_samples, fingerprint, split_by_name
from autolabel.detectors import make_detector
from autolabel.model import load_model
from autolabel.resources import data_root
from autolabel.training.checkpoints import export, load_best
from autolabel.training.figures import plot_history, plot_overlay
from autolabel.training.loop import TrainConfig, fit
from autolabel.types import TrainResult, UsageError


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def prepare(cfg: TrainConfig, root: Path, out: Path, progress: bool = True) -> tuple[list[Sample], list[Sample], Canvases, Canvases | None]:
    """Samples with detector boxes (cached in out/boxes.json) and their canvases."""
    det = make_detector("hog")
    train_s = detect_boxes(find_samples(*[root / p for p in cfg.train]), det, out / "boxes.json", progress)
    if cfg.val_fraction:  # validation held out of the training folders; `val` (the test set) is not looked at
        train_s, val_s = split_by_name(train_s, cfg.val_fraction)
    else:
        val_s = detect_boxes(find_samples(*[root / p for p in cfg.val]), det, out / "boxes.json", progress) if cfg.val else []
    train_c = build_canvases(train_s, cfg.input_size, cfg.context, "det", progress)
    # aligned crops rotate within the canvas: validation needs the training canvases' margin
    val_c = build_canvases(val_s, cfg.input_size, 1.0 if cfg.crop == "box" else cfg.context, "det", progress) if val_s else None
    return train_s, val_s, train_c, val_c


def train_model(cfg: TrainConfig, out: Path, dest: Path | None, root: Path | None = None, command: str = "", progress: bool = True,
                init: Path | None = None) -> TrainResult:
    """Train per `cfg` on the data under `root` (default: the shared data) into run folder `out`;
    export the best weights to `dest` (if given) and write the run's figures and report."""
    root = root or data_root()
    missing = [str(root / f) for f in cfg.train + cfg.val if not (root / f).exists()]
    if missing:
        raise UsageError(f"no such data folder: {', '.join(missing)} (the recipe's folders are relative to --data, default {data_root()})")
    if cfg.init and init is None:
        raise UsageError(f"this recipe continues from other weights ({cfg.init}): pass them with --init MODEL")
    init_model = load_model(init) if init is not None else None
    t0 = time.time()
    train_s, val_s, train_c, val_c = prepare(cfg, root, out, progress)
    meta = {
        "command": command,
        "git_commit": git_commit(),
        "recipe": cfg.to_dict(),
        "train_faces": len(train_s),
        "train_hog_boxes": sum(s.box is not None for s in train_s),
        "train_fingerprint": fingerprint(train_s),
        "val_faces": len(val_s),
        "val_fingerprint": fingerprint(val_s),
        "val_split": f"{cfg.val_fraction:.0%} of the training faces by file-name hash" if cfg.val_fraction else "+".join(cfg.val),
        "arch": cfg.arch,
    }
    if init_model is not None:
        meta["init"] = {"path": str(init), "model_version": init_model.model_id, "meta": init_model.meta}
    res = fit(cfg, train_c, val_c, out, init=init_model.net if init_model else None, resume=True, progress=progress, meta=meta)
    hist = res.history
    meta["train_seconds"] = hist["seconds"][-1] if hist["seconds"] else 0.0
    meta["wall_seconds_this_call"] = time.time() - t0
    if res.interrupted:
        return res
    plot_history(hist, out / "loss_curve.png")
    net, _ = load_best(out)
    if val_c is not None:
        plot_overlay(net, val_c, out / "val_overlay.png", aligned=cfg.crop == "aligned", crop_scale=cfg.aligned_scale)
    model_id = export(out, dest, cfg.input_size, meta).model_id if dest is not None else None
    report = {"meta": meta, **({"model_id": model_id} if model_id else {})}
    (out / "train_result.json").write_text(json.dumps(report, indent=1))
    return TrainResult(hist, meta=meta, model_id=model_id)
