"""`autolabel run` end to end on real photos and on every kind of bad input.

These tests use an untrained model (the mechanics do not depend on the weights); the
accuracy of the shipped weights is checked in test_shipped_model.py.
"""

import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from autolabel.formats.parquet import REQUIRED, SCHEMA, file_metadata, points_array, read_labels
from autolabel.formats.pts import read_pts
from autolabel.formats.pts_folder import read_index

from helpers import HELEN_TEST, PHOTOS, REPO, cli, make_bomb_png

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Real faces in many encodings plus every kind of broken file."""
    d = tmp_path_factory.mktemp("mixed")
    faces = sorted(HELEN_TEST.glob("*.jpg"))[:3]
    src = Image.open(faces[0]).convert("RGB")
    (d / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(faces[1], d / "sub" / "visage_é_日本.JPG")  # non-ASCII name, upper-case extension
    shutil.copy(faces[2], d / "sub" / "deeper" / "plain.jpg")
    src.convert("L").save(d / "gray.png")
    src.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257).save(d / "sixteen.png")
    src.convert("P").save(d / "palette.png")
    src.convert("RGBA").save(d / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    src.transpose(Image.Transpose.ROTATE_90).save(d / "rotated.jpg", exif=exif.tobytes(), quality=95)
    Image.new("RGB", (320, 240), (90, 140, 200)).save(d / "sky.jpg")  # no face
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("not an image")
    (d / "truncated.jpg").write_bytes(faces[0].read_bytes()[:3000])
    make_bomb_png(d / "bomb.png")
    (d / "readme.txt").write_text("ignored")
    return d


@pytest.fixture(scope="module")
def mixed_run(mixed_folder, random_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "labels.parquet"
    p = cli("run", mixed_folder, "--out", out, "--model", random_model_path, "--workers", "2", "--quiet")
    return p, out


def test_mixed_folder_rows_status_and_exit_code(mixed_run, mixed_folder):
    p, out = mixed_run
    assert p.returncode == 1, p.stderr  # some images failed
    df = read_labels(out)
    by = {img: g for img, g in df.groupby("image")}
    assert sorted(by) == sorted(["bomb.png", "cmyk.jpg", "empty.jpg", "gray.png", "palette.png", "rgba.png", "rotated.jpg",
                                  "sixteen.png", "sky.jpg", "sub/deeper/plain.jpg", "sub/visage_é_日本.JPG", "text.jpg", "truncated.jpg"])
    for name in ["bomb.png", "empty.jpg", "text.jpg", "truncated.jpg"]:
        row = by[name].iloc[0]
        assert row.status == "error" and row.error and np.isnan(row.face_index), name
    assert "decompression bomb" in by["bomb.png"].iloc[0].error
    assert by["sky.jpg"].iloc[0].status == "no_face"
    for name in ["cmyk.jpg", "gray.png", "palette.png", "rgba.png", "rotated.jpg", "sixteen.png", "sub/deeper/plain.jpg", "sub/visage_é_日本.JPG"]:
        g = by[name]
        assert (g.status == "ok").all() and len(g) == 1, name
    # every encoding of the same face is found at the same place
    ref = by["gray.png"].iloc[0]
    for name in ["cmyk.jpg", "palette.png", "rgba.png", "sixteen.png", "rotated.jpg"]:
        r = by[name].iloc[0]
        assert (r.width, r.height) == (ref.width, ref.height), name  # rotated: upright size
        assert abs(r.box_x0 - ref.box_x0) < 12 and abs(r.box_y0 - ref.box_y0) < 12, name
    assert "4 errors" in p.stderr and "1 non-image files ignored" in p.stderr


def test_parquet_schema_metadata_and_readers(mixed_run):
    _, out = mixed_run
    t = pq.read_table(out)
    assert t.column_names == SCHEMA.names and set(REQUIRED) < set(SCHEMA.names)
    md = file_metadata(out)
    assert md["autolabel_version"] and md["model_version"] and md["detector"]["name"] == "hog"
    assert md["detector"]["upsample"] == "auto" and md["detector"]["rescan_below"] == 100  # the whole rule that found the faces
    assert md["detector"]["scales"] == [0.5, 1.0, 2.0]
    assert (md["flip"], md["refine"]) == (True, True)  # the defaults: flip averaging, two stages
    assert md["command"].startswith("autolabel run")
    faces = read_labels(out).query("status == 'ok'")
    pts = points_array(faces)
    assert pts.shape == (len(faces), 68, 2) and np.isfinite(pts).all()
    assert (faces.model_version == md["model_version"]).all()
    duckdb = pytest.importorskip("duckdb")
    n = duckdb.sql(f"select count(*) from read_parquet('{out}') where status = 'ok' and len(points) = 136").fetchall()[0][0]
    assert n == len(faces)


def test_resume_skips_done_and_relabels_changed(mixed_folder, random_model_path, tmp_path):
    d = tmp_path / "photos"
    shutil.copytree(mixed_folder / "sub", d)
    out = tmp_path / "l.parquet"
    cli("run", d, "--out", out, "--model", random_model_path, "--workers", "0", check_rc=0)
    shutil.copy(sorted(HELEN_TEST.glob("*.jpg"))[5], d / "new.jpg")
    p = cli("run", d, "--out", out, "--model", random_model_path, "--workers", "0", check_rc=0)
    assert "1 images" in p.stderr and "2 already labelled" in p.stderr
    df = read_labels(out)
    assert sorted(df.image) == ["deeper/plain.jpg", "new.jpg", "visage_é_日本.JPG"]
    p = cli("run", d, "--out", out, "--model", random_model_path, "--overwrite", "--workers", "0", check_rc=0)
    assert "3 images" in p.stderr
    assert len(read_labels(out)) == 3


def test_pts_output_mirrors_tree_with_one_based_points(mixed_folder, random_model_path, tmp_path):
    out = tmp_path / "pts"
    p = cli("run", mixed_folder, "--out", out, "--format", "pts", "--model", random_model_path, "--workers", "0", "--glob", "sub/*", "--glob", "sky.jpg")
    assert p.returncode == 0, p.stderr
    assert (out / "sub" / "deeper" / "plain_1.pts").is_file() and (out / "sub" / "visage_é_日本_1.pts").is_file()
    idx = {r["image"]: r for r in read_index(out)}
    assert idx["sky.jpg"]["status"] == "no_face" and idx["sub/deeper/plain.jpg"]["pts_files"] == "sub/deeper/plain_1.pts"
    pts = read_pts(out / "sub" / "deeper" / "plain_1.pts")
    assert pts.shape == (68, 2)


def test_many_faces_in_group_photo(random_model_path, tmp_path):
    out = tmp_path / "g.parquet"
    cli("run", PHOTOS / "groups" / "bald_guys.jpg", PHOTOS / "groups" / "dogs.jpg", "--out", out, "--model", random_model_path, "--workers", "0", check_rc=0)
    df = read_labels(out)
    bald = df[df.image == "bald_guys.jpg"]
    assert len(bald) >= 5 and list(bald.face_index) == list(range(len(bald)))
    assert df[df.image == "dogs.jpg"].status.tolist() == ["no_face"]


def test_usage_errors_exit_2_before_any_work(tmp_path, random_model_path):
    p = cli("run", tmp_path / "nope", "--out", tmp_path / "x.parquet", check_rc=2)
    assert "no such file or folder" in p.stderr
    (tmp_path / "ro").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = cli("run", tmp_path / "ro", "--out", blocker / "sub" / "x.parquet", check_rc=2)
    assert "cannot write" in p.stderr
    p = cli("run", tmp_path / "ro", "--out", tmp_path / "x.parquet", "--model", tmp_path / "file", check_rc=1)
    assert "not an autolabel model" in p.stderr


def test_empty_folder_says_so(tmp_path, random_model_path):
    (tmp_path / "empty").mkdir()
    p = cli("run", tmp_path / "empty", "--out", tmp_path / "x.parquet", "--model", random_model_path, check_rc=0)
    assert "no images found" in p.stderr
    assert len(read_labels(tmp_path / "x.parquet")) == 0


def test_kill_9_loses_nothing_finished_and_resumes(random_model_path, tmp_path):
    src = sorted(HELEN_TEST.glob("*.jpg"))[:60]
    d = tmp_path / "in"
    d.mkdir()
    for f in src:
        shutil.copy(f, d / f.name)
    out = tmp_path / "k.parquet"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "autolabel", "run", str(d), "--out", str(out), "--model", str(random_model_path),
                             "--workers", "0", "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out.with_name(out.name + ".parts")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("part-*.parquet"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # never a half-written output
    done = sum(pq.read_metadata(p).num_rows for p in parts.glob("part-*.parquet"))
    assert 0 < done < 60
    p = cli("run", d, "--out", out, "--model", random_model_path, "--workers", "0", check_rc=0)
    assert f"{done} already labelled" in p.stderr
    df = read_labels(out)
    assert sorted(df.image.unique()) == sorted(f.name for f in src) and not df.image.duplicated().any()
    assert not parts.exists()


def test_workers_give_the_same_rows_as_in_process(mixed_folder, random_model_path, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    cli("run", mixed_folder / "sub", "--out", a, "--model", random_model_path, "--workers", "0", check_rc=0)
    cli("run", mixed_folder / "sub", "--out", b, "--model", random_model_path, "--workers", "2", check_rc=0)
    da, db = read_labels(a), read_labels(b)
    assert da.image.tolist() == db.image.tolist()
    np.testing.assert_allclose(points_array(da), points_array(db), atol=1e-4)


@pytest.mark.skipif(not platform.libc_ver()[0] == "glibc", reason="glibc's malloc arenas")
def test_run_bounds_glibc_malloc():
    """`run` sets glibc's malloc to 2 arenas and a fixed 1 MiB mmap threshold: both settings are
    accepted here (labelling.bound_malloc; the memory they save is bench_run.py's to measure)."""
    from autolabel.labelling import bound_malloc

    assert bound_malloc() is True
