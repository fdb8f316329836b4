"""`autolabel run` against a dlib-only baseline on the same photos, plus memory vs input size.

    python benchmarks/bench_run.py [--repeat 10] [--model PATH]

Baseline: one process, dlib HOG (upsample=1, full resolution, as dlib's examples do) and dlib's
68-point shape predictor on every face. autolabel: the CLI as a user runs it (default settings,
workers = cores), timed wall-clock including start-up. The growth run labels `--repeat` copies
of the same inputs (folders of per-file symbolic links). Peak memory is the largest sum of RSS
over the whole process tree (sampled every 50 ms). Prints a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autolabel.resources import data_root  # noqa: E402
from autolabel.images import discover, load_image  # noqa: E402


def tree_rss(pid: int) -> int:
    """Sum of RSS (bytes) of `pid` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run_measured(cmd: list[str]) -> tuple[float, int, subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree_rss(p.pid))
        time.sleep(0.05)
    out, err = p.communicate()
    return time.perf_counter() - t, peak, subprocess.CompletedProcess(cmd, p.returncode, out, err)


def baseline(files: list[Path]) -> dict:
    import dlib

    from autolabel.detectors.dlib_detectors import model_file

    t = time.perf_counter()
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    faces = 0
    for f in files:
        try:
            img = np.asarray(load_image(f).convert("RGB"))
        except Exception:  # noqa: BLE001
            continue
        for r in det(img, 1):
            sp(img, r)
            faces += 1
    dt = time.perf_counter() - t
    return {"images": len(files), "faces": faces, "seconds": dt, "images_per_s": len(files) / dt}


def autolabel_run(inputs: list[Path], out: Path, model: str | None) -> dict:
    cmd = [sys.executable, "-m", "autolabel", "run", *map(str, inputs), "--out", str(out), "--overwrite", "--quiet"]
    if model:
        cmd += ["--model", model]
    dt, peak, p = run_measured(cmd)
    import pandas as pd

    df = pd.read_parquet(out, columns=["image", "status"])
    n_img = df.image.nunique()
    return {"images": int(n_img), "faces": int((df.status == "ok").sum()), "seconds": dt, "images_per_s": n_img / dt,
            "peak_rss_mb": peak / 2**20, "returncode": p.returncode, "summary": p.stderr.strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10, help="input copies for the memory-growth run")
    ap.add_argument("--model", default=None)
    ap.add_argument("--skip-growth", action="store_true")
    a = ap.parse_args()
    root = data_root()
    inputs = [root / "photos", root / "300w" / "helen" / "testset"]
    files = [f for _, f in discover(inputs)]
    res: dict = {"inputs": [str(i) for i in inputs], "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res["autolabel"] = autolabel_run(inputs, tmp / "a.parquet", a.model)
        res["baseline"] = baseline(files)
        res["speedup"] = res["autolabel"]["images_per_s"] / res["baseline"]["images_per_s"]
        res["face_ratio"] = res["autolabel"]["faces"] / max(res["baseline"]["faces"], 1)
        if not a.skip_growth:
            # real folders of per-file links: linked folders would be walked once (loop guard)
            big = tmp / "big"
            for k in range(a.repeat):
                for root, f in discover(inputs):
                    dest = big / f"copy{k}" / root.name / f.relative_to(root)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(f, dest)
            res["autolabel_x%d" % a.repeat] = autolabel_run([big], tmp / "b.parquet", a.model)
    b, al = res["baseline"], res["autolabel"]
    print(f"{'':22} {'images':>7} {'faces':>6} {'seconds':>8} {'img/s':>7} {'peak MB':>8}")
    print(f"{'dlib baseline (1 proc)':22} {b['images']:7d} {b['faces']:6d} {b['seconds']:8.1f} {b['images_per_s']:7.2f} {'':>8}")
    print(f"{'autolabel run':22} {al['images']:7d} {al['faces']:6d} {al['seconds']:8.1f} {al['images_per_s']:7.2f} {al['peak_rss_mb']:8.0f}")
    key = "autolabel_x%d" % a.repeat
    if key in res:
        g = res[key]
        print(f"{'autolabel run x' + str(a.repeat):22} {g['images']:7d} {g['faces']:6d} {g['seconds']:8.1f} {g['images_per_s']:7.2f} {g['peak_rss_mb']:8.0f}")
    print(f"speed-up {res['speedup']:.2f}x, faces found {100 * res['face_ratio']:.1f}% of the baseline's")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
