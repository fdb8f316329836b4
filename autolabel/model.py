"""LandmarkNet (torchvision ResNet18, 1-channel input, 136 outputs), its file format, and the
Predictor that turns face boxes into 68 points with a confidence score.

Outputs are crop coordinates normalised as  y = (u + 0.5) / size - 0.5  (0 = crop centre).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autolabel.geometry import CropTransform, crop_face
from autolabel.scheme import MIRROR, N_POINTS
from autolabel.types import Box, ModelError

FORMAT = "autolabel-landmarks"
FORMAT_VERSION = 1


def build_network() -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=2 * N_POINTS)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


def normalise_images(x: torch.Tensor) -> torch.Tensor:
    """uint8/float (B, H, W) -> (B, 1, H, W), each image standardised to zero mean, unit std.

    Per-image standardisation makes the net indifferent to global brightness and contrast.
    """
    x = x.float().unsqueeze(1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(1.0)
    return (x - mean) / std


def to_norm(points_crop: torch.Tensor | np.ndarray, size: int):
    return (points_crop + 0.5) / size - 0.5


def from_norm(y, size: int):
    return (y + 0.5) * size - 0.5


@dataclass
class LandmarkModel:
    """A network plus what is needed to use it: input size and provenance."""

    net: nn.Module
    input_size: int
    meta: dict
    model_id: str = "untrained"

    def save(self, path: Path, half: bool = True) -> str:
        """Save atomically; returns the content hash (the model version)."""
        from autolabel.io import atomic_write_bytes

        sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.net.state_dict().items()}
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "resnet18-1ch-136",
                    "input_size": self.input_size, "meta": self.meta, "state_dict": sd}, buf)
        data = buf.getvalue()
        atomic_write_bytes(Path(path), data)
        self.model_id = content_hash(data)
        return self.model_id


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def load_model(path: str | Path | None = None) -> LandmarkModel:
    """Load an autolabel model file (default: the shipped weights). Raises ModelError."""
    from autolabel.resources import shipped_model

    path = Path(path) if path else shipped_model()
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    data = path.read_bytes()
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a non-checkpoint
        raise ModelError(f"{path}: not an autolabel model ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path}: not an autolabel model (no '{FORMAT}' header)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(f"{path}: made by a newer autolabel (format {ckpt['format_version']})")
    net = build_network()
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    except (RuntimeError, KeyError) as e:
        raise ModelError(f"{path}: weights do not fit the LandmarkNet architecture ({e})") from e
    net.eval()
    return LandmarkModel(net, int(ckpt["input_size"]), dict(ckpt.get("meta", {})), content_hash(data))


def predict_crops(net: nn.Module, crops: torch.Tensor, flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(B, S, S) uint8 crops -> points in crop pixels (B, 68, 2) and the flip disagreement
    (B, 68, 2 -> per-face mean point distance in crop pixels).

    With `flip`, the mirrored crop is predicted too, its points mirrored back (MIRROR) and the
    two averaged: test-time flip averaging, which also gives the uncertainty score.
    """
    size = crops.shape[-1]
    x = normalise_images(crops)
    with torch.inference_mode():
        if flip:
            y = net(torch.cat([x, x.flip(-1)])).view(-1, N_POINTS, 2)
            a, b = y[: len(x)], y[len(x):][:, MIRROR].clone()
            b[..., 0] = -b[..., 0]  # u -> S-1-u is y -> -y in normalised units
            pts = from_norm((a + b) / 2, size)
            dis = (from_norm(a, size) - from_norm(b, size)).norm(dim=-1).mean(dim=-1)
        else:
            pts = from_norm(net(x).view(-1, N_POINTS, 2), size)
            dis = torch.full((len(x),), float("nan"))
    return pts.numpy().astype(np.float32), dis.numpy().astype(np.float32)


class Predictor:
    """Face boxes in an image -> 68 points in image pixels, batched.

    `confidence` is the flip disagreement: the mean distance between the prediction on the crop
    and the mirrored prediction on the mirrored crop, divided by the predicted outer-eye-corner
    distance (so it reads like an NME; ~0.01 = confident, > 0.05 = doubtful). Lower is better.
    """

    def __init__(self, model: LandmarkModel, flip: bool = True, threads: int | None = None):
        self.model = model
        self.flip = flip
        if threads:
            torch.set_num_threads(threads)

    @property
    def size(self) -> int:
        return self.model.input_size

    def crop(self, gray, box: Box) -> tuple[np.ndarray, CropTransform]:
        return crop_face(gray, box, self.size)

    def predict(self, crops: np.ndarray, transforms: list[CropTransform]) -> tuple[np.ndarray, np.ndarray]:
        """Crops (N, S, S) uint8 + their transforms -> image points (N, 68, 2), confidence (N,)."""
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0,), np.float32)
        pts, dis = predict_crops(self.model.net, torch.from_numpy(np.ascontiguousarray(crops)), self.flip)
        out = np.stack([t.to_image(p) for p, t in zip(pts, transforms)])
        from autolabel.scheme import interocular

        conf = dis / np.maximum(interocular(pts), 1e-6)
        return out, conf.astype(np.float32)
