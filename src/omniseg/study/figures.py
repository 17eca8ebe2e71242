"""Report figures (matplotlib): case montages, paired scatter, box plots with points, routing curve, Dice by size.

Every function takes plain data and a path; nothing here reads the store. Each figure is written as a PNG (for
report.md and report.html) and as an SVG beside it (vector, for a paper), both without timestamps and with fixed
SVG ids, so a report regenerated from the same store is byte-identical.
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
    matplotlib.rcParams["svg.hashsalt"] = "omniseg"  # the SVG's element ids: the same every time
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int) -> Path:
    """The figure as ``path`` (PNG) and as an SVG beside it; returns the PNG's path."""
    fig.savefig(path, dpi=dpi, metadata=_META)
    fig.savefig(path.with_suffix(".svg"), metadata={"Date": None, "Creator": None})
    _plt().close(fig)
    return path


#: outline colours to choose from: whichever stands out most from the pixels under the outline (green vanishes on
#: endoscopy's reddish tissue; none of them is the red tint of a prediction)
OUTLINES = ((0, 255, 255), (255, 255, 0), (40, 220, 40), (255, 0, 255), (255, 255, 255), (0, 0, 0))
TINT = (255, 40, 40)


def outline_width(shape: tuple[int, ...]) -> int:
    """Pixels of outline an image needs to show it in a montage panel of about 200 pixels: one per 250 of its side."""
    return max(1, round(max(shape[:2]) / 250))


def outline_colour(image: np.ndarray, edge: np.ndarray) -> tuple[int, int, int]:
    """The colour of :data:`OUTLINES` farthest (mean RGB distance) from the image's pixels under ``edge``."""
    under = image[edge].astype(np.float32).reshape(-1, 3) if edge.any() else image.reshape(-1, 3).astype(np.float32)
    return max(OUTLINES, key=lambda c: float(np.linalg.norm(under - np.array(c, np.float32), axis=1).mean()))


def overlay(image: np.ndarray, mask: np.ndarray | None, colour=TINT, ref: np.ndarray | None = None) -> np.ndarray:
    """The image with the mask tinted and, when given, the reference outlined: :func:`outline_width` pixels wide, in
    the colour that stands out most there (:func:`outline_colour`)."""
    image = _rgb(image)
    out = image.astype(np.float32).copy()
    if mask is not None:
        out[mask] = 0.45 * out[mask] + 0.55 * np.array(colour, np.float32)
    if ref is not None:
        edge = outline(ref, outline_width(ref.shape))
        out[edge] = outline_colour(image, edge)
    return out.clip(0, 255).astype(np.uint8)


def outline(ref: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner band of ``width`` pixels along the mask's border (the image's edge counts as outside)."""
    from scipy import ndimage

    return ref & ~ndimage.binary_erosion(ref, iterations=width, border_value=0)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def montage(rows: list[dict], models: list[str], path: Path, title: str) -> Path:
    """One row per case: image, ground truth, then each model's mask over the image (truth outlined).

    ``rows``: dicts with sample_id, subset, image, truth, masks {model: mask or None}, dice {model: float}, and for
    a volume's slice ``view`` (which slice, shown under the id; the Dice is the volume's).
    """
    plt = _plt()
    ncol = 2 + len(models)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.2 * ncol, 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        head = f"{row['subset']}: {row['sample_id'][:14]}" + (f"\n{row['view']}" if row.get("view") else "")
        panels = [(row["image"], head),
                  (overlay(row["image"], row["truth"], (255, 255, 255)), "ground truth")]
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
    return _save(fig, path, 90)


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
    return _save(fig, path, 110)


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
    return _save(fig, path, 110)


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
    return _save(fig, path, 110)


def dice_vs_size(df: pd.DataFrame, models: list[str], path: Path, title: str, edges: np.ndarray) -> Path:
    """Dice per image against the reference lesion's share of the image (log scale), per model, with the mean Dice
    in the quartiles of the report's table (``edges``: their five bounds) drawn as a line."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    colours = plt.get_cmap("tab10")
    bins = len(edges) - 1
    for i, m in enumerate(models):
        part = df[df["model"] == m]
        ax.scatter(part["lesion_share"], part["dice"], s=5, alpha=0.25, color=colours(i))
        idx = np.clip(np.searchsorted(edges, part["lesion_share"], side="right") - 1, 0, bins - 1)
        means = part.groupby(idx).agg(x=("lesion_share", "median"), y=("dice", "mean"))
        ax.plot(means["x"], means["y"], marker="o", ms=3, color=colours(i), label=m)
    for e in edges[1:-1]:
        ax.axvline(e, color="#bbb", lw=0.6, ls=":")
    ax.set_xscale("log")
    # whole decades only, as percentages: the minor labels a narrow log range gets (2e-2, 3e-2, ...) overlapped
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("reference lesion, share of the image (log; dotted: the table's quartiles)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, 110)
