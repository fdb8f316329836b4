"""The ONNX Runtime runtime: the model's exported `InferenceGraph` (see
`autolabel.training.export_onnx`), int8 or fp32, on the CPU. Imports onnxruntime, never torch,
so a labelling run starts in a fraction of the time and memory.

The export records the model version (content hash of the `.pt` it came from), input size and
provenance; a file whose version differs from the `.pt` beside it is refused as stale.

An export predicts one crop per input (`flip` = "runtime" in its metadata): flip averaging and
the learned label offset happen here (`flip_average`, the numpy twin of `InferenceGraph`'s), so
one file serves both `--flip` and `--no-flip`. Exports made before (`flip` = "1") averaged
flips inside the graph; they still load, for flip averaging only.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from autolabel.files import content_hash
from autolabel.markup import MIRROR, N_POINTS
from autolabel.runtimes import FlipBakedIn, checked_input_size
from autolabel.types import ModelError

FORMAT = "autolabel-landmarks-onnx"
#: crops per session call at 128 px: without a memory arena, a call's activations are its
#: transient peak (batch 32 with flip averaging: 64 network inputs, ~70 MB); 16 halves it at the
#: same speed (benchmarks/bench_landmark_stage.py: 127 faces/s at batch 16 and 128 at 32, one
#: stage). Larger inputs take fewer per call (`chunk_size`), so every session peaks alike; with
#: `threads` > 1 the calls in flight share it.
CHUNK = 16
#: the `flip` metadata of an export whose runtime averages flips (see the module docstring)
RUNTIME_FLIP = "runtime"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS tells it, else the count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def chunk_size(input_size: int) -> int:
    """Crops per session call for `input_size`-px crops: CHUNK at 128 px, as many pixels at any size."""
    return max(1, CHUNK * 128 * 128 // (input_size * input_size))


def with_mirrors(crops: np.ndarray) -> np.ndarray:
    """(B, S, S) crops followed by their mirror images: (2B, S, S), one graph input."""
    return np.ascontiguousarray(np.concatenate([crops, crops[:, :, ::-1]]))


def flip_average(points: np.ndarray, scale: np.ndarray, offset: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's outputs on `with_mirrors(crops)` (content points (2B, 68, 2), error scale
    (2B, 68), crop pixels) -> flip-averaged points with the label offset `offset` (crop pixels)
    added, per-point disagreement and scale, as `InferenceGraph(flip=True)` computes them."""
    a, b = np.split(points, 2)
    b = b[:, MIRROR] * np.array([-1.0, 1.0], np.float32) + np.array([size - 1.0, 0.0], np.float32)  # u -> S-1-u
    sa, sb = np.split(scale, 2)
    return (a + b) / 2 + offset, np.linalg.norm(a - b, axis=-1), (sa + sb[:, MIRROR]) / 2


def session_predict(session, crops: np.ndarray, flip: bool, offset: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One call of an export's session (flip in the runtime) on crops (B, S, S) uint8: points with
    the label offset, per-point flip disagreement (NaN without `flip`) and scale, crop pixels."""
    points, scale = session.run(["points", "point_scale"], {"crops": with_mirrors(crops) if flip else crops})
    if flip:
        return flip_average(points, scale, offset, size)
    return points + offset, np.full(scale.shape, np.nan, np.float32), scale


class OnnxRuntime:
    """Runs an exported model with ONNX Runtime (see `autolabel.runtimes.Runtime`)."""

    name = "onnx"

    def __init__(self, path: Path, source: Path | None = None, flip: bool = True, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no ONNX export (make one: python -m autolabel.training.export_onnx)")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no memory arena: the arena keeps its high-water mark per session (a batch of 32 flipped
        # crops: ~70 MB of activations for the first stage, as much again for `--refine`'s second);
        # without it one session peaks at 210 instead of 282 MB, two at 234 instead of 484 MB,
        # at the same speed (measured here: batch 32, int8, 1 thread)
        so.enable_cpu_mem_arena = False
        # no spin-waiting: a session's idle pool threads otherwise spin after each call and take the
        # cores from the other stage's session (two stages, 2 threads each, on 2 cores: 79 -> 96
        # faces/s at batch 16, --no-flip 105 -> 150; one stage alike; benchmarks/bench_landmark_stage.py)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # `threads` calls at once, each on one thread, rather than one call on `threads` threads:
        # a call then never waits for its slowest thread (2 cores, batch 32: the 160-px second stage
        # 321-332 -> 349-363 crops/s, the 128-px first stage 518-525 -> 554-568; benchmarks/bench_landmark_stage.py)
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        self.threads = max(1, int(threads or usable_cpus()))
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{path}: not an ONNX model ({type(e).__name__})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("format") != FORMAT:
            raise ModelError(f"{path}: not an autolabel ONNX export (no '{FORMAT}' metadata)")
        self.path = path
        self.input_size = checked_input_size(props.get("input_size"), path)
        try:
            self.model_id = props["model_id"]
            self.meta = json.loads(props.get("meta", "{}"))
            self.offset = np.asarray(json.loads(props.get("label_offset", "[0, 0]")), np.float32).reshape(2) * self.input_size
        except (KeyError, ValueError, TypeError) as e:  # JSONDecodeError is a ValueError
            raise ModelError(f"{path}: damaged export metadata ({type(e).__name__}: {e}); re-export it") from None
        if not isinstance(self.meta, dict) or not np.isfinite(self.offset).all():
            raise ModelError(f"{path}: damaged export metadata (meta or label_offset); re-export it")
        self.precision = props.get("precision", "fp32")
        self.name = "onnx" if self.precision == "int8" else "onnx-fp32"  # its `make_runtime` name
        self.flip = flip
        self.in_runtime = props.get("flip") == RUNTIME_FLIP
        if not self.in_runtime and props.get("flip") != ("1" if flip else "0"):
            inside = "averages flips inside its graph" if props.get("flip") == "1" else "was exported without flip averaging"
            raise FlipBakedIn(f"{path.name} is an old export that {inside} "
                              f"(re-export it: python -m autolabel.training.export_onnx {source or 'MODEL.pt'})")
        if source is not None and Path(source).is_file() and content_hash(Path(source).read_bytes()) != self.model_id:
            raise ModelError(f"{path} is stale: exported from model {self.model_id}, not {Path(source).name}'s "
                             f"{content_hash(Path(source).read_bytes())} (re-export: python -m autolabel.training.export_onnx {source})")

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0, N_POINTS), np.float32), np.zeros((0, N_POINTS), np.float32)
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        # equal calls, `threads` at a time, together no more than `chunk_size` crops (the activations
        # of the calls in flight are the peak): every thread gets the same work
        most = max(1, chunk_size(self.input_size) // self.threads)
        calls = self.threads * math.ceil(len(crops) / (self.threads * most))
        step = math.ceil(len(crops) / calls)
        chunks = [crops[i : i + step] for i in range(0, len(crops), step)]
        if len(chunks) > 1 and self.threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="onnx")
            parts = list(self._pool.map(self._call, chunks))
        else:
            parts = [self._call(c) for c in chunks]
        return tuple(np.concatenate(o).astype(np.float32, copy=False) for o in zip(*parts))

    def _call(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.in_runtime:
            return session_predict(self.session, crops, self.flip, self.offset, self.input_size)
        out = self.session.run(None, {"crops": crops})
        # an export made before the error-scale output has two outputs: its scale is unknown
        return out[0], out[1], out[2] if len(out) > 2 else np.full(out[1].shape, np.nan, np.float32)
