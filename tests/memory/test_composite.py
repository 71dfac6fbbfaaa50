"""Composite replay: memory records written into new-data scenes whose own top tokens are
removed (CoreTokensetReplayPlugin(composite=True))."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive

import avalanche_cts.memory.composite as composite
from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, TokenScorer, get_scorer
from avalanche_cts.memory.composite import SceneCompositor, pair_scenes, step_generator
from avalanche_cts.memory.plugin import composite_refusal
from avalanche_cts.models import get_adapter
from avalanche_cts.tokens.patches import patchify


class PlantedScorer(TokenScorer):
    """Scores a token by its mean pixel value; records that it was called without label."""

    def __init__(self):
        self.targets = []

    def score(self, model, images, targets=None):
        self.targets.append(targets)
        return patchify(images, 2).float().mean(-1)


def _top(scores, counts):
    """Reference top-k mask: sort each row, mark its first counts[i] positions."""
    out = torch.zeros(scores.shape, dtype=torch.bool)
    for i, row in enumerate(scores.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        out[i, order[:int(counts[i])]] = True
    return out


def _records(counts, gen, t=16, v=4):
    k = max(counts)
    values = torch.rand(len(counts), k, v, generator=gen) + 2.0
    positions = torch.stack([torch.randperm(t, generator=gen)[:k] for _ in counts])
    valid = torch.arange(k)[None] < torch.tensor(counts)[:, None]
    return values, positions, valid


def _spy_builder(monkeypatch):
    """Record the arguments and results of every composite_records call of the compositor."""
    calls, build = [], composite.composite_records

    def spy(scenes, values, positions, valid, remove, patch):
        out = build(scenes, values, positions, valid, remove, patch)
        calls.append(dict(scenes=scenes, values=values, positions=positions, valid=valid,
                          remove=remove, images=out[0], keep=out[1]))
        return out

    monkeypatch.setattr(composite, "composite_records", spy)
    return calls


@pytest.mark.parametrize("num_records", [3, 11])  # fewer records than scenes, and more (cycled)
def test_removed_tokens_are_the_paired_scenes_top_k_by_the_scorer(micro_vit, monkeypatch,
                                                                   num_records):
    calls = _spy_builder(monkeypatch)
    gen = torch.Generator().manual_seed(num_records)
    scenes = torch.rand(4, 1, 8, 8, generator=gen)
    counts = [1 + (3 * i) % 9 for i in range(num_records)]  # padded records of 1..9 tokens
    values, positions, valid = _records(counts, gen)
    scorer = PlantedScorer()
    images, keep = SceneCompositor(scorer).compose(
        micro_vit, scenes, values, positions, valid, 2, 16, torch.Generator().manual_seed(7))
    pair = torch.randperm(4, generator=torch.Generator().manual_seed(7))
    pair = torch.tensor([int(pair[i % 4]) for i in range(num_records)])
    assert torch.equal(calls[0]["scenes"], scenes[pair])
    brightness = patchify(scenes[pair], 2).mean(-1)  # computed here, not by the scorer
    assert torch.equal(calls[0]["remove"], _top(brightness, counts))
    assert scorer.targets == [None]  # no label
    written = torch.zeros(num_records, 16, dtype=torch.bool)
    for i, c in enumerate(counts):
        written[i, positions[i, :c]] = True
    assert torch.equal(keep, ~_top(brightness, counts) | written)
    if num_records > 4:  # cycled: every scene serves 2 or 3 records
        assert sorted(torch.bincount(pair, minlength=4).tolist()) == [2, 3, 3, 3]
    else:
        assert len(set(pair.tolist())) == num_records


def test_random_scorer_draws_from_the_step_generator_not_the_memorys_stream(micro_vit,
                                                                           monkeypatch):
    calls = _spy_builder(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    scenes = torch.rand(6, 1, 8, 8, generator=gen)
    values, positions, valid = _records([3, 5, 2], gen)
    scorer = get_scorer("random", seed=3)
    state = scorer.generator.get_state()
    SceneCompositor(scorer).compose(micro_vit, scenes, values, positions, valid, 2, 16,
                                    torch.Generator().manual_seed(11))
    ref = torch.Generator().manual_seed(11)
    pair = torch.randperm(6, generator=ref)[:3]
    scores = torch.rand(3, 16, generator=ref)
    assert torch.equal(calls[0]["scenes"], scenes[pair])
    assert torch.equal(calls[0]["remove"], _top(scores, [3, 5, 2]))
    assert torch.equal(scorer.generator.get_state(), state)


def test_step_generator_is_reproducible_and_differs_between_steps():
    draw = lambda seed, step: torch.randperm(50, generator=step_generator(seed, step))  # noqa
    assert torch.equal(draw(0, 3), draw(0, 3))
    assert not torch.equal(draw(0, 3), draw(0, 4)) and not torch.equal(draw(0, 3), draw(1, 3))
    assert step_generator(None, 3) is None
    assert torch.equal(pair_scenes(7, 3, step_generator(2, 0)),
                       torch.randperm(3, generator=step_generator(2, 0))[torch.arange(7) % 3])


class Scenes(SupervisedPlugin):
    """Records the new-data images of every training step (after the replay plugin's
    before_backward, which built the composites from them)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def before_backward(self, strategy, **kw):
        self.batches.append(strategy.mb_x.detach().clone())


