"""Inference runtimes: an explicit name -> factory registry. A runtime runs the landmark
network on face crops; everything around it (cutting crops, mapping points back to the image,
the confidence score) is `autolabel.predictor.Predictor`'s, the same for every runtime.

Backends import their engine (torch, ...) only when made, so the labelling workers and
`autolabel --help` never load it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from autolabel.types import UsageError


class Runtime(Protocol):
    """The contract every runtime honours.

    - `name`: the registry name ("torch", ...).
    - `input_size`: side S of the square crops the network takes.
    - `model_id`: the model version (content hash of the model file).
    - `meta`: the model file's provenance (recipe, lineage, ...).
    - `predict(crops)`: uint8 crops (B, S, S) -> (points (B, 68, 2) float32 in crop pixels,
      point_disagreement (B, 68) float32 in crop pixels: the distance between the prediction on
      the crop and the mirrored prediction on the mirrored crop; NaN without flip averaging).
      B may be 0.
    """

    name: str
    input_size: int
    model_id: str
    meta: dict

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _torch(model_path: Path | None = None, flip: bool = True, threads: int | None = None) -> Runtime:
    from autolabel.model import load_model
    from autolabel.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(load_model(model_path), flip=flip, threads=threads)


#: name -> factory(model_path=None, flip=True, threads=None)
RUNTIMES: dict[str, Callable[..., Runtime]] = {"torch": _torch}


def make_runtime(name: str = "torch", model_path: Path | None = None, flip: bool = True, threads: int | None = None) -> Runtime:
    """The runtime `name` for the model file `model_path` (default: the shipped weights).

    `threads`: CPU threads for inference (None: the engine's default)."""
    try:
        factory = RUNTIMES[name]
    except KeyError:
        raise UsageError(f"unknown runtime {name!r}; choose one of: {', '.join(RUNTIMES)}") from None
    return factory(model_path=model_path, flip=flip, threads=threads)
