"""``CoreTokensetReplayPlugin``: replay of core tokensets with token dropout on new data."""
from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from avalanche.core import SupervisedPlugin

from .._checks import check, is_int, is_real
from .augment import RecordAugmentation
from .buffer import CoreTokensetBuffer
from .composite import SceneCompositor, step_generator
from .dropout import NewDataDropout, batch_images_targets
from .local_loss import LocalCriterion, balanced_rows, local_loss_refusal
from .records import TokenBatch
from ..models import get_adapter
from .recipe import DEFAULT_RECIPE, REPLAY_MODES, Recipe
from ..scorers import get_scorer

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["CoreTokensetReplayPlugin", "MemoryLoss", "NEW_DATA_LOSSES", "REPLAY_MODES",
           "adapter_record_loss", "augment_refusal", "classification_loss", "composite_refusal",
           "default_memory_loss", "refused"]

NEW_DATA_LOSSES = ("all", "local", "balanced")
"""Values of ``CoreTokensetReplayPlugin(new_data_loss=...)``."""

MemoryLoss = Callable[[object, TokenBatch, Tensor, str], Tensor]
"""``loss(adapter, batch, values, mode) -> (B,)`` per-record loss of a memory batch, where
``values`` are the decoded (normalised) token values ``(B, K, V)``."""


def classification_loss(adapter, batch: TokenBatch, values: Tensor, mode: str) -> Tensor:
    """Cross-entropy of the records' logits (:meth:`forward_record`) against their labels."""
    logits = adapter.forward_record(values, batch.positions, batch.valid, mode)
    return F.cross_entropy(logits, batch.labels, reduction="none")


def adapter_record_loss(adapter, batch: TokenBatch, values: Tensor, mode: str) -> Tensor:
    """The adapter's own per-record loss (BLIP: the stored answer's or caption's NLL)."""
    return adapter.record_loss(batch, values, mode)


def default_memory_loss(adapter) -> MemoryLoss:
    """:func:`adapter_record_loss` for adapters that define ``record_loss`` (models that are
    not classifiers), else :func:`classification_loss`."""
    return adapter_record_loss if hasattr(adapter, "record_loss") else classification_loss


