"""Checkpoints as a small object beside the loop (as timm's `utils/checkpoint_saver.py`):
`last.pt` after every epoch, `best.pt` on a new best validation NME, resume from `last.pt`.

A checkpoint describes itself: the weights ("net": the averaged ones when averaging, which is
what is exported; "raw": the trained ones then), optimiser, scheduler, random state, history,
best NME, epoch, elapsed time, the config and the run's meta, so an interrupted run resumes
exactly where it stopped. It holds only tensors and plain data (numbers, strings, lists,
dicts), so it loads with `weights_only=True`: a file planted in a run folder runs no code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from autolabel.files import atomic_path
from autolabel.model import ARCHS, LandmarkModel, build_network
from autolabel.training.ema import WeightAverage
from autolabel.types import ModelError

LAST = "last.pt"
BEST = "best.pt"


@dataclass
class TrainState:
    """Everything a training run changes as it goes, and all a checkpoint holds of it."""

    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rng: torch.Generator
    average: WeightAverage | None
    history: dict
    best: float = math.inf
    epoch: int = 0
    elapsed: float = 0.0

    @property
    def export_net(self) -> nn.Module:
        """The network that is validated and exported (the average, when averaging)."""
        return self.average.module if self.average is not None else self.net


class CheckpointSaver:
    """Saves and restores a run's TrainState in `folder`."""

    def __init__(self, folder: Path, config: dict, defaults: dict, meta: dict | None = None):
        self.folder = Path(folder)
        self.config = config
        self.defaults = defaults  # config keys added later take these values in older checkpoints
        self.meta = meta or {}

    def save(self, st: TrainState, best: bool) -> None:
        """Write `last.pt`, and `best.pt` too when this epoch is the best so far."""
        if st.average is None:
            weights = {"net": st.net.state_dict()}
        else:
            weights = {"net": st.average.module.state_dict(), "raw": st.net.state_dict(), "avg": st.average.state_dict()}
        ck = {**weights, "opt": st.opt.state_dict(), "sched": st.sched.state_dict(), "rng": st.rng.get_state(),
              "history": st.history, "best": st.best, "epoch": st.epoch, "elapsed": st.elapsed, "config": self.config, "meta": self.meta}
        for name in (LAST, BEST) if best else (LAST,):
            with atomic_path(self.folder / name) as tmp:
                torch.save(ck, tmp)

    def resume(self, st: TrainState) -> bool:
        """Load `last.pt` into `st` if there is one (made with the same config)."""
        last = self.folder / LAST
        if not last.is_file():
            return False
        ck = load_checkpoint(last)
        if {**self.defaults, **ck["config"]} != self.config:
            raise ValueError(f"{last} was made with another recipe; use a new --out or --overwrite")
        st.net.load_state_dict(ck["raw"] if st.average is not None else ck["net"])
        if st.average is not None:
            st.average.load(ck["net"], ck["avg"])
        st.opt.load_state_dict(ck["opt"])
        st.sched.load_state_dict(ck["sched"])
        st.rng.set_state(ck["rng"])
        st.history, st.best, st.epoch, st.elapsed = ck["history"], ck["best"], ck["epoch"], ck["elapsed"]
        return True


def load_checkpoint(path: Path) -> dict:
    """A checkpoint, loaded without running any code in it (`weights_only`): tensors, numbers,
    strings, lists and dicts only, which is all `save` writes. A file planted in a run folder
    cannot execute anything; it is refused in one line."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a file it will not load
        raise ModelError(f"{path}: not a checkpoint autolabel can load safely ({type(e).__name__}); "
                         "delete it to start over, or use another --out") from None
    if not isinstance(ck, dict) or "net" not in ck:
        raise ModelError(f"{path}: not a checkpoint autolabel can load safely (no weights in it)")
    return ck


def load_best(folder: Path) -> tuple[nn.Module, dict]:
    """The best (or, without validation, the last) weights of a run in `folder`, and the checkpoint."""
    path = folder / BEST if (folder / BEST).is_file() else folder / LAST
    ck = load_checkpoint(path)
    net = build_network(ck["config"].get("arch", ARCHS[0]))
    net.load_state_dict(ck["net"])
    net.eval()
    return net, ck


def export(folder: Path, dest: Path, input_size: int, meta: dict) -> LandmarkModel:
    """Write the best weights of run `folder` as a shippable fp16 model file at `dest`."""
    net, ck = load_best(folder)
    model = LandmarkModel(net, input_size, {**meta, "epoch": ck["epoch"], "best_val_nme": ck["best"]})
    model.save(dest)
    return model
