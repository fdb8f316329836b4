"""Interchange formats (COCO keypoints, dlib XML, wide CSV, Label Studio): writer -> reader round
trips, their real clients (pycocotools, dlib's shape-predictor trainer, pandas), the shared data's
dlib XML files, and bad input reported item by item instead of raised."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers import HELEN_TEST, PHOTOS, cli, link_faces
from PIL import Image

from autolabel.formats import coco, csv_wide, dlib_xml, label_studio
from autolabel.formats.labelset import KEYPOINT_NAMES, POINT_LABELS, point_index
from autolabel.formats.pts import read_pts, write_pts
from autolabel.markup import N_POINTS, connections
from autolabel.types import Box, Face, FormatError, ImageResult

#: module, writer class, file suffix, how close points come back (dlib XML stores integers)
FORMATS = {
    "coco": (coco, coco.CocoWriter, ".json", 1e-3),
    "csv": (csv_wide, csv_wide.CsvWriter, ".csv", 1e-3),
    "label-studio": (label_studio, label_studio.LabelStudioWriter, ".json", 1e-3),
    "dlib": (dlib_xml, dlib_xml.DlibXmlWriter, ".xml", 0.5),
}


def _results(folder: Path, n_images: int = 4, seed: int = 0) -> list[ImageResult]:
    """Small images: image k has k faces (image 0 none), and one failed image at the end."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n_images):
        p = folder / "sub" / f"im {k}.png" if k == 2 else folder / f"im{k}.png"  # a space and a sub-folder
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (320, 240), (k * 40, 90, 90)).save(p)
        faces = []
        for j in range(k):
            pts = (rng.random((N_POINTS, 2)) * [319, 239]).astype(np.float32)
            faces.append(Face(Box(5.25 + j, 7.5, 150.75 + j, 160.0, 0.8 + j), pts, 0.01 * (j + 1), "model", "m123"))
        out.append(ImageResult(p, 320, 240, tuple(faces)))
    bad = folder / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out.append(ImageResult(bad, error="cannot decode image"))
    return out


def _write(writer_cls, out: Path, results: list[ImageResult], root: Path, **kw) -> None:
    w = writer_cls(out, metadata={"model_version": "m123"}, **kw)
    for r in results:
        w.write_result(r, r.path.relative_to(root).as_posix(), (r.path.stat().st_size, r.path.stat().st_mtime_ns))
        w.flush()
    w.close()


def _shapes(ls) -> dict[tuple[str, int], np.ndarray]:
    return {(name, i): f.points for name, i, _, f in ls.faces()}


# ----------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_points_boxes_and_statuses(tmp_path, fmt):
    mod, writer_cls, suffix, tol = FORMATS[fmt]
    results = _results(tmp_path / "imgs")
    out = tmp_path / "out" / f"labels{suffix}"
    _write(writer_cls, out, results, tmp_path / "imgs")
    assert not out.with_name(out.name + ".parts").exists()
    ls = mod.read(out)
    assert ls.skipped == []
    names = [n for n, _ in ls.images]
    assert names == ["im0.png", "im1.png", "sub/im 2.png", "im3.png", "broken.jpg"]
    assert [r.status for _, r in ls.images] == ["no_face", "ok", "ok", "ok", "error"]
    for (_, got), want in zip(ls.images, results):
        assert got.path.resolve() == want.path.resolve()
        assert len(got.faces) == len(want.faces)
        for g, w in zip(got.faces, want.faces):
            assert np.abs(g.points - w.points).max() <= tol
            assert np.allclose(g.box.as_list(), w.box.as_list(), atol=max(tol, 1e-3))
            assert g.confidence == pytest.approx(w.confidence, abs=1e-6)
            assert g.box.score == pytest.approx(w.box.score, abs=1e-6)
            assert g.model_id == "m123"
    if fmt == "dlib":  # integers: whole-pixel points come back exactly
        r = results[1]
        whole = ImageResult(r.path, r.width, r.height, (Face(r.faces[0].box, np.round(r.faces[0].points), 0.0),))
        _write(writer_cls, out, [whole], tmp_path / "imgs", overwrite=True)
        np.testing.assert_array_equal(mod.read(out).images[0][1].faces[0].points, np.round(r.faces[0].points))


def test_round_trip_through_every_format_in_a_chain(tmp_path):
    """COCO -> CSV -> Label Studio -> COCO, each read feeding the next writer (export's path)."""
    results = _results(tmp_path / "imgs")
    src = tmp_path / "a.json"
    _write(coco.CocoWriter, src, results, tmp_path / "imgs")
    ls = coco.read(src)
    for fmt, name in (("csv", "b.csv"), ("label-studio", "c.json"), ("coco", "d.json")):
        mod, writer_cls, _, _ = FORMATS[fmt]
        w = writer_cls(tmp_path / name)
        for rel, r in ls.images:
            w.write_result(r, rel, None)
        w.close()
        ls = mod.read(tmp_path / name)
    want = {(r.path.name, i): f.points for r in results for i, f in enumerate(r.faces)}
    got = {(Path(n).name, i): p for (n, i), p in _shapes(ls).items()}
    assert got.keys() == want.keys()
    assert max(np.abs(got[k] - want[k]).max() for k in want) <= 1e-3


