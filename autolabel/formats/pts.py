"""300-W `.pts` files. The only place that knows about their 1-based coordinates."""

from __future__ import annotations

import os
from pathlib import Path

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