class CoreTokensetReplayPlugin(SupervisedPlugin):
    """Core tokenset replay (Paul et al., https://arxiv.org/abs/2410.05800) for any
    ``SupervisedTemplate`` training a timm ViT, or a BLIP VQA/captioning model with
    :class:`~avalanche_cts.strategies.vl.VLTemplate` (dict mini-batches with ``pixel_values``).
    It composes with Avalanche's strategies and plugins (Naive, EWC, SI, LwF, MAS, ER-ACE,
    ER-AML, GEM, A-GEM, GDumb, Cumulative, Replay, MIR, ...); :func:`refused` names the ones it
    cannot serve (JointTraining; DER with token dropout), refused when training starts.
    On the parameter-efficient strategies (:class:`~avalanche_cts.strategies.CODAPrompt`,
    :class:`~avalanche_cts.strategies.InfLoRA`) memory records and dropped new data run
    through the prompted / low-rank-adapted model (CODA-Prompt selects prompts by the
    query of the partial input itself, or for dropped new data by that of its whole image
    with ``CODAPrompt(query="whole")``); the memory loss is the cross-entropy over all seen
    classes' logits (old heads frozen: it trains the current prompts or branch and the new
    head), new data keeps the strategy's local cross-entropy.

    * After each experience the storage policy is updated with it.
    * Each training step draws a memory minibatch from its own cycled loader (as DER does)
      and adds its loss to the strategy's (paper Eq. 5:
      ``L = E_new[CE(f(x), y)] + mem_weight * E_mem[CE(f(x_core), y)]``).
    * New data is trained with token dropout, re-drawn every step for the mini-batch the
      plugins see in ``before_forward`` and applied to that batch only (a strategy's forward
      on its own replay batch sees full images)
      (:class:`~avalanche_cts.memory.dropout.NewDataDropout`): a sample keeps ``round(rate * T)``
      tokens, ``rate`` fixed at ``dropout`` or drawn per sample in ``[dropout, 1]``
      (``dropout_schedule="uniform"``), for a ``dropout_fraction`` share of each batch; the
      kept tokens are random (``dropout_tokens="random"``) or those the memory would keep
      (``"matched"``: the memory's scorer and token choice on the batch, scores refreshed
      every ``dropout_refresh``). Memory records and dropped samples are fed alike (``replay_mode``): ``zero``
      (0 in normalised space, the paper), ``sparse`` (kept tokens only) or ``mask`` (a
      learned mask token, added to the model by :meth:`prepare_model`).
    * With ``composite=True`` memory records are replayed as samples that look whole
      (:mod:`~avalanche_cts.memory.composite`): each record is written at its positions into
      an image of the current new-data batch whose own top tokens (as many as the record
      holds; ``composite_scorer``, default the memory's, on the current model, no label) are
      removed, and fed in the replay mode; its loss is the cross-entropy against the
      record's label. New data keeps the dropout configured (``dropout=1.0`` trains it whole).
    * With ``new_data_loss="local"`` (ER-ACE's asymmetric loss, :mod:`~avalanche_cts.memory.local_loss`)
      new data's cross-entropy runs over the current experience's classes only, while the
      memory's runs over every class: new classes stop pushing the old ones' logits down.
      ``"balanced"`` keeps that and also scores some of the mini-batch's samples over every
      class inside the memory's term, as ER-ACE's buffer also holds the current task: each
      memory batch of ``b`` records is joined by the first
      :func:`~avalanche_cts.memory.local_loss.balanced_rows` rows of the mini-batch (their
      logits from the strategy's own forward, dropped as trained, so no extra forward), as
      many per current class as the memory batch holds per stored class.
    * With ``replay_flip`` or ``replay_shift`` each replayed record is varied at no cost in
      bytes (:class:`~avalanche_cts.memory.augment.RecordAugmentation`): mirrored left to
      right with probability ``replay_flip``, and moved by up to ``replay_shift`` whole
      tokens along each grid axis, never past the grid's edge (whole-image records only
      mirror); classification models with a token grid (timm ViTs, CODA-Prompt, InfLoRA).
    * Evaluation always sees full images.
    * A non-finite loss stops training with the step and both loss terms.

    Defaults follow :data:`avalanche_cts.memory.recipe.DEFAULT_RECIPE`; the token choice,
    its temperature and the scoring batch size are the memory's
    (:attr:`CoreTokensetBuffer.settings`).

    :param storage_policy: the :class:`CoreTokensetBuffer` to fill and replay.
    :param recipe: the recipe's fields at once (a :class:`~avalanche_cts.memory.recipe.Recipe`,
        e.g. ``buffer.settings.recipe``); otherwise built from the memory's recipe and the
        keywords ``replay_mode`` to ``dropout_refresh``, which it then replaces.
    :param batch_size_mem: memory rows per step (default: the strategy's ``train_mb_size``).
    :param replay_mode: ``"zero"``, ``"sparse"`` or ``"mask"``.
    :param dropout: keep rate in (0, 1] for tokens of new data; ``1.0`` disables dropout;
        ``None`` uses ``storage_policy.token_retention``.
    :param dropout_schedule: ``"fixed"`` or ``"uniform"``.
    :param dropout_fraction: share in [0, 1] of each new-data batch that gets dropout.
    :param dropout_tokens: ``"random"`` or ``"matched"`` (the memory's scorer and token choice).
    :param dropout_refresh: when matched scores are computed: ``"step"`` (every step, current
        model), ``"epoch"`` or ``"experience"`` (the whole training set once, looked up).
    :param dropout_scorer: scorer of ``matched`` dropout (name or object) in place of the
        memory's (a control: e.g. random memory tokens, new data dropped by rollout).
    :param mem_weight: weight (>= 0) of the memory loss term.
    :param weighted_replay: weight memory samples by their stored selector weights
        (needs ``CoreTokensetBuffer(weighted=True)``), normalised to mean 1.
    :param memory_loss: per-record loss of a memory batch (:data:`MemoryLoss`; default
        :func:`default_memory_loss` of the model's adapter: :func:`classification_loss`, or
        the answer/caption NLL for BLIP), the seam for models that are not classifiers.
    :param composite: replay each record composited into an image of the current new-data
        batch (paired by a permutation drawn from ``seed`` and the training iteration; cycled
        when the memory batch is larger) instead of alone; classification models whose
        adapter has ``forward_partial`` (timm ViTs, CODA-Prompt, InfLoRA), not BLIP.
    :param composite_scorer: scorer (name or object) of the scene tokens a composite
        removes, in place of the memory's (e.g. ``"rollout"``); ``random`` draws them from
        the iteration's generator. Only with ``composite=True``.
    :param new_data_loss: ``"all"`` (the strategy's criterion, over every class),
        ``"local"`` (cross-entropy over the current experience's classes while it trains;
        strategies whose loss is ``SupervisedProblem.criterion``, e.g. Naive, EWC, LwF) or
        ``"balanced"`` (``"local"``, and class-balanced new rows in the memory's term).
    :param replay_flip: probability in [0, 1] that a replayed record is mirrored.
    :param replay_shift: most whole tokens (>= 0) a replayed record moves along each axis.
    :param num_workers: workers of the memory loader.
    :param seed: seed of the memory loader's shuffling and of the mask token's initial value
        (``None``: from torch's global RNG).
    """

    def __init__(
        self,
        storage_policy: CoreTokensetBuffer,
        *,
        recipe: Optional[Recipe] = None,
        batch_size_mem: Optional[int] = None,
        replay_mode: str = DEFAULT_RECIPE.replay_mode,
        dropout: Optional[float] = DEFAULT_RECIPE.dropout,
        dropout_schedule: str = DEFAULT_RECIPE.dropout_schedule,
        dropout_fraction: float = DEFAULT_RECIPE.dropout_fraction,
        dropout_tokens: str = DEFAULT_RECIPE.dropout_tokens,
        dropout_refresh: str = DEFAULT_RECIPE.dropout_refresh,
        dropout_scorer=None,
        mem_weight: float = 1.0,
        weighted_replay: bool = False,
        memory_loss: Optional[MemoryLoss] = None,
        composite: bool = False,
        composite_scorer=None,
        new_data_loss: str = "all",
        replay_flip: float = 0.0,
        replay_shift: int = 0,
        num_workers: int = 0,
        seed: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(storage_policy, CoreTokensetBuffer):
            raise TypeError(
                f"storage_policy must be a CoreTokensetBuffer, got {type(storage_policy).__name__}; "
                f"for whole-sample replay with Avalanche buffers use avalanche's ReplayPlugin"
            )
        settings = storage_policy.settings
        fields = dict(replay_mode=replay_mode, dropout=dropout, dropout_schedule=dropout_schedule,
                      dropout_fraction=dropout_fraction, dropout_tokens=dropout_tokens,
                      dropout_refresh=dropout_refresh)
        if recipe is None:
            recipe = replace(settings.recipe, **fields)
        elif any(v != getattr(DEFAULT_RECIPE, k) for k, v in fields.items()):
            raise ValueError(f"give the recipe or its fields ({', '.join(fields)}), not both")
        _check_replay(storage_policy, batch_size_mem, mem_weight, weighted_replay, num_workers,
                      seed)
        _check_composite(composite, composite_scorer, memory_loss)
        check(new_data_loss in NEW_DATA_LOSSES, "new_data_loss", new_data_loss,
              "'all', 'local' or 'balanced'")
        self.new_data_loss = new_data_loss
        self.augment = RecordAugmentation(replay_flip, replay_shift)
        """Varies replayed records (:class:`RecordAugmentation`)."""
        self._criterion = None
        self._classes = (0, 0)  # (current experience's classes, classes in memory)
        self.storage_policy = storage_policy
        self.recipe = recipe
        """How records are replayed and new data dropped (:class:`Recipe`)."""
        self.batch_size_mem = None if batch_size_mem is None else int(batch_size_mem)
        self.replay_mode = recipe.replay_mode
        self.dropout = _new_data_dropout(storage_policy, recipe, dropout_scorer)
        """Keep masks of new-data batches (:class:`~avalanche_cts.memory.dropout.NewDataDropout`)."""
        self.mem_weight = float(mem_weight)
        self.weighted_replay = weighted_replay
        self.memory_loss = memory_loss
        self.compositor = _compositor(storage_policy, composite, composite_scorer)
        """Builds composite memory inputs (:class:`SceneCompositor`); ``None`` without
        ``composite``."""
        self.num_workers = int(num_workers)
        self.seed = None if seed is None else int(seed)
        self._adapter = None
        self._memory: Optional[Iterator[TokenBatch]] = None
        self._partial = contextlib.ExitStack()
        self._dropped = None
        self.last_mem_loss: Optional[Tensor] = None
        """Memory loss of the last training step (for logging)."""

    @property
    def keep_rate(self) -> float:
        """Token keep rate of new data."""
        return self.dropout.rate

    @property
    def drops_tokens(self) -> bool:
        """Whether new data is trained with token dropout at all."""
        return self.dropout.active

    def prepare_model(self, model: nn.Module) -> None:
        """Add what the recipe trains to ``model`` (the learned mask token of ``mask`` replay).

        Called at the start of training; call it yourself before loading a checkpoint or
        building an optimizer by hand. Idempotent.
        """
        if self.replay_mode == "mask":
            gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)
            get_adapter(model).add_mask_token(gen)

    # -------------------------------------------------------------- callbacks
    def before_training(self, strategy: "SupervisedTemplate", **kwargs):
        refusal = refused(strategy, self.drops_tokens)
        if refusal is None and self.compositor is not None:
            refusal = composite_refusal(get_adapter(strategy.model))
        if refusal is None and self.augment.active:
            refusal = augment_refusal(get_adapter(strategy.model))
        if refusal is None and self.new_data_loss != "all":
            refusal = local_loss_refusal(strategy)
        if refusal:
            raise TypeError(refusal)
        self.storage_policy.claim(strategy)
        self.prepare_model(strategy.model)

    def before_training_exp(self, strategy: "SupervisedTemplate", num_workers: int = 0, **kwargs):
        self._adapter = get_adapter(strategy.model)
        self.storage_policy.store.new_experience(strategy.experience)  # fail before training
        item = strategy.experience.dataset[0]
        first = item["pixel_values"] if isinstance(item, dict) else item[0]
        if torch.is_tensor(first):  # fail before training, not inside a forward
            self._adapter.check_images(first[None])
        self._memory = None
        if self.new_data_loss != "all":
            current = strategy.experience.classes_in_this_experience
            self._criterion = strategy._criterion
            strategy._criterion = LocalCriterion(self._criterion, current, strategy)
            self._classes = (len(current), len(self.storage_policy.store.classes()))
        if self.storage_policy.num_records == 0:
            return
        bs = self.batch_size_mem or strategy.train_mb_size
        gen = None if self.seed is None else torch.Generator().manual_seed(
            self.seed + strategy.clock.train_exp_counter)
        loader = DataLoader(
            self.storage_policy.dataset(), batch_size=bs, shuffle=True, drop_last=False,
            collate_fn=self.storage_policy.collate, num_workers=self.num_workers, generator=gen,
            pin_memory=torch.device(strategy.device).type == "cuda",
        )
        self._memory = _cycle(loader)

    def before_training_epoch(self, strategy: "SupervisedTemplate", **kwargs):
        d = self.dropout
        if self.drops_tokens and d.scored and d.refresh != "step" and (
                d.refresh == "epoch" or strategy.clock.train_exp_epochs == 0):
            data = strategy.adapted_dataset
            d.refresh_scores(strategy.model, data, getattr(data, "collate_fn", None),
                             strategy.device)

    def before_forward(self, strategy: "SupervisedTemplate", **kwargs):
        if not self.drops_tokens:
            return
        keep = self.dropout.keep_mask(strategy.model, strategy.mbatch, self._adapter.num_tokens)
        if keep is not None:
            images = batch_images_targets(strategy.mbatch)[0]
            self._dropped = self._partial.enter_context(
                self._adapter.partial_inputs(keep, self.replay_mode, images))

    def after_forward(self, strategy: "SupervisedTemplate", **kwargs):
        dropped, self._dropped = self._dropped, None
        self._partial.close()
        if dropped is not None and not dropped.uses:
            raise RuntimeError(
                f"{type(strategy).__name__}'s forward did not run the model on the mini-batch "
                f"the plugin drew token dropout for in before_forward (strategy.mbatch), so new "
                f"data would train on whole images: use a strategy whose forward runs the model "
                f"on strategy.mb_x (Naive, EWC, LwF, ER_ACE, ...), or pass dropout=1.0 to train "
                f"new data without token dropout"
            )

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs):
        mem = None
        if self._memory is not None:
            batch = next(self._memory).to(strategy.device, non_blocking=True)
            losses = self.replay_losses(batch, strategy)
            if self.new_data_loss == "balanced":
                m = balanced_rows(len(losses), len(strategy.mb_y), *self._classes)
                losses = torch.cat([losses, F.cross_entropy(
                    strategy.mb_output[:m], strategy.mb_y[:m], reduction="none")])
            mem = losses.mean()
            self.last_mem_loss = mem.detach()
            strategy.loss = strategy.loss + self.mem_weight * mem
        if not bool(torch.isfinite(strategy.loss.detach()).all()):
            c = strategy.clock
            raise FloatingPointError(
                f"non-finite loss at experience {c.train_exp_counter}, epoch "
                f"{c.train_exp_epochs}, iteration {c.train_epoch_iterations}: total "
                f"{float(strategy.loss.detach()):.4g}, memory term "
                f"{'none' if mem is None else f'{float(mem.detach()):.4g}'} x {self.mem_weight}; "
                f"lower the learning rate or check the inputs for NaN/inf"
            )

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs):
        self._memory = None
        if self._criterion is not None:
            strategy._criterion, self._criterion = self._criterion, None
        self.storage_policy.post_adapt(strategy, strategy.experience)

    # ---------------------------------------------------------------- replay
    def replay_loss(self, batch: TokenBatch, strategy=None) -> Tensor:
        """Mean of :meth:`replay_losses`."""
        return self.replay_losses(batch, strategy).mean()

    def replay_losses(self, batch: TokenBatch, strategy=None) -> Tensor:
        """``(B,)`` loss of each record of a memory batch in the plugin's replay mode
        (times its stored weight over the batch's mean weight with ``weighted_replay``);
        with ``composite``, of its composites into ``strategy``'s current mini-batch
        (``strategy.mbatch``, at iteration ``strategy.clock.train_iterations``)."""
        values = self.storage_policy.codec.decode(batch.values)
        if self.augment.active:
            a = self._adapter
            step = 0 if strategy is None else strategy.clock.train_iterations
            values, positions = self.augment(values, batch.positions, batch.valid, a.patch_size,
                                             a.in_chans, a.grid,
                                             step_generator(self.seed, step, stream=1))
            batch = replace(batch, positions=positions)
        if self.compositor is not None:
            losses = self._composite_losses(batch, values, strategy)
        else:
            loss = self.memory_loss or default_memory_loss(self._adapter)
            losses = loss(self._adapter, batch, values, self.replay_mode)
        if self.weighted_replay:
            return losses * (batch.weights / batch.weights.mean().clamp_min(1e-12))
        return losses

    def _composite_losses(self, batch: TokenBatch, values: Tensor, strategy) -> Tensor:
        """``(B,)`` cross-entropy of the records' composites against their labels."""
        if strategy is None:
            raise ValueError("composite replay needs the strategy whose mini-batch gives the "
                             "scenes: call replay_loss(batch, strategy)")
        adapter = self._adapter
        scenes = batch_images_targets(strategy.mbatch)[0]
        gen = step_generator(self.seed, strategy.clock.train_iterations)
        images, keep = self.compositor.compose(
            strategy.model, scenes, values, batch.positions, batch.valid, adapter.patch_size,
            adapter.num_tokens, gen)
        logits = adapter.forward_partial(images, keep, self.replay_mode)
        return F.cross_entropy(logits, batch.labels, reduction="none")

    def state_dict(self):
        """The memory's state (for run checkpoints)."""
        return self.storage_policy.state_dict()

    def load_state_dict(self, state) -> None:
        self.storage_policy.load_state_dict(state)


