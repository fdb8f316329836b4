"""Model v2 pieces: the heatmap (integral regression) head, the learned label offset applied in
each face's label frame, the per-point scale, the hash validation split, and model-file versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autolabel.datasets import Sample, split_by_name
from autolabel.markup import MIRROR
from autolabel.model import ARCHS, InferenceGraph, LandmarkModel, build_network, load_model, to_norm
from autolabel.training.loop import in_label_frame
from autolabel.types import ModelError


def test_heatmap_head_gives_the_regression_net_s_outputs_and_a_scale_per_point():
    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm").eval()
    x = torch.randn(3, 1, 128, 128)
    pts, log_sigma = net.forward_full(x)
    assert pts.shape == (3, 68, 2) and log_sigma.shape == (3, 68)
    assert net(x).shape == (3, 136)
    # a soft-argmax is a convex combination of cell centres: inside the crop
    assert pts.abs().max() < 0.5


def test_heatmap_points_land_on_the_cell_that_carries_the_mass():
    net = build_network("resnet18-1ch-hm").eval()
    h = 16
    logits = torch.full((1, 68, h, h), -1e4)
    logits[0, :, 3, 12] = 0.0  # all mass on row 3, column 12
    net.logits = torch.nn.Identity()
    net.up = torch.nn.Identity()
    net.trunk = torch.nn.Identity()
    net.scale = torch.nn.Conv2d(68, 68, 1)
    pts, _ = net.forward_full(logits)
    # the centre of cell (col 12, row 3) in crop pixels at 128 px is (12.5 * 8 - 0.5, 3.5 * 8 - 0.5)
    u = (pts[0, 0] + 0.5) * 128 - 0.5
    assert torch.allclose(u, torch.tensor([99.5, 27.5]), atol=1e-4)


def test_label_offset_is_added_in_each_face_s_label_frame():
    net = build_network("resnet18-1ch-hm")
    with torch.no_grad():
        net.label_offset.copy_(torch.tensor([0.01, 0.02]))
    pred = torch.zeros(2, 68, 2)
    out = in_label_frame(net, pred, torch.tensor([False, True]))
    assert torch.allclose(out[0], torch.tensor([0.01, 0.02]).expand(68, 2))
    # a mirrored face carries the mirrored offset: x flips, y does not
    assert torch.allclose(out[1], torch.tensor([-0.01, 0.02]).expand(68, 2))
    # the regression net has no offset: unchanged
    assert torch.equal(in_label_frame(build_network(), pred, torch.tensor([False, True])), pred)


def test_training_on_mirrored_labels_learns_the_labels_offset():
    """Labels sit 1.2 px right of what they mark. A net that finds the content exactly (here:
    the truth itself) still misses its own labels by the offset unless the offset is learned in
    the label frame; mirrored faces carry the offset mirrored, so it is identifiable."""
    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm")
    opt = torch.optim.Adam([net.label_offset], lr=1e-3)
    size, dx = 128, 1.2
    for _ in range(400):
        content = torch.rand(16, 68, 2) * 100 + 14
        flipped = torch.rand(16) < 0.5
        labels = content + torch.tensor([dx, 0.0])
        # what a flip augmentation makes of the labels and of the content
        labels[flipped, :, 0] = size - 1 - labels[flipped, :, 0]
        content[flipped, :, 0] = size - 1 - content[flipped, :, 0]
        pred = in_label_frame(net, to_norm(content, size), flipped)
        loss = (pred - to_norm(labels, size)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    learned_px = net.label_offset.detach() * size
    assert abs(learned_px[0] - dx) < 0.1 and abs(learned_px[1]) < 0.1


def test_inference_adds_the_offset_after_flip_averaging():
    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm").eval()
    crops = torch.randint(0, 255, (2, 128, 128), dtype=torch.uint8)
    base, *_ = InferenceGraph(net, flip=True)(crops)
    with torch.no_grad():
        net.label_offset.copy_(torch.tensor([1.0, -2.0]) / 128)
    moved, *_ = InferenceGraph(net, flip=True)(crops)
    assert torch.allclose(moved - base, torch.tensor([1.0, -2.0]).expand(2, 68, 2), atol=1e-4)


def test_flip_averaging_of_the_heatmap_net_is_mirror_symmetric():
    torch.manual_seed(0)
    net = build_network("resnet18-1ch-hm").eval()
    crops = torch.randint(0, 255, (1, 128, 128), dtype=torch.uint8)
    a, *_ = InferenceGraph(net, flip=True)(crops)
    b, *_ = InferenceGraph(net, flip=True)(crops.flip(-1))
    b = b[:, MIRROR]
    b[..., 0] = 127 - b[..., 0]
    assert torch.allclose(a, b, atol=1e-3)


def test_validation_split_is_stable_and_about_the_asked_share():
    samples = [Sample(Path(f"/x/{i}/face_{i}.jpg"), np.zeros((68, 2), np.float32)) for i in range(2000)]
    train, val = split_by_name(samples, 0.1)
    assert len(train) + len(val) == 2000 and 150 < len(val) < 250
    # by file name only: another folder order or another parent gives the same split
    again = [Sample(Path("/elsewhere") / s.image.name, s.points) for s in reversed(samples)]
    assert {s.image.name for s in split_by_name(again, 0.1)[1]} == {s.image.name for s in val}


def test_a_version_1_file_still_loads(tmp_path):
    """A file as v1 wrote it: format_version 1, no "arch" (all v1 files are the regression net)."""
    torch.manual_seed(0)
    net = build_network("resnet18-1ch-136").eval()
    sd = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save({"format": "autolabel-landmarks", "format_version": 1, "input_size": 128, "meta": {"recipe": {}},
                "state_dict": sd}, tmp_path / "v1.pt")
    m = load_model(tmp_path / "v1.pt")
    assert type(m.net).__name__ == "ResNet" and not hasattr(m.net, "label_offset") and m.input_size == 128
    x = torch.randint(0, 255, (2, 128, 128), dtype=torch.uint8)
    assert torch.allclose(InferenceGraph(m.net)(x)[0], InferenceGraph(net.half().float())(x)[0], atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_round_trips_through_the_model_file(tmp_path, arch):
    torch.manual_seed(0)
    net = build_network(arch).eval()
    path = tmp_path / "m.pt"
    LandmarkModel(net, 128, {"arch": arch}).save(path, half=False)
    back = load_model(path)
    x = torch.randint(0, 255, (1, 128, 128), dtype=torch.uint8)
    assert torch.allclose(InferenceGraph(net)(x)[0], InferenceGraph(back.net)(x)[0], atol=1e-4)


def test_unknown_architecture_is_one_clear_line(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"format": "autolabel-landmarks", "format_version": 2, "arch": "resnet99-3d", "input_size": 128,
                "meta": {}, "state_dict": build_network().state_dict()}, path)
    with pytest.raises(ModelError, match="unknown architecture 'resnet99-3d'"):
        load_model(path)


@pytest.mark.parametrize("size,meta", [(0, {}), (-128, {}), ("128px", {}), (10**9, {}), (None, {}), (128, ["not", "a", "table"])])
def test_a_damaged_header_is_one_clear_line(tmp_path, size, meta):
    """A model file whose input size is not a crop side (or whose meta is not a table) is refused
    when loaded, not when a crop of side 0 divides by zero later."""
    path = tmp_path / "m.pt"
    torch.save({"format": "autolabel-landmarks", "format_version": 2, "arch": "resnet18-1ch-136", "input_size": size,
                "meta": meta, "state_dict": build_network().state_dict()}, path)
    with pytest.raises(ModelError, match="m.pt: (input size .* is not a crop side|damaged model file)"):
        load_model(path)


def test_the_error_scale_reaches_faces_in_image_pixels(tmp_path):
    """A heatmap net's per-point scale (crop pixels) is reported per face in image pixels: a crop
    window twice the size of the crop halves nothing and doubles the pixels."""
    from PIL import Image

    from autolabel.predictor import Predictor
    from autolabel.runtimes import make_runtime
    from autolabel.types import Box

    torch.manual_seed(0)
    pt = tmp_path / "hm.pt"
    LandmarkModel(build_network("resnet18-1ch-hm").eval(), 128, {}).save(pt, half=False)
    pred = Predictor(make_runtime("torch", pt))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (600, 600), dtype=np.uint8))
    crops, ts = pred.crops(img, [Box(100, 100, 300, 300)])
    _, dis, scale = pred.runtime.predict(crops)
    pts, conf, unc = pred.predict(crops, ts)
    np.testing.assert_allclose(unc[0], scale[0] * ts[0].side / 128, rtol=1e-5)
    face = pred.faces(img, [Box(100, 100, 300, 300)])[0]
    np.testing.assert_allclose(face.point_uncertainty, unc[0], rtol=1e-5)
    assert np.isfinite(conf).all() and conf[0] > 0
