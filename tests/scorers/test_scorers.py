"""Token scorers on tiny random timm ViTs: shapes, batching, exact forms, state hygiene."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from avalanche_cts.models import TimmAttentionAccess, attention_access, create_model
from avalanche_cts.scorers import AtManScorer, GradLRPScorer, RolloutScorer, get_scorer, list_scorers
from avalanche_cts.scorers.atman import suppression_multipliers
from avalanche_cts.scorers.gradlrp import gradient_weighted_attention

torch.set_num_threads(1)

ATTRIBUTION = ["rollout", "gradcam", "gradlrp", "atman"]
ALL = ["random"] + ATTRIBUTION
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_vit(seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=3, num_heads=2,
               mlp_ratio=2.0, num_classes=5)
    cfg.update(kw)
    model = create_model("vit_tiny_patch16_224", **cfg)
    with torch.no_grad():  # timm's init gives nearly uniform attention: sharpen it
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 1, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def full_product(maps, query, p):
    """``qᵀ M_L ⋯ M_s`` as an explicit ``N x N`` product (reference for the row-vector form)."""
    prod = torch.eye(maps[0].shape[-1]).expand_as(maps[0])
    for m in maps:
        prod = m @ prod
    return (query @ prod)[:, p:]


def test_registry():
    assert set(ALL) <= set(list_scorers())
    s = get_scorer("gradlrp", start_layer=1, target="pred")
    assert isinstance(s, GradLRPScorer) and s.start_layer == 1 and s.target == "pred"
    assert get_scorer(s) is s
    assert "start_layer=1" in repr(s)
    with pytest.raises(ValueError, match="target"):
        get_scorer("gradcam", target="logit")
    with pytest.raises(ValueError, match="head_fusion"):
        RolloutScorer(head_fusion="median")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kw,prefix", [
    ({}, 1),
    ({"reg_tokens": 1}, 2),
    ({"reg_tokens": 4}, 5),
    ({"class_token": False, "global_pool": "avg"}, 0),
])
def test_shape_and_prefix_tokens(name, kw, prefix, batch):
    model = tiny_vit(**kw)
    assert attention_access(model).num_prefix_tokens == prefix
    x, y = batch
    s = get_scorer(name)(model, x, y)
    assert s.shape == (4, 16) and s.dtype == torch.float32 and torch.isfinite(s).all()


def test_unsupported_pooling_is_rejected(batch):
    with pytest.raises(ValueError, match="global_pool"):
        get_scorer("rollout")(tiny_vit(global_pool="map"), batch[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ATTRIBUTION)
def test_batched_equals_per_sample(name, device, vit, batch):
    model = vit.to(device)
    x, y = batch[0].to(device), batch[1].to(device)
    scorer = get_scorer(name, chunk_size=5) if name == "atman" else get_scorer(name)
    full = scorer(model, x, y)
    single = torch.cat([scorer(model, x[i:i + 1], y[i:i + 1]) for i in range(len(x))])
    assert full.device == x.device
    torch.testing.assert_close(full, single, atol=2e-5, rtol=1e-4)
    vit.cpu()


@pytest.mark.parametrize("opts", [
    {},
    {"start_layer": 1},
    {"head_fusion": "max", "discard_ratio": 0.5},
    {"head_fusion": "min", "start_layer": -1},
])
def test_rollout_row_vector_equals_full_product(opts, vit, batch):
    x, _ = batch
    access = attention_access(vit)
    blocks = access.block_indices(opts.get("start_layer", 0))
    with torch.no_grad():
        _, maps = access.forward_with_attention(x, blocks)
    fused = [getattr(a, opts.get("head_fusion", "mean").replace("max", "amax").replace("min", "amin"))(1)
             for a in maps]
    ratio = opts.get("discard_ratio", 0.0)
    if ratio:
        flat = [a.flatten(1) for a in fused]
        fused = [f.scatter(1, f.argsort(1)[:, : int(f.shape[1] * ratio)], 0.0).view_as(a)
                 for f, a in zip(flat, fused)]
    eye = torch.eye(access.seq_len)
    tilde = [(a + eye) / (a + eye).sum(-1, keepdim=True) for a in fused]
    expected = full_product(tilde, access.query_weights(), access.num_prefix_tokens)
    torch.testing.assert_close(RolloutScorer(**opts)(vit, x), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("start_layer", [0, 1])
@pytest.mark.parametrize("kw", [{}, {"class_token": False, "global_pool": "avg"}])
def test_gradlrp_row_vector_equals_full_product(start_layer, kw, batch):
    model = tiny_vit(**kw).eval()
    x, y = batch
    access = attention_access(model)
    logits, maps = access.forward_with_attention(x, access.block_indices(start_layer))
    grads = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), maps)
    abar = [(g * a).clamp(min=0).mean(1) for g, a in zip(grads, maps)]
    eye = torch.eye(access.seq_len)
    expected = full_product([eye + a for a in abar], access.query_weights(), access.num_prefix_tokens)
    got = GradLRPScorer(start_layer=start_layer)(model, x, y)
    torch.testing.assert_close(got, expected.detach(), atol=1e-6, rtol=1e-5)


def test_gradient_weighted_attention_clamps_before_head_mean():
    g = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    a = torch.ones(1, 2, 1, 1)
    assert gradient_weighted_attention(g, a).item() == 0.5  # not (1 - 1)/2 clamped = 0


def gradcam_reference(model, x, y):
    """Chefer's generate_cam_attn, one image at a time."""
    access = attention_access(model)
    out = []
    for i in range(len(x)):
        logits, (a,) = access.forward_with_attention(x[i:i + 1], [access.num_blocks - 1])
        (g,) = torch.autograd.grad(logits[0, y[i]], a)
        grad, cam = g[0, :, 0, 1:], a[0, :, 0, 1:].detach()
        w = grad.mean(dim=1, keepdim=True)
        out.append((w * cam).mean(0).clamp(min=0))
    return torch.stack(out)


