"""The review logic without a browser: queue order and filters, the journal, conflicts,
bad inputs, export to 300-W and the speed of opening a large labels file."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autolabel.formats.corrections import JOURNAL, CorrectionStore, export_300w, read_corrections
from autolabel.formats.parquet import SCHEMA
from autolabel.formats.pts import read_pts
from autolabel.review.queue import Queue
from autolabel.review.session import ReviewSession
from autolabel.types import FormatError, UsageError

from helpers import HELEN_TEST

pytestmark = pytest.mark.needs_data


def make_labels(path: Path, images: list[Path], root: Path, faces_per_image: int = 1, seed: int = 0) -> Path:
    """A labels file in autolabel's schema for real images, with known points and confidences."""
    rng = np.random.default_rng(seed)
    rows = []
    for img in images:
        for k in range(faces_per_image):
            pts = rng.uniform(50, 300, (68, 2)).astype(np.float32)
            rows.append({"image": img.relative_to(root).as_posix(), "abs_path": str(img), "file_size": 1, "file_mtime_ns": 1,
                         "width": 500, "height": 500, "status": "ok", "error": None, "face_index": k,
                         "box_x0": 40.0, "box_y0": 40.0, "box_x1": 310.0, "box_y1": 310.0, "det_score": 1.0,
                         "points": pts.reshape(-1).tolist(), "confidence": float(rng.uniform(0, 0.1)), "model_version": "abc"})
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


@pytest.fixture
def setup(tmp_path):
    imgs = tmp_path / "imgs" / "sub"
    imgs.mkdir(parents=True)
    files = []
    for f in sorted(HELEN_TEST.glob("*.jpg"))[:4]:
        shutil.copy(f, imgs / f.name)
        files.append(imgs / f.name)
    labels = make_labels(tmp_path / "l.parquet", files, tmp_path / "imgs")
    q = Queue.from_parquet(labels)
    store = CorrectionStore(tmp_path / "corr", labels)
    return tmp_path, labels, q, store


def test_queue_is_least_certain_first(setup):
    _, _, q, _ = setup
    assert (np.diff(q.confidence) <= 0).all()
    assert q.folders() == ["sub"]


def test_actions_are_journaled_and_survive_reopen(setup):
    tmp, labels, q, store = setup
    s = ReviewSession(q, store)
    f = s.first("todo")
    assert f["position"] == 1 and f["counts"]["total"] == 4 and f["image"].startswith("data:image/jpeg;base64,")
    moved = np.asarray(f["points"]) + 3.0
    r = s.act(f["key"], "corrected", moved.tolist(), f["rev"])
    assert r["ok"] and r["rev"] == 1 and r["counts"]["reviewed"] == 1
    nxt = s.step(f["row"], 1, "todo")
    assert s.act(nxt["key"], "rejected", nxt["points"], 0)["ok"]
    # the journal is on disk line by line, fsynced
    lines = (tmp / "corr" / JOURNAL).read_text().splitlines()
    assert [json.loads(x)["status"] for x in lines] == ["corrected", "rejected"]
    np.testing.assert_allclose(json.loads(lines[0])["points"], moved, atol=1e-3)
    # "restart": a new store and session resume where the person left off
    store2 = CorrectionStore(tmp / "corr", labels)
    s2 = ReviewSession(Queue.from_parquet(labels), store2)
    again = s2.first("todo")
    assert again["key"] not in (f["key"], nxt["key"]) and again["counts"]["reviewed"] == 2
    np.testing.assert_allclose(s2.face(f["row"])["points"], moved, atol=1e-2)
    assert s2.first("rejected")["key"] == nxt["key"]
    state = pq.read_table(tmp / "corr" / "corrections.parquet").to_pandas()
    assert sorted(state.status) == ["corrected", "rejected"]


def test_two_tabs_conflict_is_detected(setup):
    _, _, q, store = setup
    s = ReviewSession(q, store)
    f = s.first("todo")
    tab1, tab2 = dict(f), dict(f)  # both loaded revision 0
    assert s.act(tab1["key"], "accepted", tab1["points"], tab1["rev"])["ok"]
    r = s.act(tab2["key"], "corrected", (np.asarray(tab2["points"]) + 1).tolist(), tab2["rev"])
    assert not r["ok"] and r["conflict"] and "changed elsewhere" in r["message"]
    assert store.status(f["key"]) == "accepted"


