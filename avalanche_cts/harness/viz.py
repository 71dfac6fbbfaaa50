"""Relevance maps and kept tokens per scorer at falling retention (the paper's Fig. 2), as PNG.

Uses matplotlib's object API with the Agg canvas (no pyplot state, no display needed).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..scorers import TokenScorer, get_scorer
from ..tokens.patches import keep_count, mask_to_pixels

__all__ = [
    "DEFAULT_RETENTIONS",
    "DROPPED_RGB",
    "memory_figure",
    "relevance_figure",
    "render_relevance_maps",
    "top_tokens_mask",
]

DEFAULT_RETENTIONS = (0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
DROPPED_RGB = (0.20, 0.35, 0.65)  # dropped tokens are painted in this colour


def top_tokens_mask(scores: Tensor, retention: float) -> Tensor:
    """``(B, T)`` bool mask of the top ``round(retention * T)`` tokens (ties: lowest index first)."""
    k = keep_count(scores.shape[1], retention)
    idx = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, idx, True)


def _to_rgb(images: Tensor) -> Tensor:
    """``(B, C, H, W)`` with C in {1, 3} to ``(B, H, W, 3)`` in [0, 1], min-max scaled per image."""
    x = images.detach().float().cpu()
    lo = x.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1)


def relevance_figure(
    images: Tensor,
    scores: Mapping[str, Tensor],
    patch_size: int,
    retentions: Sequence[float] = DEFAULT_RETENTIONS,
    titles: Optional[Sequence[str]] = None,
    cmap: str = "inferno",
):
    """Figure with one row per (image, scorer): image, relevance map, kept tokens per retention.

    :param images: ``(B, C, H, W)`` images (any scale; shown min-max scaled).
    :param scores: scorer name -> ``(B, T)`` relevance, T in row-major grid order.
    :param patch_size: token size P in pixels.
    :param titles: optional per-image captions (e.g. class names).
    :return: a ``matplotlib.figure.Figure`` (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b, _, h, w = images.shape
    grid = (h // patch_size, w // patch_size)
    rgb = _to_rgb(images)
    dropped = torch.tensor(DROPPED_RGB).view(1, 1, 1, 3)
    rows, cols = b * len(scores), 2 + len(retentions)
    fig = Figure(figsize=(1.35 * cols, 1.45 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(b):
        for j, (name, s) in enumerate(scores.items()):
            s = s.detach().float().cpu()
            ax = axes[i * len(scores) + j]
            ax[0].imshow(rgb[i].numpy())
            ax[0].set_ylabel(name, fontsize=9)
            if j == 0 and titles is not None:
                ax[0].set_title(titles[i], fontsize=9)
            ax[1].imshow(s[i].view(grid).numpy(), cmap=cmap, interpolation="nearest")
            for c, r in enumerate(retentions, start=2):
                keep = mask_to_pixels(top_tokens_mask(s[i:i + 1], r), patch_size, grid)[0, 0, ..., None]
                ax[c].imshow(torch.where(keep, rgb[i], dropped[0]).numpy())
                if i == 0 and j == 0:
                    ax[c].set_title(f"{round(100 * r)}% kept", fontsize=9)
            if i == 0 and j == 0:
                ax[1].set_title("relevance", fontsize=9)
            for a in ax:
                a.set_xticks([])
                a.set_yticks([])
    return fig


def render_relevance_maps(
    model: nn.Module,
    images: Tensor,
    targets: Optional[Tensor] = None,
    scorers: Sequence[Union[str, TokenScorer]] = ("random", "rollout", "gradcam", "gradlrp", "atman"),
    retentions: Sequence[float] = DEFAULT_RETENTIONS,
    path: Optional[Union[str, Path]] = None,
    titles: Optional[Sequence[str]] = None,
    dpi: int = 110,
) -> Tuple[object, Mapping[str, Tensor]]:
    """Score ``images`` with each scorer and draw :func:`relevance_figure`; save a PNG if ``path``.

    :param scorers: names or scorer objects; rows are labelled with their names.
    :return: ``(figure, {scorer name: (B, T) scores})``.
    """
    from ..models import attention_access

    access = attention_access(model)
    scores = {}
    for s in scorers:
        scorer = get_scorer(s)
        key = scorer.name if scorer.name not in scores else repr(scorer)  # e.g. two rollout settings
        scores[key] = scorer.score(model, images, targets)
    fig = relevance_figure(images, scores, access.patch_size, retentions, titles)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig, scores


def memory_figure(buffer, records_per_class: int = 8,
                  class_names: Optional[Sequence[str]] = None):
    """Figure of what a :class:`~avalanche_cts.CoreTokensetBuffer` holds: one row per (class,
    task) group, its first ``records_per_class`` records (highest priority) drawn as images,
    stored tokens at their positions as stored pixels, dropped tokens in ``DROPPED_RGB``.

    :return: a ``matplotlib.figure.Figure`` (Agg canvas).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..tokens.patches import scatter_tokens, unpatchify

    layout = buffer.layout
    if layout is None or not buffer.groups:
        raise ValueError("the buffer holds no records yet: update it with an experience first")
    p, c, grid = layout["patch_size"], layout["channels"], layout["grid"]
    keys = sorted(buffer.groups)
    fig = Figure(figsize=(1.1 * records_per_class, 1.2 * len(keys)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), records_per_class, squeeze=False)
    dropped = torch.tensor(DROPPED_RGB).view(3, 1, 1)
    for row, key in zip(axes, keys):
        group = buffer.groups[key]
        offsets = group.offsets()
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(group):
                ax.axis("off")
                continue
            values, positions = group.record(j, offsets)
            pixels = buffer.codec.pixels(values[None])
            kept = torch.zeros(1, layout["num_tokens"], 1)
            kept[0, positions.long()] = 1.0
            grid_vals = scatter_tokens(pixels, positions.long()[None], layout["num_tokens"])
            image = unpatchify(grid_vals, p, c, grid)[0].expand(3, -1, -1)
            mask = unpatchify(kept.expand(1, -1, p * p * c), p, c, grid)[0, :1] > 0
            ax.imshow(torch.where(mask, image, dropped).permute(1, 2, 0).clamp(0, 1).numpy())
        name = class_names[key[0]] if class_names is not None else f"class {key[0]}"
        row[0].set_ylabel(f"{name}\n{len(group)} records", fontsize=7)
    return fig
