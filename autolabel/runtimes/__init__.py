"""Inference runtimes: an explicit name -> factory registry. A runtime runs the landmark
network on face crops; everything around it (cutting crops, mapping points back to the image,
the confidence score) is `autolabel.predictor.Predictor`'s, the same for every runtime.

Backends import their engine (torch, ...) only when made, so the labelling workers and
`autolabel --help` never load it.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from autolabel.types import ModelError, UsageError


class Runtime(Protocol):
    """The contract every runtime honours.

    - `name`: the registry name ("torch", ...).
    - `input_size`: side S of the square crops the network takes.
    - `model_id`: the model version (content hash of the model file).
    - `meta`: the model file's provenance (recipe, lineage, ...).
    - `predict(crops)`: uint8 crops (B, S, S) -> (points (B, 68, 2) float32 in crop pixels,
      point_disagreement (B, 68) float32 in crop pixels: the distance between the prediction on
      the crop and the mirrored prediction on the mirrored crop, NaN without flip averaging;
      point_scale (B, 68) float32 in crop pixels: the error scale the model predicts for each
      point, NaN for a model without one). B may be 0.
    """

    name: str
    input_size: int
    model_id: str
    meta: dict

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class FlipBakedIn(UsageError):
    """An old ONNX export, whose graph fixes the flip setting, was asked for the other one."""


#: the crop sides (pixels) a model file may declare: anything else is a damaged or hand-edited file
INPUT_SIZES = range(16, 1025)


def checked_input_size(value, path: Path) -> int:
    """A model file's declared input size (its .pt header or its export's metadata) as an int;
    ModelError (one line) when it is not a whole number of pixels in INPUT_SIZES."""
    try:
        size = int(str(value).strip())
    except ValueError:
        size = None
    if size is None or size not in INPUT_SIZES:
        raise ModelError(f"{path}: input size {str(value)[:40]!r} is not a crop side in pixels "
                         f"({INPUT_SIZES.start}-{INPUT_SIZES.stop - 1}); the file is damaged or was edited")
    return size


#: what a torch-free install lacks to train, finetune or run the torch runtime
TRAIN_EXTRA = "pip install 'autolabel[train]'"


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _torch(model_path: Path | None = None, flip: bool = True, threads: int | None = None) -> Runtime:
    if not has_torch():
        raise UsageError(f"the torch runtime needs PyTorch: {TRAIN_EXTRA} (or use --runtime onnx)")
    from autolabel.model import load_model
    from autolabel.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(load_model(model_path), flip=flip, threads=threads)


def exported_path(model_path: Path | None = None, precision: str = "int8") -> Path:
    """Where a model file's ONNX export lives: landmarks.pt -> landmarks.int8.onnx (or .fp32.onnx) beside it."""
    from autolabel.resources import shipped_model

    p = Path(model_path) if model_path else shipped_model()
    return p.with_name(f"{p.stem}.{precision}.onnx")


def stage2_path(model_path: Path | None = None) -> Path:
    """Where a model file's trained second stage lives (`--refine`): landmarks.pt -> landmarks.stage2.pt beside it."""
    from autolabel.resources import shipped_model

    p = Path(model_path) if model_path else shipped_model()
    return p.with_name(f"{p.stem}.stage2.pt")


def _onnx(model_path: Path | None = None, flip: bool = True, threads: int | None = None, precision: str = "int8") -> Runtime:
    if importlib.util.find_spec("onnxruntime") is None:
        raise UsageError("the onnx runtime needs onnxruntime: pip install onnxruntime (or use --runtime torch)")
    from autolabel.resources import shipped_model
    from autolabel.runtimes.onnx_runtime import OnnxRuntime

    source = Path(model_path) if model_path else shipped_model()
    return OnnxRuntime(exported_path(source, precision), source=source, flip=flip, threads=threads)


#: name -> factory(model_path=None, flip=True, threads=None). "onnx" is the int8 export,
#: "onnx-fp32" the exact one; "auto" (see `default_runtime`) picks among them.
RUNTIMES: dict[str, Callable[..., Runtime]] = {"onnx": _onnx, "onnx-fp32": functools.partial(_onnx, precision="fp32"), "torch": _torch}
#: what `--runtime` accepts
RUNTIME_NAMES = ("auto", *RUNTIMES)


def default_runtime(model_path: Path | None = None, flip: bool = True) -> str:
    """"onnx" when onnxruntime is installed and the model has an int8 export, else "torch"
    (`flip` is kept for callers: an export serves both settings)."""
    if importlib.util.find_spec("onnxruntime") is not None and exported_path(model_path).is_file():
        return "onnx"
    return "torch"


def make_runtime(name: str = "auto", model_path: Path | None = None, flip: bool = True, threads: int | None = None) -> Runtime:
    """The runtime `name` for the model file `model_path` (default: the shipped weights).

    `threads`: CPU threads for inference (None: the engine's default). "auto": `default_runtime`.
    An old ONNX export that averages flips inside its graph cannot run `--no-flip`: it falls
    back to torch (one line on stderr), and without torch that is a UsageError naming the fix."""
    if name == "auto":
        name = default_runtime(model_path, flip)
    try:
        factory = RUNTIMES[name]
    except KeyError:
        raise UsageError(f"unknown runtime {name!r}; choose one of: {', '.join(RUNTIME_NAMES)}") from None
    try:
        return factory(model_path=model_path, flip=flip, threads=threads)
    except UsageError as e:
        if flip or not isinstance(e, FlipBakedIn):
            raise
        if not has_torch():
            raise UsageError(f"{e}: --no-flip on it needs the torch runtime: drop --no-flip, or {TRAIN_EXTRA} and re-export") from None
        print(f"autolabel: note: {e}; --no-flip runs on the torch runtime instead of {name}", file=sys.stderr)
        return _torch(model_path, flip=flip, threads=threads)