def _strategy(model, plugins):
    return Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                 train_mb_size=32, train_epochs=1, eval_mb_size=128, plugins=plugins,
                 evaluator=None)


@pytest.mark.parametrize("mode", ["mask", "zero"])
def test_naive_trains_on_composites_of_records_and_new_images(digits_benchmark, micro_vit,
                                                              monkeypatch, mode):
    calls = _spy_builder(monkeypatch)
    fed, forward_partial = [], type(get_adapter(micro_vit)).forward_partial

    def spy_forward(adapter, images, keep, m):
        fed.append((images, keep, m))
        return forward_partial(adapter, images, keep, m)

    monkeypatch.setattr(type(get_adapter(micro_vit)), "forward_partial", spy_forward)
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25)
    ours = CoreTokensetReplayPlugin(buf, replay_mode=mode, dropout=1.0, composite=True, seed=0)
    scenes = Scenes()
    s = _strategy(micro_vit, [ours, scenes])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    assert calls == [] and fed == []  # no memory yet: nothing composited
    scenes.batches.clear()
    s.train(exps[1])
    assert ours.last_mem_loss is not None and torch.isfinite(ours.last_mem_loss)
    assert len(calls) == len(scenes.batches) == len(fed) > 0  # one composite batch per step
    for call, new, (images, keep, m) in zip(calls, scenes.batches, fed):
        assert images is call["images"] and keep is call["keep"] and m == mode
        # every scene is an image of that step's new-data batch
        assert all((new == scene).flatten(1).all(1).any() for scene in call["scenes"])
        plain = torch.zeros_like(keep)  # the record alone: its own tokens only
        plain[torch.arange(len(keep))[:, None].expand_as(call["positions"])[call["valid"]],
              call["positions"][call["valid"]]] = True
        assert (keep.sum(1) > plain.sum(1)).all()  # the composite shows more than the record
        scene_tokens = patchify(call["scenes"], 2)[keep & ~plain]
        assert torch.equal(patchify(images, 2)[keep & ~plain], scene_tokens)


def _filled_buffer(model, exp, **kw):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25, **kw)
    buf.post_adapt(types.SimpleNamespace(model=model, device="cpu"), exp)
    return buf


def _padded_batch(buf, size=12):
    """The first ``size`` records, record i cut to its first ``1 + i % 4`` tokens (a batch
    with padding)."""
    data = buf.dataset()
    items = []
    for i in range(size):
        values, positions, *rest = data[i]
        items.append((values[:1 + i % 4], positions[:1 + i % 4], *rest))
    return buf.collate(items)


@pytest.mark.parametrize("mode", ["mask", "zero", "sparse"])
def test_without_composite_the_memory_loss_is_the_records_own(digits_benchmark, micro_vit, mode):
    buf = _filled_buffer(micro_vit, digits_benchmark.train_stream[0], scorer="random")
    ours = CoreTokensetReplayPlugin(buf, replay_mode=mode, seed=0)
    ours.prepare_model(micro_vit)
    ours._adapter = adapter = get_adapter(micro_vit)
    batch = _padded_batch(buf)
    assert batch.valid is not None and batch.valid.sum().item() == 3 * (1 + 2 + 3 + 4)
    values = buf.codec.decode(batch.values)
    logits = adapter.forward_record(values, batch.positions, batch.valid, mode)
    assert torch.equal(ours.replay_loss(batch),
                       F.cross_entropy(logits, batch.labels, reduction="none").mean())


