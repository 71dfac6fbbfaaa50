"""Access to the attention of vision transformers, for token scorers.

:class:`AttentionAccess` is what every attribution scorer needs from a model: token counts,
the readout (class token or mean of patch tokens), logits, patch embeddings, the attention
probabilities of chosen blocks (captured with forward hooks) and a way to scale key vectors
(AtMan). Every context manager here removes its hooks and restores the flags it changed on
exit, also when an exception is raised.

Each model family implements :class:`AttentionAccess` in its own module
(``timm_vit.TimmAttentionAccess``, ``hf_vit``, ``hf_blip``); ``avalanche_cts.models.attention_access``
finds the one of a model.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionAccess",
    "eval_mode",
    "fused_attention_off",
    "forward_hooks",
]

Hook = Callable[[nn.Module, tuple, object], object]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode; restore every submodule's own train/eval flag on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def fused_attention_off(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Set ``fused_attn = False`` on each module (and its submodules) that has the flag; restore on exit."""
    old = [(m, m.fused_attn) for mod in modules for m in mod.modules() if hasattr(m, "fused_attn")]
    try:
        for m, _ in old:
            m.fused_attn = False
        yield
    finally:
        for m, flag in old:
            m.fused_attn = flag


@contextlib.contextmanager
def forward_hooks(modules: Sequence[nn.Module], hook: Hook) -> Iterator[None]:
    """Register ``hook`` as a forward hook on each module; remove all of them on exit."""
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.callback(m.register_forward_hook(hook).remove)
        yield