def refused(strategy, drops_tokens: bool) -> Optional[str]:
    """Why the plugin cannot serve ``strategy`` (``None`` if it can): Avalanche strategies
    whose training loop leaves no place for a memory or for token dropout of new data."""
    from avalanche.training import DER, JointTraining

    name = type(strategy).__name__
    if isinstance(strategy, JointTraining):
        return (f"{name} trains once on all experiences together, so a memory filled after an "
                f"experience is never replayed: use Cumulative (all data seen so far, experience "
                f"by experience) or Naive with CoreTokensetReplayPlugin")
    if isinstance(strategy, DER) and drops_tokens:
        return (f"{name} adds its own replay samples to the mini-batch after the plugins' "
                f"before_forward, so token dropout cannot follow the new data: pass dropout=1.0 "
                f"(new data trained whole) or use ER_ACE, which replays its buffer in a "
                f"forward of its own")
    return None


def composite_refusal(adapter) -> Optional[str]:
    """Why composite replay cannot serve a model with ``adapter`` (``None`` if it can)."""
    name = type(adapter).__name__
    if hasattr(adapter, "record_loss"):
        return (f"composite=True needs a classification model (a scene to write the records "
                f"into, a label to keep); {name} trains image-text records: pass "
                f"composite=False")
    if not hasattr(adapter, "forward_partial"):
        return (f"composite=True feeds composites through the adapter's forward_partial, "
                f"which {name} lacks: use a timm VisionTransformer (create_model) or pass "
                f"composite=False")
    return None


