"""Pretrained-backbone protocol: disjoint images, resumable cache, fresh heads without a leak."""
from dataclasses import replace

import pytest
import torch

from avalanche_cts.benchmarks.fmnist import heldout_indices, load_fashion_mnist, split_fashion_mnist
from avalanche_cts.models.loading import HEAD_STREAM, fresh_head
from avalanche_cts.harness import pretrain
from avalanche_cts.harness.pretrain import (
    BACKBONES,
    PretrainSpec,
    drop_keep_mask,
    load_pretrained,
    partial_input_accuracy,
    pretrain_backbone,
)
from avalanche_cts.models import create_model, get_adapter

torch.set_num_threads(1)

SPEC = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=30,
                    val_per_class=5, epochs=30, batch_size=32, lr=2e-3)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """Fake Fashion-MNIST IDX files (40 train, 20 test per class) whose class is the side of a
    centred bright square (2 + 2c pixels): unchanged by the flips and shifts of pretraining.
    (A 4-pixel bar of length 2 + 2c was learned to 55-85% test accuracy depending on the CPU's
    floating-point kernels; the square, whose area grows with the class, to 90%.)"""
    from conftest import write_fake_fmnist

    def square(img, c):
        img[13 - c:15 + c, 13 - c:15 + c] = 255

    return write_fake_fmnist(tmp_path_factory.mktemp("squares"), square, seed=1)


@pytest.fixture(scope="module")
def pretrained(squares, tmp_path_factory):
    """A backbone pretrained on the squares (a strong backbone: classes are separable)."""
    cache = tmp_path_factory.mktemp("pretrained")
    path = pretrain_backbone(SPEC, data_root=squares, cache_dir=cache, log=None)
    return path, cache


def test_heldout_indices_are_the_last_per_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2])
    assert heldout_indices(labels, 2).tolist() == [2, 3, 4, 5, 6, 7]


def test_stream_never_shows_a_pretraining_image(fake_fmnist):
    xtr, ytr, _, _ = load_fashion_mnist(fake_fmnist, download=False)
    held = xtr[heldout_indices(ytr, SPEC.heldout_per_class)].flatten(1)
    bm = split_fashion_mnist(5, data_root=fake_fmnist, heldout_per_class=SPEC.heldout_per_class)
    seen = torch.cat([torch.stack([x for x, *_ in e.dataset]) for e in bm.train_stream])
    seen = (seen * 255).round().to(torch.uint8).flatten(1)  # identity normalisation
    assert len(seen) == 10 * (40 - SPEC.heldout_per_class)
    assert not (seen[:, None, :] == held[None]).all(-1).any()  # no stream image is held out


def test_backbone_is_strong_and_reports_partial_input_accuracy(pretrained):
    meta = torch.load(pretrained[0], weights_only=False)["meta"]
    acc = meta["accuracy"]["test"]["keep1"]
    assert acc > 0.7, f"planted classes must be learned far above chance (0.1): test accuracy {acc}"
    assert set(meta["accuracy"]["val"]) == {"keep1"} | {
        f"{choice}{mode}{keep}" for choice in ("", "rollout_") for mode in ("zero", "sparse", "mask")
        for keep in (0.5, 0.25, 0.1)}
    assert not any(k.startswith("head.") for k in torch.load(pretrained[0])["state_dict"])


