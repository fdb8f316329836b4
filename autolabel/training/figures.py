"""Figures for the model card and reports: loss curve, prediction overlays, CED curves.

matplotlib (and torch, for the overlay) load only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autolabel.markup import GROUP_COLORS, connections
from autolabel.metrics import auc, ced


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_points(ax, pts: np.ndarray, color: str | None = None, size: float = 4, lines: bool = True) -> None:
    if lines:
        for i, j, g in connections():
            ax.plot(pts[[i, j], 0], pts[[i, j], 1], color=color or GROUP_COLORS[g], lw=0.8)
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c=color or "white", zorder=3)


def plot_history(hist: dict, path: Path) -> None:
    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ax1.plot(hist["epoch"], hist["train_loss"], label="train loss", color="tab:blue")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss (normalised units)")
    ax1.set_yscale("log")
    ax2 = ax1.twinx()
    ax2.plot(hist["epoch"], 100 * np.asarray(hist["val_nme"]), label="validation NME", color="tab:red")
    ax2.set_ylabel("validation NME (%, inter-ocular)")
    ax2.set_ylim(0, min(15, max(5, 100 * float(np.nanmin(hist["val_nme"])) * 3)) if len(hist["val_nme"]) else 15)
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overlay(net, val, path: Path, n: int = 12, aligned: bool = False, crop_scale: float = 1.5) -> None:
    """Predictions (red) vs ground truth (green) on the first `n` validation centre crops
    (`aligned`: the crops their labels place, as a second stage's validation)."""
    import torch  # only here: evaluate imports this module for plot_ced without torch

    from autolabel.model import predict_crops
    from autolabel.training.augment import center_crop

    plt = _plt()
    imgs, pts = center_crop(torch.from_numpy(val.images[:n]), torch.from_numpy(val.points[:n]), val.size, aligned, crop_scale)
    pred, *_ = predict_crops(net, imgs.round().to(torch.uint8), flip=True)
    cols = 6
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(2 * cols, 2 * ((n + cols - 1) // cols)))
    for k, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if k >= len(imgs):
            continue
        ax.imshow(imgs[k].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.scatter(pts[k, :, 0], pts[k, :, 1], s=3, c="lime")
        ax.scatter(pred[k, :, 0], pred[k, :, 1], s=3, c="red")
    fig.suptitle("validation: prediction (red) vs ground truth (green)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ced(curves: dict[str, np.ndarray], path: Path, threshold: float = 0.08) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, err in curves.items():
        x, y = ced(err, threshold)
        ax.plot(100 * x, y, label=f"{name} (AUC {auc(err, threshold):.3f})")
    ax.set_xlabel("NME (%, inter-ocular)")
    ax.set_ylabel("share of faces")
    ax.set_xlim(0, 100 * threshold)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
