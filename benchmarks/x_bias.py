"""Systematic offset of the model's points: mean (prediction - label) in x and y, in image pixels,
on faces cropped from their ground-truth boxes, on the photos and on the same photos mirrored
(issue 14 item 12). An offset that follows the labels flips sign with the mirror; one the model
makes keeps it.

    python benchmarks/x_bias.py [--model M] [--data DIR ...] [--runtime torch]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import find_samples  # noqa: E402
from autolabel.geometry import box_from_points  # noqa: E402
from autolabel.images import load_image  # noqa: E402
from autolabel.markup import flip_points  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402


def offsets(pred: Predictor, samples, mirror: bool) -> np.ndarray:
    out = []
    for s in samples:
        img = load_image(s.image).convert("L")
        gt = s.points
        if mirror:
            img = ImageOps.mirror(img)
            gt = flip_points(gt, img.width)
        pts, *_ = pred.predict(*pred.crops(img, [box_from_points(gt)]))
        out.append((pts[0] - gt).mean(0))
    return np.asarray(out)


def main() -> None:
    root = data_root() / "300w"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--runtime", default="torch")
    ap.add_argument("--data", type=Path, nargs="*", default=[root / "afw", root / "helen" / "testset"])
    ap.add_argument("--faces", type=int, default=150, help="faces per folder")
    a = ap.parse_args()
    for flip in (False, True):
        pred = Predictor(make_runtime(a.runtime, a.model, flip=flip))
        for d in a.data:
            samples = find_samples(d)[: a.faces]
            for mirror in (False, True):
                o = offsets(pred, samples, mirror)
                print(f"model {pred.model_id} flip averaging {'on ' if flip else 'off'} {d.name:8} {'mirrored' if mirror else 'photos  '} "
                      f"{len(o)} faces: mean dx {o[:, 0].mean():+.2f} px, dy {o[:, 1].mean():+.2f} px")


if __name__ == "__main__":
    main()
