"""Systematic offset of the model's points: mean (prediction - label) in x and y, in image pixels,
on faces cropped from their ground-truth boxes, on the photos and on the same photos mirrored
(issue 14 item 12). An offset that follows the labels flips sign with the mirror; one the model
makes keeps it. So per face, half the difference (mirrored - photo) in x is the labels' own
offset from what they mark, and half the sum is the model's.

    python benchmarks/x_bias.py [--model M] [--runtime auto] [--flip-off] [--faces 150] [--data DIR ...]

Default: the three training folders (the model's own faces) and helen/testset, flip averaging on
(the default settings); each folder and the training folders pooled.
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
from autolabel.images import load_gray  # noqa: E402
from autolabel.markup import flip_points  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402


def offsets(pred: Predictor, samples, mirror: bool) -> np.ndarray:
    out = []
    for s in samples:
        img = load_gray(s.image)
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
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--flip-off", action="store_true", help="also without flip averaging (torch runtime)")
    ap.add_argument("--data", type=Path, nargs="*",
                    default=[root / "afw", root / "helen" / "trainset", root / "lfpw" / "trainset", root / "helen" / "testset"])
    ap.add_argument("--faces", type=int, default=150, help="faces per folder (every k-th, spread over the folder)")
    a = ap.parse_args()
    for flip in (True, False) if a.flip_off else (True,):
        pred = Predictor(make_runtime(a.runtime if flip else "torch", a.model, flip=flip))
        pooled = []
        for d in a.data:
            found = find_samples(d)
            samples = found[:: max(1, len(found) // a.faces)][: a.faces]
            photo, mirrored = offsets(pred, samples, False), offsets(pred, samples, True)
            if "testset" not in str(d):
                pooled.append((photo, mirrored))
            name = d.relative_to(root) if d.is_relative_to(root) else d
            own_labels, own_model = (mirrored - photo)[:, 0].mean() / 2, (mirrored + photo)[:, 0].mean() / 2
            print(f"model {pred.model_id} ({pred.runtime.name}), flip averaging {'on ' if flip else 'off'}: "
                  f"{str(name):15} {len(photo)} faces: photos dx {photo[:, 0].mean():+.2f} dy {photo[:, 1].mean():+.2f} px; "
                  f"mirrored dx {mirrored[:, 0].mean():+.2f} px; labels' own x offset {own_labels:+.2f} px, "
                  f"the model's {own_model:+.2f} px")
        if pooled:
            photo = np.concatenate([p for p, _ in pooled])
            dx, dy = photo.mean(0)
            print(f"  training folders pooled ({len(photo)} faces): photos dx {dx:+.3f} px, dy {dy:+.3f} px")


if __name__ == "__main__":
    main()
