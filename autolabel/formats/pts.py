"""300-W `.pts` files (the only place that knows about their 1-based coordinates) and the
names of per-face files in a 300-W tree."""

from __future__ import annotations

import itertools
import os
from pathlib import Path, PurePosixPath

import numpy as np

from autolabel.files import atomic_write_text
from autolabel.types import FormatError


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """Read a `.pts` file into (n, 2) float32 0-based pixel coordinates."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: cannot read .pts file ({e})") from e
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    try:
        start, end = lines.index("{"), lines.index("}")
        n_decl = next(int(ln.split(":")[1]) for ln in lines[:start] if ln.startswith("n_points"))
        pts = np.array([[float(v) for v in ln.split()[:2]] for ln in lines[start + 1 : end]], dtype=np.float64)
    except (ValueError, StopIteration, IndexError) as e:
        raise FormatError(f"{path}: not a 300-W .pts file ({e})") from e
    if pts.shape != (n_decl, 2):
        raise FormatError(f"{path}: header says {n_decl} points, found {len(pts)}")
    if not np.isfinite(pts).all():
        raise FormatError(f"{path}: non-finite coordinates")
    return (pts - 1.0).astype(np.float32)


def format_pts(points: np.ndarray) -> str:
    """(n, 2) 0-based points -> `.pts` text with 1-based coordinates."""
    points = np.asarray(points, dtype=np.float64)
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points)
    return f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n"


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """Write atomically: a reader never sees a half-written file."""
    atomic_write_text(Path(path), format_pts(points))


class FaceFileNames:
    """Names of per-face files in a 300-W tree: the n-th face of image `DIR/NAME.EXT` is
    `DIR/NAME_<n>` (+ `.pts`), unique per image. An image whose `DIR/NAME` another image has
    (`IMG.jpg` beside `IMG.png`) keeps its extension in the name (`IMG.png_1`): first come, first
    served, so names stay the same when a run resumes."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}  # base name -> image

    def base(self, image: str) -> str:
        """The base name for `image`'s face files (add `_<n>` and an extension)."""
        stem = str(PurePosixPath(image).with_suffix(""))
        for base in itertools.chain((stem, image), (f"{image}~{k}" for k in itertools.count(2))):
            if self.owner.setdefault(base, image) == image:
                return base

    def claim_files(self, image: str, files: list[str]) -> None:
        """Record the face files (`BASE_<n>.pts`) an earlier run wrote for `image`."""
        for f in files:
            self.owner.setdefault(f.rsplit("_", 1)[0], image)
