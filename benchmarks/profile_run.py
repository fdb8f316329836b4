"""Where `autolabel run`'s CPU goes, stage by stage, in one process on the run-speed set
(photos + helen/testset): decode, grayscale, detection, crops, the landmark model (batch 32 on
one thread, as `run` gives its inference one core beside the detecting workers).

    python benchmarks/profile_run.py [--runtime onnx|torch] [FOLDER ...]

CPU-seconds of this process (time.process_time); bench_run.py measures the whole command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import discover, load_image  # noqa: E402
from autolabel.predictor import Predictor, crop_faces  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402
from autolabel.types import ImageError  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("folders", nargs="*", type=Path)
    a = ap.parse_args()
    root = data_root()
    folders = a.folders or [root / "photos", root / "300w" / "helen" / "testset"]
    clock = time.process_time
    t = clock()
    det = make_detector("hog")
    pred = Predictor(make_runtime(a.runtime, None, flip=True, threads=1))
    cpu = {"load detector + model": clock() - t, "decode": 0.0, "grayscale": 0.0, "detect": 0.0, "crop": 0.0, "model": 0.0}
    files = [f for _, f in discover(folders)]
    crops = []
    for f in files:
        t = clock()
        try:
            img = load_image(f)
        except ImageError:
            continue
        cpu["decode"] += clock() - t
        t = clock()
        gray = img.convert("L")
        arr = np.asarray(gray)
        cpu["grayscale"] += clock() - t
        t = clock()
        boxes = det.detect(arr)
        cpu["detect"] += clock() - t
        t = clock()
        c, _ = crop_faces(gray, boxes, pred.size)
        cpu["crop"] += clock() - t
        crops.extend(c)
    t = clock()
    for i in range(0, len(crops), 32):
        pred.runtime.predict(np.stack(crops[i : i + 32]))
    cpu["model"] = clock() - t
    print(f"{len(files)} files, {len(crops)} faces, runtime {pred.runtime.name}, flip averaging")
    for k, v in cpu.items():
        print(f"  {k:22} {v:6.2f} CPU-s")
    print(f"  {'total':22} {sum(cpu.values()):6.2f} CPU-s")


if __name__ == "__main__":
    main()
