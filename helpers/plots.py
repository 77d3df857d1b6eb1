"""Plots the notebooks share."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt


def loss_history(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Split a trainer's ``state.log_history`` into ``(epoch, loss)`` points.

    Returns ``{"train": [...], "validation": [...]}``.
    """
    train = [(row["epoch"], row["loss"]) for row in log_history if "loss" in row]
    validation = [(row["epoch"], row["eval_loss"]) for row in log_history if "eval_loss" in row]
    return {"train": train, "validation": validation}


def plot_loss(log_history: list[dict[str, Any]], title: str = "Loss", ax=None):
    """Plot training and validation loss against epochs from ``trainer.state.log_history``."""
    history = loss_history(log_history)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for name, style in (("train", "-"), ("validation", "o-")):
        if history[name]:
            epochs, losses = zip(*history[name], strict=True)
            ax.plot(epochs, losses, style, label=f"{name} loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
