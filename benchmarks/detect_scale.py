"""Detector speed/recall trade-off: dlib HOG at several upsample / max-side settings on the
benchmark photos (one process), upsample="auto" with and without its first, half-scale scan,
then the threshold of its own-scale -> 2x-upsampled step (AUTO_SMALL: rescan 2x upsampled when
the smallest face found is smaller) swept from the two scans of each image. Prints faces found
and CPU cost for each setting.

    python benchmarks/detect_scale.py [--limit N] [FOLDER ...]   (default: photos + helen/testset)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.detectors.dlib_detectors import AUTO_SMALL  # noqa: E402
from autolabel.images import discover, load_gray  # noqa: E402
from autolabel.resources import data_root  # noqa: E402


def rescan_sweep(imgs: list[np.ndarray], thresholds=(0, 100, 120, 140, 160)) -> None:
    """Faces and CPU-seconds of the own-scale -> 2x-upsampled step of upsample="auto" at each
    rescan threshold (max_side 1024; the rule before the half-scale scan came first)."""
    one, two = make_detector("hog", upsample=0), make_detector("hog", upsample=1)
    scans = []
    for im in imgs:
        t = time.process_time()
        b0 = one.detect(im)
        c0 = time.process_time() - t
        t = time.process_time()
        b1 = two.detect(im)
        scans.append((b0, b1, c0, time.process_time() - t))
    for th in thresholds:
        faces, cpu, rescans = 0, 0.0, 0
        for im, (b0, b1, c0, c1) in zip(imgs, scans):
            # detect() reports boxes in image pixels; the rule reads them at detection scale
            scale = min(1.0, one.max_side / max(im.shape))
            again = not b0 or min(min(b.width, b.height) for b in b0) * scale < th
            faces += len(b1 if again else b0)
            cpu += c0 + (c1 if again else 0.0)
            rescans += again
        mark = "  <- AUTO_SMALL" if th == AUTO_SMALL else ""
        print(f"auto, rescan below {th:3d} px: {rescans:4d}/{len(imgs)} rescanned, {faces} faces, {cpu:.1f} CPU-s{mark}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="every k-th image, about this many")
    ap.add_argument("folders", nargs="*", type=Path)
    a = ap.parse_args()
    root = data_root()
    folders = a.folders or [root / "photos", root / "300w" / "helen" / "testset"]
    files = [f for _, f in discover(folders)]
    if a.limit:
        files = files[:: max(1, len(files) // a.limit)]
    imgs = []
    for f in files:
        try:
            imgs.append(np.asarray(load_gray(f)))
        except Exception:  # noqa: BLE001 - a benchmark over whatever decodes
            continue
    print(f"{len(imgs)} images; sizes {min(max(i.shape) for i in imgs)}-{max(max(i.shape) for i in imgs)} px")
    for up, ms, scales in [(1, 0, None), (1, 1024, None), (0, 0, None), ("auto", 0, None), ("auto", 1024, (1.0, 2.0)),
                           ("auto", 1024, None)]:
        d = make_detector("hog", upsample=up, max_side=ms)
        if scales:
            d.auto_scales = scales
        t = time.process_time()
        n = sum(len(d.detect(im)) for im in imgs)
        dt = time.process_time() - t
        rule = f" scales={list(d.auto_scales)}" if up == "auto" else ""
        print(f"upsample={up}{rule} max_side={ms or 'full'}: {n} faces, {dt:.2f} CPU-s, {1000 * dt / len(imgs):.1f} ms/image")
    rescan_sweep(imgs)


if __name__ == "__main__":
    main()
