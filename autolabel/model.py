"""LandmarkNet (torchvision ResNet18, 1-channel input, 136 outputs), its file format, and
`InferenceGraph`: crops in, points and flip disagreement out (what every runtime computes).

Outputs are crop coordinates normalised as  y = (u + 0.5) / size - 0.5  (0 = crop centre).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autolabel.files import atomic_write_bytes, content_hash
from autolabel.markup import MIRROR, N_POINTS
from autolabel.resources import shipped_model
from autolabel.types import ModelError

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
        sd = {k: (v.half() if half and v.is_floating_point() else v) for k, v in self.net.state_dict().items()}
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "resnet18-1ch-136",
                    "input_size": self.input_size, "meta": self.meta, "state_dict": sd}, buf)
        data = buf.getvalue()
        atomic_write_bytes(Path(path), data)
        self.model_id = content_hash(data)
        return self.model_id


def load_model(path: str | Path | None = None) -> LandmarkModel:
    """Load an autolabel model file (default: the shipped weights). Raises ModelError."""
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


class InferenceGraph(nn.Module):
    """The whole of inference as one traceable module: uint8 crops (B, S, S) -> points in crop
    pixels (B, 68, 2) float32 and the per-point flip disagreement (B, 68) float32, crop pixels.

    With `flip`, the mirrored crop is predicted too, its points mirrored back (MIRROR) and the
    two averaged (test-time flip averaging); the distance between the two predictions of each
    point is its disagreement, the raw material of the confidence score. Without `flip` the
    disagreement is NaN (unknown). Pure tensor ops with no branching on data, so the module
    exports to ONNX as it is.
    """

    def __init__(self, net: nn.Module, flip: bool = True):
        super().__init__()
        self.net = net
        self.flip = flip
        self.register_buffer("mirror", torch.as_tensor(MIRROR, dtype=torch.long), persistent=False)
        # u -> S-1-u is y -> -y in normalised units
        self.register_buffer("mirror_x", torch.tensor([-1.0, 1.0]), persistent=False)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        size = crops.shape[-1]
        x = normalise_images(crops)
        if not self.flip:
            pts = from_norm(self.net(x).reshape(-1, N_POINTS, 2), size)
            return pts, torch.full_like(pts[..., 0], float("nan"))
        a, b = self.net(torch.cat([x, x.flip(-1)])).reshape(-1, N_POINTS, 2).chunk(2)
        b = b[:, self.mirror] * self.mirror_x
        pts = from_norm((a + b) / 2, size)
        return pts, (from_norm(a, size) - from_norm(b, size)).norm(dim=-1)


def predict_crops(net: nn.Module, crops: torch.Tensor, flip: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`InferenceGraph` on (B, S, S) uint8 crops without autograd: points in crop pixels
    (B, 68, 2) and per-point flip disagreement (B, 68), as numpy float32."""
    with torch.inference_mode():
        pts, dis = InferenceGraph(net, flip)(crops)
    return pts.numpy().astype(np.float32), dis.numpy().astype(np.float32)
