"""How fast is this machine for the landmark stage? The issue's reference network (a 1-channel
torchvision ResNet18 at 128 px, global pool -> 136 values, one pass per face) next to the shipped
model's graph, each on ONNX Runtime int8 and fp32 at batch 32, so a faces/s target written on one
machine can be read on another. `--threads` one-thread calls run side by side, as the runtime
runs them; int8 also as one call on `--threads` threads (ONNX Runtime's own threading).

    python benchmarks/reference_speed.py [--model model/landmarks.pt] [--threads 2] [--batch 32]

int8 here is the shipped export's recipe (QDQ, per-channel int8 weights with reduce_range, uint8
activations, MinMax calibration; Conv layers and the ReLUs after them; a heatmap head's transposed
convs as sub-pixel convs), calibrated on random crops: the speed of an
int8 kernel does not depend on the values it multiplies. The shipped model's own `.int8.onnx` is
timed too when it exists. Run with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from autolabel.model import LandmarkModel, build_network, load_model
from autolabel.runtimes import exported_path
from autolabel.runtimes.onnx_runtime import with_mirrors
from autolabel.training.export_onnx import export_fp32, quantize


def untrained(arch: str):
    """A network of `arch` with random batch-norm statistics: a fresh network's are all alike
    (mean 0, var 1, bias 0), so the exporter folds them into one shared bias tensor and the
    quantizer leaves those convs in fp32 ("bias ... to be an initializer"), timing the wrong graph."""
    import torch

    net = build_network(arch).eval()
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def faces_per_s(path: Path, batch: int, size: int, threads: int, seconds: float = 8.0, flip: bool = False,
                side_by_side: bool = False) -> float:
    """Faces per second through an export's session; `flip`: each face's crop and its mirror
    image in one call (the graph's input is 2 x batch crops), as the runtime averages flips.
    `side_by_side`: `threads` one-thread calls on equal parts of the batch at once (what
    `OnnxRuntime` does), instead of one call on `threads` threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = (1 if side_by_side else threads), 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).integers(0, 256, (batch, size, size), dtype=np.uint8)
    parts = np.array_split(x, threads if side_by_side else 1)
    parts = [with_mirrors(p) if flip else p for p in parts]
    with ThreadPoolExecutor(len(parts)) as pool:
        def once():
            list(pool.map(lambda p: s.run(None, {"crops": p}), parts))

        once()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            once()
            n += batch
    return n / (time.perf_counter() - t)


def cpu() -> str:
    """The CPU's model name and the int8 instruction sets ONNX Runtime can use (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "unknown CPU")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} ({', '.join(have) or 'no AVX2'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model file (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    shipped = load_model(a.model)
    size = shipped.input_size
    nets = {
        "reference: resnet18-1ch-136, 1 pass": (LandmarkModel(untrained("resnet18-1ch-136"), size, {}), False),
        "shipped graph, 1 pass (no flip)": (shipped, False),
        "shipped graph, 2 passes (flip, default)": (shipped, True),
    }
    print(cpu())
    print(f"{os.cpu_count()} CPUs, {a.threads} threads, batch {a.batch}, {size} px; faces/s (1-min load before: {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, flip) in nets.items():
            fp32, int8 = Path(tmp) / "m.fp32.onnx", Path(tmp) / "m.int8.onnx"
            export_fp32(model, fp32)
            quantize(fp32, int8, np.random.default_rng(0).integers(0, 256, (64, size, size), dtype=np.uint8))
            print(f"  {name:42} int8 {faces_per_s(int8, a.batch, size, a.threads, flip=flip, side_by_side=True):6.0f} "
                  f"(one call: {faces_per_s(int8, a.batch, size, a.threads, flip=flip):4.0f})   "
                  f"fp32 {faces_per_s(fp32, a.batch, size, a.threads, flip=flip, side_by_side=True):6.0f}")
    own = exported_path(a.model, "int8")
    if own.is_file():
        print(f"  {own.name + ' (the calibrated export, flip)':42} int8 "
              f"{faces_per_s(own, a.batch, size, a.threads, flip=True, side_by_side=True):6.0f}")
    print(f"(1-min load after: {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
