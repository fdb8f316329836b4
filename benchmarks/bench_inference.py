"""LandmarkNet speed on this machine (torch): inference faces/s at batch 16 (with and without flip
averaging) and training images/s, for several input sizes (the input-size choice) and both heads
(v1 regression, v2 heatmaps). The ONNX runtimes: benchmarks/onnx_parity.py.

    python benchmarks/bench_inference.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from autolabel.model import ARCHS, build_network, normalise_images, predict_crops  # noqa: E402


def rate(fn, n_items: int, reps: int = 8, warm: int = 2) -> float:
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return reps * n_items / (time.perf_counter() - t)


def main() -> None:
    torch.set_num_threads(2)
    print(f"{'arch':17} {'size':>5} {'infer b16 faces/s':>18} {'with flip':>10} {'train b32 img/s':>16}")
    for arch, size in [(ARCHS[0], 112), (ARCHS[0], 128), (ARCHS[0], 160), (ARCHS[1], 128)]:
        net = build_network(arch).eval()
        x = torch.randint(0, 255, (16, size, size), dtype=torch.uint8)
        plain = rate(lambda: predict_crops(net, x, flip=False), 16)
        flip = rate(lambda: predict_crops(net, x, flip=True), 16)
        net.train()
        opt = torch.optim.AdamW(net.parameters())
        xb, yb = torch.rand(32, size, size) * 255, torch.rand(32, 136)

        def step():
            loss = ((net(normalise_images(xb)) - yb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        tr = rate(step, 32, reps=4, warm=1)
        print(f"{arch:17} {size:5d} {plain:18.1f} {flip:10.1f} {tr:16.1f}")


if __name__ == "__main__":
    main()