@pytest.mark.parametrize("fmt", FORMATS)
def test_resume_merges_parts_newest_wins_and_a_crash_keeps_out(tmp_path, fmt):
    mod, writer_cls, suffix, _ = FORMATS[fmt]
    root = tmp_path / "imgs"
    results = _results(root)
    out = tmp_path / f"labels{suffix}"
    stat = lambda p: (p.stat().st_size, p.stat().st_mtime_ns)
    w = writer_cls(out)
    for r in results[:3]:
        w.write_result(r, r.path.relative_to(root).as_posix(), stat(r.path))
    w.flush()  # killed here: no close
    w = writer_cls(out)
    assert set(w.done_keys()) == {str(r.path.absolute()) for r in results[:3]}
    redone = ImageResult(results[1].path, 320, 240, ())  # the same image again, now without a face
    for r in [redone, *results[3:]]:
        w.write_result(r, r.path.relative_to(root).as_posix(), stat(r.path))
    w.close()
    before = out.read_bytes()
    ls = mod.read(out)
    assert [n for n, _ in ls.images] == ["im0.png", "sub/im 2.png", "im1.png", "im3.png", "broken.jpg"]
    assert ls.n_faces == 2 + 3
    assert str(results[-1].path.absolute()) not in writer_cls(out).done_keys()  # failed images are retried
    w = writer_cls(out)
    w.write_result(results[1], "im1.png", stat(results[1].path))
    w.flush()  # a crash after a flush: OUT is untouched, the part waits for the next run
    assert out.read_bytes() == before
    w.close()
    assert mod.read(out).n_faces == 2 + 3 + 1


# ------------------------------------------------------------------- conventions and clients
def test_keypoint_names_skeleton_and_labels():
    assert len(KEYPOINT_NAMES) == len(set(KEYPOINT_NAMES)) == N_POINTS
    assert KEYPOINT_NAMES[0] == "jaw_1" and KEYPOINT_NAMES[36] == "right_eye_1" and KEYPOINT_NAMES[67] == "inner_lip_8"
    assert sorted(POINT_LABELS) == list(POINT_LABELS)  # dlib orders parts by name
    assert [point_index(s) for s in ("00", "7", "jaw_8", "67", "68", "nose")] == [0, 7, 7, 67, None, None]
    assert coco.SKELETON == [[i + 1, j + 1] for i, j, _ in connections()]
    assert min(min(e) for e in coco.SKELETON) == 1 and max(max(e) for e in coco.SKELETON) == N_POINTS


def test_coco_pixel_convention_and_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    results = _results(tmp_path / "imgs")
    out = tmp_path / "person_keypoints_faces.json"
    _write(coco.CocoWriter, out, results, tmp_path / "imgs")
    api = COCO(str(out))
    cat = api.loadCats(api.getCatIds(catNms=["face"]))[0]
    assert cat["keypoints"] == list(KEYPOINT_NAMES) and cat["skeleton"] == coco.SKELETON
    img = api.loadImgs([i for i in api.getImgIds() if api.imgs[i]["file_name"] == "im3.png"])[0]
    assert (img["width"], img["height"]) == (320, 240)
    anns = api.loadAnns(api.getAnnIds(imgIds=[img["id"]]))
    assert len(anns) == 3 and all(a["num_keypoints"] == N_POINTS for a in anns)
    want = results[3].faces
    for a, f in zip(sorted(anns, key=lambda a: a["face_index"]), want):
        kp = np.asarray(a["keypoints"]).reshape(N_POINTS, 3)
        np.testing.assert_allclose(kp[:, :2], f.points, atol=1e-3)  # 0-based pixel indices, no shift
        assert (kp[:, 2] == 2).all()
        np.testing.assert_allclose(a["bbox"], [f.box.x0, f.box.y0, f.box.width, f.box.height], atol=1e-3)
    assert len(api.getAnnIds()) == 6 and len(api.getImgIds()) == 5


def test_label_studio_percent_convention_and_config(tmp_path):
    p = tmp_path / "a.png"
    Image.new("L", (100, 50)).save(p)
    pts = np.zeros((N_POINTS, 2), np.float32)
    pts[1] = [99, 49]  # the centre of the last pixel
    out = tmp_path / "tasks.json"
    _write(label_studio.LabelStudioWriter, out, [ImageResult(p, 100, 50, (Face(Box(0, 0, 100, 50), pts, 0.03),))], tmp_path)
    (task,) = json.loads(out.read_text())
    assert task["data"]["image"] == "/data/local-files/?d=a.png" and task["data"]["name"] == "a.png"
    res = task["predictions"][0]["result"]
    rect = res[0]
    assert rect["type"] == "rectanglelabels" and rect["value"]["x"] == 0 and rect["value"]["width"] == 100
    kp = [r for r in res if r["type"] == "keypointlabels"]
    assert len(kp) == N_POINTS and all(r["parentID"] == rect["id"] for r in kp)
    assert (kp[0]["value"]["x"], kp[0]["value"]["y"]) == (0.5, 1.0)  # pixel centre (0, 0) -> 0.5 px
    assert (kp[1]["value"]["x"], kp[1]["value"]["y"]) == (99.5, 99.0)
    assert task["predictions"][0]["score"] == pytest.approx(0.97)
    config = ET.fromstring(out.with_name("tasks.label_config.xml").read_text())
    labels = config.find("KeyPointLabels").findall("Label")
    assert [lab.get("value") for lab in labels] == list(POINT_LABELS)
    assert [int(lab.get("model_index")) for lab in labels] == list(range(N_POINTS))
    assert config.find("RectangleLabels").get("name") == rect["from_name"]
    assert config.find("KeyPointLabels").get("name") == kp[0]["from_name"]