def augment_refusal(adapter) -> Optional[str]:
    """Why ``replay_flip`` / ``replay_shift`` cannot serve a model with ``adapter`` (``None``
    if they can): they move tokens on an image's token grid of a classification model."""
    name = type(adapter).__name__
    if hasattr(adapter, "record_loss") or not all(
            hasattr(adapter, a) for a in ("grid", "in_chans", "patch_size")):
        return (f"replay_flip and replay_shift mirror and move a record's tokens on the token "
                f"grid of a classification model; {name} has none (or trains image-text "
                f"records, whose text may name left and right): pass replay_flip=0.0 and "
                f"replay_shift=0")
    return None


def _compositor(storage_policy: CoreTokensetBuffer, composite: bool,
                composite_scorer) -> Optional[SceneCompositor]:
    """The compositor of ``composite`` replay, removing scene tokens by ``composite_scorer``
    or else the memory's scorer."""
    if not composite:
        return None
    scorer = storage_policy.writer.scorer if composite_scorer is None \
        else get_scorer(composite_scorer)
    return SceneCompositor(scorer)


def _cycle(loader: DataLoader) -> Iterator[TokenBatch]:
    while True:
        yield from loader


def _new_data_dropout(storage_policy: CoreTokensetBuffer, recipe: Recipe,
                      dropout_scorer) -> NewDataDropout:
    """Token dropout of new data by ``recipe`` at the memory's retention (when
    ``recipe.dropout`` is None), matched by the memory's scorer (or ``dropout_scorer``),
    token choice, temperature and scoring batch size."""
    settings = storage_policy.settings
    rate = settings.retention if recipe.dropout is None else recipe.dropout
    scorer = storage_policy.writer.scorer if dropout_scorer is None else get_scorer(dropout_scorer)
    return NewDataDropout(
        float(rate), schedule=recipe.dropout_schedule, fraction=float(recipe.dropout_fraction),
        tokens=recipe.dropout_tokens, refresh=recipe.dropout_refresh, scorer=scorer,
        token_choice=settings.token_choice, temperature=float(settings.temperature),
        batch_size=int(settings.batch_size))


