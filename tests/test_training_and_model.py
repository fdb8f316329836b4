"""The training loop on real faces, checkpoints/resume, and the model file format."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from autolabel.datasets import build_canvases, find_samples
from autolabel.markup import MIRROR
from autolabel.model import LandmarkModel, build_network, load_model, predict_crops, to_norm
from autolabel.training import loop
from autolabel.training.loop import TrainConfig, fit
from autolabel.types import ModelError, UsageError

from helpers import HELEN_TEST


@pytest.fixture(scope="module")
def tiny():
    samples = find_samples(HELEN_TEST)[:24]
    return build_canvases(samples, 64, 1.5, "gt", progress=False)


def tiny_cfg(**kw):
    return dataclasses.replace(TrainConfig(), **{"input_size": 64, "epochs": 6, "batch_size": 8, "lr": 1e-3, "patience": 100, **kw})


@pytest.mark.needs_data
def test_tiny_training_run_lowers_the_loss(tiny, tmp_path):
    cfg = tiny_cfg()
    val = build_canvases(find_samples(HELEN_TEST)[:8], 64, 1.0, "gt", progress=False)
    hist = fit(cfg, tiny, val, tmp_path, progress=False).history
    assert len(hist["train_loss"]) == 6
    assert hist["train_loss"][-1] < 0.6 * hist["train_loss"][0]
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert json.loads((tmp_path / "history.json").read_text())["epoch"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.needs_data
@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_interrupted_epoch_resumes_identically(tiny, tmp_path, monkeypatch, ema):
    cfg = tiny_cfg(ema=ema)
    full = fit(cfg, tiny, None, tmp_path / "full", progress=False).history
    # simulate a stop after 3 epochs by training a 6-epoch recipe in two calls
    calls = {"n": 0}
    real = loop.augment_with_flip

    def stop_after(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3 * (len(tiny) // cfg.batch_size) + 1:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(loop, "augment_with_flip", stop_after)
    part = fit(cfg, tiny, None, tmp_path / "split", progress=False)
    assert part.interrupted and part.history["epoch"] == [1, 2, 3]
    monkeypatch.setattr(loop, "augment_with_flip", real)
    rest = fit(cfg, tiny, None, tmp_path / "split", progress=False).history
    np.testing.assert_allclose(rest["train_loss"], full["train_loss"], rtol=1e-4)
    a, b = (torch.load(d / "last.pt", weights_only=True)["net"] for d in (tmp_path / "full", tmp_path / "split"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.needs_data
def test_ema_weights_are_the_average_of_the_steps(tiny, tmp_path, monkeypatch):
    """With `ema`, the saved "net" is the moving average (what is validated and exported), and
    the raw weights travel beside it for resuming."""
    cfg = tiny_cfg(ema=0.5, epochs=1)
    steps = len(tiny) // cfg.batch_size
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(opt, *a, **k):
        out = real_step(opt, *a, **k)
        seen.append([p.detach().clone() for p in opt.param_groups[0]["params"]])
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    fit(cfg, tiny, None, tmp_path, progress=False)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert len(seen) == steps and set(ck) >= {"net", "raw", "avg"}
    names = [n for n, _ in build_network().named_parameters()]
    i = names.index("fc.weight")
    # AveragedModel starts from the initial weights; each step: avg = 0.5 * avg + 0.5 * new
    expect = None
    for w in seen:
        expect = w[i] if expect is None else 0.5 * expect + 0.5 * w[i]
    torch.testing.assert_close(ck["raw"]["fc.weight"], seen[-1][i])
    torch.testing.assert_close(ck["net"]["fc.weight"], expect)
    assert not torch.allclose(ck["net"]["fc.weight"], ck["raw"]["fc.weight"])


def test_model_file_round_trip_and_hash(tmp_path):
    torch.manual_seed(0)
    m = LandmarkModel(build_network(), 128, {"k": "v"})
    mid = m.save(tmp_path / "m.pt")
    back = load_model(tmp_path / "m.pt")
    assert back.model_id == mid and len(mid) == 12 and back.input_size == 128 and back.meta == {"k": "v"}
    assert (tmp_path / "m.pt").stat().st_size < 25e6  # fp16
    x = torch.randint(0, 255, (2, 128, 128), dtype=torch.uint8)
    a, *_ = predict_crops(m.net.half().float().eval(), x)
    b, *_ = predict_crops(back.net, x)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_not_a_model_is_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00junk")
    with pytest.raises(ModelError, match="not an autolabel model"):
        load_model(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an autolabel model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_flip_confidence_is_zero_for_a_symmetric_net():
    """The flip disagreement measures asymmetry: a net that predicts the mirror-symmetric mean
    shape for every input has zero disagreement."""
    net = build_network()
    shape = np.random.default_rng(0).uniform(20, 100, (68, 2)).astype(np.float32)
    mirrored = shape[MIRROR].copy()
    mirrored[:, 0] = 127 - mirrored[:, 0]
    sym = (shape + mirrored) / 2
    with torch.no_grad():
        net.fc.weight.zero_()
        net.fc.bias.copy_(torch.from_numpy(to_norm(sym, 128).reshape(-1)))
    net.eval()
    pts, dis, _ = predict_crops(net, torch.zeros(2, 128, 128, dtype=torch.uint8))
    np.testing.assert_allclose(pts[0], sym, atol=1e-4)
    assert np.abs(dis).max() < 1e-4


def test_adaptive_wing_is_continuous_smooth_at_zero_and_linear_beyond_theta():
    crit = loop.AdaptiveWingLoss()
    px = 1 / 128
    d = torch.tensor([0.0, 0.5, 1.0, 3.999, 4.001, 8.0, 20.0]) * px
    v = torch.stack([crit(x.view(1), torch.zeros(1)) for x in d])
    assert v[0] == 0 and bool((v[1:] > v[:-1]).all())  # zero at zero, rising
    assert abs(float(v[3] - v[4])) < 1e-4  # continuous at theta = 4 px
    slope = float((v[6] - v[5]) / (d[6] - d[5]))
    assert abs(slope - crit.a) < 1e-3 * crit.a  # linear beyond theta, with the slope that meets the log part
    # quadratic-like near zero (exponent 2.1): half the error, about a quarter of the loss
    assert 0.2 < float(v[1] / v[2]) < 0.3


def test_recipe_keys_of_the_ablation_levers(tmp_path):
    r = tmp_path / "r.toml"
    r.write_text('loss = "awing"\npose_balance = 0.5\n')
    cfg = TrainConfig.from_toml(r)
    assert cfg.loss == "awing" and cfg.pose_balance == 0.5 and isinstance(loop.loss_fn(cfg.loss), loop.AdaptiveWingLoss)
    r.write_text("pose_balance = 2.0\n")
    with pytest.raises(UsageError, match=r"pose_balance = 2.0 is out of range \[0.0, 1.0\]"):
        TrainConfig.from_toml(r)


def test_pose_weights_balance_head_turn_bins():
    rng = np.random.default_rng(0)
    base = np.tile(np.linspace(0, 100, 68)[:, None], (1, 2)).astype(np.float64)
    faces = []
    for turn, n in ((0.05, 40), (0.5, 10)):  # 40 near-frontal faces, 10 half-turned ones
        for _ in range(n):
            p = base + rng.normal(0, 0.01, base.shape)
            left, right = 1 + turn, 1 - turn  # nose-to-jaw-end distances in the ratio of the turn
            p[0], p[16], p[30] = (50 - 40 * left, 50), (50 + 40 * right, 50), (50, 50)
            faces.append(p)
    pts = np.stack(faces)
    assert np.allclose(loop.head_turn(pts)[:40], 0.05, atol=1e-3) and np.allclose(loop.head_turn(pts)[40:], 0.5, atol=1e-3)
    w = loop.pose_weights(pts, 1.0).numpy()
    assert np.isclose(w[:40].sum(), w[40:].sum())  # power 1: each bin drawn alike
    w = loop.pose_weights(pts, 0.5).numpy()
    assert np.isclose(w[40:].sum() / w[:40].sum(), np.sqrt(10 / 40))  # power 0.5: bins by the square root of their size
