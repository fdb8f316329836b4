"""The finetune demonstration with figures: N helen/testset faces as corrections (their ground
truth), the other faces aside as the reference; times the whole `finetune` call.

    python benchmarks/bench_finetune.py [--corrections 150] [--epochs 15] [--no-refine]

Both stages are finetuned and scored (the shipped model has a second stage); `--no-refine`: the
first stage alone, scored alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from autolabel.resources import data_root
    from autolabel.training.augment import AugmentConfig
    from autolabel.training.finetune import finetune, table

    ap = argparse.ArgumentParser()
    ap.add_argument("--corrections", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lr", type=float, default=1.5e-4)
    ap.add_argument("--replay-ratio", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--full-augment", action="store_true", help="the training recipe's augmentation, not the finetune default")
    ap.add_argument("--no-refine", action="store_true", help="finetune (and score) the first stage only")
    a = ap.parse_args()
    root = data_root() / "300w"
    faces = sorted((root / "helen" / "testset").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, part in (("corr", faces[: a.corrections]), ("aside", faces[a.corrections :])):
            (tmp / name).mkdir()
            for f in part:
                os.symlink(f, tmp / name / f.name)
                os.symlink(f.with_suffix(".pts"), tmp / name / f.with_suffix(".pts").name)
        t = time.perf_counter()
        lin = finetune(tmp / "corr", tmp / "ft", replay=[root / "afw", root / "helen" / "trainset", root / "lfpw" / "trainset"],
                       eval_data=[tmp / "aside"], epochs=a.epochs, lr=a.lr, replay_ratio=a.replay_ratio, repeat=a.repeat,
                       augment=AugmentConfig() if a.full_augment else None, progress=False, refine=not a.no_refine).lineage
        dt = time.perf_counter() - t
    print(f"{a.corrections} corrections ({lin.corrections_used} used, {lin.corrections_held_out} held out), "
          f"{lin.replay_faces} replayed, {a.epochs} epochs, lr {a.lr}, repeat {a.repeat}, "
          f"{'full' if a.full_augment else 'finetune'} augmentation, {'first stage only' if a.no_refine else 'both stages'}: {dt:.0f} s")
    print(table(lin))
    print(json.dumps({k: getattr(lin, k) for k in ("before", "after", "usable")}))


if __name__ == "__main__":
    main()
