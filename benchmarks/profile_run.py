"""Where `autolabel run`'s CPU goes, stage by stage, in one process on the run-speed set
(photos + helen/testset), at the default settings: decode (a colour JPEG straight to grey),
detection, crops, the first stage's network, the second decode of each image with faces, the
aligned crops and the second stage's network (batches of 32 on one thread, as `run` gives its
inference one core beside the detecting workers).

    python benchmarks/profile_run.py [--runtime onnx|torch] [--no-flip] [--no-refine] [FOLDER ...]

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
from autolabel.images import discover, load_gray  # noqa: E402
from autolabel.predictor import crop_faces, make_predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.types import ImageError  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--no-refine", action="store_true")
    ap.add_argument("folders", nargs="*", type=Path)
    a = ap.parse_args()
    root = data_root()
    folders = a.folders or [root / "photos", root / "300w" / "helen" / "testset"]
    clock = time.process_time
    t = clock()
    det = make_detector("hog")
    pred = make_predictor(a.runtime, None, flip=not a.no_flip, threads=1, refine=not a.no_refine)
    cpu = {"load detector + models": clock() - t, "decode": 0.0, "detect": 0.0, "crop": 0.0, "first stage": 0.0}
    files = [f for _, f in discover(folders)]
    crops, ts, found = [], [], []
    for f in files:
        t = clock()
        try:
            gray = load_gray(f)
        except ImageError:
            continue
        cpu["decode"] += clock() - t
        t = clock()
        boxes = det.detect(np.asarray(gray))
        cpu["detect"] += clock() - t
        t = clock()
        c, tf = crop_faces(gray, boxes, pred.size)
        cpu["crop"] += clock() - t
        crops.extend(c)
        ts.extend(tf)
        found.append((f, len(boxes)))
    t = clock()
    points = [pred.predict(np.stack(crops[i : i + 32]), ts[i : i + 32])[0] for i in range(0, len(crops), 32)]
    points = np.concatenate(points) if points else np.zeros((0, 68, 2), np.float32)
    cpu["first stage"] = clock() - t
    if pred.refine:
        cpu.update({"decode again": 0.0, "aligned crops": 0.0})
        again, k = [], 0
        for f, n in found:
            if n:
                t = clock()
                gray = load_gray(f)
                cpu["decode again"] += clock() - t
                t = clock()
                again.append(pred.recrop(gray, points[k : k + n]))
                cpu["aligned crops"] += clock() - t
            k += n
        c2 = np.concatenate([c for c, _ in again]) if again else np.zeros((0, 1, 1), np.uint8)
        t2 = [tr for _, trs in again for tr in trs]
        t = clock()
        for i in range(0, len(c2), 32):
            pred.predict_again(c2[i : i + 32], t2[i : i + 32])
        cpu["second stage"] = clock() - t
    print(f"{len(files)} files, {len(crops)} faces, runtime {pred.runtime.name}, model {pred.model_id}, "
          f"{'no flip' if a.no_flip else 'flip averaging'}")
    for k, v in cpu.items():
        print(f"  {k:24} {v:6.2f} CPU-s")
    print(f"  {'total':24} {sum(cpu.values()):6.2f} CPU-s")


if __name__ == "__main__":
    main()
