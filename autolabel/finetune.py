"""`autolabel finetune`: corrections -> a new, better model version.

Reuses the training loop (`train.fit`), the crop convention (`geometry`) and the augmentation of
`autolabel train`; only the data differ: the reviewed faces (accepted + corrected; rejected and
skipped are left out), mixed 1:1 with replayed original training faces so the model keeps what
it knew. A deterministic share of the corrections is held out to judge the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.data import Canvases, Sample, build_canvases, detect_boxes, find_samples
from autolabel.images import load_image
from autolabel.scheme import N_POINTS
from autolabel.types import AutolabelError, Box, UsageError

if TYPE_CHECKING:
    from autolabel.augment import AugmentConfig

#: a held-out set smaller than this says little; fewer corrections than 2x this are refused.
MIN_HOLDOUT = 10
#: "not worse" allows this much NME noise (0.1 percentage point).
TOLERANCE = 0.001
#: augmentation when finetuning (`AugmentConfig` fields; a dict so that importing this module,
#: e.g. for `autolabel models`, does not import torch). Corrected faces come with the box the
#: detector gave them, so the jitter only has to cover detector noise, not the full range
#: `autolabel train` uses.
FINETUNE_AUGMENT = {"rotation_deg": 10.0, "scale": 0.05, "shift": 0.04, "flip": 0.5, "brightness": 0.15, "contrast": 0.2}


@dataclass
class Loaded:
    samples: list[Sample]
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""


def _skip(d: dict, why: str) -> None:
    d[why] = d.get(why, 0) + 1


def load_corrections(path: Path) -> Loaded:
    """Faces from a review corrections folder or a plain 300-W folder, checked one by one."""
    from autolabel.review.state import JOURNAL, read_corrections

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such corrections folder")
    raw: list[tuple[str, Path, np.ndarray, Box | None]] = []
    skipped: dict[str, int] = {}
    if (path / JOURNAL).is_file():
        source = "review corrections"
        for r in read_corrections(path):
            box = Box(*r["box"]) if r.get("box") and r.get("source") != "added" and r["box"][2] > r["box"][0] else None
            raw.append((r["key"], Path(r["abs_path"]), np.asarray(r["points"], np.float64), box))
    else:
        source = "300-W folder"
        from autolabel.formats.pts import read_pts
        from autolabel.data import _exts

        for pts_file in sorted(path.rglob("*.pts")):
            img = next((pts_file.with_suffix(e) for e in _exts() if pts_file.with_suffix(e).is_file()), None)
            try:
                pts = read_pts(pts_file).astype(np.float64)
            except AutolabelError:
                _skip(skipped, "unreadable .pts")
                continue
            if img is None:
                _skip(skipped, "image missing")
                continue
            raw.append((pts_file.relative_to(path).as_posix(), img, pts, None))
    if not raw and not skipped:
        raise UsageError(f"{path}: no corrections in it (no accepted or corrected faces, no .pts files)")
    samples, keys = [], []
    for key, img, pts, box in raw:
        if pts.shape != (N_POINTS, 2):
            _skip(skipped, f"not {N_POINTS} points")
            continue
        if not np.isfinite(pts).all():
            _skip(skipped, "NaN or infinite points")
            continue
        if not img.is_file():
            _skip(skipped, "image missing")
            continue
        try:
            w, h = load_image(img).size
        except AutolabelError:
            _skip(skipped, "image unreadable")
            continue
        # a few points just outside the frame are normal (a cut-off jaw); far outside is a bug
        margin = 0.25 * max(w, h)
        if (pts[:, 0] < -margin).any() or (pts[:, 0] > w + margin).any() or (pts[:, 1] < -margin).any() or (pts[:, 1] > h + margin).any():
            _skip(skipped, "points far outside the image")
            continue
        samples.append(Sample(img, pts.astype(np.float32), box))
        keys.append(key)
    return Loaded(samples, keys, skipped, source)


def split(keys: list[str], frac: float, min_holdout: int = MIN_HOLDOUT) -> tuple[list[int], list[int]]:
    """Deterministic train / held-out split by a hash of each face's key."""
    n = len(keys)
    if n < 2 * min_holdout:
        raise UsageError(f"only {n} usable corrections; finetuning needs at least {2 * min_holdout} "
                         f"({min_holdout} are held out to check the result)")
    order = sorted(range(n), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    k = max(min_holdout, int(round(frac * n)))
    hold = sorted(order[:k])
    train = sorted(order[k:])
    return train, hold


def _nme_on(predictor, samples: list[Sample]) -> np.ndarray:
    from autolabel.data import sample_box
    from autolabel.evaluate import model_predict
    from autolabel.geometry import box_from_points
    from autolabel.scheme import nme

    boxes = [s.box or sample_box(s, "gt") or box_from_points(s.points) for s in samples]
    pred = model_predict(predictor, samples, boxes)
    return nme(pred, np.stack([s.points for s in samples]))


def finetune(
    source: Path,
    out: Path,
    base: Path | None = None,
    replay: list[Path] | None = None,
    eval_data: list[Path] | None = None,
    epochs: int = 15,
    lr: float = 1.5e-4,
    holdout: float = 0.2,
    replay_ratio: float = 1.0,
    repeat: int = 3,
    augment: AugmentConfig | None = None,
    force: bool = False,
    command: str = "",
    progress: bool = True,
) -> dict:
    import torch

    from autolabel.augment import AugmentConfig
    from autolabel.model import LandmarkModel, Predictor, load_model
    from autolabel.train import TrainConfig, fit, load_best

    t0 = time.time()
    out = Path(out)
    if (out / "model.pt").exists() or (out / "model.unusable.pt").exists():
        raise UsageError(f"{out} already holds a model version; choose a new --out")
    base_model = load_model(base)
    base_cfg = base_model.meta.get("recipe", {})
    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, input_size=base_model.input_size, context=base_cfg.get("context", cfg.context), epochs=epochs, lr=lr,
                              loss=base_cfg.get("loss", cfg.loss), batch_size=min(cfg.batch_size, 32), patience=epochs + 1,
                              augment=augment or AugmentConfig(**FINETUNE_AUGMENT))

    data = load_corrections(source)
    tr_idx, ho_idx = split(data.keys, holdout)
    train_s = [data.samples[i] for i in tr_idx]
    hold_s = [data.samples[i] for i in ho_idx]

    from autolabel.detectors import DEFAULT_SETTINGS, make_detector

    det = make_detector("hog", **DEFAULT_SETTINGS)
    cache = out / "work" / "boxes.json"
    # faces without a detector box (300-W folders, added faces) get one as `autolabel run` would
    need = [s for s in train_s + hold_s if s.box is None]
    found = {id(s): d for s, d in zip(need, detect_boxes(need, det, cache, progress=False))}
    fix = lambda s: Sample(s.image, s.points, found[id(s)].box) if id(s) in found else s  # noqa: E731
    train_s, hold_s = [fix(s) for s in train_s], [fix(s) for s in hold_s]

    replay_s: list[Sample] = []
    if replay:
        exclude = {str(s.image.resolve()) for s in data.samples}
        eval_roots = [str(Path(e).resolve()) for e in eval_data or []]
        pool = [s for r in replay for s in find_samples(r) if str(s.image.resolve()) not in exclude
                and not any(str(s.image.resolve()).startswith(e) for e in eval_roots)]
        rng = np.random.default_rng(0)
        k = min(len(pool), int(round(replay_ratio * repeat * len(train_s))))
        replay_s = [pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))] if k else []
        replay_s = detect_boxes(replay_s, det, cache, progress=False)

    # corrections are few: each is seen `repeat` times per epoch (with fresh augmentation), next
    # to as many replayed faces, so an epoch is half corrections, half replay
    train_c = build_canvases(train_s + replay_s, cfg.input_size, cfg.context, "det", progress)
    if repeat > 1 and train_s:
        n = len(train_s)
        idx = np.concatenate([np.tile(np.arange(n), repeat), np.arange(n, len(train_c))])
        train_c = Canvases(train_c.images[idx], train_c.points[idx], train_c.size)
    pred_base = Predictor(base_model)
    before = {"holdout": float(_nme_on(pred_base, hold_s).mean()), "train_corrections": float(_nme_on(pred_base, train_s).mean())}
    ref_samples = []
    if eval_data:
        ref_samples = detect_boxes(find_samples(*eval_data), det, cache, progress=False)
        before["reference"] = float(_nme_on(pred_base, ref_samples).mean())

    run_dir = out / "work"
    hist = fit(cfg, train_c, None, run_dir, init=base_model.net, resume=True, progress=progress,
               meta={"finetune_of": base_model.model_id})
    if hist.get("interrupted"):
        return {"interrupted": True, "out": str(out)}
    net, _ = load_best(run_dir)
    new = LandmarkModel(net, base_model.input_size, {})
    pred_new = Predictor(new)
    after = {"holdout": float(_nme_on(pred_new, hold_s).mean()), "train_corrections": float(_nme_on(pred_new, train_s).mean())}
    if ref_samples:
        after["reference"] = float(_nme_on(pred_new, ref_samples).mean())

    reasons = []
    if after["holdout"] > before["holdout"] + TOLERANCE:
        reasons.append(f"held-out corrections NME rose {100 * before['holdout']:.2f}% -> {100 * after['holdout']:.2f}%")
    if "reference" in after and after["reference"] > before["reference"] + TOLERANCE:
        reasons.append(f"reference set NME rose {100 * before['reference']:.2f}% -> {100 * after['reference']:.2f}%")
    usable = not reasons or force
    lineage = {
        "base_model": base_model.model_id, "base_path": str(base or "shipped"), "source": str(Path(source).absolute()),
        "source_kind": data.source, "corrections_used": len(train_s), "corrections_held_out": len(hold_s),
        "replay_faces": len(replay_s), "repeat": repeat, "skipped": data.skipped, "epochs": epochs, "lr": lr,
        "before": before, "after": after, "usable": usable, "forced": bool(reasons and force), "refused_because": reasons,
        "command": command, "seconds": time.time() - t0, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipe": cfg.to_dict(),
    }
    new.meta = {"finetune": lineage, "recipe": cfg.to_dict()}
    model_path = out / ("model.pt" if usable else "model.unusable.pt")
    lineage["model_version"] = new.save(model_path)
    lineage["model_path"] = str(model_path)
    from autolabel.io import atomic_write_text

    atomic_write_text(out / "finetune.json", json.dumps(lineage, indent=1))
    atomic_write_text(out / "README.md", card(lineage))
    del torch
    return lineage