def _stream_accuracy(model, root) -> float:
    bm = split_fashion_mnist(5, data_root=root, heldout_per_class=SPEC.heldout_per_class,
                             normalization=model)
    x = torch.stack([x for e in bm.test_stream for x, *_ in e.dataset])
    y = torch.tensor([int(y) for e in bm.test_stream for _, y, *_ in e.dataset])
    return partial_input_accuracy(model, x, y, keeps=(1.0,))["keep1"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_head_scores_chance_before_training(pretrained, squares, seed):
    model = load_pretrained(SPEC, num_classes=10, seed=seed, cache_dir=pretrained[1], log=None)
    # a random head maps each of the 10 well-separated classes to some class: 0.1 on average,
    # 0.3 or more for 7% of heads (measured: 0.12-0.19, 0.1, 0.3); the leaking head scores 0.8
    acc = _stream_accuracy(model, squares)
    assert acc < 0.5, f"a fresh head must score near chance (0.1), got {acc}"


def test_head_of_the_pretraining_stream_would_leak(pretrained, squares):
    """The control: the head pretraining started from scores far above chance on the stream,
    so the test above can fail; fresh heads never equal it."""
    from avalanche_cts.harness.pretrain import _INIT_STREAM

    with torch.random.fork_rng():
        torch.manual_seed(_INIT_STREAM + SPEC.seed)
        leaky = create_model(SPEC.model, num_classes=10)
    get_adapter(leaky).add_mask_token(torch.Generator())
    state = torch.load(pretrained[0], weights_only=True)["state_dict"]
    leaky.load_state_dict(state, strict=False)
    assert _stream_accuracy(leaky, squares) > 0.5
    fresh = load_pretrained(SPEC, num_classes=10, seed=SPEC.seed, cache_dir=pretrained[1], log=None)
    assert not torch.equal(fresh.head.weight, leaky.head.weight)


def test_fresh_head_draws_from_its_own_stream():
    a = fresh_head(create_model("vit_digits_micro"), 3).head.weight.clone()
    torch.manual_seed(123)  # the global stream does not matter
    b = fresh_head(create_model("vit_digits_micro"), 3).head.weight
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(HEAD_STREAM + 4)
    ref = torch.nn.init.trunc_normal_(torch.empty_like(a), std=0.02, a=-0.04, b=0.04, generator=g)
    assert torch.equal(fresh_head(create_model("vit_digits_micro"), 4).head.weight, ref)


def test_interrupted_pretraining_resumes_to_the_same_checkpoint(fake_fmnist, tmp_path):
    spec = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=4,
                        val_per_class=1, epochs=2, batch_size=8)
    straight = torch.load(pretrain_backbone(spec, data_root=fake_fmnist, cache_dir=tmp_path / "a",
                                            log=None), weights_only=False)

    def stop_after_first_epoch(msg):
        if "epoch 1/2" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain_backbone(spec, data_root=fake_fmnist, cache_dir=tmp_path / "b",
                          log=stop_after_first_epoch)
    assert len(list((tmp_path / "b").glob("*.partial.pt"))) == 1
    path = pretrain_backbone(spec, data_root=fake_fmnist, cache_dir=tmp_path / "b", log=None)
    resumed = torch.load(path, weights_only=False)
    assert not list((tmp_path / "b").glob("*.partial.pt"))
    assert resumed["meta"]["n_images"] == 30
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k


def test_default_backbone_names_are_unchanged_and_token_choice_names_new_ones():
    assert BACKBONES["cluttered_fmnist"].file_name() == (
        "vit_clutter_tiny_cluttered_fmnist-held5000-val200_e16_lr0.001_wd0.05_b128_drop0.5-0.1_s0.pt")
    assert PretrainSpec(drop_tokens="rollout").file_name().endswith("_drop0.5-0.1-rollout_s0.pt")
    with pytest.raises(ValueError, match="drop_tokens must be one of"):
        PretrainSpec(drop_tokens="gradcam")


def test_continued_pretraining_starts_from_its_init_backbone(fake_fmnist, tmp_path, monkeypatch):
    base = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=4,
                        val_per_class=1, epochs=1, batch_size=8)
    monkeypatch.setitem(BACKBONES, "tiny_base", base)
    first = torch.load(pretrain_backbone(base, data_root=fake_fmnist, cache_dir=tmp_path,
                                         log=None), weights_only=True)["state_dict"]
    again = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=4,
                         val_per_class=1, epochs=1, batch_size=8, lr=1e-9, init="tiny_base")
    assert again.file_name().endswith("-from-tiny_base_s0.pt")
    # the init backbone is looked up by name: in tmp_path, not the suite's cache
    monkeypatch.setattr(pretrain, "pretrain_backbone",
                        lambda spec, **kw: _REAL_PRETRAIN(spec, **dict(kw, cache_dir=tmp_path)))
    lazy = dict(data_root=fake_fmnist, cache_dir=tmp_path, log=None)
    cont = torch.load(_REAL_PRETRAIN(again, **lazy), weights_only=True)["state_dict"]
    fresh = torch.load(_REAL_PRETRAIN(replace(again, init=None), **lazy),
                       weights_only=True)["state_dict"]
    for k, v in first.items():  # lr 1e-9: continued weights stay at the init's, fresh ones do not
        assert torch.allclose(cont[k], v, atol=1e-6), k
    assert any(not torch.allclose(fresh[k], v, atol=1e-3) for k, v in first.items())
    with pytest.raises(ValueError, match="init must name a pretraining"):
        PretrainSpec(init="nope")
    with pytest.raises(ValueError, match="pretrains vit_fmnist_tiny, not vit_clutter_tiny"):
        PretrainSpec(init="tiny_base")


_REAL_PRETRAIN = pretrain_backbone


def _top(scores, counts):
    """Reference: sample i keeps the indices of its counts[i] highest scores."""
    return [set(row.topk(int(c)).indices.tolist()) for row, c in zip(scores, counts)]


def _is_top(keep, scores, counts) -> bool:
    """Reference that allows ties (equal rollout scores of identical background tokens may be
    ordered either way by the CPU's sort kernels): each sample keeps counts[i] tokens and none
    of its dropped tokens scores above a kept one."""
    for k, s, c in zip(keep, scores, counts):
        if int(k.sum()) != int(c) or (not k.all() and s[~k].max() > s[k].min()):
            return False
    return True


