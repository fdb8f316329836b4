"""The one crop-and-predict path: InferenceGraph's outputs, the Predictor, and `Labeler`,
`autolabel run` and `eval` giving the same points for the same image and box."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from autolabel.datasets import detect_boxes, find_samples
from autolabel.detectors import DEFAULT_SETTINGS, make_detector
from autolabel.evaluate import predict_samples
from autolabel.formats.parquet import file_metadata, points_array, read_labels
from autolabel.images import load_gray
from autolabel.labelling import Labeler
from autolabel.model import InferenceGraph, build_network, load_model, predict_crops
from autolabel.geometry import aligned_transform, cut_aligned
from autolabel.model import LandmarkModel
from autolabel.predictor import Predictor, make_predictor
from autolabel.runtimes import RUNTIMES, make_runtime
from autolabel.runtimes.torch_runtime import TorchRuntime
from autolabel.types import Box, ModelError, UsageError

from helpers import HELEN_TEST, cli


def test_inference_graph_gives_points_and_per_point_disagreement():
    torch.manual_seed(0)
    net = build_network().eval()
    x = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        pts, dis, scale = InferenceGraph(net, flip=True)(x)
        plain, nan, _ = InferenceGraph(net, flip=False)(x)
    assert pts.shape == (3, 68, 2) and dis.shape == (3, 68) and pts.dtype == dis.dtype == torch.float32
    assert (dis >= 0).all() and torch.isnan(nan).all() and nan.shape == (3, 68)
    assert scale.shape == (3, 68) and torch.isnan(scale).all()  # a regression net predicts no error scale
    p, d, s = predict_crops(net, x)
    np.testing.assert_array_equal(p, pts.numpy())
    np.testing.assert_array_equal(d, dis.numpy())
    assert np.isnan(s).all()
    assert not np.allclose(plain.numpy(), p)  # flip averaging changes the points


def test_predictor_maps_crops_back_and_scores_confidence(random_model_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8))
    boxes = [Box(50, 40, 170, 160), Box(220, 100, 330, 210)]
    pred = Predictor(make_runtime("torch", random_model_path))
    faces = pred.faces(img, boxes)
    assert [f.box for f in faces] == boxes and all(f.points.shape == (68, 2) for f in faces)
    crops, ts = pred.crops(img, boxes)
    pts, conf, unc = pred.predict(crops, ts)
    np.testing.assert_array_equal(pts, np.stack([f.points for f in faces]))
    assert unc.shape == (2, 68) and np.isnan(unc).all() and all(f.point_uncertainty is None for f in faces)  # v1: no scale
    assert (conf >= 0).all() and faces[0].model_id == pred.model_id == load_model(random_model_path).model_id
    no_flip = Predictor(TorchRuntime(load_model(random_model_path), flip=False)).faces(img, boxes)
    assert all(np.isnan(f.confidence) for f in no_flip)
    assert pred.faces(img, []) == [] and pred.predict(crops[:0], [])[0].shape == (0, 68, 2)


def test_runtime_registry_names_the_valid_choices():
    assert "torch" in RUNTIMES
    with pytest.raises(UsageError, match="choose one of: auto, onnx, onnx-fp32, torch"):
        make_runtime("nope")


def test_one_source_of_detector_defaults():
    det = make_detector("hog")
    assert {k: det.settings()[k] for k in DEFAULT_SETTINGS} == DEFAULT_SETTINGS
    with pytest.raises(UsageError, match="unknown detector settings"):
        make_detector("hog", upsampel=1)


@pytest.mark.needs_data
@pytest.mark.parametrize("refine", [False, True], ids=["one pass", "refine"])
def test_labeler_run_and_eval_give_identical_points(tmp_path, shipped_model_path, refine):
    """Same image, same box: the library API, `autolabel run` (Parquet) and `eval`'s prediction
    agree to the last bit, because they share one decode (`load_gray`), one detector setup and one
    crop-and-predict path; with `--refine` too (run's workers send crops, so its second pass
    decodes the image again)."""
    src = sorted(HELEN_TEST.glob("*.jpg"))[3]
    d = tmp_path / "one"
    d.mkdir()
    shutil.copy(src, d / src.name)
    shutil.copy(src.with_suffix(".pts"), d / src.with_suffix(".pts").name)
    out = tmp_path / "l.parquet"
    cli("run", d, "--out", out, "--model", shipped_model_path, "--workers", "0", "--quiet", "--refine" if refine else "--no-refine", check_rc=0)
    assert file_metadata(out)["refine"] is refine
    rows = read_labels(out).query("status == 'ok'")
    run_boxes = [Box(r.box_x0, r.box_y0, r.box_x1, r.box_y1) for r in rows.itertuples()]
    run_pts = points_array(rows)

    faces = Labeler(model=shipped_model_path, refine=refine).label(load_gray(src))
    assert len(faces) == len(rows) >= 1
    for f, b, p, c in zip(faces, run_boxes, run_pts, rows.confidence):
        assert np.allclose(f.box.as_list(), b.as_list(), atol=1e-4)  # the same detector settings
        np.testing.assert_array_equal(f.points, p)
        assert f.confidence == pytest.approx(c, abs=1e-6)

    sample = detect_boxes(find_samples(d), make_detector("hog"), progress=False)[0]
    k = int(np.argmin([abs(b.x0 - sample.box.x0) + abs(b.y0 - sample.box.y0) for b in run_boxes]))
    ev = predict_samples(make_predictor("auto", shipped_model_path, refine=refine), [sample], [sample.box])[0]
    single = Labeler(model=shipped_model_path, refine=refine).label(load_gray(src), boxes=[sample.box])[0].points
    np.testing.assert_array_equal(ev, single)
    np.testing.assert_array_equal(ev, run_pts[k])
    if refine:  # the second pass moved the points: it is not the first pass relabelled
        first = Labeler(model=shipped_model_path, refine=False).label(load_gray(src), boxes=[sample.box])[0].points
        assert 0.05 < np.abs(first - single).mean() < 2.0


def test_refine_runs_the_second_stage_beside_the_model(tmp_path, random_model_path):
    """`--refine` with `X.stage2.pt` beside `X.pt`: the second stage predicts on the crop the
    first answer places, rotated so the eyes are level, at its own input size (160 px here, as
    shipped, after a 128-px first stage), and its answer is the label. Flip averaging goes to
    the stage that makes the labels: the first stage then predicts once."""
    model = tmp_path / "m.pt"
    shutil.copy(random_model_path, model)
    torch.manual_seed(1)
    second = LandmarkModel(build_network("resnet18-1ch-hm"), 160, {"recipe": {"crop": "aligned", "aligned_scale": 1.3}})
    second.save(tmp_path / "m.stage2.pt")
    one = make_predictor("torch", model, refine=False)
    assert one.stage2 is None and one.runtime.flip  # one stage: the second is not even loaded; its flips averaged
    fast = make_predictor("torch", model, refine=True, flip=False)
    assert (fast.runtime.flip, fast.stage2.flip) == (False, False)
    pred = make_predictor("torch", model, refine=True)
    assert pred.stage2 is not None and pred.stage2_scale == 1.3
    assert (pred.runtime.flip, pred.stage2.flip) == (False, True)
    assert (pred.size, pred.stage2.input_size) == (128, 160)
    assert pred.model_id == f"{load_model(model).model_id}+{second.model_id}"  # the labels' version names both

    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 280), np.uint8))
    first = pred.predict(*pred.crops(gray, [Box(60, 70, 200, 210)]))
    pts, conf, unc = pred.second_pass([gray], *first)
    t = aligned_transform(first[0][0], 160, 1.3)
    p2, _, scale = pred.stage2.predict(cut_aligned(gray, t)[None])
    np.testing.assert_allclose(pts[0], t.to_image(p2[0]), atol=1e-3)
    np.testing.assert_allclose(unc[0], scale[0] / t.k, rtol=1e-5)
    assert conf[0] > 0 and np.isfinite(conf[0])

    shutil.copy(random_model_path, tmp_path / "m.stage2.pt")  # a model trained on box crops is no second stage
    with pytest.raises(ModelError, match="aligned crops"):
        make_predictor("torch", model, refine=True)


@pytest.mark.needs_data
def test_refine_refuses_an_image_changed_since_detection(tmp_path, shipped_model_path):
    """The second pass reads the image again: if it is no longer the image the workers detected
    on, the image is an error row, not a first-pass answer passed off as refined."""
    from autolabel.labelling import detect_and_crop, predict_jobs

    src = sorted(HELEN_TEST.glob("*.jpg"))[3]
    img = tmp_path / "face.jpg"
    shutil.copy(src, img)
    job = detect_and_crop(img, make_detector("hog"), 128)
    assert job.boxes
    pred = make_predictor("auto", shipped_model_path, refine=True)
    (same,) = predict_jobs(pred, [job])
    assert same.error is None and len(same.faces) == len(job.boxes)
    ImageOps.mirror(Image.open(src)).save(img)  # replaced between detection and prediction, same size
    (result,) = predict_jobs(pred, [job])
    assert result.faces == () and "changed or unreadable since detection" in result.error and "modified" in result.error
    Image.open(src).resize((100, 80)).save(img)
    (result,) = predict_jobs(pred, [dataclasses.replace(job, stat=None)])  # a job without the file's stat
    assert result.faces == () and "now 100x80" in result.error
    (plain,) = predict_jobs(Predictor(make_runtime("auto", shipped_model_path)), [job])  # one pass reads nothing again
    assert plain.error is None and len(plain.faces) == len(job.boxes)
