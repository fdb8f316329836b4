"""Everything about the iBUG / 300-W 68-point markup: groups, colours, mirror permutation, eyes.

Indices are 0-based. "Right" means the subject's right, which is the image's left.
Facts about the 68 points live only here; augmentation, metrics (`metrics.py`), writers and the
review UI import them.
"""

from __future__ import annotations

import numpy as np

N_POINTS = 68

#: name -> (first, last) inclusive index range, and whether the outline is closed.
GROUPS: dict[str, tuple[int, int, bool]] = {
    "jaw": (0, 16, False),
    "right_brow": (17, 21, False),
    "left_brow": (22, 26, False),
    "nose_bridge": (27, 30, False),
    "nose_base": (31, 35, False),
    "right_eye": (36, 41, True),
    "left_eye": (42, 47, True),
    "outer_lip": (48, 59, True),
    "inner_lip": (60, 67, True),
}

#: colour per group, shared by plots and the review UI.
GROUP_COLORS: dict[str, str] = {
    "jaw": "#f5c542",
    "right_brow": "#ff7f0e",
    "left_brow": "#ff7f0e",
    "nose_bridge": "#2ca02c",
    "nose_base": "#2ca02c",
    "right_eye": "#1f9fff",
    "left_eye": "#1f9fff",
    "outer_lip": "#e8336e",
    "inner_lip": "#c061ff",
}

OUTER_EYE_CORNERS = (36, 45)
RIGHT_EYE = tuple(range(36, 42))
LEFT_EYE = tuple(range(42, 48))


def _mirror() -> np.ndarray:
    """The permutation that maps point i of a face to point MIRROR[i] of its mirror image."""
    pairs = []
    pairs += [(i, 16 - i) for i in range(8)]  # jaw: 0<->16 ... 7<->9, 8 stays
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils; bridge 27-30 and 33 stay
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56)]  # outer lip; 51, 57 stay
    pairs += [(60, 64), (61, 63), (67, 65)]  # inner lip; 62, 66 stay
    perm = np.arange(N_POINTS)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR: np.ndarray = _mirror()


def connections() -> list[tuple[int, int, str]]:
    """Edges (i, j, group) of the standard 68-point drawing."""
    edges = []
    for name, (a, b, closed) in GROUPS.items():
        edges += [(i, i + 1, name) for i in range(a, b)]
        if closed:
            edges.append((b, a, name))
    return edges


def group_of(index: int) -> str:
    for name, (a, b, _) in GROUPS.items():
        if a <= index <= b:
            return name
    raise IndexError(index)


def flip_points(points: np.ndarray, width: float) -> np.ndarray:
    """Mirror (..., 68, 2) points horizontally in an image `width` wide and relabel them.

    0-based pixel centres: x -> width - 1 - x.
    """
    out = points[..., MIRROR, :].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out
