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

Token memories: :class:`CodaPromptAdapter` (registered with ``register_adapter``) gives
``CoreTokensetReplayPlugin`` and the token scorers the prompted model: a partial input
(memory record or new data with tokens dropped, zero / sparse / mask modes) selects its
prompts by its own query (``query="partial"``, the default; a record has no whole scene to
take one from). With ``query="whole"`` a partial input whose whole image is at hand (new
data under token dropout, a test image under top-token inference: the adapter's
``partial_inputs`` path) selects its prompts by the query of the whole image, while the
prompted forward still sees the partial input; memory records keep their own query.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check
from ..models import register_adapter
from ..models.timm_vit import TimmAttentionAccess, TimmViTAdapter
from .base import PEFTTemplate, TaskHeads, freeze

__all__ = ["PrefixAttention", "CodaPromptPool", "CodaPromptViT", "CODAPrompt", "CodaPromptAdapter",
           "CodaAttentionAccess", "QUERIES"]

QUERIES = ("partial", "whole")
"""Which input selects the prompts of a partial input whose whole image is at hand
(:attr:`CodaPromptViT.query`): the partial input itself, or the whole image."""


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

    # what attention access (token scorers) reads from a timm Attention
    @property
    def attn_drop(self) -> nn.Module:
        """The wrapped attention's ``attn_drop``: its input is the ``(B, H, N, Lp + N)``
        attention probabilities (prompt keys first) whenever ``fused_attn`` is off."""
        return self.attn.attn_drop

    @property
    def k_norm(self) -> nn.Module:
        """The wrapped attention's ``k_norm`` (output: the sequence's keys, prompts excluded)."""
        return self.attn.k_norm

    @property
    def num_heads(self) -> int:
        return self.attn.num_heads

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
        if a.fused_attn:
            drop = a.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
        else:
            out = _explicit_attention(a, q, k, v, attn_mask)
        out = a.norm(out.transpose(1, 2).reshape(b, n, a.num_heads * a.head_dim))
        if getattr(a, "gate", None) is not None:
            out = out * a.gate(x).sigmoid()
        return a.proj_drop(a.proj(out))


