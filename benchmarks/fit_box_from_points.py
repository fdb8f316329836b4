"""Fit the landmarks -> HOG-box relation that `geometry.box_from_points` uses (PTS_BOX_DX,
PTS_BOX_DY, PTS_BOX_SIDE): on the 300-W training faces where dlib HOG finds the face, the HOG
box centre relative to the landmark box centre and its side relative to the landmark box's larger
side (medians), and how far the points reach from the HOG box centre (for CROP_SCALE).

    python benchmarks/fit_box_from_points.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autolabel.datasets import detect_boxes, find_samples  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.geometry import points_box  # noqa: E402
from autolabel.resources import data_root  # noqa: E402


def main() -> None:
    root = data_root() / "300w"
    with tempfile.TemporaryDirectory() as tmp:
        samples = detect_boxes(find_samples(root / "afw", root / "helen" / "trainset", root / "lfpw" / "trainset"),
                               make_detector("hog"), cache=Path(tmp) / "boxes.json", progress=False)
    found = [s for s in samples if s.box is not None]
    dx, dy, side, reach = [], [], [], []
    for s in found:
        b = points_box(s.points)
        larger = max(b.width, b.height)
        dx.append((s.box.center[0] - b.center[0]) / larger)
        dy.append((s.box.center[1] - b.center[1]) / larger)
        side.append(s.box.width / larger)
        p = (s.points - np.array(s.box.center)) / s.box.width  # points from the HOG box centre, in box widths
        reach.append([p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()])
    for name, v in (("centre dx / side", dx), ("centre dy / side", dy), ("HOG side / side", side)):
        v = np.asarray(v)
        print(f"{name:18} median {np.median(v):+.3f}  mean {v.mean():+.3f}  sd {v.std():.3f}")
    print("points' reach from the HOG centre in box widths (x min, x max, y min, y max), percentiles 1/50/99:")
    print(np.percentile(np.asarray(reach), [1, 50, 99], axis=0).round(3))
    print(f"{len(found)} of {len(samples)} faces with a HOG box")


if __name__ == "__main__":
    main()
