"""`autolabel finetune`: corrections -> a new, better model version.

Reuses the training loop (`loop.fit`), the crop convention (`geometry`), the predictor and the
augmentation of `autolabel train`; only the data differ: the reviewed faces (accepted +
corrected; rejected and skipped are left out), mixed 1:1 with replayed original training faces
so the model keeps what it knew. A deterministic share of the corrections is held out to judge
the result.

A base model with a trained second stage beside it (`X.stage2.pt`, what `run` refines with by
default) has both stages finetuned on the same faces: the second on the crops their labels
place (its own recipe's aligned crop and jitter), so the corrections reach the final labels and
the new version keeps the two-stage pipeline (`model.pt` + `model.stage2.pt`). Both are scored
before and after as `run` uses them.

`finetune()` runs named stages, each a short function below: configure, load corrections,
split, detect, pick replay, canvases, score before, fit (each stage), score after, decide,
record lineage, save, card.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autolabel.catalog import LINEAGE
from autolabel.datasets import Canvases, Sample, build_canvases, detect_boxes, find_samples, sample_box
from autolabel.detectors import Detector, make_detector
from autolabel.evaluate import predict_samples
from autolabel.files import atomic_write_text
from autolabel.formats import pts_folder, read_labels_any
from autolabel.formats.corrections import JOURNAL, face_key, read_corrections
from autolabel.formats.pts import read_pts
from autolabel.images import image_beside, load_image
from autolabel.markup import N_POINTS
from autolabel.metrics import nme
from autolabel.model import LandmarkModel, load_model
from autolabel.predictor import Predictor, second_stage_scale
from autolabel.runtimes import stage2_path
from autolabel.runtimes.torch_runtime import TorchRuntime
from autolabel.training.augment import AugmentConfig
from autolabel.training.checkpoints import load_best
from autolabel.training.loop import TrainConfig, fit
from autolabel.types import AutolabelError, Box, Decision, FinetuneResult, Lineage, UsageError

#: a held-out set smaller than this says little; fewer corrections than 2x this are refused.
MIN_HOLDOUT = 10
#: "not worse" allows this much NME noise (0.1 percentage point).
TOLERANCE = 0.001
#: augmentation when finetuning. Corrected faces come with the box the detector gave them, so
#: the jitter only has to cover detector noise, not the full range `autolabel train` uses.
FINETUNE_AUGMENT = AugmentConfig(rotation_deg=10.0, scale=0.05, shift=0.04, flip=0.5, brightness=0.15, contrast=0.2)


# ------------------------------------------------------------------------------ configure
def configure(base: LandmarkModel, epochs: int, lr: float, augment: AugmentConfig | None) -> TrainConfig:
    """The training recipe for finetuning `base`: its input size, context and loss; short and gentle."""
    base_cfg = base.meta.get("recipe", {})
    cfg = TrainConfig()
    return dataclasses.replace(cfg, input_size=base.input_size, context=base_cfg.get("context", cfg.context), epochs=epochs, lr=lr,
                               loss=base_cfg.get("loss", cfg.loss), batch_size=min(cfg.batch_size, 32), patience=epochs + 1,
                               augment=augment or FINETUNE_AUGMENT)


def configure_stage2(stage2: LandmarkModel, first: TrainConfig) -> TrainConfig:
    """The recipe for finetuning a second stage beside `first`'s: the same schedule, its own
    aligned crop (scale) and its own recipe's jitter, which stands in for the first stage's
    errors (a corrected face's first-stage error is no smaller than a training face's)."""
    scale = second_stage_scale(stage2.meta, stage2.model_id, " (it lies beside the base: move it away, or finetune with --no-refine)")
    recipe = stage2.meta.get("recipe", {})
    aug = {k: v for k, v in recipe.get("augment", {}).items() if k in AugmentConfig.__dataclass_fields__}
    return dataclasses.replace(first, input_size=stage2.input_size, context=recipe.get("context", first.context), crop="aligned",
                               aligned_scale=scale, loss=recipe.get("loss", first.loss), augment=AugmentConfig(**aug) if aug else first.augment)


# ------------------------------------------------------------------------------ load
@dataclass
class Loaded:
    samples: list[Sample]
    keys: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""


def _skip(d: dict, why: str) -> None:
    d[why] = d.get(why, 0) + 1


def _from_store(path: Path) -> list[tuple[str, Path, np.ndarray, Box | None]]:
    """(key, image, points, detector box) of accepted and corrected faces in a corrections store."""
    raw = []
    for r in read_corrections(path):
        # an added face's box was drawn by a person, not given by the detector: detect it anew
        box = Box(*r.box) if len(r.box) == 4 and r.source != "added" and r.box[2] > r.box[0] else None
        raw.append((r.key, Path(r.abs_path), r.points, box))
    return raw


def _from_300w(path: Path, skipped: dict) -> list[tuple[str, Path, np.ndarray, Box | None]]:
    raw = []
    for pts_file in sorted(path.rglob("*.pts")):
        img = image_beside(pts_file)
        try:
            pts = read_pts(pts_file).astype(np.float64)
        except AutolabelError:
            _skip(skipped, "unreadable .pts")
            continue
        if img is None:
            _skip(skipped, "image missing")
            continue
        raw.append((pts_file.relative_to(path).as_posix(), img, pts, None))
    return raw


def _from_run(path: Path, skipped: dict) -> list[tuple[str, Path, np.ndarray, Box | None]]:
    """(face id, image, points, detector box) of the faces in an `autolabel run --format pts`
    folder, read through its index (the images are where the run found them)."""
    raw = []
    for rec in pts_folder.parse(path, []):
        for i, f in enumerate(rec["faces"]):
            if "points" not in f:
                _skip(skipped, "unreadable .pts")
                continue
            box = Box(*f["box"], f.get("det_score", 0.0)) if "box" in f else None
            raw.append((face_key(rec["image"], i), Path(rec["abs_path"]), np.asarray(f["points"], np.float64), box))
    return raw


def _from_labels(path: Path, skipped: dict) -> tuple[str, list[tuple[str, Path, np.ndarray, Box | None]]]:
    """(face id, image, points, None) of the faces in a labels file of any readable format
    (Parquet, COCO, dlib XML, CSV, Label Studio). Their boxes follow other conventions, so each
    face gets a detector box as `autolabel run` would (`detect_missing`)."""
    labels = read_labels_any(path)
    for _ in labels.skipped:
        _skip(skipped, "unreadable item")
    raw = [(face_key(name, i), r.path, f.points.astype(np.float64), None) for name, i, r, f in labels.faces()]
    return f"{labels.format} labels", raw


def _usable(img: Path, pts: np.ndarray, skipped: dict) -> bool:
    if pts.shape != (N_POINTS, 2):
        _skip(skipped, f"not {N_POINTS} points")
        return False
    if not np.isfinite(pts).all():
        _skip(skipped, "NaN or infinite points")
        return False
    if not img.is_file():
        _skip(skipped, "image missing")
        return False
    try:
        w, h = load_image(img).size
    except AutolabelError:
        _skip(skipped, "image unreadable")
        return False
    # a few points just outside the frame are normal (a cut-off jaw); far outside is a bug
    margin = 0.25 * max(w, h)
    if (pts[:, 0] < -margin).any() or (pts[:, 0] > w + margin).any() or (pts[:, 1] < -margin).any() or (pts[:, 1] > h + margin).any():
        _skip(skipped, "points far outside the image")
        return False
    return True


def load_corrections(path: Path) -> Loaded:
    """Faces from a review corrections folder, a 300-W folder (plain or a run's) or a labels
    file in any readable format, checked one by one."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such corrections folder")
    skipped: dict[str, int] = {}
    if (path / JOURNAL).is_file():
        source, raw = "review corrections", _from_store(path)
    elif pts_folder.is_run_folder(path):
        source, raw = "autolabel run (.pts folder)", _from_run(path, skipped)
    elif path.is_file():
        source, raw = _from_labels(path, skipped)
    else:
        source, raw = "300-W folder", _from_300w(path, skipped)
    if not raw and not skipped:
        raise UsageError(f"{path}: no corrections in it (no accepted or corrected faces, no .pts files)")
    samples, keys = [], []
    for key, img, pts, box in raw:
        if _usable(img, pts, skipped):
            samples.append(Sample(img, pts.astype(np.float32), box))
            keys.append(key)
    return Loaded(samples, keys, skipped, source)