def test_label_studio_export_reads_the_reviewed_annotation(tmp_path):
    """A Label Studio export: the person's annotation wins over the prediction; keypoints a
    person added without a parent region join the only face box."""
    results = _results(tmp_path / "imgs", n_images=2)
    out = tmp_path / "tasks.json"
    _write(label_studio.LabelStudioWriter, out, results[1:2], tmp_path / "imgs")
    tasks = json.loads(out.read_text())
    result = [dict(r) for r in tasks[0]["predictions"][0]["result"]]
    for r in result:
        r.pop("parentID", None)
        if r["type"] == "keypointlabels" and r["value"]["keypointlabels"] == ["30"]:
            r["value"] = {**r["value"], "x": r["value"]["x"] + 1.0}  # the reviewer moved the nose tip
    tasks[0].update(id=7, annotations=[{"id": 1, "was_cancelled": True, "result": []}, {"id": 2, "result": result}])
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    ls = label_studio.read(tmp_path / "export.json")
    (face,) = ls.images[0][1].faces
    assert face.source == "label-studio"
    want = results[1].faces[0].points.copy()
    want[30, 0] += 3.2  # 1 % of 320 px
    np.testing.assert_allclose(face.points, want, atol=1e-3)


def test_csv_reads_with_pandas_without_list_parsing(tmp_path):
    import pandas as pd

    results = _results(tmp_path / "imgs")
    out = tmp_path / "labels.csv"
    _write(csv_wide.CsvWriter, out, results, tmp_path / "imgs")
    df = pd.read_csv(out)
    assert list(df.columns[:8]) == ["image", "face_index", "box_x0", "box_y0", "box_x1", "box_y1", "det_score", "confidence"]
    faces = df[df.status == "ok"]
    assert len(faces) == 6 and faces["x_67"].dtype == np.float64
    np.testing.assert_allclose(faces.iloc[0][[f"x_{i}" for i in range(N_POINTS)]].to_numpy(float), results[1].faces[0].points[:, 0], atol=1e-3)
    assert set(df.status) == {"ok", "no_face", "error"}


@pytest.mark.needs_data
def test_dlib_trains_a_shape_predictor_on_an_export_and_it_runs(tmp_path):
    import dlib

    from autolabel.geometry import box_from_points

    pts_files = sorted(HELEN_TEST.glob("*.pts"))[:12]
    w = dlib_xml.DlibXmlWriter(tmp_path / "export" / "train.xml")
    for f in pts_files:
        img = f.with_suffix(".jpg")
        p = read_pts(f)
        with Image.open(img) as im:
            size = im.size
        w.write_result(ImageResult(img, *size, (Face(box_from_points(p), p, 0.0, "300w"),)), img.name, None)
    extra = tmp_path / "blank.png"  # an image with no face must not break training
    Image.new("RGB", (64, 64)).save(extra)
    w.write_result(ImageResult(extra, 64, 64, ()), "blank.png", None)
    w.close()
    opts = dlib.shape_predictor_training_options()
    opts.tree_depth, opts.num_trees_per_cascade_level, opts.cascade_depth = 2, 5, 2
    opts.oversampling_amount, opts.nu, opts.be_verbose = 1, 0.1, False
    model = tmp_path / "sp.dat"
    dlib.train_shape_predictor(str(tmp_path / "export" / "train.xml"), str(model), opts)
    sp = dlib.shape_predictor(str(model))
    img = dlib.load_rgb_image(str(pts_files[0].with_suffix(".jpg")))
    b = box_from_points(read_pts(pts_files[0]))
    shape = sp(img, dlib.rectangle(round(b.x0), round(b.y0), round(b.x1) - 1, round(b.y1) - 1))
    assert shape.num_parts == N_POINTS
    got = np.array([[shape.part(i).x, shape.part(i).y] for i in range(N_POINTS)], float)
    assert np.isfinite(got).all() and (np.abs(got - read_pts(pts_files[0])).mean() < 0.2 * b.width)


