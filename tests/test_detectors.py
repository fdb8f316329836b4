"""Detector contract: list[Box] in the input image's pixels, whatever the scale or settings."""

import numpy as np
import pytest
from PIL import Image

from autolabel.detectors import DETECTORS, make_detector
from autolabel.formats.pts import read_pts
from autolabel.geometry import points_box
from autolabel.types import Box, UsageError

from helpers import HELEN_TEST, PHOTOS

pytestmark = pytest.mark.needs_data


def gray(path, scale=1.0):
    im = Image.open(path).convert("L")
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    return np.asarray(im)


def test_hog_finds_the_annotated_face():
    f = sorted(HELEN_TEST.glob("*.jpg"))[0]
    boxes = make_detector("hog").detect(gray(f))
    ref = points_box(read_pts(f.with_suffix(".pts")))
    assert boxes and all(isinstance(b, Box) for b in boxes)
    assert max(b.iou(ref) for b in boxes) > 0.4


def test_downscaled_detection_maps_boxes_back():
    f = sorted(HELEN_TEST.glob("*.jpg"))[0]
    big = gray(f, 3.0)  # ~1500 px
    full = make_detector("hog", upsample=0, max_side=0).detect(big)
    small = make_detector("hog", upsample=0, max_side=700).detect(big)
    assert len(full) == len(small) >= 1
    a, b = full[0], small[0]
    assert a.iou(b) > 0.7  # same face, in the big image's pixels
    assert b.x1 > 700 or b.y1 > 700 or max(big.shape) <= 700


def test_auto_upsample_finds_small_faces_like_upsample_1():
    img = gray(PHOTOS / "groups" / "bald_guys.jpg")
    n1 = len(make_detector("hog", upsample=1, max_side=0).detect(img))
    na = len(make_detector("hog", upsample="auto", max_side=0).detect(img))
    n0 = len(make_detector("hog", upsample=0, max_side=0).detect(img))
    assert na == n1 >= n0


def _scans(det, img):
    """The scans `det.detect(img)` runs: (scale, upsample) of each, and its boxes."""
    calls, run = [], det._run
    det._run = lambda im, scale, up: calls.append((round(scale, 3), up)) or run(im, scale, up)
    return calls, det.detect(img)


def test_auto_stops_at_the_coarsest_scale_that_finds_big_faces():
    f = sorted(HELEN_TEST.glob("*.jpg"))[0]
    img = gray(f, 600 / max(gray(f).shape))  # 600 px: the face is ~250 px, found at half scale
    calls, boxes = _scans(make_detector("hog"), img)
    assert calls == [(0.5, 0)]  # one scan, a quarter of the pixels of the image's own scale
    ref = points_box(read_pts(f.with_suffix(".pts")) * 600 / max(gray(f).shape))
    assert len(boxes) == 1 and boxes[0].iou(ref) > 0.4
    assert min(boxes[0].width, boxes[0].height) * 0.5 >= 100  # the rule's threshold, at the scale scanned
    own = make_detector("hog", upsample=0).detect(img)  # the same face at the image's own scale
    assert len(own) == 1 and own[0].iou(boxes[0]) > 0.6

    calls, _ = _scans(make_detector("hog", max_side=300), img)  # max_side scales every scan
    assert calls[0] == (0.25, 0)


def test_auto_goes_finer_for_small_faces_and_skips_scans_smaller_than_the_window():
    img = gray(PHOTOS / "groups" / "bald_guys.jpg", 0.5)
    calls, boxes = _scans(make_detector("hog", max_side=0), img)
    assert calls == [(0.5, 0), (1.0, 0), (1.0, 1)]  # small faces: half, own, then 2x upsampled
    assert len(boxes) >= 2
    assert [b.as_list() for b in boxes] == [b.as_list() for b in make_detector("hog", upsample=1, max_side=0).detect(img)]
    tiny = np.asarray(Image.fromarray(img).resize((150, 120)))  # half of it is under dlib's 80-px window
    calls, _ = _scans(make_detector("hog"), tiny)
    assert calls[0] == (1.0, 0)
    assert make_detector("hog").settings()["scales"] == [0.5, 1.0, 2.0]
    odd = make_detector("hog")
    odd.auto_scales = (1.0, 1.5)  # dlib upsamples in 2x steps: a 1.5x scan cannot be run as recorded
    with pytest.raises(UsageError, match="1.5"):
        odd.detect(tiny)
    assert "scales" not in make_detector("hog", upsample=1).settings()


def test_min_face_size_and_registry():
    f = sorted(HELEN_TEST.glob("*.jpg"))[0]
    assert make_detector("hog", min_face_size=10_000).detect(gray(f)) == []
    assert set(DETECTORS) == {"hog", "cnn"}
    with pytest.raises(UsageError, match="choose one of: hog, cnn"):
        make_detector("yolo")
    with pytest.raises(UsageError):
        make_detector("hog", upsample=-1)


def test_cnn_detector_from_face_recognition_models():
    f = sorted(HELEN_TEST.glob("*.jpg"))[0]
    img = gray(f, 0.6)
    boxes = make_detector("cnn", upsample=0).detect(img)
    ref = points_box(read_pts(f.with_suffix(".pts")) * 0.6)
    assert len(boxes) >= 1 and max(b.iou(ref) for b in boxes) > 0.3
