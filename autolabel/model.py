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
from autolabel.runtimes import checked_input_size
from autolabel.types import ModelError

FORMAT = "autolabel-landmarks"
#: 2: the file names its architecture ("arch"); version-1 files are all "resnet18-1ch-136".
FORMAT_VERSION = 2
#: v1: global pool -> 136 regression; v2: heatmaps + soft-argmax (`HeatmapNet`).
ARCHS = ("resnet18-1ch-136", "resnet18-1ch-hm")


def build_network(arch: str = ARCHS[0]) -> nn.Module:
    """A torchvision resnet18 (weights=None) with a 1-channel first conv, and the named head."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=2 * N_POINTS)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if arch == "resnet18-1ch-136":
        return net
    if arch == "resnet18-1ch-hm":
        return HeatmapNet(net)
    raise ValueError(f"unknown architecture {arch!r} (this autolabel knows {', '.join(ARCHS)})")


def arch_of(net: nn.Module) -> str:
    """The `ARCHS` name of a network built by `build_network`."""
    return "resnet18-1ch-hm" if isinstance(net, HeatmapNet) else "resnet18-1ch-136"


class HeatmapNet(nn.Module):
    """ResNet18 trunk (stride 32) -> two 2x transposed convs (stride 8) -> 68 heatmaps ->
    softmax over space -> expected (x, y) at the cell centres (integral regression).

    `forward` returns the same 136 normalised values as the regression net, so losses, flip
    averaging and the model file treat both alike. `forward_full` also returns a log scale per
    point (a Laplace sigma in normalised units) read out from detached features, so training it
    never moves the points.
    """

    def __init__(self, resnet: nn.Module, mid: int = 128):
        super().__init__()
        r = resnet
        self.trunk = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(512, mid, 4, 2, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 4, 2, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )
        self.logits = nn.Conv2d(mid, N_POINTS, 1)
        self.scale = nn.Sequential(nn.Conv2d(mid, 64, 1), nn.ReLU(inplace=True), nn.Conv2d(64, N_POINTS, 1))
        # Where the labels sit relative to the image content, normalised units, learned. The 300-W
        # labels sit ~1 px right of what they mark (model-facts.md); a flip mirrors that offset, so a
        # net trained with flips learns neither side and lands ~1 px left of its own training labels.
        # `forward` predicts the content; the offset is added in the labels' (unmirrored) frame.
        self.label_offset = nn.Parameter(torch.zeros(2))

    def forward_full(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.up(self.trunk(x))
        b, _, hh, ww = h.shape
        p = self.logits(h).flatten(2).softmax(-1).view(b, N_POINTS, hh, ww)
        # cell centres in normalised crop units: the convention of to_norm
        xs = (torch.arange(ww, dtype=h.dtype, device=h.device) + 0.5) / ww - 0.5
        ys = (torch.arange(hh, dtype=h.dtype, device=h.device) + 0.5) / hh - 0.5
        pts = torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)
        log_sigma = (p.detach() * self.scale(h.detach())).flatten(2).sum(-1)
        return pts, log_sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_full(x)[0].flatten(1)


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
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch_of(self.net),
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
    try:
        net = build_network(ckpt.get("arch", ARCHS[0]))
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    except (RuntimeError, KeyError) as e:
        raise ModelError(f"{path}: weights do not fit the LandmarkNet architecture ({e})") from e
    net.eval()
    meta = ckpt.get("meta", {})
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: damaged model file (its meta is a {type(meta).__name__}, not a table)")
    return LandmarkModel(net, checked_input_size(ckpt.get("input_size"), path), dict(meta), content_hash(data))


class InferenceGraph(nn.Module):
    """The whole of inference as one traceable module: uint8 crops (B, S, S) -> points in crop
    pixels (B, 68, 2) float32, the per-point flip disagreement (B, 68) and the per-point
    predicted error scale (B, 68), both float32 in crop pixels.

    With `flip`, the mirrored crop is predicted too, its points mirrored back (MIRROR) and the
    two averaged (test-time flip averaging); the distance between the two predictions of each
    point is its disagreement. Without `flip` the disagreement is NaN (unknown). Without
    `offset` (what the ONNX export is: `runtimes.onnx_runtime.flip_average` does the flip and
    adds the offset), the points are the network's content prediction, without its learned label offset. The error scale
    is the Laplace scale a `HeatmapNet` predicts for each point (its expected error along each
    axis; averaged over the two flips), NaN for a regression net. Disagreement and scale are the
    raw material of the confidence score (`autolabel.predictor`). Pure tensor ops with no
    branching on data, so the module exports to ONNX as it is.
    """

    def __init__(self, net: nn.Module, flip: bool = True, offset: bool = True):
        super().__init__()
        self.net = net
        self.flip = flip
        self.offset = offset
        self.register_buffer("mirror", torch.as_tensor(MIRROR, dtype=torch.long), persistent=False)
        # u -> S-1-u is y -> -y in normalised units
        self.register_buffer("mirror_x", torch.tensor([-1.0, 1.0]), persistent=False)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(self.net, HeatmapNet):
            pts, log_sigma = self.net.forward_full(x)
            return pts, log_sigma.exp()
        return self.net(x).reshape(-1, N_POINTS, 2), None

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = crops.shape[-1]
        x = normalise_images(crops)
        # the learned label offset (HeatmapNet) lives in the unmirrored frame: added after averaging
        offset = getattr(self.net, "label_offset", None) if self.offset else None
        if not self.flip:
            y, sigma = self._run(x)
            pts = from_norm(y if offset is None else y + offset, size)
            nan = torch.full_like(pts[..., 0], float("nan"))
            return pts, nan, nan if sigma is None else sigma * size
        y, sigma = self._run(torch.cat([x, x.flip(-1)]))
        a, b = y.chunk(2)
        b = b[:, self.mirror] * self.mirror_x
        pts = from_norm((a + b) / 2 if offset is None else (a + b) / 2 + offset, size)
        dis = (from_norm(a, size) - from_norm(b, size)).norm(dim=-1)
        if sigma is None:
            return pts, dis, torch.full_like(dis, float("nan"))
        sa, sb = sigma.chunk(2)
        return pts, dis, (sa + sb[:, self.mirror]) / 2 * size


def predict_crops(net: nn.Module, crops: torch.Tensor, flip: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`InferenceGraph` on (B, S, S) uint8 crops without autograd: points in crop pixels
    (B, 68, 2), per-point flip disagreement and error scale (B, 68), as numpy float32."""
    with torch.inference_mode():
        out = InferenceGraph(net, flip)(crops)
    return tuple(o.numpy().astype(np.float32) for o in out)