# ------------------------------------------------------------------------------ split
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


# ------------------------------------------------------------------------------ detect
def detect_missing(samples: list[Sample], det: Detector, cache: Path) -> list[Sample]:
    """Faces without a detector box (300-W folders, added faces) get one as `autolabel run` would."""
    need = [s for s in samples if s.box is None]
    found = {id(s): d for s, d in zip(need, detect_boxes(need, det, cache, progress=False))}
    return [Sample(s.image, s.points, found[id(s)].box) if id(s) in found else s for s in samples]


# ------------------------------------------------------------------------------ replay
def pick_replay(replay: list[Path], exclude: list[Sample], eval_data: list[Path], n: int, det: Detector, cache: Path) -> list[Sample]:
    """`n` original training faces (fixed seed), none of them a correction or in the reference set."""
    used = {str(s.image.resolve()) for s in exclude}
    eval_roots = [str(Path(e).resolve()) for e in eval_data]
    pool = [s for r in replay for s in find_samples(r) if str(s.image.resolve()) not in used
            and not any(str(s.image.resolve()).startswith(e) for e in eval_roots)]
    rng = np.random.default_rng(0)
    k = min(len(pool), n)
    picked = [pool[i] for i in sorted(rng.choice(len(pool), k, replace=False))] if k else []
    return detect_boxes(picked, det, cache, progress=False)


