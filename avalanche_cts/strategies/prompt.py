"""CODA-Prompt (Smith et al., CVPR 2023, https://arxiv.org/abs/2211.13218) for timm ViTs.

A frozen ViT ``f`` is prompted by prefix-tuning in its first blocks (default the first 5).
For block l and query ``q = f(x)`` (the unprompted pre-logits feature, no gradient), the
prompt is an attention-weighted sum of components ``P_lm`` ``(L, D)``::

    alpha_lm = cos(q * A_lm, K_lm),    p_l = sum_m alpha_lm P_lm,

and its halves are prepended to the block's keys and values (``L/2`` tokens each). Each
task adds ``pool_size / T`` new components (keys ``K``, attention vectors ``A``, prompts
``P``), initialised orthogonal to the old ones (Gram-Schmidt, as CODA's code); the old
components and heads are frozen, and the loss is the cross-entropy on the current task's
logits (CODA masks the past classes' logits, which is the same). Orthogonality penalty:
none (CODA's ImageNet-R setting ``--prompt_param 100 8 0.0``).
Works with any embedding size; blocks must use timm's standard ``Attention``.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import PEFTTemplate, TaskHeads, freeze

__all__ = ["PrefixAttention", "CodaPromptPool", "CodaPromptViT", "CODAPrompt"]


class PrefixAttention(nn.Module):
    """Wraps a timm ``Attention``; when ``prefix = (pk, pv)`` (each ``(B, Lp, h)``) is set,
    those tokens are prepended to the keys and values (prefix-tuning)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        for name in ("qkv", "num_heads", "head_dim", "q_norm", "k_norm", "norm", "proj"):
            if not hasattr(attn, name):
                raise TypeError(f"{type(attn).__name__} is not a timm Attention (no {name})")
        self.attn = attn
        self.prefix: Optional[Tuple[Tensor, Tensor]] = None

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, **kwargs) -> Tensor:
        a = self.attn
        if self.prefix is None:
            return a(x, attn_mask=attn_mask, **kwargs)
        b, n, _ = x.shape
        q, k, v = a.qkv(x).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(q), a.k_norm(k)
        pk, pv = (p.reshape(b, -1, a.num_heads, a.head_dim).transpose(1, 2) for p in self.prefix)
        k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
        if attn_mask is not None:
            lead = attn_mask.new_ones if attn_mask.dtype == torch.bool else attn_mask.new_zeros
            attn_mask = torch.cat([lead(*attn_mask.shape[:-1], pk.shape[2]), attn_mask], -1)
        drop = a.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        out = a.norm(out.transpose(1, 2).reshape(b, n, a.num_heads * a.head_dim))
        if getattr(a, "gate", None) is not None:
            out = out * a.gate(x).sigmoid()
        return a.proj_drop(a.proj(out))


def _orthogonal_rows(old: Tensor, k: int) -> Tensor:
    """``k`` unit rows orthogonal to the rows of ``old`` ``(m, n)`` and to each other
    (Gram-Schmidt via QR); random unit rows when ``m + k > n`` leaves no room."""
    m, n = old.shape
    new = torch.randn(k, n, dtype=old.dtype, device=old.device)
    if m + k > n:
        return F.normalize(new, dim=1)
    if m:
        q = torch.linalg.qr(old.T)[0]
        new = new - (new @ q) @ q.T
    return torch.linalg.qr(new.T)[0].T


class CodaPromptPool(nn.Module):
    """CODA-Prompt components of ``n_layers`` prompted blocks, grown task by task.

    Per task: keys ``(n_layers, k, D)``, attention vectors ``(n_layers, k, D)`` and prompts
    ``(n_layers, k, L, D)``; only the newest task's are trainable.
    """

    def __init__(self, embed_dim: int, n_layers: int, length: int = 8):
        super().__init__()
        if length % 2:
            raise ValueError(f"prompt length must be even (key and value halves), got {length}")
        self.embed_dim, self.n_layers, self.length = embed_dim, n_layers, length
        self.keys, self.attn = nn.ParameterList(), nn.ParameterList()
        self.prompts = nn.ParameterList()

    def add_components(self, k: int) -> None:
        """Freeze the existing components and add ``k`` new ones per layer."""
        freeze(self)
        for plist, shape in ((self.keys, (self.embed_dim,)), (self.attn, (self.embed_dim,)),
                             (self.prompts, (self.length, self.embed_dim))):
            old = (torch.cat(list(plist), 1) if len(plist)
                   else torch.zeros(self.n_layers, 0, *shape))
            rows = [_orthogonal_rows(old[l].flatten(1), k) for l in range(self.n_layers)]
            plist.append(nn.Parameter(torch.stack(rows).reshape(self.n_layers, k, *shape)
                                      .to(old.device)))

    def forward(self, query: Tensor) -> Tensor:
        """Prompts ``(B, n_layers, L, D)`` for queries ``(B, D)``."""
        keys, attn, prompts = (torch.cat(list(p), 1) for p in (self.keys, self.attn, self.prompts))
        # cos(q * A_m, K_m) without materialising (B, layers, M, D)
        num = torch.einsum("bd,lmd->blm", query, attn * keys)
        qa_norm = torch.einsum("bd,lmd->blm", query**2, attn**2).clamp_min(1e-12).sqrt()
        alpha = num / (qa_norm * keys.norm(dim=-1).clamp_min(1e-12))
        return torch.einsum("blm,lmkd->blkd", alpha, prompts)


