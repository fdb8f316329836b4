"""Which uncertainty score ranks the model's labels by their error: candidates compared on the
validation split (10 % of the training faces by file-name hash), then reported once on the test
set (helen/testset), det protocol (HOG boxes), flip averaging on.

    python benchmarks/confidence_eval.py MODEL.pt [--runtime torch] [--out report.json]

Candidates (all divided by the predicted outer-eye-corner distance, higher = less sure):
flip (mean flip disagreement: v1's score), scale (mean predicted error scale), shipped
(`predictor.face_confidence`: scale + flip / 2), max-scale (the worst point's scale), and two
that need a second pass of the model on the crop placed by the first pass's points
(`geometry.box_from_points`): recrop (the mean distance between the two passes' points) and
two-pass (`Predictor.combine`: both passes' shipped score averaged, plus recrop / 2; what
`--refine` writes). The NME of that second pass, and
of the two passes averaged, is reported beside the first's: the re-crop is a lever in itself.
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
from autolabel.metrics import confidence_quality, interocular, nme  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402

TRAIN = ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset"]
TEST = ["300w/helen/testset"]


def scores(pred: Predictor, samples) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-face NME of pass 1, pass 2 and their mean, and each candidate score."""
    keep = [s for s in samples if sample_box(s, "det") is not None]
    errs: dict[str, list] = {"pass 1": [], "pass 2": [], "passes averaged": []}
    cands: dict[str, list] = {k: [] for k in ("flip", "scale", "shipped", "max-scale", "recrop", "two-pass")}
    for s in keep:
        gray = load_gray(s.image)
        crops, ts = pred.crops(gray, [sample_box(s, "det")])
        c1, d1, s1 = pred.runtime.predict(crops)  # the parts of the shipped score
        first = pred.predict(crops, ts)
        again = pred.predict(*pred.recrop(gray, first[0]))  # what --refine does
        both, two_pass, _ = pred.combine(first, again)
        p1, p2 = first[0][0], again[0][0]
        gt = s.points[None]
        for k, p in (("pass 1", p1), ("pass 2", p2), ("passes averaged", both[0])):
            errs[k].append(nme(p[None], gt)[0])
        iod = interocular(c1)[0]
        cands["flip"].append(d1.mean() / iod)
        cands["scale"].append(s1.mean() / iod)
        cands["shipped"].append(first[1][0])
        cands["max-scale"].append(s1.max() / iod)
        cands["recrop"].append(np.linalg.norm(p1 - p2, axis=-1).mean() / interocular(p1[None])[0])
        cands["two-pass"].append(two_pass[0])
    return {k: np.array(v) for k, v in errs.items()}, {k: np.array(v) for k, v in cands.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--runtime", default="torch")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    root = data_root()
    pred = Predictor(make_runtime(args.runtime, args.model))
    det = make_detector("hog")
    _, val = split_by_name(find_samples(*[root / p for p in TRAIN]), 0.1)
    sets = {"val": detect_boxes(val, det, None, False), "test": detect_boxes(find_samples(*[root / p for p in TEST]), det, None, False)}
    report = {"model_version": pred.model_id, "runtime": pred.runtime.name}
    for name, samples in sets.items():
        errs, cands = scores(pred, samples)
        e = errs["pass 1"]
        report[name] = {"faces": len(e), "nme": {k: float(v.mean()) for k, v in errs.items()},
                        "candidates": {k: confidence_quality(v, e) for k, v in cands.items()}}
        print(f"{name}: {len(e)} faces, NME " + ", ".join(f"{k} {100 * v.mean():.2f} %" for k, v in errs.items()))
        for k, q in report[name]["candidates"].items():
            print(f"  {k:14} Spearman {q['spearman']:.3f}   worst 10 % in the top 10 %: {100 * q['worst_in_top']:.0f} %")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