def _check_replay(storage_policy: CoreTokensetBuffer, batch_size_mem, mem_weight,
                  weighted_replay: bool, num_workers, seed) -> None:
    """The replay's own settings (the recipe checks itself)."""
    check(batch_size_mem is None or (is_int(batch_size_mem) and batch_size_mem > 0),
          "batch_size_mem", batch_size_mem, "a positive integer")
    check(is_real(mem_weight) and mem_weight >= 0, "mem_weight", mem_weight,
          "a finite number >= 0")
    if weighted_replay and not storage_policy.settings.weighted:
        raise ValueError("weighted_replay=True needs CoreTokensetBuffer(weighted=True)")
    check(is_int(num_workers) and num_workers >= 0, "num_workers", num_workers,
          "an integer >= 0")
    check(seed is None or (is_int(seed) and seed >= 0), "seed", seed,
          "None or an integer >= 0")


def _check_composite(composite, composite_scorer, memory_loss) -> None:
    """``composite`` and the settings it forbids or needs."""
    check(isinstance(composite, bool), "composite", composite, "True or False")
    if composite_scorer is not None and not composite:
        raise ValueError("composite_scorer chooses the scene tokens composite replay removes: "
                         "pass composite=True with it, or leave it None")
    if composite and memory_loss is not None:
        raise ValueError("composite=True replays composites with the classification loss on "
                         "their logits, not memory_loss: pass one of them")