class AttentionAccess(ABC):
    """What the attribution scorers need from one vision transformer.

    Attributes set by subclasses: ``module`` (the vision transformer whose attention is read),
    ``patch_size`` (pixels), ``grid`` (token rows, columns), ``num_tokens`` (patch
    tokens P), ``num_prefix_tokens`` (p), ``num_blocks`` (L), ``num_heads`` (H), ``embed_dim``
    (D) and ``readout`` (``"cls"``: the prediction reads the first token; ``"mean"``: the mean
    of the patch tokens; ``"tokens"``: a model reading every output token, e.g. a text decoder
    cross-attending to them).

    The scorers' target goes through four methods a model family may override: what is
    explained (:meth:`evidence`: the target logit of a classifier; BLIP: the answer's
    log-likelihood), the per-sample loss AtMan perturbs (:meth:`losses`), how targets are
    resolved and indexed (:meth:`resolve_targets`, :meth:`take_targets`).
    """

    module: nn.Module
    patch_size: int
    grid: Tuple[int, int]
    num_tokens: int
    num_prefix_tokens: int
    num_blocks: int
    num_heads: int
    embed_dim: int
    readout: str = "cls"

    @property
    def seq_len(self) -> int:
        """N = p + P tokens through the blocks."""
        return self.num_prefix_tokens + self.num_tokens

    @abstractmethod
    def logits(self, images: Tensor) -> Tensor:
        """``(B, C)`` outputs whose target entry is explained."""

    @abstractmethod
    def patch_embeddings(self, images: Tensor) -> Tensor:
        """``(B, P, D)`` patch embeddings before position embeddings are added."""

    def check_images(self, images: Tensor) -> None:
        """Raise a clear error when ``images`` do not fit the model (default: no check)."""

    # family specifics: which modules output attention probabilities / keys
    @abstractmethod
    def _prob_modules(self, blocks: Sequence[int]) -> List[nn.Module]:
        """Modules whose forward output holds the attention probabilities of ``blocks``."""

    @staticmethod
    def _probs(output) -> Tensor:
        """Attention probabilities ``(B, H, N, N)`` from a probability module's output."""
        return output

    def _skip_capture(self) -> bool:
        """Whether the attention running now is not the prediction's (e.g. a prompt
        method's query pass), so :meth:`capture_attention` leaves it out (default: never)."""
        return False

    def _explicit_attention(self, blocks: Sequence[int]):
        """Context in which ``blocks`` materialise their attention probabilities."""
        return contextlib.nullcontext()

    @abstractmethod
    def _key_modules(self) -> List[nn.Module]:
        """One module per block whose output holds the keys."""

    @abstractmethod
    def _scale_keys(self, output: Tensor, multipliers: Tensor) -> Tensor:
        """``output`` of a key module with the key of token n scaled by ``multipliers[:, n]``."""

    # the target of an explanation
    def eval_scope(self) -> nn.Module:
        """The module put in eval mode while scoring (default: ``module``)."""
        return self.module

    def resolve_targets(self, images: Tensor, targets, mode: str):
        """The targets to explain: ``(B,)`` class indices, the labels (``mode="label"``) or
        the predicted classes (``"pred"``, also when ``targets`` is None)."""
        if mode not in ("label", "pred"):
            raise ValueError(f"target must be 'label' or 'pred', got {mode!r}")
        if mode == "pred" or targets is None:
            with torch.no_grad():
                return self.logits(images).argmax(dim=1)
        targets = torch.as_tensor(targets, device=images.device).long().reshape(-1)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(f"{targets.shape[0]} targets for {images.shape[0]} images")
        return targets

    def take_targets(self, targets, idx: Tensor):
        """The resolved targets of samples ``idx`` (repeats allowed)."""
        return targets[idx]

    def evidence(self, images: Tensor, targets) -> Tuple[Tensor, Optional[Tensor]]:
        """``(B,)`` what gradient scorers explain (the target logit) and the ``(B, N, D)``
        output tokens it reads when ``readout == "tokens"`` (else ``None``)."""
        return self.logits(images).gather(1, targets[:, None])[:, 0], None

    def losses(self, images: Tensor, targets) -> Tensor:
        """``(B,)`` per-sample loss (cross-entropy of the target class), float32."""
        return F.cross_entropy(self.logits(images).float(), targets, reduction="none")

    # shared machinery
    def query_weights(self, device=None) -> Tensor:
        """``(N,)`` float32 weights of the query rows the prediction reads (one-hot CLS, patch
        mean, or all tokens equally for ``readout="tokens"``)."""
        q = torch.zeros(self.seq_len, device=device)
        if self.readout == "cls":
            q[0] = 1.0
        elif self.readout == "tokens":
            q[:] = 1.0 / self.seq_len
        else:
            q[self.num_prefix_tokens:] = 1.0 / self.num_tokens
        return q

    def readout_weights(self, score: Tensor, states: Optional[Tensor], batch: int) -> Tensor:
        """``(B, N)`` query weights of gradient scorers: :meth:`query_weights`, or with output
        tokens ``states`` the relevance each one carries for ``score`` (gradient x activation,
        positive part, normalised to sum 1): where the reader of every token looks."""
        if states is None:
            return self.query_weights(score.device).expand(batch, -1)
        (grad,) = torch.autograd.grad(score, states, retain_graph=True)
        q = (grad.float() * states.detach().float()).sum(-1).clamp(min=0)
        return q / q.sum(1, keepdim=True).clamp_min(1e-12)

    def block_indices(self, start: int = 0, stop: Optional[int] = None) -> List[int]:
        """Indices of blocks ``start .. stop - 1``; negative values count from the end."""
        blocks = list(range(self.num_blocks))[start:stop]
        if not blocks:
            raise ValueError(f"no blocks in [{start}:{stop}] of a model with {self.num_blocks} blocks")
        return blocks

    @contextlib.contextmanager
    def capture_attention(
        self, blocks: Optional[Sequence[int]] = None, reduce: Optional[Callable[[Tensor], Tensor]] = None
    ) -> Iterator[List[Tensor]]:
        """Collect the attention probabilities of ``blocks`` (default all) during forwards.

        Yields a list that each forward appends to, in block order: ``(B, H, N, N)`` tensors
        (live graph nodes), or ``reduce`` of them (e.g. a head mean, to save memory).
        """
        blocks = self.block_indices() if blocks is None else list(blocks)
        maps: List[Tensor] = []

        def hook(module: nn.Module, inputs: tuple, output) -> None:
            if self._skip_capture():
                return
            probs = self._probs(output)
            maps.append(probs if reduce is None else reduce(probs))

        with self._explicit_attention(blocks), forward_hooks(self._prob_modules(blocks), hook):
            yield maps

    def forward_with_attention(
        self, images: Tensor, blocks: Sequence[int], reduce: Optional[Callable[[Tensor], Tensor]] = None
    ) -> Tuple[Tensor, List[Tensor]]:
        """``(logits, maps)``: one forward pass with the attention of ``blocks`` captured."""
        with self.capture_attention(blocks, reduce) as maps:
            logits = self.logits(images)
        if len(maps) != len(blocks):
            raise RuntimeError(
                f"captured {len(maps)} attention maps for {len(blocks)} blocks: the model's "
                f"attention did not run through the hooked modules (fused or replaced attention?)"
            )
        return logits, maps

    @contextlib.contextmanager
    def scale_keys(self, multipliers: Tensor) -> Iterator[None]:
        """Within the context, key n of sample b is multiplied by ``multipliers[b, n]`` in every block and head.

        Equals multiplying column n of the pre-softmax attention scores; works with fused attention.

        :param multipliers: ``(B, N)`` (or ``(1, N)``) factors, N = p + P.
        """
        if multipliers.shape[-1] != self.seq_len:
            raise ValueError(f"multipliers have {multipliers.shape[-1]} columns, the model {self.seq_len} tokens")

        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
            return self._scale_keys(output, multipliers.to(output.dtype))

        with forward_hooks(self._key_modules(), hook):
            yield
