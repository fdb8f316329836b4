"""Data types that flow between modules, and the error hierarchy.

Coordinates everywhere inside autolabel are 0-based pixels of the upright (EXIF-corrected)
image; pixel (0, 0)'s centre is at (0.0, 0.0).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np


class AutolabelError(Exception):
    """A known failure, shown to the user as one line."""


class UsageError(AutolabelError):
    """Bad options or paths given on the command line (exit status 2)."""


class ImageError(AutolabelError):
    """An image could not be read or decoded."""


class FormatError(AutolabelError):
    """A file is not in the format it claims to be."""


class ModelError(AutolabelError):
    """A model file is missing, corrupt, or not an autolabel model."""


@dataclass(frozen=True)
class Box:
    """A face box: [x0, x1) x [y0, y1) in pixels, with the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 0.0

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def scaled(self, factor: float) -> Box:
        """Coordinates multiplied by `factor` (for boxes found on a resized image)."""
        return Box(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor, self.score)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Face:
    """One labelled face. `points` is (68, 2) float32; `confidence` is the uncertainty score
    described in `autolabel.predictor.Predictor` (NME-like, lower is more certain);
    `point_uncertainty` the model's (68,) per-point error scale in image pixels, when it has one;
    `occluded` 68 flags (points hidden behind something, placed where they would be), when a
    person or a file said so."""

    box: Box
    points: np.ndarray
    confidence: float
    source: str = "model"
    model_id: str = ""
    point_uncertainty: np.ndarray | None = None
    occluded: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class ImageResult:
    """What labelling one image produced. `error` is set (and `faces` empty) when it failed."""

    path: Path
    width: int = 0
    height: int = 0
    faces: tuple[Face, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "ok" if self.faces else "no_face"


# ------------------------------------------------------------ results passed between modules
@dataclass(frozen=True)
class TrainResult:
    """What a training run (`training.loop.fit`, `training.job.train_model`) produced.

    `history` has one entry per finished epoch (epoch, train_loss, val_nme, lr, seconds).
    `interrupted`: stopped by SIGINT/SIGTERM after saving `last.pt`; rerun to resume.
    """

    history: dict
    interrupted: bool = False
    meta: dict = field(default_factory=dict)
    model_id: str | None = None  # the exported model's version, when one was exported


@dataclass(frozen=True)
class Decision:
    """Whether a finetuned model may be used: refused when it got worse, unless forced."""

    usable: bool
    forced: bool
    refused_because: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lineage:
    """Where a finetuned model version comes from and how it scored: written as
    `finetune.json` beside it, into its model file's meta and into its card."""

    base_model: str
    base_path: str
    source: str
    source_kind: str
    corrections_used: int
    corrections_held_out: int
    replay_faces: int
    repeat: int
    skipped: dict
    epochs: int
    lr: float
    before: dict  # NME per face set ("holdout", "train_corrections", "reference") before finetuning
    after: dict
    usable: bool
    forced: bool
    refused_because: tuple[str, ...]
    command: str
    seconds: float
    created: str
    recipe: dict
    model_version: str = ""
    model_path: str = ""
    stage2_base: str = ""  # the base's second stage that was finetuned too ("" = none: the version has no second stage)
    stage2_recipe: dict = field(default_factory=dict)
    stage2_version: str = ""  # the new second stage, `model.stage2.pt` beside the model

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["refused_because"] = list(self.refused_because)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Lineage:
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names}, "refused_because": tuple(d.get("refused_because", ()))})


@dataclass(frozen=True)
class FinetuneResult:
    """`finetune()`'s outcome: the lineage of the new version, or `interrupted` (no model written)."""

    out: Path
    interrupted: bool = False
    lineage: Lineage | None = None


@dataclass(frozen=True)
class ModelInfo:
    """One model version `autolabel models` lists."""

    version: str
    path: str
    kind: str  # "shipped" or "finetune of <base>"
    usable: bool
    nme: dict[str, float]  # figure name -> inter-ocular NME (fraction)


@dataclass(frozen=True)
class ExportResult:
    """What exporting reviewed faces as a 300-W folder wrote."""

    faces: int
    missing_images: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()  # faces whose file would have gone outside the export folder (why)