def table(lin: dict) -> str:
    rows = [f"{'NME (inter-ocular)':28} {'base':>8} {'finetuned':>10}"]
    names = {"holdout": "held-out corrections", "train_corrections": "corrections used", "reference": "reference set"}
    for k, name in names.items():
        if k in lin["before"]:
            rows.append(f"{name:28} {100 * lin['before'][k]:7.2f}% {100 * lin['after'][k]:9.2f}%")
    return "\n".join(rows)


def card(lin: dict) -> str:
    verdict = "usable" if lin["usable"] and not lin["forced"] else ("usable (forced)" if lin["usable"] else "NOT usable")
    why = "".join(f"\n- {r}" for r in lin["refused_because"])
    return f"""# Finetuned model {lin['model_version']} ({verdict})

- base model: `{lin['base_model']}` ({lin['base_path']})
- corrections: {lin['source']} ({lin['source_kind']}): {lin['corrections_used']} used, {lin['corrections_held_out']} held out,
  skipped: {json.dumps(lin['skipped'])}
- replayed original faces: {lin['replay_faces']}
- epochs {lin['epochs']}, lr {lin['lr']}, {lin['seconds']:.0f} s
- command: `{lin['command']}`
- created {lin['created']}

```
{table(lin)}
```
{('Refused because:' + why) if lin['refused_because'] else ''}

Licence: derived from weights trained on 300-W; non-commercial research use only.
"""


def list_models(folders: list[Path]) -> list[dict]:
    """The shipped model and every finetuned version found under `folders`."""
    from autolabel.resources import model_dir, shipped_model

    out = []
    sp = shipped_model()
    if sp.is_file():
        rep = model_dir() / "reports" / "eval.json"
        metrics = {}
        if rep.is_file():
            r = json.loads(rep.read_text())
            metrics = {p: e["autolabel"]["nme_io"] for p, e in r["protocols"].items()}
        from autolabel.model import content_hash

        out.append({"version": content_hash(sp.read_bytes()), "path": str(sp), "kind": "shipped", "usable": True, "nme": metrics})
    for f in folders:
        for lin_path in sorted(Path(f).rglob("finetune.json")):
            lin = json.loads(lin_path.read_text())
            out.append({"version": lin.get("model_version"), "path": lin.get("model_path"), "kind": f"finetune of {lin['base_model']}",
                        "usable": lin["usable"], "nme": {f"{k} (after)": v for k, v in lin["after"].items()}})
    return out
