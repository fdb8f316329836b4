"""The landmark stage's speed at the default settings: faces/s from decoded grey images and
detector boxes to points, one stage (crop + network with flip averaging) and two stages (the
default: + the aligned crop and the second stage's network), batches 16 and 32; and the same
without flip averaging (`--no-flip`: one network pass per stage).

    python benchmarks/bench_landmark_stage.py [--model M.pt] [--runtime onnx] [--threads 2] [--no-flip-rows]

Decoding and detection are not counted (they are the same for both; bench_run.py times the whole
command). 64 helen/testset faces, HOG boxes, decoded once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import detect_boxes, find_samples  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import load_gray  # noqa: E402
from autolabel.predictor import make_predictor  # noqa: E402
from autolabel.resources import data_root  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="the first stage's model file (default: the shipped one); its second stage lies beside it")
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--no-flip-rows", action="store_true", help="skip the --no-flip rows")
    a = ap.parse_args()
    samples = detect_boxes(find_samples(data_root() / "300w" / "helen" / "testset")[:80], make_detector("hog"), progress=False)
    faces = [(load_gray(s.image), s.box) for s in samples if s.box is not None][:64]
    print(f"{len(faces)} faces, runtime {a.runtime}, {a.threads} threads, load average {os.getloadavg()[0]:.2f}")
    for flip, refine in [(True, False), (True, True)] + ([] if a.no_flip_rows else [(False, False), (False, True)]):
        pred = make_predictor(a.runtime, a.model, threads=a.threads, refine=refine, flip=flip)
        rates = []
        for batch in (16, 32):
            def once():
                for i in range(0, len(faces), batch):
                    chunk = faces[i : i + batch]
                    cuts = [pred.crops(g, [b]) for g, b in chunk]
                    found = pred.predict(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])
                    if refine:
                        pred.second_pass([g for g, _ in chunk], *found)
            once()
            t = time.perf_counter()
            for _ in range(a.reps):
                once()
            rates.append(a.reps * len(faces) / (time.perf_counter() - t))
        name = f"{'two stages' if refine else 'one stage'}{'' if flip else ', --no-flip'} ({pred.runtime.name}, {pred.model_id})"
        print(f"  {name:62} batch 16: {rates[0]:6.1f} faces/s   batch 32: {rates[1]:6.1f} faces/s")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
