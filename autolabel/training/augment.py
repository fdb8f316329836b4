"""Training augmentation on whole batches: one random similarity transform per face
(rotation, scale, shift, horizontal flip) applied to pixels and points by the same matrix,
then brightness/contrast jitter. Pixels are resampled with `grid_sample`, so points and
pixels cannot drift apart.

Two crop placements: around the canvas centre (the detector box's crop, `random_matrices`), or
aligned by the face's own points, eye line level (`aligned_matrices`: a second stage's crops,
`geometry.aligned_params`), the jitter then standing in for the first stage's errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autolabel.geometry import CROP_SCALE, aligned_params, similarity
from autolabel.markup import MIRROR


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 20.0  # uniform in [-r, r]
    scale: float = 0.10  # crop scale uniform in [1 - s, 1 + s]
    shift: float = 0.08  # shift uniform in [-s, s] crop sides, per axis
    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.25  # additive, in units of 255
    contrast: float = 0.3  # multiplicative, uniform in [1 - c, 1 + c]


NO_AUGMENT = AugmentConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _pix_to_norm(n: int) -> torch.Tensor:
    # align_corners=False: normalised = (2 * pixel + 1) / n - 1
    return torch.tensor([[2.0 / n, 0, 1.0 / n - 1], [0, 2.0 / n, 1.0 / n - 1], [0, 0, 1]])


def random_matrices(b: int, canvas: int, size: int, cfg: AugmentConfig, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, 3) matrices mapping canvas pixels to output-crop pixels, and the flip mask."""
    u = lambda: torch.rand(b, generator=g) * 2 - 1  # noqa: E731
    ang = u() * math.radians(cfg.rotation_deg)
    sc = 1 + u() * cfg.scale
    tx, ty = u() * cfg.shift * size, u() * cfg.shift * size
    flip = torch.rand(b, generator=g) < cfg.flip
    cc, co = (canvas - 1) / 2, (size - 1) / 2
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    m = torch.zeros(b, 3, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    m[:, 0, 2] = co + tx - (cos * cc - sin * cc)
    m[:, 1, 2] = co + ty - (sin * cc + cos * cc)
    m[:, 2, 2] = 1
    return _mirrored(m, flip, size), flip


def _mirrored(m: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Matrices `m` followed by a horizontal mirror of the crop (u -> size - 1 - u) where `flip`."""
    fl = torch.eye(3).repeat(len(m), 1, 1)
    fl[flip, 0, 0] = -1
    fl[flip, 0, 2] = size - 1
    return fl @ m


def aligned_matrices(points: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator | None,
                     crop_scale: float = CROP_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """`random_matrices` for crops aligned by the faces' canvas points (B, 68, 2): the crop
    `geometry.aligned_params` places, jittered by cfg's rotation, scale and shift."""
    b = points.shape[0]
    u = lambda: torch.rand(b, generator=g, dtype=torch.float64) * 2 - 1  # noqa: E731
    centre, side, angle = aligned_params(points.numpy(), crop_scale)
    ang = angle + (u() * math.radians(cfg.rotation_deg)).numpy()
    sc = 1 + (u() * cfg.scale).numpy()
    m = torch.from_numpy(similarity(centre, side / sc, ang, size)).float()
    m[:, 0, 2] += (u() * cfg.shift * size).float()
    m[:, 1, 2] += (u() * cfg.shift * size).float()
    flip = torch.rand(b, generator=g) < cfg.flip
    return _mirrored(m, flip, size), flip


def warp(images: torch.Tensor, points: torch.Tensor, m: torch.Tensor, flip: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply canvas->crop matrices `m` to (B, C, C) images and (B, 68, 2) canvas points."""
    b, canvas = images.shape[0], images.shape[-1]
    theta = _pix_to_norm(canvas) @ torch.linalg.inv(m) @ torch.linalg.inv(_pix_to_norm(size))
    grid = F.affine_grid(theta[:, :2], [b, 1, size, size], align_corners=False)
    out = F.grid_sample(images.float().unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    ph = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    new = (ph @ m.transpose(1, 2))[..., :2]
    new[flip] = new[flip][:, torch.as_tensor(MIRROR)]
    return out.squeeze(1), new


def augment(images: torch.Tensor, points: torch.Tensor, size: int, cfg: AugmentConfig, g: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of `size` px from canvases (B, C, C) uint8 with their points (B, 68, 2).

    Returns float images in [0, 255] (B, size, size) and points in crop pixels.
    """
    out, pts, _ = augment_with_flip(images, points, size, cfg, g)
    return out, pts


def augment_with_flip(images: torch.Tensor, points: torch.Tensor, size: int, cfg: AugmentConfig,
                      g: torch.Generator | None = None, aligned: bool = False,
                      crop_scale: float = CROP_SCALE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`augment`, plus the (B,) mask of the faces it mirrored (the label offset needs it).
    `aligned`: crops placed by the faces' points (`aligned_matrices`, `crop_scale` times the
    points' box), not the canvas centre."""
    if aligned:
        m, flip = aligned_matrices(points, size, cfg, g, crop_scale)
    else:
        m, flip = random_matrices(images.shape[0], images.shape[-1], size, cfg, g)
    out, pts = warp(images, points, m, flip, size)
    b = images.shape[0]
    if cfg.contrast or cfg.brightness:
        c = 1 + (torch.rand(b, 1, 1, generator=g) * 2 - 1) * cfg.contrast
        br = (torch.rand(b, 1, 1, generator=g) * 2 - 1) * cfg.brightness * 255
        mean = out.mean(dim=(1, 2), keepdim=True)
        out = ((out - mean) * c + mean + br).clamp(0, 255)
    return out, pts, flip


def center_crop(images: torch.Tensor, points: torch.Tensor, size: int, aligned: bool = False,
                crop_scale: float = CROP_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """The un-augmented crop of a canvas (exact slicing when the margin is whole pixels);
    `aligned`: the crop its points place, eye line level (`aligned_matrices`, no jitter)."""
    out, pts, _ = augment_with_flip(images, points, size, NO_AUGMENT, aligned=aligned, crop_scale=crop_scale)
    return out, pts
