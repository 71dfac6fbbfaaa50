"""CoreTokensetReplayPlugin inside Avalanche strategies."""
import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EWCPlugin, LwFPlugin

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, TokenScorer, get_scorer
from avalanche_cts.tokens.patches import patchify


class Probe(SupervisedPlugin):
    """Records what the strategy sees: inputs, the loss before backward, eval inputs."""

    def __init__(self):
        super().__init__()
        self.train_inputs, self.losses, self.eval_inputs = [], [], []

    def before_backward(self, strategy, **kw):
        ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
        self.losses.append((strategy.loss.item(), ce.item()))

    def after_forward(self, strategy, **kw):
        self.train_inputs.append(strategy.mb_x.detach().clone())

    def before_eval_forward(self, strategy, **kw):
        self.eval_inputs.append(strategy.mb_x.detach().clone())


def _strategy(model, plugins, epochs=1):
    return Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                 train_mb_size=32, train_epochs=epochs, eval_mb_size=128, plugins=plugins,
                 evaluator=None)


@pytest.mark.parametrize("other", ["lwf", "ewc"])
def test_memory_loss_added_and_composes_with_other_plugin(digits_benchmark, micro_vit, other):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, batch_size_mem=16, dropout=1.0)
    extra = LwFPlugin(alpha=1.0, temperature=2.0) if other == "lwf" else EWCPlugin(ewc_lambda=100.0)
    probe = Probe()
    s = _strategy(micro_vit, [ours, extra, probe])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    assert all(abs(loss - ce) < 1e-6 for loss, ce in probe.losses)  # no memory yet
    assert buf.num_records > 0
    probe.losses.clear()
    s.train(exps[1])
    extra_terms = [loss - ce for loss, ce in probe.losses]
    # the memory loss alone would be last_mem_loss; the other plugin adds a positive term
    assert ours.last_mem_loss is not None and ours.last_mem_loss > 0
    assert extra_terms[-1] > ours.last_mem_loss.item() + 1e-6
    assert buf.seen_samples == len(exps[0].dataset) + len(exps[1].dataset)


def test_memory_only_loss_equals_replay_cross_entropy(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, batch_size_mem=8, dropout=1.0)
    probe = Probe()
    s = _strategy(micro_vit, [ours, probe])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    probe.losses.clear()
    s.train(exps[1])
    loss, ce = probe.losses[-1]
    assert loss - ce == pytest.approx(ours.last_mem_loss.item(), abs=1e-5)


def _pixel_masked(x, keep, patch):
    """Reference: zero every pixel of the dropped tokens, one patch at a time."""
    out = x.clone()
    cols = x.shape[-1] // patch
    for b, t in (~keep).nonzero().tolist():
        r, c = divmod(t, cols)
        out[b, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = 0
    return out


@pytest.mark.parametrize("schedule", ["fixed", "uniform"])
def test_zero_mode_model_sees_masked_images_and_full_images_at_eval(digits_benchmark, micro_vit,
                                                                     schedule):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.3)
    ours = CoreTokensetReplayPlugin(buf, replay_mode="zero", dropout_schedule=schedule)
    assert ours.keep_rate == 0.3  # the memory's retention by default
    masks, seen = [], []
    draw = ours.dropout.keep_mask
    ours.dropout.keep_mask = lambda *a: masks.append(draw(*a)) or masks[-1]
    hook = micro_vit.patch_embed.register_forward_pre_hook(
        lambda m, inp: seen.append(inp[0].detach().clone()))
    probe = Probe()
    s = _strategy(micro_vit, [ours, probe])
    s.train(digits_benchmark.train_stream[0])
    assert len(masks) == len(seen) == len(probe.train_inputs) > 0
    for keep, x_in, x in zip(masks, seen, probe.train_inputs):
        counts = keep.sum(1)
        if schedule == "fixed":
            assert (counts == round(0.3 * 16)).all()
        else:
            assert counts.min() >= round(0.3 * 16) and counts.max() <= 16
        assert torch.equal(x_in, _pixel_masked(x, keep, 2))  # dropped tokens are 0
    if schedule == "uniform":
        all_counts = torch.cat([k.sum(1) for k in masks]).float()
        assert all_counts.std() > 1  # rates really vary per sample
    seen.clear()
    s.eval(digits_benchmark.test_stream[:1])
    hook.remove()
    test = torch.stack([x for x, *_ in digits_benchmark.test_stream[0].dataset])
    assert torch.equal(torch.cat(seen).sort(0).values, test.sort(0).values)  # untouched images


def test_dropout_fraction_leaves_the_rest_of_the_batch_whole(digits_benchmark, micro_vit):
    ours = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25),
                                    dropout_fraction=0.5)
    torch.manual_seed(0)
    counts = ours.dropout.counts(4000, 16)
    assert set(counts.tolist()) == {4, 16}
    assert (counts == 4).float().mean().item() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("mode", ["sparse", "mask"])
