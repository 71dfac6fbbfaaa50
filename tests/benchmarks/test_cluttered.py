"""Cluttered Fashion-MNIST: the object is a minority of the tokens, scenes are seeded, pools
are disjoint, and the memory diagnostics see where stored tokens fall."""
import torch

from avalanche_cts.benchmarks import cluttered_fashion_mnist
from avalanche_cts.benchmarks.cluttered import compose_scenes, object_token_mask


def _items(n=40):
    g = torch.Generator().manual_seed(0)
    items = torch.zeros(n, 28, 28, dtype=torch.uint8)
    items[:, 4:24, 6:22] = torch.randint(100, 256, (n, 20, 16), generator=g, dtype=torch.uint8)
    return items


def test_object_covers_a_minority_of_tokens_and_stays_clean():
    items = _items()
    scenes, masks = compose_scenes(items, items, torch.Generator().manual_seed(1))
    assert scenes.shape == (40, 1, 64, 64) and scenes.dtype == torch.uint8
    share = object_token_mask(masks, 8).float().mean(1)
    assert share.max() <= 0.32 and share.mean() < 0.25  # 20 x 16 px item: 9-12 of 64 tokens
    for i in range(40):  # the item is pasted whole (on top of texture and clutter)
        ys, xs = masks[i].nonzero(as_tuple=True)
        y0, x0 = int(ys.min()) - 4, int(xs.min()) - 6
        assert torch.equal(scenes[i, 0, y0 + 4:y0 + 24, x0 + 6:x0 + 22],
                           torch.maximum(scenes[i, 0, y0 + 4:y0 + 24, x0 + 6:x0 + 22],
                                         items[i, 4:24, 6:22]))
    background = scenes[:, 0][~masks]
    assert background.float().mean() > 5  # textured, not black


def test_scenes_are_seeded():
    items = _items(8)
    a, _ = compose_scenes(items, items, torch.Generator().manual_seed(3))
    b, _ = compose_scenes(items, items, torch.Generator().manual_seed(3))
    c, _ = compose_scenes(items, items, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_style_from_its_settings_builds_the_same_scenes_and_is_recorded(fake_fmnist):
    from avalanche_cts.benchmarks.cluttered import ClutterStyle

    style = ClutterStyle(item=20, fragments=(5, 8), fragment_size=(6, 12), texture=80, grain=24)
    kw = dict(data_root=fake_fmnist, heldout_per_class=20, train_per_class=4, test_per_class=2)
    a = cluttered_fashion_mnist(5, style=style, **kw)
    b = cluttered_fashion_mnist(5, style=style.settings(), **kw)  # as configs record it
    default = cluttered_fashion_mnist(5, **kw)
    assert torch.equal(a.scenes["train"].images, b.scenes["train"].images)
    assert not torch.equal(a.scenes["train"].images, default.scenes["train"].images)
    small = object_token_mask(a.scenes["train"].object_masks, 8).float().mean()
    assert small < object_token_mask(default.scenes["train"].object_masks, 8).float().mean()
    assert b.info["style"] == style.settings() and "style" not in default.info


def test_stream_pools_and_validation_are_disjoint(fake_fmnist):
    from avalanche_cts.benchmarks.fmnist import train_validation_indices

    labels = torch.arange(300) % 10
    tr, va = train_validation_indices(labels, 12, 8, torch.Generator().manual_seed(0))
    assert not set(tr.tolist()) & set(va.tolist())
    assert torch.bincount(labels[tr]).tolist() == [12] * 10
    assert torch.bincount(labels[va]).tolist() == [8] * 10
    kw = dict(data_root=fake_fmnist, heldout_per_class=20, train_per_class=8)
    test = cluttered_fashion_mnist(5, test_per_class=5, **kw)
    val = cluttered_fashion_mnist(5, test_per_class=5, validation=True, **kw)
    assert [len(e.dataset) for e in test.train_stream] == [16] * 5
    assert len(val.scenes["test"]) == 50 and len(test.scenes["test"]) == 50
    assert test.info["validation"] is False and val.info["validation"] is True


def test_memory_diagnostics_check_provenance_and_object_hits(fake_fmnist):
    from types import SimpleNamespace

    from avalanche_cts import CoreTokensetBuffer, create_model
    from avalanche_cts.harness.diagnostics import memory_diagnostics
    from avalanche_cts.scorers import TokenScorer

    bm = cluttered_fashion_mnist(5, data_root=fake_fmnist, heldout_per_class=20,
                                 train_per_class=10, test_per_class=2)
    scenes = bm.scenes["train"]
    lookup = {bytes(img.numpy()): i for i, img in enumerate(scenes.images)}
    truth = object_token_mask(scenes.object_masks, 8)

    class ObjectFirst(TokenScorer):
        """Scores the object's tokens 1, the rest 0 (looked up from the scene itself)."""

        def score(self, model, images, targets=None):
            pixels = (images * 255).round().to(torch.uint8)
            return torch.stack([truth[lookup[bytes(p.numpy())]].float() for p in pixels])

    model = create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, in_chans=1,
                         embed_dim=32, depth=1, num_heads=2, num_classes=10)
    rates = {}
    for name, scorer in (("object", ObjectFirst()), ("random", "random")):
        buf = CoreTokensetBuffer(budget_fraction=0.2, token_retention=1 / 64, scorer=scorer,
                                 token_choice="topk", keep_sources=True,
                                 normalization=((0.0,), (1.0,)))
        for exp in bm.train_stream:
            buf.post_adapt(SimpleNamespace(model=model, device="cpu"), exp)
        diag = memory_diagnostics(buf, bm)
        assert diag["records"] == buf.num_records > 0 and diag["provenance_mismatches"] == 0
        rates[name] = diag["object_hit_rate"]
    assert rates["object"] == 1.0  # one kept token per scene, always on the object
    assert abs(rates["random"] - diag["object_share"]) < 0.1
    group = next(iter(buf.groups.values()))
    group.values[0, 0] ^= 1  # one stored pixel no longer matches its source image
    assert memory_diagnostics(buf, bm)["provenance_mismatches"] == 1
