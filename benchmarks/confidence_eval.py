"""Which uncertainty score ranks the model's labels by their error: candidates compared on the
validation split (10 % of the training faces by file-name hash), then reported once on the test
set (helen/testset), det protocol (HOG boxes), flip averaging on.

    python benchmarks/confidence_eval.py MODEL.pt [--runtime torch] [--out report.json]

Candidates (all divided by the predicted outer-eye-corner distance, higher = less sure):
flip (mean flip disagreement: v1's score), scale (mean predicted error scale), scale+flip/2
(what `predictor.face_confidence` uses), max-scale (the worst point's scale).
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
from autolabel.images import load_image  # noqa: E402
from autolabel.metrics import confidence_quality, interocular, nme  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402

TRAIN = ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset"]
TEST = ["300w/helen/testset"]


def scores(pred: Predictor, samples) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    keep = [s for s in samples if sample_box(s, "det") is not None]
    errs, cands = [], {"flip": [], "scale": [], "scale+flip/2": [], "max-scale": []}
    for i in range(0, len(keep), 32):
        chunk = keep[i : i + 32]
        cuts = [pred.crops(load_image(s.image).convert("L"), [sample_box(s, "det")]) for s in chunk]
        crops, ts = np.concatenate([c for c, _ in cuts]), [t for _, tt in cuts for t in tt]
        pts_c, dis, scale = pred.runtime.predict(crops)
        pts = np.stack([t.to_image(p) for p, t in zip(pts_c, ts)])
        iod = interocular(pts_c)
        errs.append(nme(pts, np.stack([s.points for s in chunk])))
        cands["flip"].append(dis.mean(-1) / iod)
        cands["scale"].append(scale.mean(-1) / iod)
        cands["scale+flip/2"].append((scale + dis / 2).mean(-1) / iod)
        cands["max-scale"].append(scale.max(-1) / iod)
    return np.concatenate(errs), {k: np.concatenate(v) for k, v in cands.items()}


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
        e, cands = scores(pred, samples)
        report[name] = {"faces": len(e), "nme": float(e.mean()), "candidates": {k: confidence_quality(v, e) for k, v in cands.items()}}
        print(f"{name}: {len(e)} faces, NME {100 * e.mean():.2f} %")
        for k, q in report[name]["candidates"].items():
            print(f"  {k:14} Spearman {q['spearman']:.3f}   worst 10 % in the top 10 %: {100 * q['worst_in_top']:.0f} %")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