# ------------------------------------------------------------------------------ canvases
def training_canvases(corrections: list[Sample], replay: list[Sample], cfg: TrainConfig, repeat: int, progress: bool) -> Canvases:
    """Corrections are few: each is seen `repeat` times per epoch (with fresh augmentation), next
    to as many replayed faces, so an epoch is half corrections, half replay."""
    c = build_canvases(corrections + replay, cfg.input_size, cfg.context, "det", progress)
    if repeat > 1 and corrections:
        n = len(corrections)
        idx = np.concatenate([np.tile(np.arange(n), repeat), np.arange(n, len(c))])
        c = Canvases(c.images[idx], c.points[idx], c.size)
    return c


# ------------------------------------------------------------------------------ score
def nme_on(predictor: Predictor, samples: list[Sample]) -> np.ndarray:
    """Per-face NME of `predictor` on `samples`, each cropped from its detector box (or, where
    the detector missed it, from the box made from its points)."""
    boxes = [s.box or sample_box(s, "gt") for s in samples]
    return nme(predict_samples(predictor, samples, boxes), np.stack([s.points for s in samples]))


def pipeline(model: LandmarkModel, stage2: LandmarkModel | None) -> Predictor:
    """The predictor a version is scored with (torch runtime): both stages, as `run` labels with
    them; without a second stage, one pass (as before two-stage finetuning; `run` would add its
    re-crop refinement)."""
    if stage2 is None:
        return Predictor(TorchRuntime(model))
    return Predictor(TorchRuntime(model), refine=True, stage2=TorchRuntime(stage2))


def score(model: LandmarkModel, sets: dict[str, list[Sample]], stage2: LandmarkModel | None = None) -> dict[str, float]:
    """Mean NME of `model` (followed by `stage2`, when given) on each non-empty face set."""
    predictor = pipeline(model, stage2)
    return {name: float(nme_on(predictor, s).mean()) for name, s in sets.items() if s}


