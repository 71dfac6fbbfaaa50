"""Token scorers on tiny random Hugging Face models (ViT, BLIP vision), built from configs."""
from __future__ import annotations

import types

import pytest
import torch

from avalanche_cts.models import HFBlipVisionAdapter, HFViTAdapter, get_adapter
from avalanche_cts.models import attention_access
from avalanche_cts.scorers import get_scorer

transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)

SCORERS = ["random", "rollout", "gradcam", "gradlrp", "atman"]


def sharpen(model):
    """Random configs init weights tiny (BLIP: 1e-10), which makes attention uniform."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 or "embedding" in name:
                p.normal_(0, 0.3)
    return model.eval()


def vision_kw(**kw):
    return dict(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                num_attention_heads=2, intermediate_size=64, **kw)


@pytest.fixture(scope="module")
def hf_vit():
    cfg = transformers.ViTConfig(**vision_kw(num_channels=1, num_labels=5))
    return sharpen(transformers.ViTForImageClassification(cfg))


@pytest.fixture(scope="module")
def blip_vision():
    return sharpen(transformers.BlipVisionModel(transformers.BlipVisionConfig(**vision_kw())))


def explicit_scores(q, k, v, scale, multipliers):
    scores = (q @ k.transpose(-1, -2)) * scale * multipliers[:, None, None, :]
    return scores.softmax(-1) @ v


def test_hf_vit_adapter_and_scores(hf_vit):
    adapter = get_adapter(hf_vit)
    assert isinstance(adapter, HFViTAdapter)
    assert (adapter.num_tokens, adapter.grid, adapter.patch_size, adapter.in_chans) == (16, (4, 4), 4, 1)
    x, y = torch.randn(3, 1, 16, 16), torch.tensor([0, 1, 4])
    pre, logits = adapter.features(x)
    assert pre.shape == (3, 32) and logits.shape == (3, 5)
    assert adapter.forward_zero(x, torch.ones(3, 16, dtype=torch.bool)).shape == (3, 5)
    impl = hf_vit.config._attn_implementation
    for name in SCORERS:
        s = get_scorer(name)(hf_vit, x, y)
        assert s.shape == (3, 16) and s.dtype == torch.float32 and torch.isfinite(s).all(), name
        assert hf_vit.config._attn_implementation == impl
    torch.testing.assert_close(get_scorer("gradlrp")(hf_vit, x[:1], y[:1]),
                               get_scorer("gradlrp")(hf_vit, x, y)[:1], atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in hf_vit.parameters())
    with pytest.raises(ValueError, match="do not fit"):
        get_scorer("rollout")(hf_vit, torch.randn(1, 3, 16, 16))


def test_hf_vit_key_scaling_equals_explicit(hf_vit):
    access = attention_access(hf_vit)
    x = torch.randn(2, 1, 16, 16)
    m = torch.rand(2, access.seq_len, generator=torch.Generator().manual_seed(0)) + 0.05

    def explicit(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        return explicit_scores(query, key, value, scaling, m).transpose(1, 2), None

    transformers.AttentionInterface.register("cts_explicit_scaled", explicit)
    cfg = hf_vit.config
    old = cfg._attn_implementation
    assert old == "sdpa"
    with torch.no_grad():
        with access.scale_keys(m):
            scaled = hf_vit(pixel_values=x).logits
        plain = hf_vit(pixel_values=x).logits
        cfg._attn_implementation = "cts_explicit_scaled"
        try:
            reference = hf_vit(pixel_values=x).logits
        finally:
            cfg._attn_implementation = old
    assert not torch.allclose(scaled, plain, atol=1e-3)
    torch.testing.assert_close(scaled, reference, atol=2e-6, rtol=1e-5)


def test_blip_vision_scores_and_key_scaling(blip_vision):
    adapter = get_adapter(blip_vision)
    assert isinstance(adapter, HFBlipVisionAdapter) and adapter.num_tokens == 16
    x = torch.randn(2, 3, 16, 16)
    for name in SCORERS:
        s = get_scorer(name)(blip_vision, x)
        assert s.shape == (2, 16) and torch.isfinite(s).all(), name
    probe = torch.nn.Linear(32, 4)
    with_head = HFBlipVisionAdapter(blip_vision, head=probe)
    assert with_head.logits(x).shape == (2, 4)
    assert get_scorer("atman")(with_head, x, torch.tensor([0, 3])).shape == (2, 16)

    access = attention_access(blip_vision)
    m = torch.rand(2, access.seq_len, generator=torch.Generator().manual_seed(0)) + 0.05

    def explicit(self, hidden_states, **kw):
        b, n, d = hidden_states.shape
        q, k, v = self.qkv(hidden_states).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = explicit_scores(q, k, v, self.scale, m).permute(0, 2, 1, 3).reshape(b, n, d)
        return self.projection(out), None

    layers = blip_vision.encoder.layers
    with torch.no_grad():
        with access.scale_keys(m):
            scaled = access.logits(x)
        plain = access.logits(x)
        for layer in layers:
            layer.self_attn.forward = types.MethodType(explicit, layer.self_attn)
        try:
            reference = access.logits(x)
        finally:
            for layer in layers:
                del layer.self_attn.forward
    assert not torch.allclose(scaled, plain, atol=1e-3)
    torch.testing.assert_close(scaled, reference, atol=2e-6, rtol=1e-5)


def test_blip_vqa_model_uses_its_vision_tower():
    cfg = transformers.BlipConfig(
        vision_config=vision_kw(),
        text_config=dict(vocab_size=64, hidden_size=32, encoder_hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                         bos_token_id=1, sep_token_id=2, pad_token_id=0, eos_token_id=2),
    )
    model = sharpen(transformers.BlipForQuestionAnswering(cfg)).train()
    adapter = get_adapter(model)
    assert adapter.module is model.vision_model and adapter.num_tokens == 16
    s = get_scorer("gradlrp")(model, torch.randn(2, 3, 16, 16))
    assert s.shape == (2, 16) and model.training and model.vision_model.training
