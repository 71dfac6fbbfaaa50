"""Pretrained-backbone protocol: disjoint images, resumable cache, fresh heads without a leak."""
import pytest
import torch

from avalanche_cts.benchmarks.fmnist import heldout_indices, load_fashion_mnist, split_fashion_mnist
from avalanche_cts.models.loading import HEAD_STREAM, fresh_head
from avalanche_cts.harness.pretrain import (
    PretrainSpec,
    load_pretrained,
    partial_input_accuracy,
    pretrain_backbone,
)
from avalanche_cts.models import create_model, get_adapter

torch.set_num_threads(1)

SPEC = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", heldout_per_class=30,
                    val_per_class=5, epochs=30, batch_size=32, lr=2e-3)


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """Fake Fashion-MNIST IDX files (40 train, 20 test per class) whose class is the length of
    a centred bright bar (2 + 2c pixels): unchanged by the flips and shifts of pretraining."""
    from conftest import write_fake_fmnist

    def bar(img, c):
        img[12:16, 13 - c:15 + c] = 255

    return write_fake_fmnist(tmp_path_factory.mktemp("bars"), bar, seed=1)


@pytest.fixture(scope="module")
def pretrained(bars, tmp_path_factory):
    """A backbone pretrained on the bars (a strong backbone: classes are separable)."""
    cache = tmp_path_factory.mktemp("pretrained")
    path = pretrain_backbone(SPEC, data_root=bars, cache_dir=cache, log=None)
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
    assert meta["accuracy"]["test"]["keep1"] > 0.6  # planted classes: far above chance (0.1)
    assert set(meta["accuracy"]["val"]) == {"keep1", "zero0.5", "sparse0.5", "zero0.25",
                                            "sparse0.25", "zero0.1", "sparse0.1"}
    assert not any(k.startswith("head.") for k in torch.load(pretrained[0])["state_dict"])


def _stream_accuracy(model, root) -> float:
    bm = split_fashion_mnist(5, data_root=root, heldout_per_class=SPEC.heldout_per_class,
                             normalization=model)
    x = torch.stack([x for e in bm.test_stream for x, *_ in e.dataset])
    y = torch.tensor([int(y) for e in bm.test_stream for _, y, *_ in e.dataset])
    return partial_input_accuracy(model, x, y, keeps=(1.0,))["keep1"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fresh_head_scores_chance_before_training(pretrained, bars, seed):
    model = load_pretrained(SPEC, num_classes=10, seed=seed, cache_dir=pretrained[1], log=None)
    assert _stream_accuracy(model, bars) < 0.3  # 10 classes: chance is 0.1


def test_head_of_the_pretraining_stream_would_leak(pretrained, bars):
    """The control: the head pretraining started from scores far above chance on the stream,
    so the test above can fail; fresh heads never equal it."""
    from avalanche_cts.harness.pretrain import _INIT_STREAM

    with torch.random.fork_rng():
        torch.manual_seed(_INIT_STREAM + SPEC.seed)
        leaky = create_model(SPEC.model, num_classes=10)
    get_adapter(leaky).add_mask_token(torch.Generator())
    state = torch.load(pretrained[0], weights_only=True)["state_dict"]
    leaky.load_state_dict(state, strict=False)
    assert _stream_accuracy(leaky, bars) > 0.3
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
