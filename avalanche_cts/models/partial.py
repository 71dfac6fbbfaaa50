"""Token dropout of one mini-batch, as an adapter's ``partial_inputs`` context applies it."""
from __future__ import annotations

from torch import Tensor

__all__ = ["PartialInputs"]


class PartialInputs:
    """The ``(B, T)`` keep mask ``keep`` of the tensor ``images``, fed in replay ``mode``.

    It applies to that very tensor only (the batch it was drawn for): a strategy's forward on
    any other tensor (its own replay batch, as ER-ACE and ER-AML run) sees full images.

    :ivar uses: calls it applied to (0 after a forward means the strategy fed the model
        another batch than the one the mask was drawn for).
    """

    def __init__(self, images: Tensor, keep: Tensor, mode: str):
        if keep.dim() != 2 or len(keep) != len(images):
            raise ValueError(f"keep mask of shape {tuple(keep.shape)} does not fit a batch of "
                             f"{len(images)} images: draw it as (B, T) for this batch")
        self.images, self.keep, self.mode = images, keep, mode
        self.uses = 0

    def applies(self, images: Tensor) -> bool:
        """Whether ``images`` is the batch the mask was drawn for (counted in :attr:`uses`)."""
        hit = images is self.images
        self.uses += hit
        return hit
