"""Detector speed/recall trade-off: dlib HOG at several upsample / max-side settings on the
benchmark photos (one process). Prints faces found and ms per image for each setting."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autolabel.resources import data_root  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import discover, load_image  # noqa: E402


def main(limit: int = 0) -> None:
    root = data_root()
    files = [f for _, f in discover([root / "photos", root / "300w" / "helen" / "testset"])]
    if limit:
        files = files[:: max(1, len(files) // limit)]
    imgs = [np.asarray(load_image(f).convert("L")) for f in files]
    print(f"{len(imgs)} images; sizes {min(max(i.shape) for i in imgs)}-{max(max(i.shape) for i in imgs)} px")
    for up, ms in [(1, 0), (1, 1024), (0, 0), ("auto", 0), ("auto", 1024)]:
        d = make_detector("hog", upsample=up, max_side=ms)
        t = time.perf_counter()
        n = sum(len(d.detect(im)) for im in imgs)
        dt = time.perf_counter() - t
        print(f"upsample={up} max_side={ms or 'full'}: {n} faces, {1000 * dt / len(imgs):.1f} ms/image")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
