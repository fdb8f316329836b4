import json

import numpy as np
import pytest
from PIL import Image

from autolabel.formats import make_writer
from autolabel.formats.pts import format_pts, read_pts, write_pts
from autolabel.formats.pts_folder import read_index
from autolabel.geometry import aligned_transform, box_from_points, crop_face, crop_window, cut_aligned
from autolabel.types import Box, Face, FormatError, ImageResult

from helpers import HELEN_TEST


def test_crop_round_trip():
    t = crop_window(Box(100.3, 50.7, 220.9, 190.2), 128)
    p = np.array([[0, 0], [123.4, 77.7], [500, -3]], np.float32)
    np.testing.assert_allclose(t.to_image(t.to_crop(p)), p, atol=1e-3)


def test_crop_puts_a_pixel_where_the_transform_says():
    img = np.zeros((400, 400), np.uint8)
    img[200:204, 150:154] = 255  # a 4x4 bright square centred at (151.5, 201.5)
    crop, t = crop_face(Image.fromarray(img), Box(100, 150, 228, 278), 128)
    ys, xs = np.nonzero(crop > 60)
    centre = np.array([xs.mean(), ys.mean()])
    np.testing.assert_allclose(centre, t.to_crop(np.array([[151.5, 201.5]]))[0], atol=0.6)


def test_crop_outside_the_image_is_black():
    img = Image.new("L", (50, 50), 200)
    crop, t = crop_face(img, Box(-100, -100, -20, -20), 64)
    assert crop.shape == (64, 64) and crop.max() == 0


def test_pts_round_trip_is_one_based(tmp_path):
    p = np.array([[0.0, 0.0], [10.5, 20.25]] + [[1, 1]] * 66, np.float32)
    write_pts(tmp_path / "a.pts", p)
    text = (tmp_path / "a.pts").read_text()
    assert text.splitlines()[3] == "1.000 1.000"  # 0-based (0, 0) is (1, 1) in 300-W
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), p, atol=1e-3)


@pytest.mark.needs_data
def test_real_pts_and_bad_pts(tmp_path):
    p = read_pts(next(HELEN_TEST.glob("*.pts")))
    assert p.shape == (68, 2) and p.min() > -1
    (tmp_path / "bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    with pytest.raises(FormatError, match="header says 68 points, found 1"):
        read_pts(tmp_path / "bad.pts")
    (tmp_path / "nan.pts").write_text(format_pts(np.full((68, 2), np.nan)))
    with pytest.raises(FormatError, match="non-finite"):
        read_pts(tmp_path / "nan.pts")


@pytest.mark.needs_data
def test_box_from_points_contains_the_face_core():
    p = read_pts(next(HELEN_TEST.glob("*.pts")))
    b = box_from_points(p)
    # the eyes and the nose tip sit inside the detector-like box
    for i in (36, 45, 30):
        assert b.x0 < p[i, 0] < b.x1 and b.y0 < p[i, 1] < b.y1


def test_pts_folder_writer_keeps_metadata_and_drops_a_cut_index_line(tmp_path):
    """Like every Writer, the .pts folder stores the run's metadata (run.json); a line cut short
    by a crash is dropped on reopening, so its image counts as not done and is redone."""
    meta = {"model_version": "abc", "command": "autolabel run x"}
    w = make_writer("pts", tmp_path, metadata=meta)
    face = Face(Box(0, 0, 10, 10), np.zeros((68, 2), np.float32), 0.01)
    w.write_result(ImageResult(tmp_path / "a.jpg", 10, 10, (face,)), "a.jpg", (1, 2))
    w.close()
    assert json.loads((tmp_path / "run.json").read_text()) == meta
    with open(tmp_path / "index.csv", "a") as f:
        f.write("b.jpg,/x/b.jpg,1,2,10,10,o")  # a crash mid-append
    w = make_writer("pts", tmp_path, metadata=meta)
    assert set(w.done_keys()) == {str((tmp_path / "a.jpg").absolute())}
    w.close()
    assert [r["image"] for r in read_index(tmp_path)] == ["a.jpg"]


def _tilted_face(angle_deg: float, centre=(210.0, 190.0), scale=1.0) -> np.ndarray:
    """68 points of a mean-ish face layout rotated by `angle_deg` about `centre`."""
    rng = np.random.default_rng(0)
    p = rng.uniform(-60, 60, (68, 2))
    p[36:42] = [-40, -30] + rng.normal(0, 3, (6, 2))  # eyes level before the tilt
    p[42:48] = [40, -30] + rng.normal(0, 3, (6, 2))
    a = np.radians(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (p * scale) @ r.T + centre


def test_aligned_crop_levels_the_eyes_and_round_trips():
    p = _tilted_face(25.0)
    t = aligned_transform(p, 128)
    u = t.to_crop(p)
    eyes = u[42:48].mean(0) - u[36:42].mean(0)
    assert abs(eyes[1]) < 1e-3 and eyes[0] > 0  # level, and not mirrored
    np.testing.assert_allclose(t.to_image(u), p, atol=1e-3)
    # untilted, the aligned crop is the box crop of `box_from_points` (up to its pixel snapping)
    q = _tilted_face(0.0)
    q[42:48, 1] += q[36:42, 1].mean() - q[42:48, 1].mean()
    np.testing.assert_allclose(aligned_transform(q, 128).to_crop(q), crop_window(box_from_points(q), 128).to_crop(q), atol=0.6)


def test_aligned_cut_puts_a_pixel_where_the_transform_says():
    img = np.zeros((400, 420), np.uint8)
    img[230:234, 160:164] = 255  # a 4x4 bright square centred at (161.5, 231.5)
    for angle, scale in ((30.0, 1.0), (-12.0, 3.0)):  # scale 3: a downscale, antialiased first
        t = aligned_transform(_tilted_face(angle, scale=scale, centre=(200.0, 200.0)), 128)
        crop = cut_aligned(Image.fromarray(img), t)
        assert crop.shape == (128, 128)
        ys, xs = np.nonzero(crop > crop.max() / 4)
        w = crop[ys, xs].astype(float)
        centre = np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()
        np.testing.assert_allclose(centre, t.to_crop(np.array([[161.5, 231.5]]))[0], atol=0.6)


def test_aligned_crop_of_degenerate_points_is_finite():
    """A broken first stage (every point on one pixel, far outside the image) still gives a
    finite crop: a 1-px window, black, not a division by zero."""
    t = aligned_transform(np.full((68, 2), -5000.0), 128)
    assert np.isfinite(t.matrix).all()
    crop = cut_aligned(Image.new("L", (50, 40), 200), t)
    assert crop.shape == (128, 128) and crop.max() == 0
