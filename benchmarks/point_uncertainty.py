"""How well the per-point uncertainty (`point_uncertainty`, the predicted error scale of each
point) finds the bad points: per-point Spearman(scale, error), the median scale, and the points
the review editor rings (scale > 4 % of the eye-corner distance; also 3 %) with their mean error
against the rest. One stage and the default two stages, on the validation split (10 % of the
training faces by file-name hash) and helen/testset, det protocol (HOG boxes).

    python benchmarks/point_uncertainty.py [--runtime auto] [--model model/landmarks.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import detect_boxes, find_samples, split_by_name  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import load_gray  # noqa: E402
from autolabel.metrics import interocular, spearman  # noqa: E402
from autolabel.predictor import make_predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.review.queue import UNCERTAIN_SHARE  # noqa: E402

TRAIN = ["300w/afw", "300w/helen/trainset", "300w/lfpw/trainset"]
RING = UNCERTAIN_SHARE  # the review editor rings points above it (scale / eye-corner distance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--model", type=Path, default=None)
    a = ap.parse_args()
    root, det = data_root(), make_detector("hog")
    _, val = split_by_name(find_samples(*[root / p for p in TRAIN]), 0.1)
    sets = {"validation": val, "helen/testset": find_samples(root / "300w/helen/testset")}
    for name, samples in sets.items():
        keep = [s for s in detect_boxes(samples, det, None, False) if s.box is not None]
        grays = [load_gray(s.image) for s in keep]
        gt = np.stack([s.points for s in keep])
        print(f"{name}: {len(keep)} faces (det boxes)")
        for refine in (False, True):
            pred = make_predictor(a.runtime, a.model, refine=refine)
            cuts = [pred.crops(g, [s.box]) for g, s in zip(grays, keep)]
            found = pred.predict(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])
            pts, _, unc = pred.second_pass(grays, *found) if refine else found
            err = np.linalg.norm(pts - gt, axis=-1) / interocular(gt)[:, None]
            rel = unc / interocular(pts)[:, None]
            line = f"  {'two stages' if refine else 'one stage':10} ({pred.model_id}): per-point Spearman {spearman(rel.ravel(), err.ravel()):.3f}, median scale {100 * np.median(rel):.2f} %"
            for th in (RING, 0.03):
                m = rel > th
                line += f"; > {100 * th:.0f} %: {100 * m.mean():.1f} % of points, error {100 * err[m].mean():.1f} vs {100 * err[~m].mean():.1f} %"
            print(line)


if __name__ == "__main__":
    main()