def test_rollout_and_mixed_drop_keep_the_top_scored_tokens():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(400, 16, generator=g)
    counts = torch.randint(1, 17, (400,), generator=g)
    top = _top(scores, counts)
    keep = drop_keep_mask("rollout", counts, 16, g, lambda: scores)
    assert [set(r.nonzero().flatten().tolist()) for r in keep] == top
    mixed = drop_keep_mask("mixed", counts, 16, g, lambda: scores)
    assert mixed.sum(1).tolist() == counts.tolist()
    on_top = [set(r.nonzero().flatten().tolist()) == t for r, t, c in zip(mixed, top, counts)
              if c <= 8]  # a random choice of <= 8 of 16 tokens is rarely the top
    assert 0.35 < sum(on_top) / len(on_top) < 0.65
    calls = []
    whole = drop_keep_mask("rollout", torch.full((3,), 16), 16, g, lambda: calls.append(1))
    assert whole.all() and not calls  # no scoring pass for whole images


def test_rollout_pretraining_keeps_the_scorers_top_tokens_and_trains_the_mask_token(
        squares, tmp_path, monkeypatch):
    spec = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=6,
                        val_per_class=1, epochs=2, batch_size=5, drop_tokens="rollout",
                        drop_share=1.0)
    seen = []

    def checked(tokens, counts, num_tokens, g, scores):
        keep = drop_keep_mask(tokens, counts, num_tokens, g, scores)
        if tokens == "rollout":
            seen.append(_is_top(keep, scores(), counts))
        return keep

    monkeypatch.setattr(pretrain, "drop_keep_mask", checked)
    path = pretrain_backbone(spec, data_root=squares, cache_dir=tmp_path, log=None)
    assert path.name.endswith("-rollout_s0.pt")
    assert len(seen) == 2 * 10 + 3 and all(seen)  # 20 steps; val x 3 keeps (test: whole)
    model = create_model("vit_fmnist_tiny", num_classes=10)
    init = get_adapter(model).add_mask_token(
        torch.Generator().manual_seed(pretrain._INIT_STREAM + spec.seed)).detach()
    trained = torch.load(path, weights_only=True)["state_dict"]["cts_mask_token"]
    assert trained.shape == init.shape and (trained - init).abs().max() > 1e-4
    meta = torch.load(path, weights_only=False)["meta"]
    assert meta["drop_tokens"] == "rollout" and "rollout_mask0.25" in meta["accuracy"]["val"]


def test_run_config_names_an_embedded_backbone_and_records_its_checkpoint():
    from avalanche_cts.harness.config import RunConfig
    from avalanche_cts.harness.runner import run_settings

    kw = dict(model="vit_clutter_tiny", pretrained=True, method="naive")
    default, old, partial = (RunConfig(**kw), RunConfig(**kw, backbone="cluttered_fmnist"),
                             RunConfig(**kw, backbone="cluttered_fmnist_partial"))
    assert "backbone" not in default.shaping()
    # the preset's default is the partial-input pretraining; the earlier default loads by name
    assert default.embedded_backbone() is BACKBONES["cluttered_fmnist_partial"]
    assert old.embedded_backbone() is BACKBONES["cluttered_fmnist"]
    assert partial.embedded_backbone() is BACKBONES["cluttered_fmnist_partial"]
    assert RunConfig(model="vit_fmnist_tiny", pretrained=True,
                     method="naive").embedded_backbone() is BACKBONES["fmnist"]
    names = [run_settings(c, {})["backbone"] for c in (default, old, partial)]
    # a result stored under the earlier default recorded its checkpoint's name, so the same
    # settings with backbone=None no longer match it: it is not reused for the new default
    assert names == [BACKBONES["cluttered_fmnist_partial"].file_name(),
                     BACKBONES["cluttered_fmnist"].file_name(),
                     BACKBONES["cluttered_fmnist_partial"].file_name()]
    assert names[0] != names[1]
    assert RunConfig(model="vit_clutter_tiny", method="naive").embedded_backbone() is None
    for bad, wanted in [(dict(kw, model="vit_fmnist_tiny"),
                         "one of \\['fmnist', 'fmnist_partial'\\]"),
                        (dict(kw, pretrained=False), "only with pretrained=true"),
                        (dict(kw, checkpoint="w.pt"), "only with pretrained=true"),
                        (dict(kw, backbone="imagenet"), "one of")]:
        with pytest.raises(ValueError, match=f"RunConfig.backbone must be .*{wanted}"):
            RunConfig(**dict(dict(backbone="cluttered_fmnist_partial"), **bad))


def test_every_named_backbone_is_shipped_with_the_package():
    """A name of BACKBONES without its checkpoint in the package would pretrain for tens of
    minutes on a user's first run."""
    from avalanche_cts.harness.pretrain import SHIPPED

    missing = [n for n, spec in BACKBONES.items() if not (SHIPPED / spec.file_name()).is_file()]
    assert missing == []
