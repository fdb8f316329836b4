"""Augmentation keeps points on the same image features, and flips relabel points."""

import numpy as np
import pytest
import torch

from autolabel.datasets import build_canvases, find_samples
from autolabel.geometry import aligned_transform, cut_aligned
from autolabel.images import load_image
from autolabel.markup import MIRROR
from autolabel.training.augment import AugmentConfig, augment, center_crop

from helpers import HELEN_TEST


def _dot_canvas(points: np.ndarray, size: int = 192) -> torch.Tensor:
    img = np.zeros((size, size), np.float32)
    for x, y in points:
        xi, yi = int(round(x)), int(round(y))
        img[yi - 1 : yi + 2, xi - 1 : xi + 2] = 255
    return torch.from_numpy(img)


def test_points_follow_pixels_under_rotation_scale_shift_flip():
    rng = np.random.default_rng(1)
    # 68 points spread out so their dots don't touch; a distinct dot per point is checked
    pts = np.stack(np.meshgrid(np.arange(8) * 12 + 50, np.arange(9) * 12 + 46), -1).reshape(-1, 2)[:68].astype(np.float32)
    canvases = torch.stack([_dot_canvas(pts)] * 16)
    cfg = AugmentConfig(rotation_deg=30, scale=0.15, shift=0.05, flip=0.5, brightness=0, contrast=0)
    out, new = augment(canvases, torch.from_numpy(np.stack([pts] * 16)), 128, cfg, torch.Generator().manual_seed(3))
    assert out.shape == (16, 128, 128) and new.shape == (16, 68, 2)
    checked = 0
    for b in range(16):
        for x, y in new[b].numpy():
            if 2 <= x < 126 and 2 <= y < 126:
                # bilinear resampling of a 3x3 dot keeps a bright pixel within 1 px of the point
                patch = out[b, int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2]
                assert patch.max() > 120, (b, x, y)
                checked += 1
    assert checked > 500
    del rng


def test_flip_relabels_points():
    pts = np.zeros((68, 2), np.float32) + 96
    pts[36] = [60, 80]  # subject's right eye outer corner, image left
    pts[45] = [130, 80]
    canvas = torch.zeros(1, 192, 192)
    cfg = AugmentConfig(rotation_deg=0, scale=0, shift=0, flip=1.0, brightness=0, contrast=0)
    _, new = augment(canvas, torch.from_numpy(pts[None]), 128, cfg)
    # after a flip the point now called 36 is the old 45, mirrored: x -> 127 - (x - 32)
    np.testing.assert_allclose(new[0, 36].numpy(), [127 - (130 - 32), 80 - 32], atol=1e-4)
    np.testing.assert_allclose(new[0, 45].numpy(), [127 - (60 - 32), 80 - 32], atol=1e-4)
    assert (MIRROR[MIRROR] == np.arange(68)).all()


def test_no_augment_is_exact_centre_crop():
    canvas = torch.arange(192 * 192, dtype=torch.float32).reshape(1, 192, 192) % 251
    cfg = AugmentConfig(0, 0, 0, 0, 0, 0)
    out, new = augment(canvas, torch.full((1, 68, 2), 100.0), 128, cfg)
    np.testing.assert_allclose(out[0].numpy(), canvas[0, 32:160, 32:160].numpy(), atol=0.01)
    np.testing.assert_allclose(new.numpy(), 68.0, atol=1e-4)


@pytest.mark.needs_data
def test_aligned_training_crop_is_the_inference_crop():
    """A second stage sees in training (canvas -> `aligned_matrices`, no jitter) what it sees at
    inference (`geometry.cut_aligned` from the whole image): the same points, the same pixels."""
    samples = find_samples(HELEN_TEST)[:4]
    c = build_canvases(samples, 128, 1.5, "gt", progress=False)
    imgs, pts = center_crop(torch.from_numpy(c.images), torch.from_numpy(c.points), 128, aligned=True)
    for i, s in enumerate(samples):
        t = aligned_transform(s.points, 128)
        np.testing.assert_allclose(pts[i].numpy(), t.to_crop(s.points), atol=1e-3)
        crop = cut_aligned(load_image(s.image).convert("L"), t)
        # two resamplings of the same window: grey levels within ~1 of 255 on average
        assert np.abs(crop.astype(np.float32) - imgs[i].numpy()).mean() < 2.0
