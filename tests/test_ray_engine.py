"""`autolabel run --engine ray` on a real two-node Ray cluster started on this machine
(`ray.cluster_utils.Cluster`: a head and a second node, each its own raylet), against the local
engine on the same images; plus the engine's pieces that need no cluster.

The cluster tests are marked `ray` (`pytest -m "not ray"` leaves them out). One run is killed
mid-way by removing the second node while it works, then rerun through the CLI; the other
tests check what that produced. Fractional CPUs keep the actor pool from starving the detection
tasks on a 2-core machine, and a short no-progress timeout turns a hang into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import HELEN_TEST, REPO
from PIL import Image

from autolabel import labelling
from autolabel.formats import make_writer
from autolabel.formats.parquet import ParquetDatasetWriter, file_metadata
from autolabel.types import AutolabelError, Box, Face, ImageResult, UsageError

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install 'autolabel[ray]')")
NO_PROGRESS_TIMEOUT_S = 60


# --------------------------------------------------------------------------- no cluster
def test_engine_ray_without_ray_is_a_usage_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    (tmp_path / "in").mkdir()
    with pytest.raises(UsageError, match=r"autolabel\[ray\]"):
        labelling.run([tmp_path / "in"], tmp_path / "out.parquet", engine="ray", progress=False)


def test_engine_ray_refuses_workers(tmp_path):
    with pytest.raises(UsageError, match="--workers"):
        labelling.run([tmp_path], tmp_path / "out.parquet", engine="ray", workers=2, progress=False)


def test_parquet_dataset_reads_as_one_table_with_one_set_of_rows_per_image(tmp_path):
    import duckdb

    out, a, b = tmp_path / "labels", tmp_path / "a.jpg", tmp_path / "b.jpg"
    face = Face(Box(1, 2, 30, 40, 0.5), np.zeros((68, 2), np.float32), 0.01, "model", "m1")
    w = make_writer("parquet", out, metadata={"model_version": "m1"})  # a folder: a dataset
    assert isinstance(w, ParquetDatasetWriter)
    w.write_result(ImageResult(a, 64, 48, (face, face)), "a.jpg", (10, 1))
    w.flush()
    w.write_result(ImageResult(b, error="cannot decode image"), "b.jpg", (5, 1))
    w.close()
    w = make_writer("parquet", out, metadata={"model_version": "m1"})
    assert w.done_keys() == {str(a.absolute()): (10, 1)}  # the failed image is retried
    w.write_result(ImageResult(b, 64, 48), "b.jpg", (5, 2))
    w.close()
    df = pd.read_parquet(out)
    assert sorted(zip(df.image, df.status)) == [("a.jpg", "ok"), ("a.jpg", "ok"), ("b.jpg", "no_face")]
    assert pq.read_table(out).num_rows == 3 == duckdb.sql(f"select count(*) from '{out}/*.parquet'").fetchall()[0][0]
    assert all(file_metadata(p)["model_version"] == "m1" for p in out.glob("part-*.parquet"))
    assert sorted(p.name for p in out.iterdir()) == ["part-000000.parquet", "part-000002.parquet"]


@needs_ray
def test_detection_stage_names_the_node_that_cannot_read_a_file(tmp_path):
    from autolabel.labelling_ray import detect_batch, node_name

    out = detect_batch(pa.table({"i": [7], "path": [str(tmp_path / "gone.jpg")]}), "hog", {}, 128)
    assert out.column("i").to_pylist() == [7]
    job = __import__("pickle").loads(out.column("job")[0].as_py())
    assert "file not found" in job.error and f"on node {node_name()}" in job.error


@needs_ray
@pytest.mark.needs_data
def test_inference_actor_refines_as_the_local_engine(tmp_path):
    """`--refine` reaches the actors: their second pass is `labelling.predict_jobs`' own."""
    import pickle

    from autolabel.detectors import make_detector
    from autolabel.labelling import detect_and_crop, predict_jobs
    from autolabel.labelling_ray import PredictActor
    from autolabel.predictor import make_predictor

    jobs = [detect_and_crop(f, make_detector("hog"), 128) for f in sorted(HELEN_TEST.glob("*.jpg"))[:2]]
    local = make_predictor("auto", None, threads=1, refine=True)  # the actor's thread count: the same sums
    assert local.stage2 is not None  # the shipped second stage
    actor = PredictActor("auto", None, True, 1, local.model_id, refine=True)
    table = pa.table({"i": [0, 1], "job": [pickle.dumps(j) for j in jobs]})
    got = [pickle.loads(b) for b in actor(table).column("result").to_pylist()]
    want = predict_jobs(local, jobs)
    assert [len(r.faces) for r in got] == [len(r.faces) for r in want] and sum(len(r.faces) for r in want) >= 2
    for g, w in zip(got, want):
        for fg, fw in zip(g.faces, w.faces):
            np.testing.assert_array_equal(fg.points, fw.points)
            assert fg.confidence == fw.confidence


