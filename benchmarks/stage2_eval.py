"""A trained second stage on aligned crops (issue 9's lever), measured beside the shipped model:
on the validation split (10 % of the training faces by file-name hash) and on helen/testset,
det protocol (HOG boxes), every combination of flip averaging in the two stages.

    python benchmarks/stage2_eval.py STAGE2.pt [--first model/landmarks.pt] [--runtime torch] [--out report.json]

Stage 2 predicts on the crop the first stage's points place (`geometry.aligned_transform`:
centred and sized by the points' box, rotated so the eye line is level). Rows: the first stage
alone; the first stage's re-crop by the same model (what `--refine` does for a model without a
second stage, for comparison); stage 2 after
stage 1, with its own points and with the two stages' points averaged. Confidence candidates
(higher = less sure, all over the predicted outer-eye-corner distance): stage 1's shipped
score, stage 2's, how far stage 2 moved the points, and `Predictor.combine`'s two-pass score.
Network passes per face are counted (a flip-averaged pass costs two).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import detect_boxes, find_samples, sample_box, split_by_name  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import load_gray  # noqa: E402
from autolabel.metrics import confidence_quality, failure_rate, interocular, nme  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root, shipped_model  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402

TRAIN = ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset"]
TEST = ["300w/helen/testset"]


def again(pred: Predictor, grays, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`pred`'s second pass on the crops `points` (N, 68, 2) place (`recrop` + `predict_again`):
    image points, confidence and point uncertainty, before `combine`."""
    cuts = [pred.recrop(g, p[None]) for g, p in zip(grays, points)]
    return pred.predict_again(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])


def moved(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1) / np.maximum(interocular(a), 1e-6)


def rows(first: dict[bool, Predictor], second: dict[bool, object], samples) -> dict[str, dict]:
    """Per-face points and scores of each variant on `samples` (det boxes)."""
    keep = [s for s in samples if sample_box(s, "det") is not None]
    grays = [load_gray(s.image) for s in keep]
    gt = np.stack([s.points for s in keep])
    out: dict[str, dict] = {}
    for f1, pred in first.items():
        cuts = [pred.crops(g, [sample_box(s, "det")]) for g, s in zip(grays, keep)]
        p1, c1, u1 = pred.predict(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])
        n1 = 2 if f1 else 1
        out[f"stage 1{' flip' if f1 else ''}"] = {"passes": n1, "points": p1, "scores": {"stage 1": c1}}
        both, two, _ = pred.combine((p1, c1, u1), again(pred, grays, p1))
        out[f"stage 1{' flip' if f1 else ''} + same model re-cropped, averaged (no stage 2)"] = {
            "passes": 2 * n1, "points": both, "scores": {"two-pass": two}}
        for f2, rt in second.items():
            p2, c2, _ = again(Predictor(pred.runtime, refine=True, stage2=rt), grays, p1)
            m = moved(p1, p2)
            scores = {"stage 1": c1, "stage 2": c2, "moved": m, "stage 2 + moved / 2": c2 + m / 2, "two-pass": (c1 + c2) / 2 + m / 2}
            name = f"stage 1{' flip' if f1 else ''} -> stage 2{' flip' if f2 else ''}"
            n = n1 + (2 if f2 else 1)
            out[name] = {"passes": n, "points": p2, "scores": scores}
            out[name + ", averaged with stage 1"] = {"passes": n, "points": (p1 + p2) / 2, "scores": scores}
    for r in out.values():
        r["nme"] = nme(r["points"], gt)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage2", type=Path)
    ap.add_argument("--first", type=Path, default=None, help="the first stage (default: the shipped model)")
    ap.add_argument("--runtime", default="torch", help="runtime of the first stage (stage 2 runs on torch)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    root = data_root()
    first = {f: Predictor(make_runtime(args.runtime, args.first, flip=f)) for f in (True, False)}
    second = {f: make_runtime("torch", args.stage2, flip=f) for f in (True, False)}
    det = make_detector("hog")
    _, val = split_by_name(find_samples(*[root / p for p in TRAIN]), 0.1)
    sets = {"val": detect_boxes(val, det, None, False), "test": detect_boxes(find_samples(*[root / p for p in TEST]), det, None, False)}
    report = {"first": first[True].model_id, "stage2": second[True].model_id, "first_runtime": first[True].runtime.name,
              "first_path": str(args.first or shipped_model())}
    for name, samples in sets.items():
        res = rows(first, second, samples)
        report[name] = {}
        print(f"\n{name}: {len(next(iter(res.values()))['nme'])} faces")
        for k, r in res.items():
            e = r["nme"]
            q = {s: confidence_quality(v, e) for s, v in r["scores"].items()}
            report[name][k] = {"passes": r["passes"], "nme": float(e.mean()), "fr": failure_rate(e), "confidence": q}
            print(f"  {k:58} passes {r['passes']}  NME {100 * e.mean():.2f} %  FR {100 * failure_rate(e):.2f} %  "
                  + "  ".join(f"{s}: {v['spearman']:.3f}/{100 * v['worst_in_top']:.0f}%" for s, v in q.items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