@pytest.mark.needs_data
@pytest.mark.parametrize("name, faces", [("training_with_face_landmarks.xml", 18), ("testing_with_face_landmarks.xml", 25)])
def test_shared_dlib_xml_files_import(name, faces):
    path = PHOTOS / "groups" / name
    ls = dlib_xml.read(path)
    assert ls.skipped == [] and ls.n_faces == faces
    first = ET.parse(path).getroot().find("images/image")
    _, r = ls.images[0]
    assert r.path == path.parent / first.get("file") and (r.width, r.height) == (int(first.get("width")), int(first.get("height")))
    box = first.find("box")
    parts = {int(p.get("name")): (float(p.get("x")), float(p.get("y"))) for p in box.findall("part")}
    np.testing.assert_array_equal(r.faces[0].points, np.array([parts[i] for i in range(N_POINTS)], np.float32))
    assert r.faces[0].box.as_list() == [float(box.get("left")), float(box.get("top")),
                                        float(box.get("left")) + float(box.get("width")), float(box.get("top")) + float(box.get("height"))]


@pytest.mark.needs_data
def test_boxes_only_dlib_xml_reports_every_box():
    path = PHOTOS / "groups" / "training.xml"
    ls = dlib_xml.read(path)
    assert ls.n_faces == 0 and ls.skipped and all("no parts (a face box only)" in m for m in ls.skipped)


# ------------------------------------------------------------------------------ bad input
def test_bad_coco_items_are_named_counted_and_skipped(tmp_path):
    results = _results(tmp_path / "imgs", n_images=4)
    out = tmp_path / "c.json"
    _write(coco.CocoWriter, out, results, tmp_path / "imgs")
    data = json.loads(out.read_text())
    data["categories"].append({"id": 2, "name": "person", "keypoints": ["k"] * 17, "skeleton": []})
    a0, a1, a2, *_ = data["annotations"]
    a1["category_id"], a1["keypoints"] = 2, a1["keypoints"][:51]  # a 17-keypoint person
    a2["keypoints"][3 * 12 + 2] = 0  # point 12 not labelled
    data["annotations"].append({**a0, "id": 99, "image_id": 1234})  # an image that is not listed
    data["images"][1]["file_name"] = "gone.png"
    data["images"][1].pop("abs_path")
    out.write_text(json.dumps(data))
    ls = coco.read(out)
    assert ls.n_faces == 3  # image 4's three faces; image 2 (with a0) is missing
    msgs = "\n".join(ls.skipped)
    assert len(ls.skipped) == 4, msgs
    assert f"{out}: image 2 ('gone.png'): image not found" in msgs
    assert f"{out}: image 3 ('sub/im 2.png'), annotation 2: category 'person' has 17 keypoints, expected 68" in msgs
    assert f"{out}: image 3 ('sub/im 2.png'), annotation 3: points 12 missing (67 of 68 given)" in msgs
    assert f"{out}: annotation 99: image_id 1234 is not in 'images'" in msgs
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(FormatError, match="x.json: not a readable COCO JSON file"):
        coco.read(tmp_path / "x.json")


def test_label_studio_export_with_missing_points(tmp_path):
    results = _results(tmp_path / "imgs", n_images=3)
    out = tmp_path / "tasks.json"
    _write(label_studio.LabelStudioWriter, out, results, tmp_path / "imgs")
    tasks = json.loads(out.read_text())
    res = tasks[2]["predictions"][0]["result"]
    drop = {"face-1-05", "face-1-40"}
    tasks[2]["predictions"][0]["result"] = [r for r in res if r["id"] not in drop]
    tasks[2]["id"] = 42
    out.write_text(json.dumps(tasks))
    ls = label_studio.read(out)
    assert ls.n_faces == 2 and len(ls.skipped) == 1
    assert ls.skipped[0] == f"{out}: task 42 ('sub/im 2.png'), face 'face-1': points 5, 40 missing (66 of 68 given)"


def test_dlib_xml_with_fewer_parts_and_bad_names(tmp_path):
    img = tmp_path / "a.png"
    Image.new("L", (200, 200)).save(img)
    parts17 = "".join(f"<part name='{i:02d}' x='{i}' y='{i}'/>" for i in range(17))
    parts68 = "".join(f"<part name='{i:02d}' x='{i}' y='{i + 1}'/>" for i in range(N_POINTS))
    bad_name = parts68.replace("name='33'", "name='nose'")
    (tmp_path / "d.xml").write_text(
        "<dataset><images>"
        f"<image file='a.png'><box top='1' left='2' width='50' height='50'>{parts17}</box>"
        f"<box top='1' left='2' width='50' height='50'>{parts68}</box>"
        f"<box top='1' left='2' width='50' height='50'>{bad_name}</box></image>"
        f"<image file='missing.png'><box top='1' left='2' width='50' height='50'>{parts68}</box></image>"
        "</images></dataset>")
    ls = dlib_xml.read(tmp_path / "d.xml")
    assert ls.n_faces == 1
    assert ls.skipped == [f"{tmp_path / 'd.xml'}: image 'a.png', box 1 (top=1 left=2): 17 parts, expected 68",
                          f"{tmp_path / 'd.xml'}: image 'a.png', box 3 (top=1 left=2): part name 'nose' is not a point 00-67",
                          f"{tmp_path / 'd.xml'}: image 'missing.png': image not found (looked for {tmp_path / 'missing.png'}); "
                          + "pass the images' folder as --root"]
    (tmp_path / "e.xml").write_text("<annotations/>")
    with pytest.raises(FormatError, match="not a dlib imglab XML file"):
        dlib_xml.read(tmp_path / "e.xml")