def test_sparse_and_mask_modes_train_and_restore_the_forward(digits_benchmark, micro_vit, mode):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, replay_mode=mode, seed=0)
    s = _strategy(micro_vit, [ours])
    exps = list(digits_benchmark.train_stream)
    s.train(exps[0])
    s.train(exps[1])
    assert "forward" not in vars(micro_vit)  # the partial-input forward is gone after each step
    assert ours.last_mem_loss is not None and torch.isfinite(ours.last_mem_loss)
    token = getattr(micro_vit, "cts_mask_token", None)
    if mode == "mask":  # the learned mask token was added, optimised and moved from its init
        init = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(0)) * 0.02
        assert token is not None and not torch.allclose(token.detach(), init)
    else:
        assert token is None


def test_non_finite_loss_stops_with_step_and_terms(digits_benchmark, micro_vit):
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.5)
    ours = CoreTokensetReplayPlugin(buf, dropout=1.0)
    s = _strategy(micro_vit, [ours])
    with torch.no_grad():
        micro_vit.head.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at experience 0, epoch 0, "
                                                 r"iteration 0: total nan, memory term none"):
        s.train(digits_benchmark.train_stream[0])


def test_plugin_rejects_bad_settings():
    buf = CoreTokensetBuffer(budget_fraction=0.1)
    with pytest.raises(ValueError, match="replay_mode must be one of"):
        CoreTokensetReplayPlugin(buf, replay_mode="dense")
    with pytest.raises(ValueError, match=r"dropout \(token keep rate\) must be in \(0, 1\]"):
        CoreTokensetReplayPlugin(buf, dropout=0.0)
    with pytest.raises(TypeError, match="must be a CoreTokensetBuffer"):
        CoreTokensetReplayPlugin(object())
    with pytest.raises(ValueError, match="weighted_replay=True needs"):
        CoreTokensetReplayPlugin(buf, weighted_replay=True)


def test_non_vit_model_rejected_at_training(digits_benchmark):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    s = _strategy(model, [CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_fraction=0.1))])
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        s.train(digits_benchmark.train_stream[0])


class PlantedScorer(TokenScorer):
    """Scores a token by its mean pixel value (a planted, model-free relevance)."""

    def __init__(self):
        self.images = 0

    def score(self, model, images, targets=None):
        self.images += len(images)
        return patchify(images, 2).float().mean(-1)


def _record_masks(plugin):
    """Wrap the plugin's mask draw: record (images, mask) of every new-data batch."""
    seen, draw = [], plugin.dropout.keep_mask

    def wrapped(model, batch, num_tokens):
        keep = draw(model, batch, num_tokens)
        seen.append((batch[0].detach().clone(), keep))
        return keep

    plugin.dropout.keep_mask = wrapped
    return seen


@pytest.mark.parametrize("refresh", ["step", "epoch", "experience"])
def test_matched_dropout_keeps_the_memory_scorers_top_tokens(digits_benchmark, micro_vit, refresh):
    scorer = PlantedScorer()
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25, scorer=scorer,
                             token_choice="topk")
    ours = CoreTokensetReplayPlugin(buf, replay_mode="zero", dropout_tokens="matched",
                                    dropout_refresh=refresh)
    seen = _record_masks(ours)
    s = _strategy(micro_vit, [ours], epochs=2)
    exp = digits_benchmark.train_stream[0]
    s.train(exp)
    assert len(seen) > 0
    for images, keep in seen:
        brightness = patchify(images, 2).mean(-1)  # independent of the plugin's code path
        expected = torch.zeros_like(keep)
        expected.scatter_(1, brightness.argsort(dim=1, descending=True, stable=True)[:, :4], True)
        assert torch.equal(keep, expected)
    n = len(exp.dataset)
    scored = ours.dropout.state()["scored_images"]
    assert scored == {"step": 2 * n, "epoch": 2 * n, "experience": n}[refresh]
    if refresh != "step":
        assert ours.dropout.state()["cache_misses"] == 0
        assert ours.dropout.state()["cache_hits"] == 2 * n


def test_matched_dropout_scores_images_it_has_not_seen_on_the_spot(micro_vit):
    from avalanche_cts.memory.dropout import NewDataDropout

    d = NewDataDropout(0.25, tokens="matched", refresh="experience", scorer=PlantedScorer(),
                       token_choice="topk")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 1, 8, 8, generator=g)
    d.refresh_scores(micro_vit, list(zip(images, torch.zeros(10, dtype=torch.long))))
    batch = torch.cat([images[:4], torch.rand(3, 1, 8, 8, generator=g)])  # 3 never scored
    keep = d.keep_mask(micro_vit, [batch, torch.zeros(7, dtype=torch.long)], 16)
    assert d.state() == dict(scored_images=13, cache_hits=4, cache_misses=3)
    top = patchify(batch, 2).mean(-1).argsort(dim=1, descending=True, stable=True)[:, :4]
    assert torch.equal(keep, torch.zeros_like(keep).scatter_(1, top, True))