# ------------------------------------------------------------------------------ decide
def decide(before: dict[str, float], after: dict[str, float], force: bool) -> Decision:
    """Usable unless worse than the base by more than TOLERANCE on the held-out corrections or
    the reference set (then usable only when forced)."""
    names = {"holdout": "held-out corrections", "reference": "reference set"}
    reasons = tuple(f"{name} NME rose {100 * before[k]:.2f}% -> {100 * after[k]:.2f}%"
                    for k, name in names.items() if k in after and after[k] > before[k] + TOLERANCE)
    return Decision(usable=not reasons or force, forced=bool(reasons and force), refused_because=reasons)


# ------------------------------------------------------------------------------ save
def save(model: LandmarkModel, out: Path, lineage: Lineage, stage2: LandmarkModel | None = None) -> Lineage:
    """Write the model (as `model.unusable.pt` when refused) and its second stage beside it
    (`runtimes.stage2_path`: `model.stage2.pt`), `finetune.json` and the card."""
    # the file cannot hold its own hash: version and path live in finetune.json only
    own = {k: v for k, v in lineage.to_dict().items() if k not in ("model_version", "model_path", "stage2_version")}
    path = out / ("model.pt" if lineage.usable else "model.unusable.pt")
    if stage2 is not None:  # first, so a model.pt on disk always has its second stage beside it
        stage2.meta = {"finetune": own, "recipe": lineage.stage2_recipe}
        lineage = dataclasses.replace(lineage, stage2_version=stage2.save(stage2_path(path)))
    else:  # a second stage left by an interrupted save of another run must not pair with this model
        stage2_path(path).unlink(missing_ok=True)
    model.meta = {"finetune": own, "recipe": lineage.recipe}
    lineage = dataclasses.replace(lineage, model_version=model.save(path), model_path=str(path))
    atomic_write_text(out / LINEAGE, json.dumps(lineage.to_dict(), indent=1))
    atomic_write_text(out / "README.md", card(lineage))
    return lineage


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
    export_onnx: bool = False,
    refine: bool = True,
) -> FinetuneResult:
    """Finetune `base` (default: the shipped model) on the corrections in `source` into `out`.

    `refine`: when `base` has a second stage beside it, finetune that too (module docstring);
    False: the first stage only (the new version then refines by re-cropping with itself).
    `export_onnx`: also write the new model's ONNX exports beside it (`<stem>.fp32.onnx`,
    `<stem>.int8.onnx`, int8 calibrated on the faces it was trained on) for the fast runtime;
    the CLI does, by default."""
    t0 = time.time()
    out = Path(out)
    if (out / "model.pt").exists() or (out / "model.unusable.pt").exists():
        raise UsageError(f"{out} already holds a model version; choose a new --out")
    base_model = load_model(base)
    base_stage2 = stage2_path(base)
    stage2_model = load_model(base_stage2) if refine and base_stage2.is_file() else None
    cfg = configure(base_model, epochs, lr, augment)
    cfg2 = configure_stage2(stage2_model, cfg) if stage2_model is not None else None
    data = load_corrections(source)
    tr_idx, ho_idx = split(data.keys, holdout)
    det = make_detector("hog")
    work = out / "work"
    cache = work / "boxes.json"
    train_s = detect_missing([data.samples[i] for i in tr_idx], det, cache)
    hold_s = detect_missing([data.samples[i] for i in ho_idx], det, cache)
    replay_s = pick_replay(replay, data.samples, eval_data or [], int(round(replay_ratio * repeat * len(train_s))), det, cache) if replay else []
    train_c = training_canvases(train_s, replay_s, cfg, repeat, progress)
    ref_s = detect_boxes(find_samples(*eval_data), det, cache, progress=False) if eval_data else []
    sets = {"holdout": hold_s, "train_corrections": train_s, "reference": ref_s}
    before = score(base_model, sets, stage2_model)

    res = fit(cfg, train_c, None, work, init=base_model.net, resume=True, progress=progress, meta={"finetune_of": base_model.model_id})
    if res.interrupted:
        return FinetuneResult(out, interrupted=True)
    new = LandmarkModel(load_best(work)[0], base_model.input_size, {})
    new_stage2 = None
    if cfg2 is not None:
        if (cfg2.input_size, cfg2.context) != (cfg.input_size, cfg.context):
            train_c = training_canvases(train_s, replay_s, cfg2, repeat, progress)
        res = fit(cfg2, train_c, None, work / "stage2", init=stage2_model.net, resume=True, progress=progress,
                  meta={"finetune_of": stage2_model.model_id})
        if res.interrupted:
            return FinetuneResult(out, interrupted=True)
        # its recipe (crop = "aligned") marks it a second stage; `save` adds the lineage
        new_stage2 = LandmarkModel(load_best(work / "stage2")[0], stage2_model.input_size, {"recipe": cfg2.to_dict()})
    after = score(new, sets, new_stage2)

    verdict = decide(before, after, force)
    lineage = Lineage(
        base_model=base_model.model_id, base_path=str(base or "shipped"), source=str(Path(source).absolute()), source_kind=data.source,
        corrections_used=len(train_s), corrections_held_out=len(hold_s), replay_faces=len(replay_s), repeat=repeat,
        skipped=data.skipped, epochs=epochs, lr=lr, before=before, after=after, usable=verdict.usable, forced=verdict.forced,
        refused_because=verdict.refused_because, command=command, seconds=time.time() - t0,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), recipe=cfg.to_dict(),
        stage2_base=stage2_model.model_id if stage2_model is not None else "", stage2_recipe=cfg2.to_dict() if cfg2 is not None else {})
    lineage = save(new, out, lineage, new_stage2)
    if export_onnx:
        from autolabel.training.export_onnx import export_onnx as export

        for path in [Path(lineage.model_path)] + ([stage2_path(lineage.model_path)] if new_stage2 is not None else []):
            export(path, train_s + replay_s, log=print if progress else lambda *_: None)
    return FinetuneResult(out, lineage=lineage)


