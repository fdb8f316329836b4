"""The ONNX exports against the torch runtime: accuracy parity on helen/testset and landmark-stage
speed (faces/s at batch 16 by default, flip averaging on, as `autolabel run` predicts).

    python benchmarks/onnx_parity.py [--model model/landmarks.pt] [--write model/reports/onnx_parity.txt]

Faces are cropped from a box made from their ground-truth points (`geometry.box_from_points`, the
`gt` protocol), so the three runtimes see identical crops. Speed: the same `--batch` crops predicted
repeatedly with `--threads` CPU threads; the load average is printed beside it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autolabel.datasets import find_samples  # noqa: E402
from autolabel.geometry import box_from_points  # noqa: E402
from autolabel.images import load_gray  # noqa: E402
from autolabel.metrics import nme  # noqa: E402
from autolabel.predictor import Predictor, crop_faces  # noqa: E402
from autolabel.resources import data_root  # noqa: E402
from autolabel.runtimes import make_runtime  # noqa: E402


def faces_per_s(rt, crops: np.ndarray, seconds: float = 8.0) -> float:
    rt.predict(crops)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        rt.predict(crops)
        n += len(crops)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=data_root() / "300w" / "helen" / "testset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="faces per call in the speed test")
    ap.add_argument("--write", type=Path, default=None, help="also write the report here")
    a = ap.parse_args()
    samples = find_samples(a.data)
    crops, ts = [], []
    for s in samples:
        c, t = crop_faces(load_gray(s.image), [box_from_points(s.points)], 128)
        crops.append(c)
        ts += t
    crops_a, gt = np.concatenate(crops), np.stack([s.points for s in samples])
    names = ("torch", "onnx-fp32", "onnx")
    rts = {n: make_runtime(n, a.model, threads=a.threads) for n in names}
    pts = {n: Predictor(rt).predict(crops_a, ts)[0] for n, rt in rts.items()}
    where = "helen/testset" if a.data.parts[-2:] == ("helen", "testset") else a.data.name
    lines = [f"{len(samples)} faces of {where}, gt-protocol boxes, flip averaging; model {rts['torch'].model_id}",
             f"{'runtime':10} {'NME %':>7} {'vs torch (points)':>18} {'mean dev px':>12} {'max dev px':>11}"]
    ref = nme(pts["torch"], gt).mean()
    for n in names:
        dev = np.linalg.norm(pts[n] - pts["torch"], axis=-1)
        e = nme(pts[n], gt).mean()
        lines.append(f"{n:10} {100 * e:7.3f} {100 * (e - ref):+18.3f} {dev.mean():12.3f} {dev.max():11.2f}")
    batch = crops_a[: a.batch]
    load = os.getloadavg()[0]
    lines.append(f"landmark stage, batch {a.batch}, {a.threads} threads, flip averaging (2 network passes per face), load {load:.1f}:")
    for n in names:
        lines.append(f"  {n:10} {faces_per_s(rts[n], batch):7.0f} faces/s")
    lines.append(f"  (load average {os.getloadavg()[0]:.1f} after; {os.cpu_count()} cores)")
    text = "\n".join(lines)
    print(text)
    if a.write:
        a.write.write_text(text + "\n")


if __name__ == "__main__":
    main()
