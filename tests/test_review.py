"""The review logic without a browser: queue order and filters, the journal, conflicts,
bad inputs, export to 300-W and the speed of opening a large labels file."""

import json
import shutil
import subprocess
import sys
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
from autolabel.review.session import InputError, ReviewSession, StateWriter
from autolabel.types import Box, FormatError, UsageError

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
    t = t.append_column("face_id", pa.array([f"f{i // 1000}/{i}.jpg#0" for i in range(n)]))
    t = t.append_column("abs_path_bytes", pa.nulls(n, pa.binary()))
    names = [c for c in SCHEMA.names if c != "point_uncertainty"]  # a file from before that column: still opens
    pq.write_table(t.select(names).cast(pa.schema([SCHEMA.field(c) for c in names])), tmp_path / "big.parquet")
    t0 = time.perf_counter()
    q = Queue.from_parquet(tmp_path / "big.parquet")
    s = ReviewSession(q, CorrectionStore(tmp_path / "c"))
    f = s.first("todo", "f7")
    assert len(q) == n and f["image_name"].startswith("f7/")
    assert s.step(f["row"], 1, "todo", "f7")["image_name"].startswith("f7/")
    print(f"open {time.perf_counter() - t0:.2f} s")


# ------------------------------------------------------------------ hardening (issue 10, items 10-16)
def test_browser_input_is_checked(setup):
    """Points at 1e30, a made-up added-face key, rows out of range: refused with a message."""
    _, _, q, store = setup
    s = ReviewSession(q, store)
    f = s.first()
    ok_pts = f["points"]
    with pytest.raises(InputError, match="far outside"):
        s.act(f["key"], "corrected", [[1e30, 1e30]] * 68, 0)
    with pytest.raises(InputError, match="unknown face"):
        s.act(q.image[0] + "#+999", "accepted", ok_pts, 0)
    with pytest.raises(InputError, match="finite"):
        s.act(f["key"], "corrected", [[float("nan"), 1]] * 68, 0)
    with pytest.raises(InputError, match="unknown status"):
        s.act(f["key"], "bogus", ok_pts, 0)
    with pytest.raises(InputError, match="occluded"):
        s.act(f["key"], "corrected", ok_pts, 0, occluded=[True] * 3)
    with pytest.raises(InputError, match="box"):
        s.act(f["key"], "corrected", ok_pts, 0, box=[0, 0, 1e9, 1e9])
    for row in (-1, len(q), "x", 1.5):
        with pytest.raises(InputError, match="row|whole number"):
            s.add_face(row, [10, 10, 100, 100])
        with pytest.raises(InputError):
            s.step(row, 1)
    with pytest.raises(InputError, match="direction"):
        s.step(0, 5)
    with pytest.raises(InputError, match="unknown view"):
        s.first("bogus")
    assert not store.state  # nothing was recorded
    # points a little outside the image (a face cut by the frame) are fine
    edge = np.asarray(ok_pts) - np.asarray(ok_pts).min(0) - 20
    assert s.act(f["key"], "corrected", edge.tolist(), 0)["ok"]


def test_app_answers_every_failure_with_a_message(setup):
    from autolabel.review.app import answer, browser_api

    _, _, q, store = setup
    api = browser_api(ReviewSession(q, store))
    for name, args in [("act", None), ("act", []), ("act", ["k"]), ("step", [0, 1, "todo", "", "extra"]), ("strip", "x"),
                       ("add_face", [0, None]), ("draft", [q.key(0), 0, [[1, 2]]]), ("first", [{"a": 1}, ""])]:
        res = answer(name, api[name], args, None)
        assert res["ok"] is False and res["message"], (name, args, res)


def test_drafts_keep_unsaved_edits_until_saved(setup):
    tmp, labels, q, store = setup
    s = ReviewSession(q, store, user="ann")
    f = s.first()
    edited = (np.asarray(f["points"]) + 2).tolist()
    assert s.draft(f["key"], f["rev"], edited, {"occluded": [i == 5 for i in range(68)]})["ok"]
    # another session (a restart) finds the draft on the face; it is no correction
    s2 = ReviewSession(Queue.from_parquet(labels), CorrectionStore(tmp / "corr", labels))
    g = s2.face(f["row"])
    np.testing.assert_allclose(g["draft"]["points"], edited, atol=1e-3)
    assert g["draft"]["occluded"][5] and g["draft"]["user"] == "ann" and g["status"] == "todo"
    assert read_journal_keys(tmp / "corr") == []
    assert s2.act(f["key"], "corrected", edited, 0)["ok"]
    assert s2.face(f["row"])["draft"] is None
    assert ReviewSession(Queue.from_parquet(labels), CorrectionStore(tmp / "corr", labels)).face(f["row"])["draft"] is None


