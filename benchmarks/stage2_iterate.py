"""Does a second stage gain from running again on the crop its own points place? The first
stage, then the second stage twice, every combination of flip averaging in the two second-stage
passes; on the validation split (10 % of the training faces by file-name hash) and helen/testset,
det protocol (HOG boxes), int8 ONNX.

    python benchmarks/stage2_iterate.py [--first model/landmarks.pt] [--first-flip] [--stage2 model/landmarks.stage2.pt]

Prints the NME after the second pass (p2), after the third (p3) and of their mean, and the
Spearman / worst-10 %-share of confidence candidates for p3 (c2, c3: the passes' own scores;
m12, m23: how far each pass moved the points, over the eye-corner distance).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolabel.datasets import detect_boxes, find_samples, sample_box, split_by_name  # noqa: E402
from autolabel.detectors import make_detector  # noqa: E402
from autolabel.images import load_gray  # noqa: E402
from autolabel.metrics import confidence_quality, nme  # noqa: E402
from autolabel.predictor import Predictor  # noqa: E402
from autolabel.resources import data_root, shipped_model  # noqa: E402
from autolabel.runtimes import make_runtime, stage2_path  # noqa: E402
from stage2_eval import TEST, TRAIN, moved  # noqa: E402  (the same splits and the same distance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", type=Path, default=None, help="the first stage (default: the shipped model)")
    ap.add_argument("--first-flip", action="store_true", help="flip-average the first stage")
    ap.add_argument("--stage2", type=Path, default=None, help="default: the shipped model's second stage")
    a = ap.parse_args()
    root, det = data_root(), make_detector("hog")
    second = {f: make_runtime("onnx", a.stage2 or stage2_path(shipped_model()), flip=f) for f in (True, False)}
    pred = Predictor(make_runtime("onnx", a.first, flip=a.first_flip), refine=True, stage2=second[True])
    _, val = split_by_name(find_samples(*[root / p for p in TRAIN]), 0.1)
    sets = {"val": detect_boxes(val, det, None, False), "test": detect_boxes(find_samples(*[root / p for p in TEST]), det, None, False)}
    print(f"first stage {pred.runtime.model_id}{' flip' if a.first_flip else ''}, second {pred.stage2.model_id}")
    for name, samples in sets.items():
        keep = [s for s in samples if sample_box(s, "det") is not None]
        grays = [load_gray(s.image) for s in keep]
        gt = np.stack([s.points for s in keep])
        cuts = [pred.crops(g, [sample_box(s, "det")]) for g, s in zip(grays, keep)]
        p1, _, _ = pred.predict(np.concatenate([c for c, _ in cuts]), [t for _, ts in cuts for t in ts])

        def again(points, runtime):
            cs = [pred.recrop(g, p[None]) for g, p in zip(grays, points)]
            return pred.predict(np.concatenate([c for c, _ in cs]), [t for _, ts in cs for t in ts], runtime)

        for f2 in (True, False):
            p2, c2, _ = again(p1, second[f2])
            for f3 in (True, False):
                p3, c3, _ = again(p2, second[f3])
                e2, e3 = nme(p2, gt), nme(p3, gt)
                scores = {"c2 + m12/2": c2 + moved(p1, p2) / 2, "c3": c3, "c3 + m23/2": c3 + moved(p2, p3) / 2,
                          "c3 + m23": c3 + moved(p2, p3), "(c2 + c3)/2 + m23": (c2 + c3) / 2 + moved(p2, p3)}
                qs = {k: confidence_quality(v, e3) for k, v in scores.items()}
                print(f"{name} ({len(keep)}): stage 2{' flip' if f2 else ''} -> stage 2{' flip' if f3 else ''}: "
                      f"NME p2 {100 * e2.mean():.2f} p3 {100 * e3.mean():.2f} mean {100 * nme((p2 + p3) / 2, gt).mean():.2f} | "
                      + "  ".join(f"{k}: {q['spearman']:.3f}/{100 * q['worst_in_top']:.0f}%" for k, q in qs.items()), flush=True)


if __name__ == "__main__":
    main()