def test_gradcam_matches_reference(vit, batch):
    x, y = batch
    torch.testing.assert_close(get_scorer("gradcam")(vit, x, y), gradcam_reference(vit.eval(), x, y))


def explicit_forward(multipliers):
    """timm Attention.forward with pre-softmax scores multiplied column-wise by ``multipliers``."""

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        scores = (q * self.scale) @ k.transpose(-2, -1) * multipliers[:, None, None, :]
        x = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(self.norm(x)))

    return forward


@pytest.mark.parametrize("fused", [True, False])
def test_atman_key_scaling_equals_explicit_scores(fused, vit, batch):
    x, _ = batch
    model = vit.eval()
    access = attention_access(model)
    m = torch.rand(len(x), access.seq_len, generator=torch.Generator().manual_seed(1)) + 0.05
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    with torch.no_grad(), access.scale_keys(m):
        scaled = model(x)
    with torch.no_grad():
        plain = model(x)
        for blk in model.blocks:
            blk.attn.forward = types.MethodType(explicit_forward(m), blk.attn)
        try:
            explicit = model(x)
        finally:
            for blk in model.blocks:
                del blk.attn.forward
                blk.attn.fused_attn = True
    assert not torch.allclose(scaled, plain, atol=1e-3)
    torch.testing.assert_close(scaled, explicit, atol=2e-6, rtol=1e-5)


def test_atman_multipliers():
    e = torch.tensor([[[2.0, 0.0], [0.8, 0.6], [0.0, 1.0]]])  # cosines: (0,1) 0.8, (1,2) 0.6, (0,2) 0
    m = suppression_multipliers(e, factor=0.9, threshold=0.7, num_prefix_tokens=1)
    expected = torch.tensor([[[1.0, 0.1, 1 - 0.9 * 0.8, 1.0],
                              [1.0, 1 - 0.9 * 0.8, 0.1, 1.0],
                              [1.0, 1.0, 1.0, 0.1]]])
    torch.testing.assert_close(m, expected)


def test_atman_degenerate_and_chunking(vit, batch):
    x, y = batch
    assert get_scorer("atman", factor=0.0)(vit, x, y).abs().max() < 1e-5
    ref = AtManScorer()(vit, x, y)
    torch.testing.assert_close(AtManScorer(chunk_size=7)(vit, x, y), ref, atol=2e-5, rtol=1e-4)
    capped = AtManScorer(max_memory_mb=1e-3)
    assert capped.copies_per_chunk(attention_access(vit)) == 1
    torch.testing.assert_close(capped(vit, x[:1], y[:1]), ref[:1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gradcam", "gradlrp", "atman"])
def test_target_label_or_prediction(name, vit, batch):
    x, _ = batch
    pred = vit.eval()(x).argmax(1)
    by_pred = get_scorer(name, target="pred")(vit, x, (pred + 1) % 5)
    torch.testing.assert_close(by_pred, get_scorer(name)(vit, x, pred))
    torch.testing.assert_close(by_pred, get_scorer(name)(vit, x, None))
    assert not torch.allclose(by_pred, get_scorer(name)(vit, x, (pred + 1) % 5))


def model_state(model):
    return (
        [m.training for m in model.modules()],
        [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")],
        hook_count(model),
    )


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_state_restored(name, batch):
    model = tiny_vit()
    model.train()
    model.blocks[1].eval()  # mixed modes must come back as they were
    model.blocks[0].attn.fused_attn = False
    before = model_state(model)
    get_scorer(name)(model, *batch)
    assert model_state(model) == before
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():  # gradient scorers build their own graph
        assert torch.isfinite(get_scorer(name)(model, *batch)).all()
    for p in model.parameters():  # frozen model: the input gets requires_grad
        p.requires_grad_(False)
    assert get_scorer(name)(model, *batch).abs().sum() > 0


@pytest.mark.parametrize("name", ATTRIBUTION)
def test_state_restored_after_exception(name, batch):
    model = tiny_vit().train()

    def fail_while_scoring(module, inputs, output):
        if hook_count(model) > 1 or any(not m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")):
            raise RuntimeError("boom")

    handle = model.head.register_forward_hook(fail_while_scoring)
    before = model_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        get_scorer(name)(model, *batch)
    assert model_state(model) == before
    handle.remove()
    assert hook_count(model) == 0 and all(p.grad is None for p in model.parameters())


AMP = [("cpu", torch.bfloat16)] + [("cuda", d) for d in (torch.bfloat16, torch.float16) if "cuda" in DEVICES]


@pytest.mark.parametrize("device,dtype", AMP)
@pytest.mark.parametrize("name", ATTRIBUTION)
def test_autocast_gives_float32(name, device, dtype, vit, batch):
    model = vit.to(device)
    x, y = batch[0].to(device), batch[1].to(device)
    with torch.autocast(device, dtype=dtype):
        s = get_scorer(name)(model, x, y)
    ref = get_scorer(name)(model, x, y)
    vit.cpu()
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    assert F.cosine_similarity(s, ref, dim=1).min() > 0.9


def test_random_reproducible_and_access_passthrough(vit, batch):
    x, _ = batch
    a, b = get_scorer("random", seed=3), get_scorer("random", seed=3)
    torch.testing.assert_close(a(vit, x), b(vit, x))
    access = attention_access(vit)
    assert isinstance(access, TimmAttentionAccess) and attention_access(access) is access
    torch.testing.assert_close(get_scorer("rollout")(access, x), get_scorer("rollout")(vit, x))
    assert a(access, x).shape == (4, 16)