def test_csv_with_empty_points_and_missing_columns(tmp_path):
    results = _results(tmp_path / "imgs", n_images=3)
    out = tmp_path / "l.csv"
    _write(csv_wide.CsvWriter, out, results, tmp_path / "imgs")
    lines = out.read_text().splitlines()
    cells = lines[2].split(",")
    cells[8 + 4] = ""  # x_4 of the first face
    lines[2] = ",".join(cells)
    out.write_text("\n".join(lines) + "\n")
    ls = csv_wide.read(out)
    assert ls.n_faces == 2 and ls.skipped == [f"{out}: image 'im1.png', line 3 (face 0): 1 empty point columns (x_4)"]
    (tmp_path / "m.csv").write_text("image,x_0,y_0\na.png,1,2\n")
    with pytest.raises(FormatError, match=r"m.csv: not a wide landmark CSV \(missing columns: x_1, "):
        csv_wide.read(tmp_path / "m.csv")


def test_root_finds_moved_images(tmp_path):
    results = _results(tmp_path / "imgs", n_images=2)
    out = tmp_path / "c.json"
    _write(coco.CocoWriter, out, results, tmp_path / "imgs")
    (tmp_path / "imgs").rename(tmp_path / "moved")
    assert coco.read(out).images == [] and len(coco.read(out).skipped) == 3
    ls = coco.read(out, root=tmp_path / "moved")
    assert [r.path for _, r in ls.images][:2] == [tmp_path / "moved" / "im0.png", tmp_path / "moved" / "im1.png"]
    assert ls.n_faces == 1
    assert coco.read(out, check_images=False).n_faces == 1


# ---------------------------------------------------------------------------------- audit
def test_group_shift_finds_the_moved_group_and_ignores_a_global_offset():
    from autolabel.audit import GROUP_NAMES, group_shift
    from autolabel.metrics import interocular

    model = np.random.default_rng(1).random((1, N_POINTS, 2)) * 100
    iod = float(interocular(model)[0])
    moved = model.copy()
    moved[0, 17:22] += [0.3 * iod, 0]  # the right brow, 0.3 eye distances to the side
    shift, group = group_shift(np.concatenate([model + 5.0, moved]), np.concatenate([model, model]))
    assert shift[0] == pytest.approx(0, abs=1e-9)  # every point off alike: the crop, not the label
    assert GROUP_NAMES[group[1]] == "right_brow"
    assert shift[1] == pytest.approx(0.3 * (1 - 5 / N_POINTS), rel=1e-6)


@pytest.mark.needs_data
@pytest.mark.slow
def test_audit_with_the_shipped_model_ranks_swapped_eyes_first(tmp_path):
    import pyarrow.parquet as pq

    from autolabel.audit import audit
    from autolabel.formats.parquet import read_labels
    from autolabel.predictor import Predictor
    from autolabel.runtimes import make_runtime

    files = sorted(HELEN_TEST.glob("*.jpg"))[:3]
    w = coco.CocoWriter(tmp_path / "given.json")
    for k, img in enumerate(files):
        p = read_pts(img.with_suffix(".pts"))
        if k == 1:  # the annotator swapped the eyes
            p[36:48] = np.concatenate([p[42:48], p[36:42]])
        with Image.open(img) as im:
            w.write_result(ImageResult(img, *im.size, (Face(Box(0, 0, 1, 1), p, float("nan"), "300w"),)), img.name, None)
    w.close()
    labels = coco.read(tmp_path / "given.json")
    res = audit(labels, Predictor(make_runtime("torch")), tmp_path / "audit.parquet", progress=False)
    assert res.faces == 3 and res.skipped == []
    df = read_labels(tmp_path / "audit.parquet")  # a labels file: review and export read it
    assert list(df.audit_rank) == [1, 2, 3] and df.image[0] == files[1].name
    assert df.worst_group[0] in ("right_eye", "left_eye") and df.group_shift[0] > 0.5 > df.group_shift[1]
    np.testing.assert_allclose(np.asarray(df.points[0]).reshape(N_POINTS, 2)[36], read_pts(files[1].with_suffix(".pts"))[42], atol=1e-3)
    assert len(df.model_points[0]) == 2 * N_POINTS and len(df.point_errors[0]) == N_POINTS
    assert (df.confidence < 0.1).all()  # the model's own flip confidence, not the audit score
    assert json.loads(pq.read_schema(tmp_path / "audit.parquet").metadata[b"autolabel"])["kind"] == "audit"


