"""The PyTorch runtime: `model.InferenceGraph` (through `model.predict_crops`) on the CPU."""

from __future__ import annotations

import numpy as np
import torch

from autolabel.markup import N_POINTS
from autolabel.model import LandmarkModel, predict_crops


class TorchRuntime:
    """Runs a LandmarkModel with PyTorch (see `autolabel.runtimes.Runtime`)."""

    name = "torch"

    def __init__(self, model: LandmarkModel, flip: bool = True, threads: int | None = None):
        self.model = model
        self.flip = flip
        model.net.eval()
        if threads:
            torch.set_num_threads(threads)

    @property
    def input_size(self) -> int:
        return self.model.input_size

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def meta(self) -> dict:
        return self.model.meta

    def predict(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(crops) == 0:
            return np.zeros((0, N_POINTS, 2), np.float32), np.zeros((0, N_POINTS), np.float32), np.zeros((0, N_POINTS), np.float32)
        return predict_crops(self.model.net, torch.from_numpy(np.ascontiguousarray(crops, dtype=np.uint8)), self.flip)
