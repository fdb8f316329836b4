"""dlib's 68-point predictor as a second opinion for the confidence score: its disagreement with
the shipped labels, alone and summed with the shipped score, on the validation split and on
helen/testset (det protocol, int8, both stages; with and without flip averaging).

    python benchmarks/confidence_dlib.py

A measurement, not a shipped score: dlib's predictor was trained on iBUG's 300-W training set
(every validation face, probably helen/testset too), so on these faces its disagreement is
nearly our own error (model/reports/notes.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import detect_boxes, find_samples, sample_box, split_by_name  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.evaluate import dlib_predict, predict_with_confidence  # noqa: E402
from autolabel.metrics import confidence_quality, interocular, nme  # noqa: E402
from autolabel.predictor import make_predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402

TRAIN = ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset"]


def main() -> None:
    root, det = data_root(), make_detector("hog")
    _, val = split_by_name(find_samples(*[root / p for p in TRAIN]), 0.1)
    sets = {"val": val, "test": find_samples(root / "300w" / "helen" / "testset")}
    for name, samples in sets.items():
        keep = [s for s in detect_boxes(samples, det, None, False) if sample_box(s, "det") is not None]
        boxes, gt = [sample_box(s, "det") for s in keep], np.stack([s.points for s in keep])
        theirs = dlib_predict(keep, boxes)
        print(f"{name}: {len(keep)} faces, dlib NME {100 * nme(theirs, gt).mean():.2f} %")
        for flip in (True, False):
            pts, conf = predict_with_confidence(make_predictor("onnx", flip=flip), keep, boxes)
            err = nme(pts, gt)
            dis = np.linalg.norm(pts - theirs, axis=-1).mean(-1) / interocular(pts)
            print(f"  {'flip' if flip else 'no flip'}: NME {100 * err.mean():.2f} %, averaged with dlib's {100 * nme((pts + theirs) / 2, gt).mean():.2f} %")
            for k, c in {"shipped": conf, "disagreement": dis, "sum": conf + dis}.items():
                q = confidence_quality(c, err)
                print(f"    {k:13} Spearman {q['spearman']:.3f}   worst 10 % in the top 10 %: {100 * q['worst_in_top']:.0f} %")


if __name__ == "__main__":
    main()
