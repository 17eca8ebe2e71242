"""Report figures (matplotlib, PNG): case montages, paired scatter, box plots with points, routing curve.

Every function takes plain data and a path; nothing here reads the store. PNGs are written
without timestamps so a report regenerated from the same store is byte-identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SUBSET_COLOURS = {"easiest": "#2a9d8f", "hardest": "#e76f51", "other": "#9aa5b1"}
_META = {"Software": None}  # no version or date stamps: deterministic files


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overlay(image: np.ndarray, mask: np.ndarray | None, colour=(255, 40, 40), ref: np.ndarray | None = None) -> np.ndarray:
    """The image with the mask tinted and, when given, the reference outline in green."""
    out = image.astype(np.float32).copy()
    if mask is not None:
        out[mask] = 0.45 * out[mask] + 0.55 * np.array(colour, np.float32)
    if ref is not None:
        edge = ref & ~_erode(ref)
        out[edge] = (40, 220, 40)
    return out.clip(0, 255).astype(np.uint8)


def _erode(m: np.ndarray) -> np.ndarray:
    p = np.pad(m, 1)
    return p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]


def montage(rows: list[dict], models: list[str], path: Path, title: str) -> Path:
    """One row per case: image, ground truth, then each model's mask over the image (truth outlined).

    ``rows``: dicts with sample_id, subset, image, truth, masks {model: mask or None}, dice {model: float}.
    """
    plt = _plt()
    ncol = 2 + len(models)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.2 * ncol, 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        panels = [(row["image"], f"{row['subset']}: {row['sample_id'][:14]}"),
                  (overlay(row["image"], row["truth"], (40, 220, 40)), "ground truth")]
        for m in models:
            mask = row["masks"].get(m)
            d = row["dice"].get(m)
            label = f"{m}: Dice {d:.2f}" if d is not None and not np.isnan(d) else f"{m}: no mask"
            panels.append((overlay(row["image"], mask, ref=row["truth"]), label))
        for c, (img, label) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.0 * len(rows))))  # leave room for the title
    fig.savefig(path, dpi=90, metadata=_META)
    plt.close(fig)
    return path


def paired_scatter(df: pd.DataFrame, x: str, y: str, path: Path, title: str) -> Path:
    """Per-image Dice of model x against model y, coloured by subset; the diagonal is a tie."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    for subset in ("other", "easiest", "hardest"):
        part = df[df["subset"] == subset]
        if len(part):
            ax.scatter(part[x], part[y], s=12, alpha=0.75, c=SUBSET_COLOURS[subset], label=f"{subset} ({len(part)})")
    ax.plot([0, 1], [0, 1], color="#555", lw=0.8, ls="--")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x} Dice")
    ax.set_ylabel(f"{y} Dice")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path


def boxplots(df: pd.DataFrame, models: list[str], path: Path, title: str) -> Path:
    """Dice per model and subset: box plots with every image drawn as a point."""
    plt = _plt()
    subsets = [s for s in ("all", "easiest", "hardest") if (df["subset_" + s]).any()]
    fig, axes = plt.subplots(1, len(subsets), figsize=(2.0 + 1.3 * len(models) * len(subsets), 3.6), squeeze=False)
    rng = np.random.default_rng(0)  # fixed jitter: deterministic figures
    for ax, subset in zip(axes[0], subsets):
        data = [df[(df["model"] == m) & df["subset_" + subset]]["dice"].dropna().to_numpy() for m in models]
        ax.boxplot(data, showfliers=False, widths=0.55)
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=6, alpha=0.5, color=SUBSET_COLOURS.get(subset, "#457b9d"))
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, fontsize=7)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(subset, fontsize=9)
    axes[0][0].set_ylabel("Dice")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path


def routing_plot(curve: pd.DataFrame, specialist: str, omnimodel: str, path: Path, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot(curve["share_sent"] * 100, curve["hybrid_dice"], label="route by specialist confidence", color="#264653")
    ax.plot(curve["share_sent"] * 100, curve["oracle_dice"], label="oracle (best k to send)", color="#e9c46a", ls="--")
    ax.axhline(curve["hybrid_dice"].iloc[0], color="#2a9d8f", lw=0.8, ls=":", label=f"{specialist} alone")
    ax.axhline(curve["hybrid_dice"].iloc[-1], color="#e76f51", lw=0.8, ls=":", label=f"{omnimodel} alone")
    ax.set_xlabel(f"% of images sent to {omnimodel}")
    ax.set_ylabel("mean Dice")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path


def dice_vs_size(df: pd.DataFrame, models: list[str], path: Path, title: str, bins: int = 8) -> Path:
    """Dice per image against the reference lesion's share of the image (log scale), per model, with the
    mean Dice in equal-count bins of lesion size drawn as a line: difficulty read from the image."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colours = plt.get_cmap("tab10")
    edges = np.quantile(df["lesion_share"], np.linspace(0, 1, bins + 1))
    for i, m in enumerate(models):
        part = df[df["model"] == m]
        ax.scatter(part["lesion_share"], part["dice"], s=5, alpha=0.25, color=colours(i))
        idx = np.clip(np.searchsorted(edges, part["lesion_share"], side="right") - 1, 0, bins - 1)
        means = part.groupby(idx).agg(x=("lesion_share", "median"), y=("dice", "mean"))
        ax.plot(means["x"], means["y"], marker="o", ms=3, color=colours(i), label=m)
    ax.set_xscale("log")
    ax.set_xlabel("reference lesion, share of the image (log)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path
