"""`autolabel run` with the local engine vs `--engine ray` on a one-node and a two-node Ray cluster
(both on this machine), and the input size past which a cluster pays off.

    python benchmarks/bench_ray.py [--small 40] [--cpus 3]

Every configuration runs the CLI as a user does (wall clock, start-up included) on
../shared/data/photos + 300w/helen/testset, and again on its first `--small` images. Two sizes give
T(n) = T0 + c·n per configuration: T0 is the fixed start-up cost, c the seconds per image; Ray's
overhead per image is c_ray - c_local. The clusters are started with `ray start --block` before the timed
command (their own start-up is reported apart: on a real cluster it is paid once, not per run):
one node with `--cpus` logical CPUs, or a head with `--cpus` - 1 and a second node with 1 (the
same total, on the same two cores: this measures Ray's overhead, not a speed-up). `--cpus 3`
mirrors the local engine, which runs 2 detecting workers beside the inference thread.

Peak memory is the driver's own RSS (the CLI process; Ray's processes belong to the cluster) and,
for the local engine, its whole process tree. Model: N machines like this one beat one local
run when n > (T0_ray - T0_local) / (c_local - c_ray / N). Prints a table and JSON.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_run import tree_rss  # noqa: E402

from autolabel.images import discover  # noqa: E402
from autolabel.resources import data_root  # noqa: E402

RAY = str(Path(sys.executable).with_name("ray"))  # the ray CLI beside this Python
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}


def own_rss(pid: int) -> int:
    """RSS (bytes) of `pid` alone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def timed_run(inputs: list[Path], out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "autolabel", "run", *map(str, inputs), "--out", str(out), "--overwrite", "--quiet", *extra]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_driver = peak_tree = 0
    while p.poll() is None:
        peak_driver = max(peak_driver, own_rss(p.pid))
        peak_tree = max(peak_tree, tree_rss(p.pid))
        time.sleep(0.05)
    _, err = p.communicate()
    dt = time.perf_counter() - t
    import pandas as pd

    df = pd.read_parquet(out, columns=["image", "status"])
    n = int(df.image.nunique())
    return {"images": n, "faces": int((df.status == "ok").sum()), "seconds": dt, "images_per_s": n / dt,
            "driver_peak_mb": peak_driver / 2**20, "tree_peak_mb": peak_tree / 2**20, "returncode": p.returncode,
            "summary": next((line for line in err.splitlines() if " images (" in line), err.strip()[-300:])}


def start_cluster(nodes: int, cpus: int, port: int) -> tuple[float, list[subprocess.Popen]]:
    """`ray start --block` a head (and a second node) on this machine: (seconds it took, the
    processes; terminating them stops those nodes and nothing else on the machine)."""
    t = time.perf_counter()
    procs = []
    for k in range(nodes):
        where = ["--head", f"--port={port}", "--include-dashboard=false"] if k == 0 else [f"--address=127.0.0.1:{port}"]
        n_cpus = cpus if nodes == 1 else (cpus - 1 if k == 0 else 1)
        p = subprocess.Popen([RAY, "start", "--block", *where, f"--num-cpus={n_cpus}", "--disable-usage-stats"], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        for line in p.stdout:  # it prints this once the node is up, then blocks
            if "Ray runtime started" in line:
                break
        else:
            raise RuntimeError(f"ray start failed (exit {p.wait()})")
    return time.perf_counter() - t, procs


def stop_cluster(procs: list[subprocess.Popen]) -> float:
    t = time.perf_counter()
    for p in reversed(procs):
        p.terminate()
        p.wait(timeout=120)
    return time.perf_counter() - t


def fit(small: dict, full: dict) -> tuple[float, float]:
    """(T0 seconds, c seconds per image) of T(n) = T0 + c n through two runs."""
    c = (full["seconds"] - small["seconds"]) / max(full["images"] - small["images"], 1)
    return full["seconds"] - c * full["images"], c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=40, help="images in the small run")
    ap.add_argument("--cpus", type=int, default=3, help="logical CPUs Ray is told about (all nodes together)")
    ap.add_argument("--port", type=int, default=6391)
    a = ap.parse_args()
    root = data_root()
    inputs = [root / "photos", root / "300w" / "helen" / "testset"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small = tmp / "small"
        for i, (_, f) in enumerate(discover(inputs)):
            if i >= a.small:
                break
            (small / f"{i:03d}").mkdir(parents=True)
            os.symlink(f, small / f"{i:03d}" / f.name)
        sets = {"small": [small], "full": inputs}
        res: dict = {"inputs": [str(i) for i in inputs], "cores": os.cpu_count(), "logical_cpus": a.cpus,
                     "load_before": os.getloadavg()}
        configs = {"local": None, "ray 1 node": 1, "ray 2 nodes": 2}
        for name, nodes in configs.items():
            r: dict = {}
            procs: list[subprocess.Popen] = []
            try:
                extra: list[str] = []
                if nodes:
                    r["cluster_start_s"], procs = start_cluster(nodes, a.cpus, a.port)
                    extra = ["--engine", "ray", "--address", f"127.0.0.1:{a.port}"]
                for size, paths in sets.items():
                    r[size] = timed_run(paths, tmp / f"{name.replace(' ', '_')}-{size}.parquet", extra)
                    print(name, size, json.dumps(r[size]), flush=True)
            finally:
                if procs:
                    r["cluster_stop_s"] = stop_cluster(procs)
            r["T0_s"], r["s_per_image"] = fit(r["small"], r["full"])
            res[name] = r
        res["load_after"] = os.getloadavg()
    loc = res["local"]
    print(f"\n{'':14} {'images':>6} {'faces':>6} {'seconds':>8} {'img/s':>6} {'driver MB':>9} {'tree MB':>8} "
          f"{'T0 s':>6} {'ms/img':>7} {'cluster up s':>12}")
    for name in configs:
        r, f = res[name], res[name]["full"]
        print(f"{name:14} {f['images']:6d} {f['faces']:6d} {f['seconds']:8.1f} {f['images_per_s']:6.2f} "
              f"{f['driver_peak_mb']:9.0f} {f['tree_peak_mb']:8.0f} {r['T0_s']:6.1f} {1000 * r['s_per_image']:7.0f} "
              f"{r.get('cluster_start_s', 0):12.1f}")
    ray1 = res["ray 1 node"]
    extra_t0 = ray1["T0_s"] - loc["T0_s"]
    res["ray_fixed_cost_s"] = extra_t0
    res["ray_overhead_ms_per_image"] = 1000 * (ray1["s_per_image"] - loc["s_per_image"])
    print(f"Ray's fixed cost over local: {extra_t0:.1f} s per run (+ {ray1.get('cluster_start_s', 0):.1f} s to start the "
          f"cluster once); overhead {res['ray_overhead_ms_per_image']:.0f} ms per image")
    res["break_even_images"] = {}
    for n_machines in (2, 4, 8, 16):
        gain = loc["s_per_image"] - ray1["s_per_image"] / n_machines
        n_star = extra_t0 / gain if gain > 0 else float("inf")
        res["break_even_images"][n_machines] = n_star
        print(f"  {n_machines:2d} machines beat one local run past ~{n_star:.0f} images")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
