"""Inputs as users feed them: normalised streams, exact 8-bit memory, 0 = the mean colour."""
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, create_model
from avalanche_cts.memory.codec import PixelCodec
from avalanche_cts.models import get_adapter
from avalanche_cts.models import resolve_normalization
from avalanche_cts.tokens.normalization import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalization,
)
from avalanche_cts.tokens.patches import patchify

CONSTANTS = {
    "imagenet": Normalization(IMAGENET_MEAN, IMAGENET_STD),
    "half": Normalization((0.5,) * 3, (0.5,) * 3),
    "clip": Normalization(CLIP_MEAN, CLIP_STD),
}


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_uint8_round_trip_is_exact_under_each_normalisation(name):
    norm = CONSTANTS[name]
    pixels = torch.arange(256, dtype=torch.uint8).repeat(3, 16).reshape(1, 3, 64, 64)
    pixels = pixels[:, :, torch.randperm(64)]  # every value in every channel
    x = norm.normalize(pixels.float() / 255)  # what a normalised stream feeds the model
    codec = PixelCodec.infer(x, norm)
    assert codec.dtype == torch.uint8
    tokens = patchify(x, 8)
    stored = codec.encode(tokens)
    assert torch.equal(stored, patchify(pixels, 8))  # the bytes are the image's own pixels
    assert torch.equal(codec.decode(stored), tokens)  # and decode to the same model inputs
    # reference: (u / 255 - mean) / std per channel, computed independently
    ref = torch.stack([(pixels[0, c].float() / 255 - norm.mean[c]) / norm.std[c] for c in range(3)])
    assert torch.allclose(x[0], ref, atol=1e-6)


def _experience(images, labels):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    return SimpleNamespace(dataset=_make_taskaware_tensor_classification_dataset(images, labels),
                           current_experience=0)


def test_memory_learns_the_model_normalisation_and_holds_the_same_bytes():
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(40) % 4
    held = {}
    for name, model_norm in (("identity", Normalization.identity(3)), ("half", CONSTANTS["half"])):
        model = create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32,
                             depth=1, num_heads=2, num_classes=4,
                             pretrained_cfg_overlay=dict(mean=model_norm.mean, std=model_norm.std))
        assert get_adapter(model).normalization == model_norm  # learnt from the model
        x = model_norm.normalize(pixels.float() / 255)
        buf = CoreTokensetBuffer(budget_fraction=0.5, token_retention=0.5)
        buf.post_adapt(SimpleNamespace(model=model, device="cpu"), _experience(x, labels))
        assert buf.codec.dtype == torch.uint8 and buf.codec.normalization == model_norm
        values = torch.cat([g.values for _, g in sorted(buf.groups.items())])
        held[name] = (buf.nbytes, values)
    assert held["identity"][0] == held["half"][0]  # bytes held do not change
    assert torch.equal(held["identity"][1], held["half"][1])  # nor the stored pixels


def test_replayed_zero_filled_token_is_the_mean_colour():
    norm = Normalization((0.2, 0.4, 0.6), (0.5, 0.25, 0.1))
    model = create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1,
                         num_heads=2, num_classes=4,
                         pretrained_cfg_overlay=dict(mean=norm.mean, std=norm.std))
    adapter = get_adapter(model)
    seen = []
    model.patch_embed.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    values = torch.randn(1, 2, 48)
    with torch.no_grad():
        adapter.forward_record(values, torch.tensor([[0, 5]]), None, "zero")
    image = seen[0]
    dropped = image[0, :, 4:8, 0:4]  # token 4 was not kept
    assert torch.equal(dropped, torch.zeros_like(dropped))  # 0 in normalised space ...
    pixel = norm.denormalize(dropped)[:, 0, 0]
    assert torch.allclose(pixel, torch.tensor(norm.mean))  # ... is the mean colour
    assert torch.equal(patchify(image, 4)[0, 5], values[0, 1])  # kept tokens in place


def test_streams_apply_the_model_constants(fake_fmnist):
    from avalanche_cts.benchmarks import split_fashion_mnist

    model = create_model("vit_fmnist_tiny")
    norm = resolve_normalization(model)
    assert norm == Normalization((0.286,), (0.353,))
    raw = split_fashion_mnist(5, data_root=fake_fmnist, train_per_class=4, test_per_class=2,
                              heldout_per_class=0)
    fed = split_fashion_mnist(5, data_root=fake_fmnist, train_per_class=4, test_per_class=2,
                              heldout_per_class=0,
                              normalization=model)
    x0, x1 = raw.train_stream[0].dataset[0][0], fed.train_stream[0].dataset[0][0]
    assert torch.allclose(x1, (x0 - 0.286) / 0.353, atol=1e-6)
    assert fed.info["normalization"] == {"mean": [0.286], "std": [0.353]}