def test_fingerprints_of_large_images_read_a_fixed_subset_and_tell_images_apart():
    from avalanche_cts.memory.dropout import FINGERPRINT_VALUES, ScoreCache, fingerprints

    g = torch.Generator().manual_seed(1)
    small = torch.rand(3, 1, 8, 8, generator=g)
    ref = (small.flatten(1).double() * torch.randn(
        64, generator=torch.Generator().manual_seed(20241008), dtype=torch.float64)).sum(1)
    assert torch.equal(fingerprints(small), ref)  # small images: every value, as before
    big = torch.rand(6, 3, 96, 96, generator=g)  # 27,648 values > FINGERPRINT_VALUES
    assert big[0].numel() > FINGERPRINT_VALUES
    f = fingerprints(big)
    assert torch.equal(f, fingerprints(big.clone())) and len(f.unique()) == 6
    assert torch.equal(fingerprints(big[3:5]), f[3:5])  # independent of the batch
    twin = big.clone()
    twin[:, :, 40:56, 40:56] = torch.rand(6, 3, 16, 16, generator=g)  # one patch differs
    assert not bool((fingerprints(twin) == f).any())
    cache = ScoreCache(f, torch.arange(6.0)[:, None].expand(6, 4))
    scores, found = cache.lookup(torch.cat([big[[4, 1]], twin[:1]]))
    assert found.tolist() == [True, True, False] and scores[:, 0].tolist() == [4.0, 1.0, 0.0]


class TiedScorer(PlantedScorer):
    """Brightness rounded to one decimal: many tied scores (the stable order counts)."""

    def score(self, model, images, targets=None):
        return super().score(model, images).round(decimals=1)


def _reference_keep_mask(rate, schedule, fraction, tokens, choice, temperature, images, t=16):
    """Keep mask of the composition before masks were ranked on the batch's device from cached
    ranks: counts drawn, then every step the scores of the whole batch ranked on the host."""
    b = len(images)
    rates = torch.full((b,), rate) if schedule == "fixed" else rate + (1 - rate) * torch.rand(b)
    counts = (rates * t).round().clamp(1, t).long()
    if fraction < 1:
        counts = torch.where(torch.rand(b) < fraction, counts, torch.full_like(counts, t))
    if bool((counts == t).all()):
        return None
    if tokens == "random":
        return torch.rand(b, t).argsort(1).argsort(1) < counts[:, None]
    scores = TiedScorer().score(None, images)
    if choice == "compact":  # its order, tested against loops in tests/tokens/test_tokens.py
        from avalanche_cts.tokens.patches import compact_order
        return compact_order(scores).argsort(1) < counts[:, None]
    if choice == "gumbel":
        z = (scores - scores.mean(1, keepdim=True)) / scores.std(1, keepdim=True).clamp_min(1e-8)
        u = torch.rand(scores.shape).clamp_(1e-10, 1 - 1e-10)
        scores = z / temperature - torch.log(-torch.log(u))
    return scores.argsort(dim=1, descending=True, stable=True).argsort(1) < counts[:, None]


@pytest.mark.parametrize("choice", ["topk", "gumbel", "compact"])
@pytest.mark.parametrize("schedule, fraction", [("fixed", 1.0), ("uniform", 1.0), ("fixed", 0.5)])
@pytest.mark.parametrize("tokens, refresh", [("random", "step"), ("matched", "step"),
                                             ("matched", "experience")])
def test_keep_masks_equal_the_host_ranking_reference_with_the_same_draws(
        micro_vit, choice, schedule, fraction, tokens, refresh):
    """Masks ranked on the batch's device, matched ones from cached ranks (with images the
    cache lacks scored on the spot), are those of ranking every batch's scores on the host,
    from the same draws of torch's global RNG, bit for bit."""
    from avalanche_cts.memory.dropout import NewDataDropout

    d = NewDataDropout(0.25, schedule=schedule, fraction=fraction, tokens=tokens,
                       refresh=refresh, scorer=TiedScorer(), token_choice=choice, temperature=0.5)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(40, 1, 8, 8, generator=g)
    if refresh == "experience":
        d.refresh_scores(micro_vit, list(zip(images[:30], torch.zeros(30, dtype=torch.long))))
    batches = [images[i * 10:i * 10 + 13] for i in range(3)]  # the last: 3 images never scored
    runs = []
    for draw in (lambda x: d.keep_mask(micro_vit, [x, torch.zeros(len(x), dtype=torch.long)], 16),
                 lambda x: _reference_keep_mask(0.25, schedule, fraction, tokens, choice, 0.5, x)):
        torch.manual_seed(5)
        runs.append([draw(x) for x in batches] + [torch.rand(3)])  # then: as many draws taken
    for ours, ref in zip(*runs):
        assert (ours is None and ref is None) or torch.equal(ours, ref)
    if refresh == "experience" and tokens == "matched":
        assert d.state() == dict(scored_images=33, cache_hits=36, cache_misses=3)