# ----------------------------------------------------------------------- audit and the registry
class _FakePredictor:
    """Answers each image's faces with the shapes given, in order (no model: fast)."""

    model_id = "fake"

    def __init__(self, answers: list[np.ndarray], confidence: float = 0.01):
        self.answers, self.confidence = list(answers), confidence

    def crops(self, gray, boxes):
        return np.zeros((len(boxes), 1, 1), np.uint8), list(boxes)

    def predict(self, crops, transforms):
        pts = self.answers.pop(0)
        return pts.astype(np.float32), np.full(len(pts), self.confidence, np.float32), np.full(pts.shape[:2], np.nan, np.float32)


def test_audit_ranks_the_mislabelled_face_first_and_review_opens_it_worst_first(tmp_path):
    from autolabel.audit import audit
    from autolabel.review.queue import Queue

    results = _results(tmp_path / "imgs", n_images=4)
    truth = [np.stack([f.points for f in r.faces]) for r in results if r.faces]
    given = [t.copy() for t in truth]
    given[1][1, 48:68] += [0, 40.0]  # image 3, face 2: the mouth drawn 40 px too low
    labelled = [ImageResult(r.path, r.width, r.height, tuple(Face(f.box, g, f.confidence) for f, g in zip(r.faces, gs)))
                for r, gs in zip([r for r in results if r.faces], given)]
    w = csv_wide.CsvWriter(tmp_path / "given.csv")
    for r in labelled:
        w.write_result(r, r.path.relative_to(tmp_path / "imgs").as_posix(), None)
    w.close()
    res = audit(csv_wide.read(tmp_path / "given.csv"), _FakePredictor(truth), tmp_path / "audit.parquet", refine=False, progress=False)
    assert res.faces == 6
    q = Queue.from_parquet(tmp_path / "audit.parquet")
    assert q.key(0) == "sub/im 2.png#1"  # worst first, whatever the confidences
    np.testing.assert_allclose(q.points[0], given[1][1], atol=1e-3)  # the labels, to correct
    # review draws the model's shape beside them: the labels to edit, the model's points as the reference
    from autolabel.formats.corrections import CorrectionStore
    from autolabel.review.session import ReviewSession

    face = ReviewSession(q, CorrectionStore(tmp_path / "corr", tmp_path / "audit.parquet")).face(0)
    assert face["audit"] is True and face["key"] == "sub/im 2.png#1"
    np.testing.assert_allclose(face["points"], given[1][1], atol=0.01)
    np.testing.assert_allclose(face["model_points"], truth[1][1], atol=0.01)
    assert np.abs(np.asarray(face["points"])[48:] - np.asarray(face["model_points"])[48:]).max() > 39


def test_formats_registry_and_guessing(tmp_path):
    from autolabel.formats import READERS, WRITERS, detect_format, guess_format, safe_name

    assert set(WRITERS) >= {"parquet", "pts", "coco", "dlib", "csv", "label-studio"}
    assert set(READERS) == set(WRITERS) | {"corrections"}
    assert [guess_format(Path(n), None) for n in ("a.parquet", "a.json", "a.XML", "a.csv", "out")] == ["parquet", "coco", "dlib", "csv", "pts"]
    assert guess_format(Path("a.json"), "label-studio") == "label-studio"
    results = _results(tmp_path / "imgs", n_images=2)
    for fmt, name in (("coco", "c.json"), ("label-studio", "t.json"), ("dlib", "d.xml"), ("csv", "w.csv")):
        _write(FORMATS[fmt][1], tmp_path / name, results, tmp_path / "imgs")
        assert detect_format(tmp_path / name) == fmt
    assert detect_format(tmp_path / "imgs") == "pts"
    assert [safe_name(n) for n in ("a/b.jpg", "../x.jpg", "/etc/x.jpg", "a/../../x", "C:\\x.jpg")] == ["a/b.jpg", None, None, None, None]


# ----------------------------------------------------------------------- commands
def test_export_cli_converts_refuses_names_outside_out_and_reports_bad_items(tmp_path):
    results = _results(tmp_path / "imgs", n_images=3)
    src = tmp_path / "imgs" / "c.json"
    _write(coco.CocoWriter, src, results, tmp_path / "imgs")
    data = json.loads(src.read_text())
    Image.new("RGB", (320, 240)).save(tmp_path / "evil.png")
    data["images"].append({"id": 99, "file_name": "../evil.png", "width": 320, "height": 240})
    data["annotations"].append({**data["annotations"][0], "id": 99, "image_id": 99})
    data["annotations"].append({**data["annotations"][0], "id": 100, "keypoints": [1, 2, 2] * 17})
    src.write_text(json.dumps(data))
    p = cli("export", src, "--to", "pts", "--out", tmp_path / "out", check_rc=1)  # a refused image: exit 1
    assert "Traceback" not in p.stderr
    assert "annotation 100: 51 keypoint values, expected 204" in p.stderr
    assert f"{src}: image '../evil.png': its name leads outside {tmp_path / 'out'}" in p.stderr
    assert "1 refused: their files would go outside" in p.stderr
    written = sorted(f.relative_to(tmp_path) for f in tmp_path.rglob("*.pts"))
    assert written == [Path("out/im1_1.pts"), Path("out/sub/im 2_1.pts"), Path("out/sub/im 2_2.pts")], written
    cli("export", tmp_path / "out", "--out", tmp_path / "x.xml", check_rc=0)  # the run-style folder -> dlib XML
    assert dlib_xml.read(tmp_path / "x.xml").n_faces == 3
    (tmp_path / "bad.json").write_text("{oops")
    p = cli("export", tmp_path / "bad.json", "--out", tmp_path / "y.csv", check_rc=1)
    assert p.stderr.strip().splitlines()[-1].startswith("autolabel: error: ") and "Traceback" not in p.stderr
    p = cli("export", src, "--out", tmp_path / "y.txt", check_rc=2)
    assert "unknown extension '.txt'" in p.stderr


