"""Backbone weights from local files (written here from tiny timm models) and run-state RNG."""

import random

import numpy as np
import pytest
import torch

from avalanche_cts.harness import checkpoint as ckpt
from avalanche_cts.models import loading
from avalanche_cts.models.loading import load_backbone, load_weights
from avalanche_cts.models import create_model


def _source(num_classes=10):
    torch.manual_seed(1)
    return create_model("vit_digits_micro", num_classes=num_classes)


def _same(a, b, skip=()):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k not in skip)


@pytest.mark.parametrize("kind", ["safetensors", "pth", "pth_nested"])
def test_local_checkpoint_loads_into_the_model(tmp_path, kind):
    src = _source()
    if kind == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file(src.state_dict(), str(path))
    else:
        path = tmp_path / "w.pth"
        state = src.state_dict()
        # a training checkpoint: nested and saved from a DistributedDataParallel model
        torch.save(
            {"model": {f"module.{k}": v for k, v in state.items()}}
            if kind == "pth_nested"
            else state,
            path,
        )
    torch.manual_seed(2)
    model = load_backbone("vit_digits_micro", checkpoint=path, num_classes=10)
    assert _same(model, src)


def test_classifier_of_another_size_is_left_initialised(tmp_path):
    src = _source(num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    model = create_model("vit_digits_micro", num_classes=3)
    assert load_weights(model, path) == ["head.weight", "head.bias"]
    assert _same(model, src, skip=("head.weight", "head.bias"))


def test_backbone_only_file_leaves_the_head_initialised(tmp_path):
    src = _source(num_classes=10)
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in src.state_dict().items() if not k.startswith("head.")}, path)
    model = create_model("vit_digits_micro", num_classes=10)
    head = model.head.weight.clone()
    assert sorted(load_weights(model, path)) == ["head.bias", "head.weight"]
    assert _same(model, src, skip=("head.weight", "head.bias"))
    assert torch.equal(model.head.weight, head)
    torch.save({k: v for k, v in src.state_dict().items() if k != "blocks.0.norm1.weight"}, path)
    with pytest.raises(ValueError, match="missing"):  # a backbone key missing is an error
        load_weights(create_model("vit_digits_micro", num_classes=10), path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(create_model("vit_fmnist_tiny").state_dict(), path)
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone("vit_digits_micro", checkpoint=path)
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown checkpoint type"):
        load_backbone("vit_digits_micro", checkpoint=tmp_path / "w.txt")
    np.savez(tmp_path / "w.npz", unrelated=np.zeros(3))
    with pytest.raises(Exception, match="JAX/Flax"):
        load_backbone("vit_digits_micro", checkpoint=tmp_path / "w.npz")


def _augreg_npz(model, path):
    """Write a timm ViT as a JAX AugReg .npz (the layout of the i21k ViT-B/16 files)."""
    s = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    d, h = model.embed_dim, model.blocks[0].attn.num_heads
    w = {
        "embedding/kernel": s["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
        "embedding/bias": s["patch_embed.proj.bias"],
        "cls": s["cls_token"],
        "Transformer/posembed_input/pos_embedding": s["pos_embed"],
        "Transformer/encoder_norm/scale": s["norm.weight"],
        "Transformer/encoder_norm/bias": s["norm.bias"],
        "head/kernel": s["head.weight"].T,
        "head/bias": s["head.bias"],
    }
    for i in range(len(model.blocks)):
        b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        m = p + "MultiHeadDotProductAttention_1/"
        qkv_w, qkv_b = (
            s[b + "attn.qkv.weight"].reshape(3, d, d),
            s[b + "attn.qkv.bias"].reshape(3, h, -1),
        )
        for j, n in enumerate(("query", "key", "value")):
            w[f"{m}{n}/kernel"], w[f"{m}{n}/bias"] = qkv_w[j].T.reshape(d, h, -1), qkv_b[j]
        w[m + "out/kernel"] = s[b + "attn.proj.weight"].T.reshape(h, -1, d)
        w[m + "out/bias"] = s[b + "attn.proj.bias"]
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            w[f"{p}{ln}/scale"], w[f"{p}{ln}/bias"] = s[b + norm + ".weight"], s[b + norm + ".bias"]
        for r in range(2):
            w[f"{p}MlpBlock_3/Dense_{r}/kernel"] = s[f"{b}mlp.fc{r + 1}.weight"].T
            w[f"{p}MlpBlock_3/Dense_{r}/bias"] = s[f"{b}mlp.fc{r + 1}.bias"]
    np.savez(path, **w)


def test_big_vision_npz_loads_through_timm(tmp_path):
    src = _source()
    _augreg_npz(src, tmp_path / "augreg.npz")
    torch.manual_seed(3)
    model = load_backbone("vit_digits_micro", checkpoint=tmp_path / "augreg.npz", num_classes=10)
    for k, v in src.state_dict().items():
        assert torch.allclose(model.state_dict()[k], v, atol=1e-6), k
    other = create_model("vit_digits_micro", num_classes=3)
    assert load_weights(other, tmp_path / "augreg.npz") == ["head.weight", "head.bias"]


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch):
    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return create_model(name, **kw)

    monkeypatch.setattr(loading, "create_model", offline)
    with pytest.raises(ConnectionError, match="--checkpoint FILE") as err:
        load_backbone("vit_base_patch16_224.augreg_in21k", num_classes=100)
    assert "huggingface.co/timm/vit_base_patch16_224.augreg_in21k" in str(err.value)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    state = ckpt._rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt._set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