def test_fingerprints_of_a_batch_in_several_chunks_equal_the_whole_batch_projection():
    """On the CPU a batch is fingerprinted in chunks (small temporaries): the very sums of
    projecting the whole batch at once."""
    from avalanche_cts.memory.dropout import FINGERPRINT_VALUES, fingerprints

    images = torch.rand(21, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    flat = images.flatten(1)  # 27,648 values: 8 images per chunk, 3 chunks
    gen = torch.Generator().manual_seed(20241008)  # the projection, drawn independently here
    places = torch.randperm(flat.shape[1], generator=gen)[:FINGERPRINT_VALUES].sort().values
    weights = torch.randn(FINGERPRINT_VALUES, generator=gen, dtype=torch.float64)
    assert torch.equal(fingerprints(images), (flat[:, places].double() * weights).sum(1))
    assert fingerprints(images[:0]).shape == (0,)


@pytest.mark.parametrize("schedule, fraction", [("uniform", 1.0), ("fixed", 0.5)])
def test_matched_dropout_keeps_each_samples_own_count_of_top_tokens(micro_vit, schedule, fraction):
    from avalanche_cts.memory.dropout import NewDataDropout

    d = NewDataDropout(0.25, schedule=schedule, fraction=fraction, tokens="matched",
                       scorer=PlantedScorer(), token_choice="topk")
    images = torch.rand(400, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    keep = d.keep_mask(micro_vit, [images, torch.zeros(400, dtype=torch.long)], 16)
    counts = keep.sum(1)
    order = patchify(images, 2).mean(-1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(16).expand(400, 16))
    assert torch.equal(keep, ranks < counts[:, None])  # each row: its brightest `count` tokens
    assert counts.min() == 4
    if schedule == "uniform":
        assert counts.float().std() > 2 and counts.max() >= 15  # rates drawn in [t, 1]
    else:
        assert set(counts.tolist()) == {4, 16}
        assert (counts == 16).float().mean().item() == pytest.approx(0.5, abs=0.08)


def test_matched_dropout_with_gumbel_draws_anew_and_favours_high_scores(micro_vit):
    from avalanche_cts.memory.dropout import NewDataDropout

    d = NewDataDropout(0.25, tokens="matched", scorer=PlantedScorer(), token_choice="gumbel",
                       temperature=0.5)
    images = torch.zeros(2000, 1, 8, 8)
    images[:, :, :2, :2] = 1.0  # token 0 bright in every image
    torch.manual_seed(0)
    keep = d.keep_mask(micro_vit, [images, torch.zeros(2000, dtype=torch.long)], 16)
    assert (keep.sum(1) == 4).all()
    freq = keep.float().mean(0)
    assert freq[0] > 0.99 and freq[1:].max() < 0.5  # the planted token, then the others at random
    assert keep[:, 1:].float().std(0).min() > 0.1  # other tokens vary between draws


def test_matched_dropout_with_a_random_scorer_is_random_dropout(micro_vit):
    from avalanche_cts.memory.dropout import NewDataDropout

    images = torch.rand(64, 1, 8, 8)
    batch = [images, torch.zeros(64, dtype=torch.long)]
    masks = []
    for tokens in ("random", "matched"):
        scorer = get_scorer("random", seed=3)
        state = scorer.generator.get_state()
        d = NewDataDropout(0.25, tokens=tokens, scorer=scorer)
        torch.manual_seed(1)
        masks.append(d.keep_mask(micro_vit, batch, 16))
        assert torch.equal(scorer.generator.get_state(), state)  # the memory's stream untouched
    assert torch.equal(*masks)


def test_dropout_scorer_overrides_the_memorys_scorer(digits_benchmark, micro_vit):
    planted = PlantedScorer()
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25, scorer="random",
                             token_choice="topk")
    ours = CoreTokensetReplayPlugin(buf, dropout_tokens="matched", dropout_scorer=planted)
    assert buf.scorer.name == "random" and ours.dropout.scorer is planted
    seen = _record_masks(ours)
    _strategy(micro_vit, [ours]).train(digits_benchmark.train_stream[0])
    images, keep = seen[0]
    top = patchify(images, 2).mean(-1).argsort(dim=1, descending=True, stable=True)[:, :4]
    assert torch.equal(keep, torch.zeros_like(keep).scatter_(1, top, True))