class CodaPromptViT(nn.Module):
    """A frozen timm ViT with CODA prompts and per-task heads; ``forward(x)`` -> logits.

    :param vit: timm ``VisionTransformer`` (its classifier is removed).
    :param num_classes: size of the global label space.
    :param length: prompt length L (L/2 key and L/2 value tokens).
    :param layers: prompted blocks (default the first 5, or all if fewer).
    """

    def __init__(self, vit: nn.Module, num_classes: int, length: int = 8,
                 layers: Optional[Iterable[int]] = None):
        super().__init__()
        vit.reset_classifier(0)
        freeze(vit)
        self.vit = vit
        default = range(min(5, len(vit.blocks)))
        self.layers: List[int] = sorted(default if layers is None else layers)
        self.prefixed = [PrefixAttention(vit.blocks[i].attn) for i in self.layers]
        for i, pa in zip(self.layers, self.prefixed):
            vit.blocks[i].attn = pa
        self.pool = CodaPromptPool(vit.num_features, len(self.layers), length)
        self.heads = TaskHeads(vit.num_features, num_classes)

    def features(self, x: Tensor, prompts: Optional[Tensor] = None) -> Tensor:
        """Pre-logits features ``(B, D)``, prefix-tuned by ``prompts`` ``(B, layers, L, D)``."""
        half = self.pool.length // 2
        try:
            for j, pa in enumerate(self.prefixed):
                if prompts is not None:
                    pa.prefix = (prompts[:, j, :half], prompts[:, j, half:])
            return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)
        finally:
            for pa in self.prefixed:
                pa.prefix = None

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            query = self.features(x)
        return self.heads(self.features(x, self.pool(query)))


class CODAPrompt(PEFTTemplate):
    """CODA-Prompt as an Avalanche strategy over a (pretrained) timm ViT of any size.

    ``strategy.model`` is a :class:`CodaPromptViT` around ``model``.

    :param model: timm ``VisionTransformer``.
    :param pool_size: total number of components M, split evenly over the tasks (100).
    :param prompt_length: L (8).
    :param layers: prompted blocks (default ``0..4``).
    :param n_experiences: number of tasks T (default: length of the first experience's stream).
    :param lr: Adam learning rate (CODA: 1e-3, cosine).
    :param num_classes: global label space (default ``model.num_classes``).
    :param kwargs: :class:`~.base.PEFTTemplate` keywords.
    """

    def __init__(self, *, model: nn.Module, pool_size: int = 100, prompt_length: int = 8,
                 layers: Optional[Iterable[int]] = None, n_experiences: Optional[int] = None,
                 lr: float = 1e-3, num_classes: Optional[int] = None, **kwargs):
        net = CodaPromptViT(model, num_classes or model.num_classes, prompt_length, layers)
        super().__init__(model=net, heads=net.heads, lr=lr, **kwargs)
        self.pool_size = pool_size
        self.n_experiences = n_experiences

    def prepare_experience(self, experience) -> None:
        if self.n_experiences is None:
            self.n_experiences = len(experience.origin_stream)
        self.model.pool.add_components(max(self.pool_size // self.n_experiences, 1))
        self.heads.add_head(experience.classes_in_this_experience)

    def state_dict(self) -> Dict[str, Any]:
        return {**super().state_dict(), "n_experiences": self.n_experiences,
                "components": [p.shape[1] for p in self.model.pool.keys]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.n_experiences = state["n_experiences"]
        for k in state["components"]:
            self.model.pool.add_components(k)
        freeze(self.model.pool)
