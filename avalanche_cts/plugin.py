"""``CoreTokensetReplayPlugin``: replay of core tokensets with token dropout on new data."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avalanche.core import SupervisedPlugin

from .buffer import CoreTokensetBuffer
from .memory import TokenBatch, collate_tokens
from .models import get_adapter
from .tokens import bernoulli_keep_mask, keep_count, mask_to_pixels

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CoreTokensetReplayPlugin", "REPLAY_MODES"]

REPLAY_MODES = ("zero", "sparse")


class CoreTokensetReplayPlugin(SupervisedPlugin):
    """Core tokenset replay (Paul et al., https://arxiv.org/abs/2410.05800) for any
    ``SupervisedTemplate`` training a timm ViT.

    * After each experience the storage policy is updated with it.
    * Each training step draws a memory minibatch from its own cycled loader (as DER does)
      and adds its cross-entropy to the loss (paper Eq. 5:
      ``L = E_new[CE(f(x), y)] + E_mem[CE(f(x_core), y)]``).
    * New data is trained with random token dropout, re-drawn every step, at the keep
      rate ``dropout`` (default: the buffer's token retention), so the model learns from
      partial inputs. ``replay_mode="zero"`` zero-fills dropped tokens in the input image
      (paper; each token kept with probability ``dropout``); ``"sparse"`` leaves them out
      of the sequence (exactly ``round(dropout*T)`` tokens per sample), for memory replay
      and dropout alike.
    * Evaluation always sees full images.

    :param storage_policy: the :class:`CoreTokensetBuffer` to fill and replay.
    :param batch_size_mem: memory rows per step (default: the strategy's ``train_mb_size``).
    :param replay_mode: ``"zero"`` or ``"sparse"``.
    :param dropout: keep rate in (0, 1] for tokens of new data; ``1.0`` disables dropout;
        ``None`` uses ``storage_policy.token_retention``.
    :param mem_weight: weight of the memory loss term.
    :param weighted_replay: weight memory samples by their stored selector weights
        (needs ``CoreTokensetBuffer(weighted=True)``), normalised to mean 1.
    :param num_workers: workers of the memory loader.
    :param seed: seed of the memory loader's shuffling (``None``: from torch's global RNG).
    """

    def __init__(
        self,
        storage_policy: CoreTokensetBuffer,
        *,
        batch_size_mem: Optional[int] = None,
        replay_mode: str = "zero",
        dropout: Optional[float] = None,
        mem_weight: float = 1.0,
        weighted_replay: bool = False,
        num_workers: int = 0,
        seed: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(storage_policy, CoreTokensetBuffer):
            raise TypeError(
                f"storage_policy must be a CoreTokensetBuffer, got {type(storage_policy).__name__}; "
                f"for whole-sample replay with Avalanche buffers use avalanche's ReplayPlugin"
            )
        if replay_mode not in REPLAY_MODES:
            raise ValueError(f"replay_mode must be one of {REPLAY_MODES}, got {replay_mode!r}")
        rate = storage_policy.token_retention if dropout is None else dropout
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"dropout (token keep rate) must be in (0, 1], got {rate!r}")
        if batch_size_mem is not None and batch_size_mem <= 0:
            raise ValueError(f"batch_size_mem must be positive, got {batch_size_mem}")
        if weighted_replay and not storage_policy.weighted:
            raise ValueError("weighted_replay=True needs CoreTokensetBuffer(weighted=True)")
        self.storage_policy = storage_policy
        self.batch_size_mem = batch_size_mem
        self.replay_mode = replay_mode
        self.keep_rate = float(rate)
        self.mem_weight = float(mem_weight)
        self.weighted_replay = weighted_replay
        self.num_workers = num_workers
        self.seed = seed
        self._adapter = None
        self._memory: Optional[Iterator[TokenBatch]] = None
        self._saved_patch_drop = None
        self.last_mem_loss: Optional[torch.Tensor] = None
        """Memory loss of the last training step (for logging)."""

    # -------------------------------------------------------------- callbacks
    def before_training_exp(self, strategy: "SupervisedTemplate", num_workers: int = 0, **kwargs):
        self._adapter = get_adapter(strategy.model)
        self._memory = None
        if self.storage_policy.num_records == 0:
            return
        bs = self.batch_size_mem or strategy.train_mb_size
        gen = None if self.seed is None else torch.Generator().manual_seed(
            self.seed + strategy.clock.train_exp_counter)
        loader = DataLoader(
            self.storage_policy.dataset(), batch_size=bs, shuffle=True, drop_last=False,
            collate_fn=collate_tokens, num_workers=self.num_workers, generator=gen,
            pin_memory=torch.device(strategy.device).type == "cuda",
        )
        self._memory = _cycle(loader)

    def before_forward(self, strategy: "SupervisedTemplate", **kwargs):
        if self.keep_rate >= 1.0:
            return
        a = self._adapter
        if self.replay_mode == "zero":
            x = strategy.mbatch[0]
            keep = bernoulli_keep_mask(x.shape[0], a.num_tokens, self.keep_rate, device=x.device)
            strategy.mbatch[0] = x * mask_to_pixels(keep, a.patch_size, a.grid).to(x.dtype)
        else:
            from .models.timm_vit import SparseTokenDropout

            self._saved_patch_drop = a.model.patch_drop
            a.model.patch_drop = SparseTokenDropout(
                keep_count(a.num_tokens, self.keep_rate), a.num_prefix_tokens)

    def after_forward(self, strategy: "SupervisedTemplate", **kwargs):
        if self._saved_patch_drop is not None:
            self._adapter.model.patch_drop = self._saved_patch_drop
            self._saved_patch_drop = None

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs):
        if self._memory is None:
            return
        batch = next(self._memory).to(strategy.device, non_blocking=True)
        logits = self.replay_logits(batch)
        if self.weighted_replay:
            w = batch.weights / batch.weights.mean().clamp_min(1e-12)
            loss = (F.cross_entropy(logits, batch.labels, reduction="none") * w).mean()
        else:
            loss = F.cross_entropy(logits, batch.labels)
        self.last_mem_loss = loss.detach()
        strategy.loss = strategy.loss + self.mem_weight * loss

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs):
        self._memory = None
        self.storage_policy.post_adapt(strategy, strategy.experience)

    # ---------------------------------------------------------------- replay
    def replay_logits(self, batch: TokenBatch) -> torch.Tensor:
        """Logits of a memory batch, zero-filled or sparse according to ``replay_mode``."""
        a, sp = self._adapter, self.storage_policy
        if self.replay_mode == "zero":
            images = batch.images(sp.codec, a.patch_size, a.in_chans, a.grid)
            return a.model(images)
        values = sp.codec.decode(batch.values)
        return a.forward_tokens(values, batch.positions, batch.valid)


def _cycle(loader: DataLoader) -> Iterator[TokenBatch]:
    while True:
        yield from loader