def _explicit_attention(a: nn.Module, q: Tensor, k: Tensor, v: Tensor,
                        attn_mask: Optional[Tensor]) -> Tensor:
    """timm's unfused attention (probabilities through ``a.attn_drop``, where attention
    access hooks read them) for ``(B, H, N, d)`` queries and ``(B, H, Lp + N, d)`` keys and
    values; ``attn_mask`` is a bool keep mask or an additive float mask ``(B, 1, 1, Lp + N)``."""
    scores = (q * a.scale) @ k.transpose(-2, -1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    elif attn_mask is not None:
        scores = scores + attn_mask
    return a.attn_drop(scores.softmax(dim=-1)) @ v


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
    :param query: one of :data:`QUERIES`: ``"partial"`` (a partial input selects its prompts
        by its own query) or ``"whole"`` (new data under token dropout and test images under
        top-token inference select theirs by the query of the whole image; memory records,
        which have none, by their own).
    """

    def __init__(self, vit: nn.Module, num_classes: int, length: int = 8,
                 layers: Optional[Iterable[int]] = None, query: str = "partial"):
        super().__init__()
        check(query in QUERIES, "query", query, f"one of {QUERIES} (which input selects the "
              f"prompts of a partial input whose whole image is at hand)")
        self.query = query
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
        self.selecting = False
        """Whether the running ViT forward is the (unprompted) query pass."""

    def features(self, x: Tensor, prompts: Optional[Tensor] = None) -> Tensor:
        """Pre-logits features ``(B, D)``, prefix-tuned by ``prompts`` ``(B, layers, L, D)``."""
        return self.prompted_features(lambda: self.vit_features(x), prompts)

    def vit_features(self, x: Tensor) -> Tensor:
        """Pre-logits features ``(B, D)`` of the ViT on images ``x`` (prompted when its
        prefixes are set)."""
        return self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)

    def prompted_features(self, run: Callable[[], Tensor],
                          prompts: Optional[Tensor] = None) -> Tensor:
        """``run()`` (any forward of ``vit`` returning ``(B, D)`` features, e.g. a token
        adapter's partial forward) with the prefixes of ``prompts`` ``(B, layers, L, D)``
        set in the prompted blocks (none when ``prompts`` is None)."""
        half = self.pool.length // 2
        try:
            for j, pa in enumerate(self.prefixed):
                if prompts is not None:
                    pa.prefix = (prompts[:, j, :half], prompts[:, j, half:])
            return run()
        finally:
            for pa in self.prefixed:
                pa.prefix = None

    def prompted_pre_logits(self, run: Callable[[], Tensor],
                            query: Optional[Callable[[], Tensor]] = None) -> Tensor:
        """CODA-Prompt's features ``(B, D)`` around a ViT forward ``run() -> (B, D)``: the
        query is ``query()`` (default ``run()``) unprompted (no gradient; :attr:`selecting`
        is true meanwhile), then ``run()`` again with its prompts. A partial input (kept
        tokens) thus selects its prompts by its own query, unless ``query`` runs another
        input (its whole image)."""
        self.selecting = True
        try:
            with torch.no_grad():
                q = self.prompted_features(run if query is None else query)
        finally:
            self.selecting = False
        return self.prompted_features(run, self.pool(q))

    def prompted_logits(self, run: Callable[[], Tensor],
                        query: Optional[Callable[[], Tensor]] = None) -> Tensor:
        """Logits ``(B, C)`` of :meth:`prompted_pre_logits`."""
        return self.heads(self.prompted_pre_logits(run, query))

    def forward(self, x: Tensor) -> Tensor:
        return self.prompted_logits(lambda: self.vit_features(x))


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
    :param query: which input selects the prompts of new data trained with token dropout
        (``CoreTokensetReplayPlugin``): ``"partial"`` (its own partial input, default) or
        ``"whole"`` (its whole image); see :attr:`CodaPromptViT.query`.
    :param kwargs: :class:`~.base.PEFTTemplate` keywords.
    """

    def __init__(self, *, model: nn.Module, pool_size: int = 100, prompt_length: int = 8,
                 layers: Optional[Iterable[int]] = None, n_experiences: Optional[int] = None,
                 lr: float = 1e-3, num_classes: Optional[int] = None, query: str = "partial",
                 **kwargs):
        net = CodaPromptViT(model, num_classes or model.num_classes, prompt_length, layers,
                            query)
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


class CodaPromptAdapter(TimmViTAdapter):
    """Token-level forwards of a :class:`CodaPromptViT` (core tokenset replay, token dropout,
    scorers): the timm adapter of its ViT, each logits forward wrapped in CODA's prompt
    selection, whose query comes from the same partial input (zero, sparse or mask mode;
    a memory record has no whole scene to take it from), or, with ``net.query == "whole"``,
    from the whole image for the batch of :meth:`partial_inputs`
    (:meth:`forward_dropped`). A learned mask token lives on the ViT
    (``net.vit.cts_mask_token``) and is trained with the prompts.

    :param net: the prompted model (``CODAPrompt.model``).
    """

    def __init__(self, net: CodaPromptViT):
        super().__init__(net.vit)
        self.net = net
        self.num_classes = int(net.heads.num_classes)

    @property
    def entry(self) -> nn.Module:
        return self.net

    def forward_zero(self, images: Tensor, keep: Tensor) -> Tensor:
        base = super().forward_zero
        return self.net.prompted_logits(lambda: base(images, keep))

    def forward_record(self, values: Tensor, positions: Tensor, valid: Optional[Tensor],
                       mode: str) -> Tensor:
        base = super().forward_record
        return self.net.prompted_logits(lambda: base(values, positions, valid, mode))

    def forward_dropped(self, images: Tensor, keep: Tensor, mode: str) -> Tensor:
        """Logits ``(B, C)`` of the batch :meth:`partial_inputs` applies to: the partial
        input of ``(B, C, H, W)`` ``images`` kept by the ``(B, T)`` mask ``keep`` in ``mode``,
        prompted by the query of the whole ``images`` when ``net.query == "whole"`` (else
        :meth:`forward_partial`, the partial input's own query)."""
        if self.net.query == "partial":
            return self.forward_partial(images, keep, mode)
        vit = TimmViTAdapter(self.net.vit)  # the unprompted token paths, prompted below
        return self.net.prompted_logits(lambda: vit.forward_partial(images, keep, mode),
                                        lambda: self.net.vit_features(images))

    def features(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        pre = self.net.prompted_pre_logits(lambda: self.net.vit_features(images))
        return pre, self.net.heads(pre)

    def attention_access(self) -> "CodaAttentionAccess":
        """Attention of the prompted model (for token scorers)."""
        return CodaAttentionAccess(self)


class CodaAttentionAccess(TimmAttentionAccess):
    """:class:`TimmAttentionAccess` of a :class:`CodaPromptViT`: logits are the prompted
    model's; attention maps are those of the prompted pass (the query pass is not
    captured), restricted to the sequence's own keys ``(B, H, N, N)``: the attention to the
    prompt tokens is left out, so rows sum to at most 1 (rollout renormalises them)."""

    def __init__(self, adapter: CodaPromptAdapter):
        super().__init__(adapter)
        self.net = self.module = adapter.net

    def logits(self, images: Tensor) -> Tensor:
        return self.net(images)

    @staticmethod
    def _probs(output: Tensor) -> Tensor:
        return output[..., -output.shape[-2]:]

    def _skip_capture(self) -> bool:
        return self.net.selecting


register_adapter(lambda m: isinstance(m, CodaPromptViT), CodaPromptAdapter)
