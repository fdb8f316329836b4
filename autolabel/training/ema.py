"""An exponential moving average of a network's weights, as a small object beside the loop
(as timm's `utils/model_ema.py`): the loop calls `update` after each optimiser step; what is
validated and exported is `module`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """avg = decay * avg + (1 - decay) * weights after each step, batch-norm statistics included
    (they are averaged too, so the averaged network needs no extra pass over the data)."""

    def __init__(self, net: nn.Module, decay: float):
        self.avg = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        return self.avg.module

    def update(self, net: nn.Module) -> None:
        self.avg.update_parameters(net)

    def state_dict(self) -> dict:
        """What resuming needs beside the averaged weights themselves."""
        return {"n_averaged": self.avg.n_averaged}

    def load(self, weights: dict, state: dict) -> None:
        self.avg.module.load_state_dict(weights)
        self.avg.n_averaged.copy_(torch.as_tensor(state["n_averaged"]))