class ReadOut:
    """An adapter stub whose logits are a linear read-out of one known token of each fed
    sample (0 when that token is fed as absent)."""

    patch_size, num_tokens = 2, 16

    def __init__(self, where, weight):
        self.where, self.weight = where, weight

    def forward_partial(self, images, keep, mode):
        rows = torch.arange(len(images))
        token = patchify(images, 2)[rows, self.where] * keep[rows, self.where][:, None]
        return token @ self.weight


@pytest.mark.parametrize("weighted", [False, True])
def test_records_tokens_are_written_at_their_positions(digits_benchmark, micro_vit, weighted):
    buf = _filled_buffer(micro_vit, digits_benchmark.train_stream[0], scorer="random",
                         weighted=weighted)
    ours = CoreTokensetReplayPlugin(buf, composite=True, composite_scorer="rollout", seed=0,
                                    weighted_replay=weighted)
    batch = _padded_batch(buf)
    where = batch.positions[:, 0]  # a stored token of each record (the first is never padding)
    weight = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    ours._adapter = ReadOut(where, weight)
    noise = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) + 5.0
    strategy = types.SimpleNamespace(mbatch=[noise, torch.zeros(32, dtype=torch.long)],
                                     clock=types.SimpleNamespace(train_iterations=3),
                                     model=micro_vit)
    loss = ours.replay_loss(batch, strategy)
    logits = buf.codec.decode(batch.values)[:, 0] @ weight  # the stored token's read-out
    losses = F.cross_entropy(logits, batch.labels, reduction="none")
    w = batch.weights / batch.weights.mean() if weighted else torch.ones(len(losses))
    assert loss.item() == pytest.approx((losses * w).mean().item(), rel=1e-6)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"call replay_loss\(batch, strategy\)"):
        ours.replay_loss(batch)


def test_composite_settings_are_refused_with_the_fix():
    buf = CoreTokensetBuffer(budget_fraction=0.1)
    for bad in ("yes", 1, None, np.float32(1.0)):
        with pytest.raises(ValueError, match="composite must be True or False"):
            CoreTokensetReplayPlugin(buf, composite=bad)
    with pytest.raises(ValueError, match="pass composite=True with it"):
        CoreTokensetReplayPlugin(buf, composite_scorer="rollout")
    with pytest.raises(ValueError, match="not memory_loss"):
        CoreTokensetReplayPlugin(buf, composite=True, memory_loss=lambda *a: None)
    with pytest.raises(ValueError, match="not a registered token scorer|unknown token scorer"):
        CoreTokensetReplayPlugin(buf, composite=True, composite_scorer="brightest")
    ours = CoreTokensetReplayPlugin(buf, composite=True)
    assert ours.compositor.scorer is buf.writer.scorer  # the memory's scorer by default
    assert CoreTokensetReplayPlugin(buf).compositor is None


def test_composite_refuses_models_without_a_classification_scene(digits_benchmark):
    transformers = pytest.importorskip("transformers")
    from avalanche_cts.models import create_blip

    torch.manual_seed(0)
    blip = get_adapter(create_blip("blip_vqa_tiny"))
    assert "trains image-text records: pass composite=False" in composite_refusal(blip)
    cfg = transformers.ViTConfig(image_size=8, patch_size=2, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64, num_channels=1,
                                 num_labels=10)
    hf_vit = transformers.ViTForImageClassification(cfg)
    ours = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1), composite=True)
    with pytest.raises(TypeError, match="HFViTAdapter lacks: use a timm VisionTransformer"):
        _strategy(hf_vit, [ours]).train(digits_benchmark.train_stream[0])


def test_run_config_enables_composite_through_the_plugin_options(micro_vit):
    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_cts.harness.config import RunConfig
    from avalanche_cts.harness.methods import build_strategy

    on = RunConfig(method="core_tokenset", model="vit_digits_micro", dropout=1.0,
                   options={"plugin": {"composite": True, "composite_scorer": "rollout"}})
    off = RunConfig(method="core_tokenset", model="vit_digits_micro", dropout=1.0)
    assert on.shaping() != off.shaping()  # composite runs are not stored as plain ones
    strategy = build_strategy(on, micro_vit, EvaluationPlugin())
    plugin, = [p for p in strategy.plugins if isinstance(p, CoreTokensetReplayPlugin)]
    assert plugin.compositor.scorer.name == "rollout" and not plugin.drops_tokens
    with pytest.raises(ValueError, match="valid keys: .*'composite'"):
        RunConfig(method="core_tokenset", options={"plugin": {"compsite": True}})
