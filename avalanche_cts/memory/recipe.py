"""The partial-input training recipe: how memory records are replayed and new data is dropped.

One default (:data:`DEFAULT_RECIPE`) shared by :class:`~avalanche_cts.CoreTokensetReplayPlugin`,
:class:`~avalanche_cts.CoreTokensetBuffer`, the harness's ``RunConfig``, the demo and the
configs; chosen by measurement (``experiments/recipe_ablation.py``, README "The recipe").
This module imports nothing heavy, so command-line help can read it.
"""
from dataclasses import dataclass
from typing import Optional

from .._checks import check, is_real

__all__ = ["DEFAULT_RECIPE", "DROPOUT_REFRESH", "DROPOUT_SCHEDULES", "DROPOUT_TOKENS",
           "REPLAY_MODES", "TOKEN_CHOICES", "Recipe"]

REPLAY_MODES = ("zero", "sparse", "mask")
"""``zero``: dropped tokens are 0 in normalised space (the mean colour), sequence length T
(paper); ``sparse``: only kept tokens with their own position embeddings (MAE encoder);
``mask``: a learned mask token in place of each dropped token (MAE-style), length T."""
DROPOUT_SCHEDULES = ("fixed", "uniform")
"""``fixed``: every sample keeps ``round(rate * T)`` tokens; ``uniform``: a keep rate drawn per
sample in [rate, 1] (per batch under sparse replay, whose sequences share one length)."""
DROPOUT_TOKENS = ("random", "matched")
"""Which tokens a dropped new sample keeps: ``random`` (the paper), or ``matched``: those the
memory would keep (its scorer and token choice on the new batch), so memory records and new
data have the same shape (:mod:`avalanche_cts.memory.dropout`)."""
DROPOUT_REFRESH = ("step", "epoch", "experience")
"""When ``matched`` scores are computed: every step under the current model, or once per
epoch / experience for the whole training set (tokens are still drawn every step)."""
TOKEN_CHOICES = ("topk", "gumbel", "compact")
"""``topk``: the highest-scoring tokens; ``gumbel``: tokens sampled without replacement with
probabilities softmax(standardised score / temperature) (Gumbel top-k); ``compact``: the
tokens nearest to the grid spot whose 3 x 3 neighbourhood scores highest, ties by score (a
disc around the most relevant spot; square token grids)."""


@dataclass(frozen=True)
class Recipe:
    """One partial-input recipe (see the module constants for the choices).

    :ivar replay_mode: how a memory record (and a dropped new sample) is fed to the model.
    :ivar dropout: token keep rate on new data; ``None`` follows the memory's retention t,
        ``1.0`` is no dropout.
    :ivar dropout_schedule: ``fixed`` or ``uniform``.
    :ivar dropout_fraction: share of each new-data batch that gets dropout.
    :ivar dropout_tokens: ``random`` or ``matched`` (:data:`DROPOUT_TOKENS`).
    :ivar dropout_refresh: when matched scores are computed (:data:`DROPOUT_REFRESH`).
    :ivar token_choice: ``topk``, ``gumbel`` or ``compact`` (:data:`TOKEN_CHOICES`).
    :ivar retention_exponent: the sample/token split of a core tokenset budget r: each stored
        sample keeps t = r ** e of its tokens, so r ** (1 - e) of the samples are stored.
    """

    replay_mode: str = "mask"
    dropout: Optional[float] = None
    dropout_schedule: str = "fixed"
    dropout_fraction: float = 1.0
    dropout_tokens: str = "random"
    dropout_refresh: str = "step"
    token_choice: str = "gumbel"
    retention_exponent: float = 1 / 3

    def __post_init__(self):
        """Check every field (:class:`~avalanche_cts._checks.SettingError` naming it)."""
        for name, choices in (("replay_mode", REPLAY_MODES),
                              ("dropout_schedule", DROPOUT_SCHEDULES),
                              ("dropout_tokens", DROPOUT_TOKENS),
                              ("dropout_refresh", DROPOUT_REFRESH),
                              ("token_choice", TOKEN_CHOICES)):
            value = getattr(self, name)
            check(value in choices, name, value, f"one of {list(choices)}")
        d = self.dropout
        wanted = "None (the memory's retention t) or a keep rate in (0, 1] (1 = off)"
        check(d is None or (is_real(d) and 0 < d <= 1), "dropout", d, wanted,
              f"dropout (token keep rate) must be in (0, 1], or None for the memory's "
              f"retention t; got {d!r}")
        f = self.dropout_fraction
        check(is_real(f) and 0 <= f <= 1, "dropout_fraction", f, "in [0, 1]")
        e = self.retention_exponent
        check(is_real(e) and 0 < e <= 1, "retention_exponent", e, "a number in (0, 1]")

    def retention(self, budget: float) -> float:
        """Token retention t of a core tokenset at budget ``budget`` (fraction of bytes)."""
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must be a fraction of the bytes in (0, 1], got {budget!r}")
        return budget ** self.retention_exponent


DEFAULT_RECIPE = Recipe()
"""Chosen on validation splits (``experiments/recipe_ablation.py``, 3 seeds, 1% and 5%
budgets). Split Fashion-MNIST, every lever: a learned mask token in place of dropped tokens,
token dropout at the memory's keep rate t on every new sample, tokens sampled from the scores
(Gumbel top-k), t = r ** (1/3). Cluttered Fashion-MNIST agrees on the dropout (fixed t), the
scorer (rollout) and the split, and prefers zero fill to the mask token within the seed spread. The
paper's recipe is ``Recipe(replay_mode="zero", token_choice="topk", retention_exponent=0.5)``.
New data is dropped at random: matched dropout (``dropout_tokens="matched"``) wins on Cluttered
Fashion-MNIST's validation split (+11 points at 1%) and loses on Split Fashion-MNIST's (-4), so
the default stays; use it where the object is a small part of the image."""
