"""Review server speed: opening a 100,000-face labels file and moving to the next face
(server time of the calls the browser makes), on a synthetic file pointing at a real image.

    python benchmarks/bench_review.py [--faces 100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from autolabel.formats.corrections import CorrectionStore
    from autolabel.formats.parquet import SCHEMA
    from autolabel.resources import data_root
    from autolabel.review.queue import Queue
    from autolabel.review.session import ReviewSession, StateWriter

    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=100_000)
    a = ap.parse_args()
    n = a.faces
    imgs = sorted((data_root() / "photos" / "portraits").glob("*.jpg"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pts = rng.uniform(0, 400, (n, 136)).astype(np.float32)
        cols = {
            "image": [f"folder{i // 1000:03d}/img{i}.jpg" for i in range(n)], "abs_path": [str(imgs[i % len(imgs)]) for i in range(n)],
            "file_size": pa.array(np.ones(n, np.int64)), "file_mtime_ns": pa.array(np.ones(n, np.int64)),
            "width": pa.array(np.full(n, 500, np.int32)), "height": pa.array(np.full(n, 500, np.int32)),
            "status": ["ok"] * n, "error": pa.nulls(n, pa.string()), "face_index": pa.array(np.zeros(n, np.int32)),
            "box_x0": pa.array(np.full(n, 10, np.float32)), "box_y0": pa.array(np.full(n, 10, np.float32)),
            "box_x1": pa.array(np.full(n, 90, np.float32)), "box_y1": pa.array(np.full(n, 90, np.float32)),
            "det_score": pa.array(np.ones(n, np.float32)),
            "points": pa.FixedSizeListArray.from_arrays(pa.array(pts.reshape(-1)), 136),
            "confidence": pa.array(rng.uniform(0, 0.1, n).astype(np.float32)), "model_version": ["m"] * n,
        }
        # columns this script does not know (the schema grows) are left empty
        t = pa.table({f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA}).cast(SCHEMA)
        pq.write_table(t, tmp / "big.parquet")
        size_mb = (tmp / "big.parquet").stat().st_size / 2**20
        t0 = time.perf_counter()
        q = Queue.from_parquet(tmp / "big.parquet")
        store = CorrectionStore(tmp / "corr", tmp / "big.parquet")
        s = ReviewSession(q, store, user="bench", state_writer=StateWriter(store))
        f = s.first("todo")
        open_s = time.perf_counter() - t0
        times = {"next": [], "act+next": [], "draft": [], "next (folder filter)": [], "strip (after showing)": []}
        for _ in range(50):
            t1 = time.perf_counter()
            f = s.step(f["row"], 1, "todo")
            times["next"].append(time.perf_counter() - t1)
        occ = [False] * 68
        for _ in range(50):
            t1 = time.perf_counter()
            s.draft(f["key"], f["rev"], f["points"], {"occluded": occ, "box": f["box"]})
            times["draft"].append(time.perf_counter() - t1)
            t1 = time.perf_counter()
            assert s.act(f["key"], "accepted", f["points"], f["rev"], occluded=occ, box=f["box"])["ok"]
            f = s.step(f["row"], 1, "todo")
            times["act+next"].append(time.perf_counter() - t1)
            t1 = time.perf_counter()
            s.strip(f["row"], "todo")
            times["strip (after showing)"].append(time.perf_counter() - t1)
        s.state_writer.wait()
        f = s.first("todo", "folder050")
        for _ in range(50):
            t1 = time.perf_counter()
            f = s.step(f["row"], 1, "todo", "folder050")
            times["next (folder filter)"].append(time.perf_counter() - t1)
        print(f"{n} faces ({size_mb:.0f} MB Parquet): open + first face {open_s:.2f} s")
        for k, v in times.items():
            v = 1000 * np.asarray(v)
            print(f"  {k:22} median {np.median(v):6.1f} ms   p95 {np.percentile(v, 95):6.1f} ms   max {v.max():6.1f} ms")


if __name__ == "__main__":
    main()