# --------------------------------------------------------------------------- on a cluster
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Five real faces, a photo without a face and a file that is not an image."""
    d = tmp_path_factory.mktemp("ray_in")
    for f in sorted(HELEN_TEST.glob("*.jpg"))[:5]:
        shutil.copy(f, d / f.name)
    Image.new("RGB", (320, 240), (90, 140, 200)).save(d / "sky.jpg")
    (d / "bad.jpg").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        node = c.add_node(num_cpus=1)
        ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        ray.data.DataContext.get_current().execution_no_progress_timeout_s = NO_PROGRESS_TIMEOUT_S
        yield c, node
    finally:
        ray.shutdown()
        c.shutdown()


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _busy(node) -> bool:
    """Whether one of `node`'s worker processes runs a task or an actor of ours (Ray titles them)."""
    for p in _descendants(node.all_processes["raylet"][0].process.pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and any(k in title for k in ("detect_batch", "PredictActor", "MapBatches")):
            return True
    return False


@pytest.fixture(scope="module")
def ray_run(cluster, folder, tmp_path_factory):
    """A run into a Parquet dataset that loses the second node mid-way, then the CLI rerun."""
    from autolabel.labelling_ray import RaySettings

    c, node = cluster
    out = tmp_path_factory.mktemp("ray_out") / "labels"
    settings = RaySettings(detect_cpus=0.25, actor_cpus=0.25, actors=(1, 1), detect_batch=1, infer_batch=2, flush_seconds=0)
    first: dict = {}

    def go():
        try:
            first["summary"] = labelling.run([folder], out, engine="ray", ray_settings=settings, progress=False)
        except AutolabelError as e:
            first["error"] = e

    t0 = time.time()
    th = threading.Thread(target=go)
    th.start()
    while th.is_alive() and not _busy(node):
        time.sleep(0.1)
    first["killed_mid_run"] = th.is_alive()
    c.remove_node(node, allow_graceful=False)
    th.join(timeout=4 * NO_PROGRESS_TIMEOUT_S)
    first["still_running"] = th.is_alive()
    first["seconds"] = time.time() - t0
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": str(NO_PROGRESS_TIMEOUT_S)}
    rerun = subprocess.run([sys.executable, "-m", "autolabel", "run", str(folder), "--out", str(out), "--engine", "ray",
                            "--address", c.address, "--quiet"], check=False, capture_output=True, text=True, env=env, timeout=300)
    return first, rerun, out


@pytest.fixture(scope="module")
def local_out(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local_out") / "labels.parquet"
    labelling.run([folder], out, workers=0, progress=False)
    return out


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_a_run_losing_a_node_mid_way_finishes_or_fails_cleanly(ray_run):
    first, _, _ = ray_run
    assert first["killed_mid_run"], "the second node got no work before the run ended"
    assert not first["still_running"], "the run hung after losing a node"
    if "error" in first:  # a clean failure: one line that says how to go on
        assert "rerun" in str(first["error"])
    else:
        assert first["summary"].images + first["summary"].skipped_done == 7


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_the_rerun_completes_with_nothing_lost_or_duplicated(ray_run, folder):
    _, rerun, out = ray_run
    assert rerun.returncode == 1, rerun.stderr  # the bad image
    assert "1 errors" in rerun.stderr
    df = pd.read_parquet(out)  # a Parquet dataset read as one table
    assert sorted(df.image.unique()) == sorted(p.name for p in folder.iterdir())
    assert not df.duplicated(["image", "face_index"]).any()
    assert pq.read_table(out).num_rows == len(df)
    import duckdb

    assert duckdb.sql(f"select count(*) from '{out}/*.parquet'").fetchall()[0][0] == len(df)


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_ray_rows_equal_the_local_engines(ray_run, local_out):
    _, _, out = ray_run
    part = next(out.glob("part-*.parquet"))
    assert pq.read_schema(part).remove_metadata() == pq.read_schema(local_out).remove_metadata()
    meta, local_meta = file_metadata(part), file_metadata(local_out)
    assert {k: v for k, v in meta.items() if k != "command"} == {k: v for k, v in local_meta.items() if k != "command"}
    key = ["image", "face_index"]
    ray_df = pd.read_parquet(out).sort_values(key, na_position="first").reset_index(drop=True)
    loc = pd.read_parquet(local_out).sort_values(key, na_position="first").reset_index(drop=True)
    same = ["image", "abs_path", "file_size", "file_mtime_ns", "width", "height", "status", "face_index", "model_version"]
    pd.testing.assert_frame_equal(ray_df[same], loc[same])
    ok = loc.status == "ok"
    assert ok.sum() >= 4
    for col in ["box_x0", "box_y0", "box_x1", "box_y1", "det_score"]:
        np.testing.assert_allclose(ray_df[col][ok], loc[col][ok], atol=1e-4)
    np.testing.assert_allclose(np.stack(ray_df.points[ok]), np.stack(loc.points[ok]), atol=1e-3)
    np.testing.assert_allclose(ray_df.confidence[ok], loc.confidence[ok], atol=1e-4)
    unc_r, unc_l = ray_df.point_uncertainty[ok], loc.point_uncertainty[ok]  # per-point scales travel too (null for v1)
    assert unc_r.isna().tolist() == unc_l.isna().tolist()
    if unc_l.notna().all():
        np.testing.assert_allclose(np.stack(unc_r), np.stack(unc_l), atol=1e-3)


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_a_bad_image_among_good_ones_is_one_error_row(ray_run):
    _, rerun, out = ray_run
    df = pd.read_parquet(out)
    bad = df[df.image == "bad.jpg"]
    assert len(bad) == 1 and bad.status.iloc[0] == "error"
    assert "cannot decode image" in bad.error.iloc[0] and "on node" in bad.error.iloc[0]
    assert (df[df.image != "bad.jpg"].status != "error").all()
    assert df[df.image == "sky.jpg"].status.tolist() == ["no_face"]
    assert "bad.jpg" in rerun.stderr


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_a_pts_folder_from_ray_holds_the_local_engines_points(cluster, folder, local_out, tmp_path):
    """Same command, same outputs: `--format pts` on the Ray engine writes the faces the local
    engine found, one .pts per face, at its points."""
    from autolabel.formats.pts import read_pts
    from autolabel.labelling_ray import RaySettings

    out = tmp_path / "pts"
    settings = RaySettings(detect_cpus=0.25, actor_cpus=0.25, actors=(1, 1), detect_batch=1, infer_batch=2, flush_seconds=0)
    s = labelling.run([folder], out, fmt="pts", engine="ray", ray_settings=settings, progress=False)
    assert (s.images, s.errors) == (7, 1)
    loc = pd.read_parquet(local_out)
    ok = loc[loc.status == "ok"]
    files = sorted(p.name for p in out.glob("*.pts"))
    assert files == sorted(f"{Path(i).stem}_{int(k) + 1}.pts" for i, k in zip(ok.image, ok.face_index))
    for img, k, pts in zip(ok.image, ok.face_index, ok.points):
        np.testing.assert_allclose(read_pts(out / f"{Path(img).stem}_{int(k) + 1}.pts"), np.reshape(pts, (68, 2)), atol=2e-3)


@needs_ray
@pytest.mark.ray
@pytest.mark.needs_data
def test_ctrl_c_on_a_ray_run_saves_what_finished_and_the_rerun_completes(cluster, tmp_path):
    """Ctrl-C (SIGINT to the command's process group, as a terminal sends it) while
    `autolabel run --engine ray` works on a cluster: exit 130 with the resume hint, whatever had
    arrived is saved, and the same command then labels exactly the rest. The results reach the
    driver in bursts (here often one, then all the others at once), so the interrupt comes once
    the job runs, not after a given count: what it saved may be nothing, and the rerun must skip
    exactly what it saved."""
    import re
    import signal

    c, _ = cluster
    src = tmp_path / "in"
    src.mkdir()
    n = 64
    for f in sorted(HELEN_TEST.glob("*.jpg"))[:n]:
        shutil.copy(f, src / f.name)
    out = tmp_path / "labels"
    args = ["run", str(src), "--out", str(out), "--engine", "ray", "--address", c.address]
    # as from a terminal: a shell starts a background job (CI's pytest may be one) with SIGINT
    # ignored, which Python then keeps; a command typed at a prompt has it at its default
    cmd = [sys.executable, "-c", "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           f"sys.argv = ['autolabel', *{args!r}]; runpy.run_module('autolabel', run_name='__main__')"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": str(NO_PROGRESS_TIMEOUT_S)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, start_new_session=True)
    err = bytearray()

    def read():
        while chunk := proc.stderr.read1(256):
            err.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 4 * NO_PROGRESS_TIMEOUT_S
    while proc.poll() is None and time.time() < deadline and not re.search(rb"\d+/%d \[" % n, bytes(err)):
        time.sleep(0.05)
    time.sleep(1.0)  # the bar is up: the Ray job is running
    assert proc.poll() is None, f"the run ended before it could be interrupted: {bytes(err)[-500:]!r}"
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=120)
    reader.join(timeout=10)
    text = bytes(err).decode(errors="replace")
    assert rc == 130, text[-1000:]
    assert "interrupted: finished batches are saved; rerun the same command to resume" in text
    saved = pd.read_parquet(out) if any(out.glob("part-*.parquet")) else pd.DataFrame({"image": []})
    counts = re.findall(rb"(\d+)/%d \[" % n, bytes(err))
    assert saved.image.nunique() >= (int(counts[-1]) if counts else 0)  # what the bar counted had reached the writer
    assert saved.image.nunique() < n
    rerun = subprocess.run([sys.executable, "-m", "autolabel", *args, "--quiet"], check=False, capture_output=True, text=True, env=env,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{saved.image.nunique()} already labelled (skipped)" in rerun.stderr
    df = pd.read_parquet(out)
    assert sorted(df.image.unique()) == sorted(p.name for p in src.iterdir())
    assert not df.duplicated(["image", "face_index"]).any()