def test_corrupt_journal_line_is_skipped(setup):
    tmp, labels, q, store = setup
    s = ReviewSession(q, store)
    f = s.first()
    s.act(f["key"], "accepted", f["points"], 0)
    store.close()
    with open(tmp / "corr" / JOURNAL, "a") as fh:
        fh.write('{"key": "broken", "status": "accepted", "points": [[1, 2]]}\n')
        fh.write("garbage not json\n")
        fh.write('{"key": "half-writ')  # a crash mid-line
    store2 = CorrectionStore(tmp / "corr", labels)
    assert store2.skipped_lines == 3 and store2.status(f["key"]) == "accepted"
    assert len(read_corrections(tmp / "corr")) == 1


def test_bad_inputs(tmp_path, setup):
    _, labels, _, _ = setup
    pq.write_table(pa.table({"a": [1]}), tmp_path / "other.parquet")
    with pytest.raises(FormatError, match="missing columns"):
        Queue.from_parquet(tmp_path / "other.parquet")
    with pytest.raises(UsageError, match="no such labels file"):
        Queue.from_parquet(tmp_path / "none.parquet")
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="cannot write corrections"):
        CorrectionStore(blocker / "corr")


def test_moved_images_need_root(setup, tmp_path):
    tmp, labels, _, _ = setup
    shutil.move(str(tmp / "imgs"), str(tmp / "moved"))
    with pytest.raises(UsageError, match="--root"):
        Queue.from_parquet(labels)
    q = Queue.from_parquet(labels, root=tmp / "moved")
    assert q.image_path(0).is_file()
    q.image[0] = "../../etc/passwd"
    with pytest.raises(UsageError, match="outside"):
        q.image_path(0)


def test_export_writes_300w_folder(setup):
    tmp, _, q, store = setup
    s = ReviewSession(q, store)
    f = s.first()
    s.act(f["key"], "corrected", f["points"], 0)
    g = s.step(f["row"], 1)
    s.act(g["key"], "rejected", g["points"], 0)
    res = export_300w(tmp / "corr", tmp / "export")
    assert res.faces == 1
    pts_files = list((tmp / "export").rglob("*.pts"))
    assert len(pts_files) == 1 and pts_files[0].with_suffix(".jpg").is_file()
    np.testing.assert_allclose(read_pts(pts_files[0]), f["points"], atol=2e-3)


def test_open_100k_faces_is_fast(tmp_path):
    """Functional check that a 100k-face file opens and navigates; the timing goes to the
    benchmark (benchmarks/bench_review.py), not here."""
    img = sorted(HELEN_TEST.glob("*.jpg"))[0]
    n = 100_000
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 400, (n, 136)).astype(np.float32)
    t = pa.table({
        "image": [f"f{i // 1000}/{i}.jpg" for i in range(n)], "abs_path": [str(img)] * n,
        "file_size": pa.array([1] * n, pa.int64()), "file_mtime_ns": pa.array([1] * n, pa.int64()),
        "width": pa.array([500] * n, pa.int32()), "height": pa.array([500] * n, pa.int32()),
        "status": ["ok"] * n, "error": pa.nulls(n, pa.string()), "face_index": pa.array([0] * n, pa.int32()),
        "box_x0": pa.array(np.full(n, 1, np.float32)), "box_y0": pa.array(np.full(n, 1, np.float32)),
        "box_x1": pa.array(np.full(n, 9, np.float32)), "box_y1": pa.array(np.full(n, 9, np.float32)),
        "det_score": pa.array(np.ones(n, np.float32)),
        "points": pa.FixedSizeListArray.from_arrays(pa.array(pts.reshape(-1)), 136).cast(pa.list_(pa.float32(), 136)),
        "confidence": pa.array(rng.uniform(0, 1, n).astype(np.float32)), "model_version": ["m"] * n,
    })
    pq.write_table(t.cast(SCHEMA), tmp_path / "big.parquet")
    t0 = time.perf_counter()
    q = Queue.from_parquet(tmp_path / "big.parquet")
    s = ReviewSession(q, CorrectionStore(tmp_path / "c"))
    f = s.first("todo", "f7")
    assert len(q) == n and f["image_name"].startswith("f7/")
    assert s.step(f["row"], 1, "todo", "f7")["image_name"].startswith("f7/")
    print(f"open {time.perf_counter() - t0:.2f} s")