def read_journal_keys(folder: Path) -> list[str]:
    path = folder / JOURNAL
    return [json.loads(x)["key"] for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def test_conflict_answer_carries_the_other_version(setup):
    _, _, q, store = setup
    s = ReviewSession(q, store, user="tab1")
    f = s.first()
    theirs = (np.asarray(f["points"]) + 1).tolist()
    assert s.act(f["key"], "corrected", theirs, 0)["ok"]
    r = s.act(f["key"], "accepted", f["points"], 0, user="tab2")
    assert r["conflict"] and r["theirs"]["rev"] == 1 and r["theirs"]["user"] == "tab1" and r["theirs"]["status"] == "corrected"
    np.testing.assert_allclose(r["theirs"]["points"], theirs, atol=1e-3)
    assert s.act(f["key"], "accepted", f["points"], r["theirs"]["rev"], user="tab2")["ok"]  # keep mine
    assert store.state[f["key"]]["user"] == "tab2" and store.rev(f["key"]) == 2


def test_occluded_flags_box_and_user_reach_parquet_and_export(setup):
    tmp, _, q, store = setup
    s = ReviewSession(q, store, user="ann")
    f = s.first()
    occ = [i in (36, 37) for i in range(68)]
    box = [30.0, 35.0, 320.0, 330.0]
    assert s.act(f["key"], "corrected", f["points"], 0, occluded=occ, box=box)["ok"]
    assert s.face(f["row"])["occluded"] == occ and s.face(f["row"])["box"] == box
    rec = store.state[f["key"]]
    assert rec["user"] == "ann" and rec["occluded"] == occ
    store.materialize()
    t = pq.read_table(tmp / "corr" / "corrections.parquet").to_pandas()
    assert list(np.flatnonzero(t.occluded[0])) == [36, 37] and t.user[0] == "ann"
    np.testing.assert_allclose(t.box[0], box)
    export_300w(tmp / "corr", tmp / "export")
    lines = (tmp / "export" / "occluded.csv").read_text().splitlines()
    assert lines[0].startswith("pts,") and lines[1].endswith(",36 37")


def test_corrections_parquet_is_current_after_each_action(setup):
    _, _, q, store = setup
    s = ReviewSession(q, store, state_writer=StateWriter(store, delay=0))
    f = s.first()
    for _ in range(3):
        assert s.act(f["key"], "accepted", f["points"], f["rev"])["ok"]
        assert s.state_writer.wait()
        assert len(pq.read_table(store.folder / "corrections.parquet")) == len(store.state)
        f = s.step(f["row"], 1)


def test_corrections_parquet_survives_kill_9(setup):
    """The issue's case: 4 actions, then kill -9 while the server runs."""
    tmp, labels, _, store = setup
    store.close()
    code = f"""
import os, signal
from pathlib import Path
from autolabel.formats.corrections import CorrectionStore
from autolabel.review.queue import Queue
from autolabel.review.session import ReviewSession, StateWriter
store = CorrectionStore(Path({str(tmp / 'corr')!r}), Path({str(labels)!r}))
s = ReviewSession(Queue.from_parquet(Path({str(labels)!r})), store, state_writer=StateWriter(store))
f = s.first()
for _ in range(4):
    s.act(f["key"], "accepted", f["points"], f["rev"])
    f = s.step(f["row"], 1)
s.state_writer.wait()
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == -9, r.stderr
    assert len(pq.read_table(tmp / "corr" / "corrections.parquet")) == 4


def test_strip_shows_the_faces_around(setup):
    _, _, q, store = setup
    s = ReviewSession(q, store)
    items = s.strip(2, "all", "", n=3)["items"]
    assert [it["row"] for it in items] == [1, 2, 3] and [it["position"] for it in items] == [2, 3, 4]
    assert all(it["thumb"].startswith("data:image/jpeg;base64,") for it in items)
    assert [it["row"] for it in s.strip(0, "all", "", n=3)["items"]] == [0, 1, 2]


def test_access_passwords_slow_guesses_and_exposure(tmp_path):
    import asyncio

    from autolabel.review.access import SlowAuth, credentials, exposure_warning

    f = tmp_path / "auth.txt"
    f.write_text("# reviewers\nann:s3cret\nbob:pw\n")
    assert credentials(auth_file=f, env={}) == {"ann": "s3cret", "bob": "pw"}
    assert credentials(env={"AUTOLABEL_AUTH": "ann:x"}) == {"ann": "x"}
    assert credentials(env={}) is None
    with pytest.raises(UsageError, match="user:password"):
        credentials(env={"AUTOLABEL_AUTH": "nocolon"})
    waits = []

    async def fake_sleep(t):
        waits.append(t)

    auth = SlowAuth({"ann": "s3cret"}, base=0.5, cap=8, sleep=fake_sleep)
    results = [asyncio.run(auth.check("ann", guess)) for guess in ["a", "b", "c", "d", "e", "f", "s3cret", "x"]]
    assert results == [False] * 6 + [True, False]
    assert waits == [0.5, 1, 2, 4, 8, 8]  # each failure in a row doubles the wait; success resets it
    assert exposure_warning("0.0.0.0", False) and exposure_warning("192.168.1.5", False)
    assert exposure_warning("0.0.0.0", True) is None and exposure_warning("127.0.0.1", False) is None
    assert exposure_warning("localhost", False) is None and exposure_warning("::1", False) is None


def test_uncertain_points_are_named_for_the_editor(setup):
    """A labels file with `point_uncertainty` (model v2): the points whose predicted error scale
    exceeds UNCERTAIN_SHARE of the eye-corner distance are sent to the editor to be ringed."""
    from autolabel.review.queue import UNCERTAIN_SHARE

    tmp, labels, q, store = setup
    t = pq.read_table(labels)
    pts = np.stack(t.column("points").to_numpy(zero_copy_only=False)).reshape(-1, 68, 2)
    iod = np.linalg.norm(pts[:, 36] - pts[:, 45], axis=-1)
    unc = np.tile((0.5 * UNCERTAIN_SHARE * iod)[:, None], (1, 68)).astype(np.float32)
    unc[0, [8, 30]] = 1.5 * UNCERTAIN_SHARE * iod[0]
    assert len(t) >= 4
    unc[1, 5] = -1.0  # from a file autolabel did not write: a negative scale makes the face's unusable
    unc[2, 3] = 1e9  # an absurd one is capped at the eye-corner distance (a ring around the face)
    col = pa.array([u.tolist() for u in unc[:-1]] + [None], SCHEMA.field("point_uncertainty").type)
    pq.write_table(t.set_column(t.schema.get_field_index("point_uncertainty"), "point_uncertainty", col), labels)
    s = ReviewSession(Queue.from_parquet(labels), store)
    faces = {s.face(i)["key"]: s.face(i) for i in range(len(s.q))}
    first = faces[f"{t.column('image')[0].as_py()}#0"]
    assert first["uncertain_points"] == [8, 30] and len(first["point_uncertainty"]) == 68
    negative, huge = (faces[f"{t.column('image')[i].as_py()}#0"] for i in (1, 2))
    assert negative["uncertain_points"] == [] and negative["point_uncertainty"] is None
    assert huge["uncertain_points"] == [3] and huge["point_uncertainty"][3] == pytest.approx(iod[2], abs=0.01)
    last = faces[f"{t.column('image')[len(t) - 1].as_py()}#0"]
    assert last["uncertain_points"] == [] and last["point_uncertainty"] is None  # a face without scales
    assert all(f["audit"] is False for f in faces.values())


def test_an_image_whose_name_is_not_utf8_opens_saves_and_exports(tmp_path):
    """`run` keeps such a name's raw bytes (`abs_path_bytes`); review opens the image by them,
    and the correction it saves reaches the corrections Parquet and the 300-W export."""
    import os

    from autolabel.formats.parquet import result_rows
    from autolabel.types import Box, Face, ImageResult

    folder = tmp_path / "imgs"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(sorted(HELEN_TEST.glob("*.jpg"))[0], folder / name)
    pts = np.random.default_rng(0).uniform(60, 200, (68, 2)).astype(np.float32)
    r = ImageResult(folder / name, 500, 500, (Face(Box(40, 40, 300, 300), pts, 0.02),))
    rows = result_rows(r, "caf\\xe9.jpg", (1, 1), "abc")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "l.parquet")
    q = Queue.from_parquet(tmp_path / "l.parquet")
    assert q.image_path(0) == folder / name and q.image_path(0).is_file()
    store = CorrectionStore(tmp_path / "corr", tmp_path / "l.parquet")
    s = ReviewSession(q, store, state_writer=StateWriter(store, delay=0))
    face = s.face(0)
    assert face["image"].startswith("data:image/") and face["width"] > 0
    s.act(face["key"], "accepted", face["points"], face["rev"])
    assert s.state_writer.wait()
    corr = read_corrections(tmp_path / "corr")
    assert [(c.image, c.status, c.path) for c in corr] == [("caf\\xe9.jpg", "accepted", folder / name)]
    res = export_300w(tmp_path / "corr", tmp_path / "export")
    assert res.faces == 1 and not res.missing_images and len(list((tmp_path / "export").rglob("*.pts"))) == 1
    assert pq.read_table(tmp_path / "corr" / "corrections.parquet").column("abs_path_bytes").to_pylist() == [os.fsencode(folder / name)]


def test_a_drawn_box_gets_the_points_run_would_give(setup, shipped_model_path):
    """The editor's "draw a box" predicts on the image decoded as `run` decodes it (`load_gray`):
    the points are exactly `Labeler.label_file`'s for that box."""
    from autolabel.images import load_gray
    from autolabel.labelling import Labeler

    _, _, q, store = setup
    s = ReviewSession(q, store, labeler_factory=lambda: Labeler(model=shipped_model_path))
    got = s.add_face(0, [150, 150, 350, 350])
    assert got["ok"] and len(got["points"]) == 68
    want = Labeler(model=shipped_model_path).label(load_gray(q.image_path(0)), boxes=[Box(150, 150, 350, 350, 0.0)])[0]
    np.testing.assert_allclose(got["points"], np.round(want.points, 2), atol=1e-6)
