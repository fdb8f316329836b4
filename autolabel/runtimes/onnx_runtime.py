"""The ONNX Runtime runtime: the model's exported `InferenceGraph` (see
`autolabel.training.export_onnx`), int8 or fp32, on the CPU. Imports onnxruntime, never torch,
so a labelling run starts in a fraction of the time and memory.

The export records the model version (content hash of the `.pt` it came from), input size and
provenance; a file whose version differs from the `.pt` beside it is refused as stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from autolabel.files import content_hash
from autolabel.markup import N_POINTS
from autolabel.types import ModelError, UsageError

FORMAT = "autolabel-landmarks-onnx"
#: crops per session call: without a memory arena, a call's activations are its transient peak
#: (batch 32 with flip averaging: 64 network inputs, ~70 MB); 16 halves it at the same speed
#: (benchmarks/bench_landmark_stage.py: 127 faces/s at batch 16 and 128 at 32, one stage).
CHUNK = 16


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
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{path}: not an ONNX model ({type(e).__name__})") from e
        props = self.session.get_modelmeta().custom_metadata_map
        if props.get("format") != FORMAT:
            raise ModelError(f"{path}: not an autolabel ONNX export (no '{FORMAT}' metadata)")
        self.path = path
        self.model_id = props["model_id"]
        self.input_size = int(props["input_size"])
        self.precision = props.get("precision", "fp32")
        self.name = "onnx" if self.precision == "int8" else "onnx-fp32"  # its `make_runtime` name
        self.meta = json.loads(props.get("meta", "{}"))
        if props.get("flip") != ("1" if flip else "0"):
            raise UsageError(f"{path.name} was exported {'with' if props.get('flip') == '1' else 'without'} flip averaging; "
                             "use --runtime torch for the other")
        if source is not None and Path(source).is_file() and content_hash(Path(source).read_bytes()) != self.model_id:
            raise ModelError(f"{path} is stale: exported from model {self.model_id}, not {Path(source).name}'s "
                             f"{content_hash(Path(source).read_bytes())} (re-export: python -m autolabel.training.export_onnx {source})")

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0, N_POINTS), np.float32), np.zeros((0, N_POINTS), np.float32)
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        parts = [self.session.run(None, {"crops": crops[i : i + CHUNK]}) for i in range(0, len(crops), CHUNK)]
        out = [np.concatenate(o) for o in zip(*parts)]
        # an export made before the error-scale output has two outputs: its scale is unknown
        scale = out[2] if len(out) > 2 else np.full(out[1].shape, np.nan, np.float32)
        return out[0].astype(np.float32, copy=False), out[1].astype(np.float32, copy=False), scale.astype(np.float32, copy=False)