# ------------------------------------------------------------------------------ card
def table(lin: Lineage) -> str:
    rows = [f"{'NME (inter-ocular)':28} {'base':>8} {'finetuned':>10}"]
    names = {"holdout": "held-out corrections", "train_corrections": "corrections used", "reference": "reference set"}
    for k, name in names.items():
        if k in lin.before:
            rows.append(f"{name:28} {100 * lin.before[k]:7.2f}% {100 * lin.after[k]:9.2f}%")
    return "\n".join(rows)


def card(lin: Lineage) -> str:
    verdict = "usable" if lin.usable and not lin.forced else ("usable (forced)" if lin.usable else "NOT usable")
    why = "".join(f"\n- {r}" for r in lin.refused_because)
    return f"""# Finetuned model {lin.model_version} ({verdict})

- base model: `{lin.base_model}` ({lin.base_path})
- second stage: {f"`{lin.stage2_version}` (`{stage2_path(Path(lin.model_path)).name}`), finetuned from `{lin.stage2_base}`; "
                 "the scores below are of both stages" if lin.stage2_version
                 else "none (`run` refines by re-cropping with the model itself); the scores below are of one pass"}
- corrections: {lin.source} ({lin.source_kind}): {lin.corrections_used} used, {lin.corrections_held_out} held out,
  skipped: {json.dumps(lin.skipped)}
- replayed original faces: {lin.replay_faces}
- epochs {lin.epochs}, lr {lin.lr}, {lin.seconds:.0f} s
- command: `{lin.command}`
- created {lin.created}

```
{table(lin)}
```
{('Refused because:' + why) if lin.refused_because else ''}

Licence: derived from weights trained on 300-W; non-commercial research use only.
"""
