"""`autolabel train` as a library call: data -> boxes -> canvases -> fit -> export + report."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from autolabel.data import build_canvases, data_root, detect_boxes, find_samples, fingerprint
from autolabel.train import TrainConfig, export, fit


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def prepare(cfg: TrainConfig, root: Path, out: Path, progress: bool = True):
    """Samples with HOG boxes (cached in out/boxes.json) and their canvases."""
    from autolabel.detectors import make_detector

    det = make_detector("hog")
    train_s = detect_boxes(find_samples(*[root / p for p in cfg.train]), det, out / "boxes.json", progress)
    val_s = detect_boxes(find_samples(*[root / p for p in cfg.val]), det, out / "boxes.json", progress) if cfg.val else []
    train_c = build_canvases(train_s, cfg.input_size, cfg.context, "det", progress)
    val_c = build_canvases(val_s, cfg.input_size, 1.0, "det", progress) if val_s else None
    return train_s, val_s, train_c, val_c


def train_model(cfg: TrainConfig, out: Path, dest: Path | None, root: Path | None = None, command: str = "", progress: bool = True,
                init: Path | None = None) -> dict:
    root = root or data_root()
    init_model = None
    if init is not None:
        from autolabel.model import load_model

        init_model = load_model(init)
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
    }
    if init_model is not None:
        meta["init"] = {"path": str(init), "model_version": init_model.model_id, "meta": init_model.meta}
    hist = fit(cfg, train_c, val_c, out, init=init_model.net if init_model else None, resume=True, progress=progress, meta=meta)
    meta["train_seconds"] = hist["seconds"][-1] if hist["seconds"] else 0.0
    meta["wall_seconds_this_call"] = time.time() - t0
    if hist.get("interrupted"):
        return {"interrupted": True, "history": hist}
    from autolabel.plots import plot_history, plot_overlay
    from autolabel.train import load_best

    plot_history(hist, out / "loss_curve.png")
    net, _ = load_best(out)
    if val_c is not None:
        plot_overlay(net, val_c, out / "val_overlay.png")
    result = {"history": hist, "meta": meta}
    if dest is not None:
        model = export(out, dest, cfg.input_size, meta)
        result["model_id"] = model.model_id
    (out / "train_result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    return result