def _corrections(folder: Path, results: list[ImageResult], root: Path) -> dict[str, np.ndarray]:
    """A corrections folder: every face accepted, except the second corrected (moved) and the
    third rejected. Returns the points of the faces kept, by face key."""
    from autolabel.formats.corrections import CorrectionStore, face_key

    store = CorrectionStore(folder)
    kept, n = {}, 0
    for r in results:
        for i, f in enumerate(r.faces):
            status = ("accepted", "corrected", "rejected")[min(n, 2)] if n < 3 else "accepted"
            pts = f.points + (3.0 if status == "corrected" else 0.0)
            key = face_key(r.path.relative_to(root).as_posix(), i)
            store.record(key, status, pts, 0, image=r.path.relative_to(root).as_posix(), abs_path=str(r.path), box=f.box.as_list(),
                         model_version="m123", width=r.width, height=r.height)
            if status != "rejected":
                kept[key] = pts
            n += 1
    store.close()
    return kept


def _by_image(shapes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Face key -> points as image -> (faces, 68, 2), faces in the order of their first point."""
    out: dict[str, list] = {}
    for key, pts in shapes.items():
        out.setdefault(key.rsplit("#", 1)[0], []).append(np.asarray(pts, np.float64))
    return {k: np.stack(sorted(v, key=lambda p: tuple(p[0]))) for k, v in out.items()}


def test_corrections_exported_to_label_studio_read_back_as_the_corrections(tmp_path):
    from autolabel.formats import detect_format, export
    from autolabel.formats.corrections import face_key

    results = _results(tmp_path / "imgs", n_images=4)
    kept = _corrections(tmp_path / "corr", results, tmp_path / "imgs")
    assert detect_format(tmp_path / "corr") == "corrections" and len(kept) == 5
    labels, refused = export(tmp_path / "corr", tmp_path / "ls" / "tasks.json", "label-studio")
    assert refused == [] and labels.n_faces == 5
    back = label_studio.read(tmp_path / "ls" / "tasks.json")
    assert back.skipped == [] and back.n_faces == 5
    got = {face_key(Path(r.path).relative_to(tmp_path / "imgs").as_posix(), i): f.points for _, i, r, f in back.faces()}
    # faces are renumbered per image once the rejected one is left out: compare image by image
    got, want = _by_image(got), _by_image(kept)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-3)
    p = cli("export", tmp_path / "corr", "--out", tmp_path / "c.csv", check_rc=0)
    assert "read 5 faces in 3 images" in p.stderr


def test_review_opens_a_coco_file_converted_into_the_corrections_folder(tmp_path):
    from autolabel.cli import as_reviewable, read_reviewable
    from autolabel.review.queue import Queue

    results = _results(tmp_path / "imgs", n_images=3)
    _write(coco.CocoWriter, tmp_path / "l.json", results, tmp_path / "imgs")
    (tmp_path / "corr").mkdir()
    labels = as_reviewable(tmp_path / "l.json", tmp_path / "corr", read_reviewable(tmp_path / "l.json", None))
    assert labels == tmp_path / "corr" / "labels.parquet"
    q = Queue.from_parquet(labels)
    keys = sorted(q.key(i) for i in range(len(q)) if q.face_index[i] >= 0)
    assert keys == ["im1.png#0", "sub/im 2.png#0", "sub/im 2.png#1"]
    i = next(i for i in range(len(q)) if q.key(i) == "im1.png#0")
    np.testing.assert_allclose(q.points[i], results[1].faces[0].points, atol=1e-3)
    assert as_reviewable(labels, tmp_path / "corr", read_reviewable(labels, None)) == labels  # a labels Parquet as is


def test_finetune_reads_the_faces_of_a_dlib_xml(tmp_path):
    from autolabel.training.finetune import load_corrections

    results = _results(tmp_path / "imgs", n_images=4)
    _write(dlib_xml.DlibXmlWriter, tmp_path / "train.xml", results, tmp_path / "imgs")
    loaded = load_corrections(tmp_path / "train.xml")
    assert loaded.source == "dlib labels" and len(loaded.samples) == 6 and loaded.keys[0] == "im1.png#0"
    np.testing.assert_allclose(loaded.samples[0].points, results[1].faces[0].points, atol=0.5)  # dlib stores integers
    assert loaded.samples[0].box is None  # other tools' boxes follow other conventions: detected anew


@pytest.mark.needs_data
def test_run_writes_coco_by_format_or_by_json_suffix_and_resumes(tmp_path):
    from pycocotools.coco import COCO

    faces = link_faces(tmp_path / "faces", sorted(HELEN_TEST.glob("*.jpg"))[:2])
    out = tmp_path / "labels.json"
    cli("run", faces, "--out", out, "-q", "-w", "0", check_rc=0)  # .json: COCO
    c = COCO(str(out))
    anns = c.loadAnns(c.getAnnIds())
    assert len(c.getImgIds()) == 2 and len(anns) == 2 and all(len(a["keypoints"]) == 3 * N_POINTS for a in anns)
    got = coco.read(out)
    for name, _, _, f in got.faces():
        truth = read_pts(faces / Path(name).with_suffix(".pts"))
        assert np.linalg.norm(f.points - truth, axis=1).mean() < 10  # the model's points, in image pixels
    p = cli("run", faces, "--format", "coco", "--out", out, "-q", "-w", "0", check_rc=0)
    assert "2 already labelled (skipped)" in p.stderr
    assert coco.read(out).n_faces == 2


@pytest.mark.needs_data
def test_audit_cli_puts_the_corrupted_face_first(tmp_path):
    from autolabel.review.queue import Queue

    files = sorted(HELEN_TEST.glob("*.jpg"))[:4]
    data = link_faces(tmp_path / "data", files[1:])
    (data / files[0].name).symlink_to(files[0])
    p = read_pts(files[0].with_suffix(".pts"))
    p[36:48] = np.concatenate([p[42:48], p[36:42]])  # the eyes swapped
    write_pts(data / files[0].with_suffix(".pts").name, p)
    out = tmp_path / "audit.parquet"
    r = cli("audit", data, "--out", out, "-q", check_rc=0)
    assert "audited 4 faces in 4 images" in r.stderr
    q = Queue.from_parquet(out)
    assert q.image[0] == files[0].name
    cli("audit", data, "--out", tmp_path / "audit.csv", check_rc=2)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_an_image_name_that_is_not_utf8_survives_every_format_and_export(tmp_path, fmt):
    """The name is written as text with `\\xNN` escapes plus its raw bytes; reading finds the
    image by those bytes, and an export to 300-W names the files after the escaped name."""
    import os

    from autolabel.files import path_text
    from autolabel.formats import export

    mod, writer_cls, suffix, _ = FORMATS[fmt]
    folder = tmp_path / "imgs"
    folder.mkdir()
    img = folder / os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (320, 240), (90, 90, 90)).save(img)
    pts = (np.random.default_rng(0).random((N_POINTS, 2)) * [300, 220]).astype(np.float32)
    r = ImageResult(img, 320, 240, (Face(Box(10, 10, 200, 200, 1.0), pts, 0.01, "model", "m123"),))
    w = writer_cls(tmp_path / f"l{suffix}", metadata={"model_version": "m123"})
    w.write_result(r, path_text(img.name), (img.stat().st_size, img.stat().st_mtime_ns))
    w.close()
    assert path_text(img) in writer_cls(tmp_path / f"l{suffix}").done_keys()  # a rerun skips it
    labels, refused = export(tmp_path / f"l{suffix}", tmp_path / "out", to="pts")
    assert not refused and not labels.skipped and [(name, r.path) for name, r in labels.images] == [("caf\\xe9.png", img)]
    assert "caf\\xe9_1.pts" in os.listdir(tmp_path / "out")


def test_occluded_flags_from_review_reach_coco_as_visibility_1_and_come_back(tmp_path):
    """A reviewer's occluded flags: COCO v = 1 (labelled, not visible) for those points, 2 for
    the rest; reading the COCO file back gives the same flags."""
    from autolabel.formats import export
    from autolabel.formats.corrections import CorrectionStore

    img = tmp_path / "imgs" / "a.png"
    img.parent.mkdir()
    Image.new("RGB", (320, 240), (90, 90, 90)).save(img)
    pts = (np.random.default_rng(0).random((N_POINTS, 2)) * [300, 220]).astype(np.float32)
    occ = [i in (8, 30, 31) for i in range(N_POINTS)]
    store = CorrectionStore(tmp_path / "corr")
    store.record("a.png#0", "corrected", pts, 0, image="a.png", abs_path=img, box=[10, 10, 200, 200], model_version="m",
                 width=320, height=240, occluded=occ)
    store.close()
    export(tmp_path / "corr", tmp_path / "c.json", to="coco")
    kp = json.loads((tmp_path / "c.json").read_text())["annotations"][0]["keypoints"]
    assert [i for i in range(N_POINTS) if kp[3 * i + 2] == 1] == [8, 30, 31] and kp.count(2) >= N_POINTS - 3
    back = coco.read(tmp_path / "c.json")
    (_, _, _, face), = list(back.faces())
    assert face.occluded == tuple(occ)
