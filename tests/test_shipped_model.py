"""Golden checks on the shipped weights: accuracy on fixed helen/testset faces (a real
regression test), and the full `run` path putting points where the ground truth is."""

import shutil

import numpy as np
import pytest

from autolabel.datasets import detect_boxes, find_samples, sample_box
from autolabel.detectors import make_detector
from autolabel.evaluate import predict_samples
from autolabel.formats.parquet import points_array, read_labels
from autolabel.formats.pts import read_pts
from autolabel.geometry import box_from_points
from autolabel.images import load_image
from autolabel.metrics import nme
from autolabel.model import load_model
from autolabel.predictor import Predictor
from autolabel.runtimes import make_runtime
from autolabel.runtimes.torch_runtime import TorchRuntime

from helpers import DATA, HELEN_TEST, cli

pytestmark = pytest.mark.needs_data

#: mean inter-ocular NME bound on the first 60 helen/testset faces with HOG boxes. The shipped
#: model v2.1 (2b401d23c0cd) scores 3.60 % on the 58 faces HOG finds there (3.64 % with the
#: detector's boxes before its half-scale first scan; v2, c1e45fce0f5d: 3.77 %; v1, 47e1a0f51e02:
#: 3.93 %); the bound allows 0.24 point.
NME_BOUND_60 = 0.0384
#: the same faces through both stages as the default runs them (the first stage once, the second
#: flip-averaged): the shipped pair (2b401d23c0cd + 2fdb19ba1aab, the 128-px second stage) scores
#: 3.44 % (the 160-px f7a6b8ba5962, not shipped for its speed: 3.35 %); the bound allows 0.2 point.
NME_BOUND_60_TWO_STAGES = 0.0364


@pytest.fixture(scope="module")
def fixed_faces():
    samples = find_samples(HELEN_TEST)[:60]
    return detect_boxes(samples, make_detector("hog"), progress=False)


def test_shipped_weights_meet_the_bound(fixed_faces, shipped_model_path):
    model = load_model(shipped_model_path)
    assert model.input_size == 128 and "recipe" in model.meta
    found = [s for s in fixed_faces if s.box is not None]
    assert len(found) >= 57
    pred = predict_samples(Predictor(TorchRuntime(model)), found, [sample_box(s, "det") for s in found])
    err = nme(pred, np.stack([s.points for s in found]))
    assert err.mean() < NME_BOUND_60, f"mean NME {100 * err.mean():.2f}%"
    assert (err > 0.08).mean() <= 0.05


def test_shipped_second_stage_meets_its_bound_and_beats_one_stage(fixed_faces, shipped_model_path):
    from autolabel.runtimes import stage2_path

    second = load_model(stage2_path(shipped_model_path))
    assert second.meta["recipe"]["crop"] == "aligned" and second.meta["init"]["model_version"] == load_model(shipped_model_path).model_id
    found = [s for s in fixed_faces if s.box is not None]
    boxes, gt = [sample_box(s, "det") for s in found], np.stack([s.points for s in found])
    one = nme(predict_samples(Predictor(TorchRuntime(load_model(shipped_model_path))), found, boxes), gt)
    first_once = TorchRuntime(load_model(shipped_model_path), flip=False)  # as make_predictor runs it before a second stage
    two = nme(predict_samples(Predictor(first_once, refine=True, stage2=TorchRuntime(second)), found, boxes), gt)
    assert second.input_size == 128
    assert two.mean() < NME_BOUND_60_TWO_STAGES, f"mean NME {100 * two.mean():.2f}%"
    assert two.mean() < one.mean() - 0.001 and (two > 0.08).mean() <= 0.05  # measured: 3.60 -> 3.44 %


def test_no_mean_offset_on_its_own_training_faces(shipped_model_path):
    """Issue 14 item 12: v1's points sat 0.74-1.05 px left of the labels on its own training
    faces. The 300-W labels sit about 1 px right of what they mark (a flip augmentation mirrors
    that, so it must be learned in each face's label frame: model v2). Pooled over 150 faces of
    each training folder (spread over it), ground-truth boxes, the default runtime and flip
    averaging: no mean offset beyond 0.1 px in x or y (v2: +0.06, +0.00). Per folder the labels'
    own offset differs (afw +1.23, helen +1.14, lfpw +0.77 px: benchmarks/x_bias.py), so one
    model is within -0.19..+0.22 px of each folder, not of all."""
    pred = Predictor(make_runtime("auto", shipped_model_path))
    offsets = []
    for folder in ("afw", "helen/trainset", "lfpw/trainset"):
        found = find_samples(DATA / "300w" / folder)
        for s in found[:: len(found) // 150][:150]:
            points, *_ = pred.predict(*pred.crops(load_image(s.image).convert("L"), [box_from_points(s.points)]))
            offsets.append((points[0] - s.points).mean(0))
    dx, dy = np.mean(offsets, axis=0)
    assert len(offsets) == 450
    assert abs(dx) < 0.1 and abs(dy) < 0.1, f"mean offset ({dx:+.3f}, {dy:+.3f}) px"


def test_run_puts_points_on_the_face_in_image_pixels(tmp_path, shipped_model_path):
    """Through discovery, workers, crops and the writer: points in original-image pixels."""
    faces = sorted(HELEN_TEST.glob("*.jpg"))[:8]
    for f in faces:
        shutil.copy(f, tmp_path / f.name)
    out = tmp_path / "l.parquet"
    cli("run", tmp_path, "--out", out, "--model", shipped_model_path, "--workers", "2", check_rc=0)
    df = read_labels(out)
    assert len(df.image.unique()) == 8 and (df.status != "error").all()
    # HOG misses exactly one of these eight faces (2970690152_2, tinted glasses: HOG scores it
    # -0.22, below its threshold of 0); that image is recorded as `no_face`, not dropped
    assert list(df[df.status == "no_face"].image) == ["2970690152_2.jpg"]
    errs = []
    for f in faces:
        rows = df[(df.image == f.name) & (df.status == "ok")]
        if rows.empty:
            continue
        gt = read_pts(f.with_suffix(".pts"))
        # the annotated face is the detection nearest the ground-truth centre
        pts = points_array(rows)
        best = pts[np.argmin([np.linalg.norm(p.mean(0) - gt.mean(0)) for p in pts])]
        errs.append(nme(best, gt))
    assert len(errs) == 7 and np.mean(errs) < 0.06, errs
    conf = df[df.status == "ok"].confidence
    assert conf.between(0, 0.2).all()
    # the shipped model (v2) predicts an error scale per point: 68 positive pixels per face
    unc = np.stack(df[df.status == "ok"].point_uncertainty.to_numpy())
    assert unc.shape == (len(conf), 68) and (unc > 0).all() and (unc < 50).all()
