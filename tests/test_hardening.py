"""Issue 10 items 1-9 and issue 14 items 10-11: `autolabel run` never loses or mislabels work,
leaves nothing behind, runs no code from a file it did not write, and writes only under --out;
its outputs describe themselves and read back everywhere.

Most tests label small synthetic images (no face: the mechanics do not need one) in this
process; those that need faces use real photos and are marked `needs_data`.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import HELEN_TEST, REPO, cli
from PIL import Image

from autolabel import labelling
from autolabel.formats.corrections import CorrectionStore, export_300w
from autolabel.formats.parquet import SCHEMA, ParquetWriter, file_metadata, read_labels
from autolabel.formats.pts import read_pts
from autolabel.formats.pts_folder import read_index
from autolabel.types import ImageResult, UsageError


def _img(path: Path, shade: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (shade, shade, shade)).save(path)
    return path


@pytest.fixture
def label(random_model_path):
    def run(paths, out, **kw):
        kw.setdefault("workers", 0)
        kw.setdefault("model", random_model_path)
        return labelling.run([Path(p) for p in paths], Path(out), progress=False, **kw)

    return run


def _faces(n: int) -> list[Path]:
    return sorted(HELEN_TEST.glob("*.jpg"))[:n]


# ------------------------------------------------------------------ 1. one run per output
def test_a_second_run_on_a_held_output_is_refused_naming_the_holder(label, tmp_path):
    from autolabel.files import OutputLock

    _img(tmp_path / "in" / "a.jpg")
    out = tmp_path / "l.parquet"
    with OutputLock(out.with_name(out.name + ".lock"), str(out)):
        with pytest.raises(UsageError, match=r"in use by another autolabel run \(pid \d+"):
            label([tmp_path / "in"], out)
        assert not out.exists() and not out.with_name(out.name + ".parts").exists()
    label([tmp_path / "in"], out)  # free again: the lock went with its holder
    assert len(read_labels(out)) == 1 and not out.with_name(out.name + ".lock").exists()


def test_a_held_pts_folder_is_refused_too_and_exits_2(label, tmp_path, random_model_path):
    from autolabel.files import OutputLock

    _img(tmp_path / "in" / "a.jpg")
    out = tmp_path / "pts"
    out.mkdir()
    with OutputLock(out / ".autolabel.lock", str(out)):
        p = cli("run", tmp_path / "in", "--out", out, "--format", "pts", "--model", random_model_path, "--workers", "0", check_rc=2)
    assert p.stderr.count("\n") == 1 and "in use by another autolabel run" in p.stderr
    assert not (out / "index.csv").exists()


# ------------------------------------------------------------------ 2. one identity per image
def test_the_same_name_under_two_inputs_stays_two_images(label, tmp_path):
    a, b = _img(tmp_path / "cam1" / "IMG_0001.jpg", 50), _img(tmp_path / "cam2" / "IMG_0001.jpg", 200)
    out = tmp_path / "l.parquet"
    label([tmp_path / "cam1", tmp_path / "cam2"], out)
    df = read_labels(out)
    assert sorted(df.image) == ["cam1/IMG_0001.jpg", "cam2/IMG_0001.jpg"]
    assert sorted(df.abs_path) == sorted([str(a), str(b)])
    md = file_metadata(out)
    assert md["inputs"] == [str(tmp_path / "cam1"), str(tmp_path / "cam2")] and md["image_root"] == str(tmp_path)
    # one input: names stay relative to it, as before
    label([tmp_path / "cam1"], tmp_path / "one.parquet")
    assert read_labels(tmp_path / "one.parquet").image.tolist() == ["IMG_0001.jpg"]


@pytest.mark.needs_data
def test_same_names_keep_their_own_pts_review_keys_and_export(label, tmp_path):
    f1, f2 = _faces(2)
    for cam, f in (("cam1", f1), ("cam2", f2)):
        (tmp_path / cam).mkdir()
        shutil.copy(f, tmp_path / cam / "IMG_0001.jpg")
    shutil.copy(f1, tmp_path / "cam1" / "IMG_0001.png")  # same stem, another extension
    pts = tmp_path / "pts"
    label([tmp_path / "cam1", tmp_path / "cam2"], pts, fmt="pts")
    idx = {r["image"]: r for r in read_index(pts)}
    files = [idx[k]["pts_files"] for k in ("cam1/IMG_0001.jpg", "cam1/IMG_0001.png", "cam2/IMG_0001.jpg")]
    assert all(files) and len(set(files)) == 3, files
    a, b = (read_pts(pts / idx[k]["pts_files"].split(";")[0]) for k in ("cam1/IMG_0001.jpg", "cam2/IMG_0001.jpg"))
    assert not np.allclose(a, b)  # each image kept its own points

    out = tmp_path / "l.parquet"
    label([tmp_path / "cam1", tmp_path / "cam2"], out)
    from autolabel.review.queue import Queue

    q = Queue.from_parquet(out)
    keys = [q.key(i) for i in range(len(q))]
    assert len(set(keys)) == len(keys) == 3
    store = CorrectionStore(tmp_path / "corr", out)
    for i in range(len(q)):
        store.record(q.key(i), "accepted", q.points[i], 0, image=q.image[i], abs_path=q.abs_path[i], box=q.boxes[i].tolist(),
                     model_version="m", width=int(q.width[i]), height=int(q.height[i]))
    store.close()
    res = export_300w(tmp_path / "corr", tmp_path / "export")
    written = sorted(p.relative_to(tmp_path / "export").as_posix() for p in (tmp_path / "export").rglob("*.pts"))
    assert res.faces == 3 and len(written) == 3, written


# ------------------------------------------------------------------ 3. overlapping inputs
def test_overlapping_inputs_label_each_file_once(label, tmp_path):
    one = tmp_path / "one"
    _img(one / "x.jpg")
    _img(one / "sub" / "y.jpg")
    out = tmp_path / "l.parquet"
    s = label([one, one / "x.jpg", one, one / "sub"], out)
    assert s.images == 2
    assert sorted(read_labels(out).image) == ["sub/y.jpg", "x.jpg"]


# ------------------------------------------------------------------ 4. names that are not UTF-8
@pytest.mark.parametrize("fmt", ["parquet", "pts"])
def test_a_file_name_that_is_not_utf8_gets_a_row(label, tmp_path, fmt):
    from autolabel.files import path_text

    d = tmp_path / "in"
    _img(d / "plain.jpg")
    raw = os.fsencode(d) + b"/latin1_\xe9t\xe9.jpg"
    _img(Path(os.fsdecode(raw)))
    out = tmp_path / ("l.parquet" if fmt == "parquet" else "pts")
    s = label([d], out, fmt=fmt)
    assert s.images == 2 and s.errors == 0
    if fmt == "parquet":
        df = read_labels(out).set_index("image")
        row = df.loc["latin1_\\xe9t\\xe9.jpg"]
        assert row.abs_path_bytes == raw and row.abs_path == path_text(os.fsdecode(raw))
        assert df.loc["plain.jpg"].abs_path_bytes is None
    else:
        idx = {r["image"]: r for r in read_index(out)}
        assert bytes.fromhex(idx["latin1_\\xe9t\\xe9.jpg"]["abs_path_bytes"]) == raw
    s = label([d], out, fmt=fmt)  # and a rerun resumes instead of crashing
    assert s.images == 0 and s.skipped_done == 2


# ------------------------------------------------------------------ 5. nothing silently absent
def test_unreadable_folders_and_symlink_loops_get_error_rows(label, tmp_path, monkeypatch):
    d = tmp_path / "in"
    _img(d / "ok.jpg")
    (d / "locked").mkdir()
    _img(d / "locked" / "hidden.jpg")
    os.symlink("loop.jpg", d / "loop.jpg")  # a file symlink loop
    os.symlink("nowhere.jpg", d / "gone.jpg")  # a broken link
    os.symlink("b", d / "a")
    os.symlink("a", d / "b")  # a loop of links that could have been folders
    real_scandir = os.scandir

    def scandir(path):  # root reads every folder; refuse this one as the file system would
        if Path(path) == d / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "l.parquet"
    s = label([d], out)
    df = read_labels(out).set_index("image")
    assert df.loc["ok.jpg"].status == "no_face"
    errors = df[df.status == "error"].error.to_dict()
    assert set(errors) == {"locked", "loop.jpg", "gone.jpg", "a", "b"}, errors
    assert "permission denied" in errors["locked"].lower()
    assert "symbolic link" in errors["loop.jpg"] and "symbolic link" in errors["gone.jpg"]
    assert s.errors == 5 and s.exit_code == 1


# ------------------------------------------------------------------ 6. an output edited by pandas
def test_an_output_resaved_by_pandas_resumes_and_merges(label, tmp_path):
    d = tmp_path / "in"
    for i in range(3):
        _img(d / f"{i}.jpg", 40 * i)
    (d / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "l.parquet"
    label([d], out)
    df = pd.read_parquet(out)
    df[df.status != "error"].iloc[[2, 0, 1]].to_parquet(out)  # a filtered, reordered frame keeps its index
    assert "__index_level_0__" in pq.read_schema(out).names
    _img(d / "new.jpg")
    s = label([d], out)
    assert s.skipped_done == 3 and s.images == 2  # new.jpg and the retried bad.jpg
    t = pq.read_table(out)
    assert t.column_names == SCHEMA.names
    assert sorted(read_labels(out).image) == ["0.jpg", "1.jpg", "2.jpg", "bad.jpg", "new.jpg"]


# ------------------------------------------------------------------ 7. leftovers
def test_a_temp_file_left_by_a_killed_merge_is_removed(label, tmp_path):
    _img(tmp_path / "in" / "a.jpg")
    out = tmp_path / "l.parquet"
    stale = tmp_path / ".l.parquet.k1ll3d_x.tmp"
    stale.write_bytes(b"")
    other = tmp_path / ".notes.txt.abc.tmp"  # not ours: left alone
    other.write_bytes(b"")
    label([tmp_path / "in"], out)
    assert not stale.exists() and other.exists()


def test_a_pts_output_has_no_stray_folder(label, tmp_path):
    _img(tmp_path / "in" / "a.jpg")
    out = tmp_path / "pts"
    label([tmp_path / "in"], out, fmt="pts")
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "run.json"]


def test_an_unusable_existing_output_exits_2_and_leaves_nothing(tmp_path, random_model_path):
    _img(tmp_path / "in" / "a.jpg")
    out = tmp_path / "l.parquet"
    out.write_text("this is not parquet")
    p = cli("run", tmp_path / "in", "--out", out, "--model", random_model_path, "--workers", "0", "--quiet", check_rc=2)
    assert "--overwrite" in p.stderr and p.stderr.count("\n") == 1
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in", "l.parquet"]
    assert out.read_text() == "this is not parquet"


def test_resuming_with_other_flip_or_refine_settings_is_refused(label, tmp_path):
    """Rows with and without `--refine` (or flip averaging) must not end up in one output under one
    metadata: the resume is refused before any work; --overwrite starts over."""
    from autolabel.formats.parquet import file_metadata

    _img(tmp_path / "in" / "a.jpg")
    out, ds = tmp_path / "l.parquet", tmp_path / "ds"
    label([tmp_path / "in"], out, refine=False)
    label([tmp_path / "in"], ds, fmt="parquet", refine=False)  # a Parquet dataset: its part files carry the metadata
    for target, kw in ((out, {}), (ds, {"fmt": "parquet"})):
        # the message names the option that resumes it (--refine is the default)
        with pytest.raises(UsageError, match=r"labelled with refine=False; this run has refine=True: resume with the same options "
                                             r"\(--no-refine\), or --overwrite"):
            label([tmp_path / "in"], target, **kw)
        with pytest.raises(UsageError, match=r"flip=True; this run has flip=False"):
            label([tmp_path / "in"], target, flip=False, refine=False, **kw)
    assert label([tmp_path / "in"], out, refine=False).skipped_done == 1  # the same settings resume
    label([tmp_path / "in"], out, refine=True, overwrite=True)
    assert file_metadata(out)["refine"] is True


def test_workers_leave_ctrl_c_to_the_main_process():
    old = signal.getsignal(signal.SIGINT)
    try:
        labelling._init_pool_worker("hog", {}, 128)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_review_on_a_port_in_use_says_so_in_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = cli("review", tmp_path / "labels.parquet", "--port", port, check_rc=2)
    assert p.stderr.count("\n") == 1 and f"port {port}" in p.stderr and "--port" in p.stderr


# ------------------------------------------------------------------ 8. no code from checkpoints
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"net": _Payload(marker)}))
    pickle.loads(path.read_bytes())  # the payload works: loading it unsafely runs it
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_a_planted_pickle_in_a_run_folder_runs_nothing(tmp_path, name):
    import torch

    from autolabel.datasets import Canvases
    from autolabel.training.checkpoints import load_best
    from autolabel.training.loop import TrainConfig, fit
    from autolabel.types import AutolabelError

    marker = tmp_path / "pwned"
    work = tmp_path / "ft" / "work"
    _plant(work / name, marker)
    if name == "last.pt":
        canv = Canvases(np.zeros((2, 192, 192), np.uint8), np.full((2, 68, 2), 96, np.float32), 192)
        with pytest.raises(AutolabelError, match="not a checkpoint autolabel can load safely"):
            fit(TrainConfig(epochs=1, batch_size=2, threads=1), canv, None, work, progress=False)
    else:
        with pytest.raises(AutolabelError, match="not a checkpoint autolabel can load safely"):
            load_best(work)
    assert not marker.exists()
    torch.set_num_threads(max(1, torch.get_num_threads()))


# ------------------------------------------------------------------ 9. export stays under --out
def test_export_refuses_paths_outside_out(tmp_path):
    src = _img(tmp_path / "photos" / "a.jpg")
    store = CorrectionStore(tmp_path / "corr")
    pts = np.full((68, 2), 20.0)
    evil = ["../../x/evil.jpg", str(tmp_path / "abs" / "evil.jpg"), "ok/../../../up.jpg"]
    for i, name in enumerate(evil + ["fine/a.jpg"]):
        store.record(f"{name}#0", "accepted", pts, 0, image=name, abs_path=str(src), box=[0, 0, 40, 40], model_version="m",
                     width=64, height=48)
    store.close()
    out = tmp_path / "deep" / "er" / "export"
    res = export_300w(tmp_path / "corr", out)
    assert res.faces == 1 and len(res.refused) == 3
    outside = [p for p in tmp_path.rglob("*evil*")] + [p for p in tmp_path.rglob("up_*")]
    assert outside == [] and (out / "fine" / "a_1.pts").is_file()


# ------------------------------------------------------------------ issue 14.10: Parquet for other tools
def test_parts_merge_into_few_row_groups_with_self_describing_metadata(tmp_path):
    out = tmp_path / "l.parquet"
    w = ParquetWriter(out, metadata={"model_version": "m", "inputs": ["/x"], "image_root": "/x"})
    for i in range(337):
        w.write_result(ImageResult(Path(f"/x/{i}.jpg"), 10, 10, ()), f"{i}.jpg", (1, i))
        if i % 31 == 0:
            w.flush()
    w.close()
    meta = pq.read_metadata(out)
    assert meta.num_rows == 337 and meta.num_row_groups == 1
    md = file_metadata(out)
    assert md["inputs"] == ["/x"] and md["image_root"] == "/x"
    assert "interleaved" in md["points"]["layout"] and "0-based" in md["points"]["coordinates"]
    assert md["points"]["length"] == 136
    assert b"interleaved" in pq.read_schema(out).field("points").metadata[b"description"]


def test_face_id_is_unique_and_stable_across_reruns(label, tmp_path):
    d = tmp_path / "in"
    for i in range(3):
        _img(d / f"{i}.jpg", 60 * i)
    out = tmp_path / "l.parquet"
    df = pd.DataFrame({"image": ["a.jpg", "a.jpg", "b.jpg"], "face_index": [0, 1, None], "status": ["ok", "ok", "no_face"]})
    from autolabel.formats.parquet import face_ids

    assert face_ids(df.image, df.face_index) == ["a.jpg#0", "a.jpg#1", None]
    label([d], out)
    first = read_labels(out)[["image", "face_id"]]
    label([d], out, overwrite=True)
    assert read_labels(out)[["image", "face_id"]].equals(first)


@pytest.mark.needs_data
def test_the_readme_duckdb_query_gives_face_point_x_y_rows(label, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    d = tmp_path / "in"
    d.mkdir()
    for f in _faces(2):
        shutil.copy(f, d / f.name)
    out = tmp_path / "labels.parquet"
    label([d], out)
    sql = re.search(r"```sql\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL).group(1)
    con = duckdb.connect()
    con.execute(f"set file_search_path = '{tmp_path}'")
    rows = con.sql(sql).fetchall()
    df = read_labels(out).query("status == 'ok'")
    assert len(rows) == 68 * len(df)
    pts = {r.face_id: np.asarray(r.points).reshape(68, 2) for r in df.itertuples()}
    for face, point, x, y in rows[:: 17]:
        assert (x, y) == pytest.approx(tuple(pts[face][point]), abs=1e-4)


# ------------------------------------------------------------------ issue 14.11: a pts run reads back
@pytest.mark.needs_data
def test_a_pts_run_folder_reads_back_for_review_export_and_finetune(label, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for f in _faces(3):
        shutil.copy(f, d / f.name)
    run = tmp_path / "run"
    label([d], run, fmt="pts", model=None)  # the shipped model: finetune checks that points are plausible
    pq_out = tmp_path / "l.parquet"
    label([d], pq_out, model=None)
    want = read_labels(pq_out).query("status == 'ok'").set_index("face_id")

    from autolabel.review.queue import Queue
    from autolabel.training.finetune import load_corrections

    q = Queue.from_parquet(run)  # review
    assert sorted(q.key(i) for i in range(len(q))) == sorted(want.index)
    for i in range(len(q)):
        np.testing.assert_allclose(q.points[i], np.asarray(want.loc[q.key(i)].points).reshape(68, 2), atol=2e-3)
    loaded = load_corrections(run)  # finetune
    assert loaded.skipped == {}, loaded.skipped
    assert sorted(loaded.keys) == sorted(want.index) and all(s.box is not None for s in loaded.samples)
    assert {str(s.image) for s in loaded.samples} == set(want.abs_path)
