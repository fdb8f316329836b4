"""ONE training loop, used by `autolabel train` (from scratch) and `autolabel finetune`
(from other weights, with different data): nanoGPT-style, one readable loop. Checkpointing
(`checkpoints.CheckpointSaver`) and weight averaging (`ema.WeightAverage`) are small objects
beside it, so the loop is only the loop.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from autolabel.datasets import Canvases
from autolabel.metrics import nme
from autolabel.model import arch_of, build_network, normalise_images, predict_crops, to_norm
from autolabel.training.augment import AugmentConfig, augment_with_flip, center_crop
from autolabel.training.checkpoints import CheckpointSaver, TrainState
from autolabel.training.ema import WeightAverage
from autolabel.types import TrainResult, UsageError


@dataclass(frozen=True)
class TrainConfig:
    train: tuple[str, ...] = ("300w/afw", "300w/helen/trainset", "300w/lfpw/trainset")
    val: tuple[str, ...] = ("300w/helen/testset",)
    input_size: int = 128
    context: float = 1.5  # canvas side / crop side: room for rotation and shift
    epochs: int = 80
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "l1"  # l1 | mse | wing | awing | smooth_l1
    patience: int = 20  # early stopping: epochs without a better validation NME
    ema: float = 0.0  # > 0: validate and ship an exponential moving average of the weights (decay per step)
    seed: int = 0
    threads: int = 2
    arch: str = "resnet18-1ch-136"  # model.ARCHS
    val_fraction: float = 0.0  # > 0: validate on this share of the training faces (by file-name hash) instead of `val`
    sigma_weight: float = 0.0  # > 0: also train the per-point scale of a heatmap net (Laplace NLL on detached errors)
    init: str = ""  # non-empty: the recipe continues from other weights (this names them); `train` refuses to start without --init
    crop: str = "box"  # box: crops around the detector box | aligned: placed by the labels, eye line level (a second stage)
    aligned_scale: float = 1.5  # aligned crops: crop side / side of the points' detector-like box (box crops: geometry.CROP_SCALE)
    pose_balance: float = 0.0  # > 0: draw faces with weight (faces in their head-turn bin) ** -pose_balance (1 = every bin alike)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> TrainConfig:
        """The recipe in the TOML file `path`, with `overrides` (None = keep), checked whole
        before any work: UsageError naming the first unknown, mistyped or out-of-range key."""
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as e:
            raise UsageError(f"recipe {path}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"recipe {path}: not valid TOML ({e})") from None
        raw.update({k: v for k, v in overrides.items() if v is not None})
        aug = raw.pop("augment", {})
        if not isinstance(aug, dict):
            raise UsageError(f"recipe {path}: augment must be a [augment] table, not {aug!r}")
        try:
            return cls(augment=AugmentConfig(**_checked(AugmentConfig, aug, "augment.")), **_checked(cls, raw))
        except UsageError as e:
            raise UsageError(f"recipe {path}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


LOSSES = ("l1", "mse", "wing", "awing", "smooth_l1")
CROPS = ("box", "aligned")
#: what a recipe may say, beyond its types: name -> (lowest, highest) (None: unbounded), or the choices.
LIMITS: dict[str, tuple] = {
    "input_size": (32, 1024), "context": (1.0, 4.0), "epochs": (1, None), "batch_size": (1, None), "lr": (1e-8, 1.0),
    "weight_decay": (0.0, 1.0), "patience": (1, None), "ema": (0.0, 0.999999), "seed": (0, None), "threads": (1, None),
    "loss": LOSSES, "rotation_deg": (0.0, 180.0), "scale": (0.0, 0.9), "shift": (0.0, 1.0), "flip": (0.0, 1.0),
    "brightness": (0.0, 1.0), "contrast": (0.0, 1.0), "val_fraction": (0.0, 0.9), "sigma_weight": (0.0, None),
    "crop": CROPS, "aligned_scale": (1.0, 3.0), "pose_balance": (0.0, 1.0),
}


def _checked(cls, raw: dict, prefix: str = "") -> dict:
    """`raw` (a TOML table) as keyword arguments of the dataclass `cls`; UsageError naming the
    first key that is unknown, of the wrong type or out of LIMITS. Types follow the defaults."""
    defaults = {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls) if f.name != "augment"}
    out = {}
    for key, v in raw.items():
        name = prefix + key
        if key not in defaults:
            raise UsageError(f"unknown key {name!r}; known: {', '.join(prefix + k for k in defaults)}")
        d = defaults[key]
        if isinstance(d, tuple):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise UsageError(f"{name} must be a list of folders, e.g. [\"300w/afw\"], not {v!r}")
            v = tuple(v)
        elif isinstance(v, bool) or not isinstance(v, type(d) if isinstance(d, (int, str)) else (int, float)):
            kind = {int: "a whole number", float: "a number", str: "a string"}[type(d)]
            raise UsageError(f"{name} must be {kind}, not {v!r}")
        limit = LIMITS.get(key)
        if isinstance(d, str) and limit and v not in limit:
            raise UsageError(f"{name} must be one of {', '.join(limit)}, not {v!r}")
        if isinstance(d, (int, float)) and limit:
            lo, hi = limit
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise UsageError(f"{name} = {v!r} is out of range [{lo}, {'any' if hi is None else hi}]")
        out[key] = float(v) if isinstance(d, float) else v
    return out


def loss_fn(name: str):
    """Losses on normalised coordinates (crop side = 1)."""
    if name == "l1":
        return nn.L1Loss()
    if name == "mse":
        return nn.MSELoss()
    if name == "smooth_l1":
        return nn.SmoothL1Loss(beta=0.01)
    if name == "wing":
        return WingLoss()
    if name == "awing":
        return AdaptiveWingLoss()
    raise ValueError(f"unknown loss {name!r} ({', '.join(LOSSES)})")


class WingLoss(nn.Module):
    """Wing loss (Feng et al. 2018), with w and eps in normalised units (w=10 px at 128 px)."""

    def __init__(self, w: float = 10 / 128, eps: float = 2 / 128):
        super().__init__()
        self.w, self.eps = w, eps
        self.c = w - w * math.log(1 + w / eps)

    def forward(self, pred, target):
        d = (pred - target).abs()
        return torch.where(d < self.w, self.w * torch.log(1 + d / self.eps), d - self.c).mean()


class AdaptiveWingLoss(nn.Module):
    """Adaptive Wing loss (Wang et al. 2019) on coordinates: its heatmap form with the target
    term of the exponent fixed (alpha - y = alpha), so the loss is quadratic-like near zero, log
    (Wing-like) for medium errors and linear beyond theta; w, eps, theta in normalised units
    (10, 2 and 4 px at 128 px, Wing's scale here), A and C make it continuous with its slope."""

    def __init__(self, w: float = 10 / 128, eps: float = 2 / 128, theta: float = 4 / 128, alpha: float = 2.1):
        super().__init__()
        self.w, self.eps, self.theta, self.alpha = w, eps, theta, alpha
        r = theta / eps
        self.a = w * alpha * r ** (alpha - 1) / (1 + r**alpha) / eps
        self.c = theta * self.a - w * math.log(1 + r**alpha)

    def forward(self, pred, target):
        d = (pred - target).abs()
        small = self.w * torch.log(1 + (d.clamp(max=self.theta) / self.eps) ** self.alpha)
        return torch.where(d < self.theta, small, self.a * d - self.c).mean()


def head_turn(points: np.ndarray) -> np.ndarray:
    """Per face, how far the head is turned, from its 68 points: |left - right| / (left + right)
    of the nose tip's distances to the two jaw ends (0 frontal, towards 1 profile)."""
    left = np.linalg.norm(points[:, 30] - points[:, 0], axis=-1)
    right = np.linalg.norm(points[:, 16] - points[:, 30], axis=-1)
    return np.abs(left - right) / np.maximum(left + right, 1e-6)


def pose_weights(points: np.ndarray, power: float, bins: int = 5) -> torch.Tensor:
    """Sampling weight per face: (faces in its head-turn bin) ** -power, bins equal in width over [0, 1]."""
    b = np.minimum((head_turn(points) * bins).astype(int), bins - 1)
    counts = np.bincount(b, minlength=bins)
    return torch.from_numpy(counts[b].astype(np.float64) ** -power)


def evaluate_canvases(net: nn.Module, val: Canvases, flip: bool = False, batch: int = 64, aligned: bool = False,
                      crop_scale: float = 1.5) -> np.ndarray:
    """Per-face inter-ocular NME of the network on the centre crops of `val` (`aligned`: on
    the crops their labels place, eye line level, `crop_scale` times their box)."""
    net.eval()
    preds, gts = [], []
    for i in range(0, len(val), batch):
        imgs, pts = center_crop(torch.from_numpy(val.images[i : i + batch]), torch.from_numpy(val.points[i : i + batch]), val.size, aligned, crop_scale)
        p, *_ = predict_crops(net, imgs.round().clamp(0, 255).to(torch.uint8), flip=flip)
        preds.append(p)
        gts.append(pts.numpy())
    return nme(np.concatenate(preds), np.concatenate(gts))


def in_label_frame(net: nn.Module, pred: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Content predictions (B, 68, 2) -> the labels' frame: add the net's learned label offset,
    mirrored in x for the faces the augmentation flipped (their labels' offset was mirrored too)."""
    offset = getattr(net, "label_offset", None)
    if offset is None:
        return pred
    sign = torch.ones(len(pred), 1, 2)
    sign[flipped, 0, 0] = -1
    return pred + sign * offset


class _Interrupt:
    """Turn SIGTERM/SIGINT into a flag checked between steps, so a stop saves `last.pt`."""

    def __init__(self):
        self.flag = False

    def __enter__(self):
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _set(self, *_):
        if self.flag:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def fit(
    cfg: TrainConfig,
    train: Canvases,
    val: Canvases | None,
    out: Path,
    init: nn.Module | None = None,
    resume: bool = True,
    progress: bool = True,
    meta: dict | None = None,
) -> TrainResult:
    """Train; writes `out/last.pt` every epoch and `out/best.pt` on a new best validation NME.

    `init`: start from these weights (finetuning) instead of a random network. Stops early after
    `cfg.patience` epochs without improvement, or when interrupted (SIGINT/SIGTERM), after saving.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    # finetuning keeps the architecture of the weights it starts from (and records it, so the
    # checkpoints load back into that architecture)
    if init is not None:
        cfg = dataclasses.replace(cfg, arch=arch_of(init))
    net = copy.deepcopy(init) if init is not None else build_network(cfg.arch)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15 if init is None else 0.05)
    st = TrainState(net, opt, sched, torch.Generator().manual_seed(cfg.seed), WeightAverage(net, cfg.ema) if cfg.ema else None,
                    {"epoch": [], "train_loss": [], "val_nme": [], "lr": [], "seconds": []})
    saver = CheckpointSaver(out, cfg.to_dict(), TrainConfig().to_dict(), meta)
    if resume:
        saver.resume(st)
    crit = loss_fn(cfg.loss)
    hist = st.history

    x_all, y_all = torch.from_numpy(train.images), torch.from_numpy(train.points)
    aligned = cfg.crop == "aligned"
    weights = pose_weights(train.points, cfg.pose_balance) if cfg.pose_balance else None
    stale = 0 if not hist["val_nme"] else len(hist["val_nme"]) - 1 - int(np.argmin(hist["val_nme"]))
    # one bar for the whole run, so its ETA is the run's
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=st.epoch * steps_per_epoch, disable=not progress, unit="step", dynamic_ncols=True)
    with _Interrupt() as stop:
        for epoch in range(st.epoch, cfg.epochs):
            t0 = time.time()
            net.train()
            if weights is None:
                perm = torch.randperm(len(train), generator=st.rng)
            else:  # as many draws as faces, with replacement, rarer head turns more often
                perm = torch.multinomial(weights, len(train), replacement=True, generator=st.rng)
            losses = []
            bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}")
            for step in range(steps_per_epoch):
                idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                imgs, pts, flipped = augment_with_flip(x_all[idx], y_all[idx], cfg.input_size, cfg.augment, st.rng, aligned, cfg.aligned_scale)
                target = to_norm(pts, cfg.input_size)
                if cfg.sigma_weight:
                    pred, log_sigma = net.forward_full(normalise_images(imgs))
                    pred = in_label_frame(net, pred, flipped)
                    # Laplace NLL of the detached error: only the scale read-out learns from it
                    err = (pred.detach() - target).abs().sum(-1)
                    loss = crit(pred, target) + cfg.sigma_weight * (err * torch.exp(-log_sigma) + 2 * log_sigma).mean()
                else:
                    pred = in_label_frame(net, net(normalise_images(imgs)).view(len(idx), -1, 2), flipped)
                    loss = crit(pred, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if st.average is not None:
                    st.average.update(net)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
                if stop.flag:
                    break
            if stop.flag:  # an unfinished epoch is not saved: resume redoes it from the last save
                break
            val_nme = float(evaluate_canvases(st.export_net, val, aligned=aligned, crop_scale=cfg.aligned_scale).mean()) if val is not None and len(val) else float("nan")
            st.elapsed += time.time() - t0
            for k, v in zip(hist, [epoch + 1, float(np.mean(losses)), val_nme, sched.get_last_lr()[0], st.elapsed]):
                hist[k].append(v)
            improved = val_nme < st.best or (math.isnan(st.best) or st.best == math.inf) and not math.isnan(val_nme)
            if improved:
                st.best, stale = val_nme, 0
            else:
                stale += 1
            st.epoch = epoch + 1
            saver.save(st, best=improved)
            msg = f"epoch {epoch + 1}/{cfg.epochs} loss {hist['train_loss'][-1]:.5f}"
            if not math.isnan(val_nme):
                msg += f" val NME {100 * val_nme:.2f}% best {100 * st.best:.2f}%"
            msg += f" ({st.elapsed / 60:.1f} min)"
            tqdm.write(msg) if progress else print(msg, flush=True)
            if stale >= cfg.patience:
                tqdm.write(f"early stop: no better validation NME for {cfg.patience} epochs")
                break
    bar.close()
    (out / "history.json").write_text(json.dumps(hist, indent=1))
    return TrainResult(hist, interrupted=stop.flag)
