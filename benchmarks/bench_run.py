"""`autolabel run` against dlib-only pipelines on the same photos: wall time, CPU-seconds, peak
memory, and memory when the input grows 10x.

    python benchmarks/bench_run.py [--repeat 10] [--model PATH] [--runtime onnx] [--no-refine] [--no-flip] [--skip-growth]

Peers: dlib HOG (upsample=1, full resolution, as dlib's examples do) and dlib's 68-point shape
predictor on every face, in one process and in two processes (the fair peer on 2 cores: what a
user's own multiprocessing script gets). autolabel: the CLI as a user runs it (default settings,
workers = cores). Every contender runs as a child process, timed from launch to exit, so start-up
counts; CPU-seconds = user + system time of the process and all its children (getrusage).
Peak memory is the largest sum of RSS over the whole process tree (sampled every 50 ms). The
growth run labels `--repeat` copies of the inputs (real copies: `run` labels each file once
however many links reach it, so links would not grow the input). The load
average is printed beside the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autolabel.images import discover, load_image  # noqa: E402
from autolabel.resources import data_root  # noqa: E402


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


def run_measured(cmd: list[str]) -> dict:
    """Run `cmd`; wall seconds, CPU-seconds (it and its children), peak tree RSS, output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while p.poll() is None:
        peak = max(peak, tree_rss(p.pid))
        time.sleep(0.05)
    out, err = p.communicate()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err[-2000:]}")
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak / 2**20, "stdout": out, "stderr": err}


# ------------------------------------------------------------------ the dlib-only peers (child processes)
_P: dict = {}


def _peer_init() -> None:
    import dlib

    from autolabel.detectors.dlib_detectors import model_file

    _P["det"] = dlib.get_frontal_face_detector()
    _P["sp"] = dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))


def _peer_one(f: Path) -> int:
    import numpy as np

    try:
        img = np.asarray(load_image(f).convert("RGB"))
    except Exception:  # noqa: BLE001
        return 0
    rects = _P["det"](img, 1)
    for r in rects:
        _P["sp"](img, r)
    return len(rects)


def dlib_peer(inputs: list[str], procs: int) -> None:
    """The dlib pipeline in `procs` processes; prints {"images", "faces"} as JSON."""
    files = [f for _, f in discover([Path(i) for i in inputs])]
    if procs <= 1:
        _peer_init()
        faces = sum(map(_peer_one, files))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(procs, initializer=_peer_init) as pool:
            faces = sum(pool.imap(_peer_one, files, chunksize=4))
    print(json.dumps({"images": len(files), "faces": faces}))


def peer(inputs: list[Path], procs: int) -> dict:
    r = run_measured([sys.executable, __file__, "--peer", str(procs), *map(str, inputs)])
    res = json.loads(r.pop("stdout").strip().splitlines()[-1])
    r.pop("stderr")
    return {**res, **r, "images_per_s": res["images"] / r["seconds"], "images_per_cpu_s": res["images"] / r["cpu_seconds"]}


def autolabel_run(inputs: list[Path], out: Path, model: str | None, runtime: str | None, extra: list[str] = ()) -> dict:
    cmd = [sys.executable, "-m", "autolabel", "run", *map(str, inputs), "--out", str(out), "--overwrite", "--quiet", *extra]
    if model:
        cmd += ["--model", model]
    if runtime:
        cmd += ["--runtime", runtime]
    r = run_measured(cmd)
    import pyarrow.parquet as pq

    t = pq.read_table(out, columns=["image", "status"]).to_pydict()
    n_img = len(set(t["image"]))
    return {"images": n_img, "faces": sum(s == "ok" for s in t["status"]), "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
            "images_per_s": n_img / r["seconds"], "images_per_cpu_s": n_img / r["cpu_seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "summary": r["stderr"].strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10, help="input copies for the memory-growth run")
    ap.add_argument("--model", default=None)
    ap.add_argument("--runtime", default=None, help="autolabel's --runtime (default: its own default)")
    ap.add_argument("--no-refine", action="store_true", help="autolabel run --no-refine (one stage; default: two)")
    ap.add_argument("--no-flip", action="store_true", help="autolabel run --no-flip (one network pass per stage)")
    ap.add_argument("--skip-growth", action="store_true")
    ap.add_argument("--peer", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        return dlib_peer(a.inputs, a.peer)
    root = data_root()
    inputs = [root / "photos", root / "300w" / "helen" / "testset"]
    extra = [f for f, on in (("--no-refine", a.no_refine), ("--no-flip", a.no_flip)) if on]
    res: dict = {"inputs": [str(i) for i in inputs], "cores": os.cpu_count(), "load_before": os.getloadavg()[0], "autolabel_args": extra}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        res["autolabel"] = autolabel_run(inputs, tmp / "a.parquet", a.model, a.runtime, extra)
        res["dlib_1proc"] = peer(inputs, 1)
        res["dlib_2proc"] = peer(inputs, 2)
        if not a.skip_growth:
            # real copies: links resolve to one file, which run labels once
            big = tmp / "big"
            for k in range(a.repeat):
                for r, f in discover(inputs):
                    dest = big / f"copy{k}" / r.name / f.relative_to(r)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dest)
            res[f"autolabel_x{a.repeat}"] = autolabel_run([big], tmp / "b.parquet", a.model, a.runtime, extra)
    res["load_after"] = os.getloadavg()[0]
    al, b1, b2 = res["autolabel"], res["dlib_1proc"], res["dlib_2proc"]
    rows = [("dlib, 1 process", b1), ("dlib, 2 processes", b2), (" ".join(["autolabel run", *extra]), al)]
    if f"autolabel_x{a.repeat}" in res:
        rows.append((f"autolabel run x{a.repeat}", res[f"autolabel_x{a.repeat}"]))
    print(f"{'':36} {'images':>7} {'faces':>6} {'wall s':>7} {'CPU s':>7} {'img/s':>7} {'img/CPU-s':>9} {'peak MB':>8}")
    for name, r in rows:
        print(f"{name:36} {r['images']:7d} {r['faces']:6d} {r['seconds']:7.1f} {r['cpu_seconds']:7.1f} {r['images_per_s']:7.2f} "
              f"{r['images_per_cpu_s']:9.2f} {r['peak_rss_mb']:8.0f}")
    for name, b in (("1-process", b1), ("2-process", b2)):
        print(f"vs dlib {name}: {al['images_per_s'] / b['images_per_s']:.2f}x wall, {al['images_per_cpu_s'] / b['images_per_cpu_s']:.2f}x "
              f"images per CPU-second, faces {100 * al['faces'] / max(b['faces'], 1):.1f}% of its")
    print(f"load average {res['load_before']:.1f} before, {res['load_after']:.1f} after ({res['cores']} cores)")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
