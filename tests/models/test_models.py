"""timm ViT adapter: sparse, zero-filled and mask-token forwards against the dense forward."""
import pytest
import timm
import torch
from torch import nn

from avalanche_cts.models import MASK_TOKEN, TimmViTAdapter, get_adapter
from avalanche_cts.tokens.patches import patchify, random_keep_mask

VARIANTS = {
    "cls": dict(),
    "no_embed_class+reg": dict(no_embed_class=True, reg_tokens=2, class_token=True),
    "avg_pool": dict(global_pool="avg", class_token=False, fc_norm=True),
}


def _vit(**kw):
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4,
                          in_chans=3, embed_dim=32, depth=2, num_heads=2, num_classes=5, **kw)
    return m.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sparse_with_all_tokens_equals_dense(variant):
    m = _vit(**VARIANTS[variant])
    a = get_adapter(m)
    x = torch.randn(3, 3, 16, 16)
    all_idx = torch.arange(a.num_tokens).expand(3, -1)
    with torch.no_grad():
        assert torch.allclose(a.forward_sparse(x, all_idx), m(x), atol=1e-5)
        # token order inside the sequence does not matter: positions travel with tokens
        perm = torch.randperm(a.num_tokens).expand(3, -1)
        assert torch.allclose(a.forward_sparse(x, perm), m(x), atol=1e-5)


def test_dropped_token_pixels_do_not_change_sparse_output():
    m = _vit()
    a = get_adapter(m)
    x = torch.randn(2, 3, 16, 16)
    keep = torch.tensor([[0, 5, 10], [3, 7, 15]])
    y = x.clone()
    y[:, :, 4:8, 8:12] += 10.0  # token 6, dropped for both samples
    with torch.no_grad():
        assert torch.equal(a.forward_sparse(x, keep), a.forward_sparse(y, keep))
        assert not torch.allclose(m(x), m(y))  # the dense model does see it
        z = x.clone()
        z[0, :, 4:8, 4:8] += 10.0  # token 5, kept by sample 0
        assert not torch.allclose(a.forward_sparse(x, keep)[0], a.forward_sparse(z, keep)[0])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_padded_ragged_batch_equals_per_sample(variant):
    m = _vit(**VARIANTS[variant])
    a = get_adapter(m)
    tok = patchify(torch.randn(2, 3, 16, 16), 4)
    pos = torch.tensor([[1, 4, 9, 2], [7, 3, 0, 0]])
    valid = torch.tensor([[True, True, True, True], [True, True, False, False]])
    vals = tok.gather(1, pos[..., None].expand(-1, -1, tok.shape[-1]))
    with torch.no_grad():
        batched = a.forward_tokens(vals, pos, valid)
        one = a.forward_tokens(vals[1:, :2], pos[1:, :2])
    assert torch.allclose(batched[1], one[0], atol=1e-5)


def test_zero_fill_equals_masked_image():
    m = _vit()
    a = get_adapter(m)
    x = torch.randn(1, 3, 16, 16)
    keep = torch.zeros(1, 16, dtype=torch.bool)
    keep[0, [0, 15]] = True
    ref = torch.zeros_like(x)
    ref[..., :4, :4] = x[..., :4, :4]
    ref[..., 12:, 12:] = x[..., 12:, 12:]
    with torch.no_grad():
        assert torch.allclose(a.forward_zero(x, keep), m(ref))


def _timm_reference(m, x, keep, token):
    """Dense timm forward with dropped patch embeddings replaced by ``token`` (timm's own
    embedding, position and head code: an independent route to the mask-token output)."""
    emb = m.patch_embed(x)
    emb = torch.where(keep[..., None], emb, token.expand_as(emb))
    return m.forward_head(m.norm(m.blocks(m.norm_pre(m._pos_embed(emb)))))


@pytest.mark.parametrize("variant", ["cls", "no_embed_class+reg"])
def test_mask_token_forward_matches_timm_with_replaced_embeddings(variant):
    m = _vit(**VARIANTS[variant])
    a = get_adapter(m)
    token = a.add_mask_token(torch.Generator().manual_seed(1))
    assert getattr(m, MASK_TOKEN) is token and a.add_mask_token() is token  # idempotent
    x = torch.randn(3, 3, 16, 16)
    keep = random_keep_mask(torch.tensor([16, 5, 1]), 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = a.forward_partial(x, keep, "mask")
        assert torch.allclose(out, _timm_reference(m, x, keep, token), atol=1e-5)
        assert torch.allclose(out[0], m(x)[0], atol=1e-5)  # all kept: the dense output


@pytest.mark.parametrize("mode", ["zero", "sparse", "mask"])
def test_partial_forward_with_ragged_counts_equals_per_sample(mode):
    m = _vit()
    a = get_adapter(m)
    a.add_mask_token()
    x = torch.randn(4, 3, 16, 16)
    keep = random_keep_mask(torch.tensor([3, 16, 7, 1]), 16,
                            generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        batched = a.forward_partial(x, keep, mode)
        for i in range(4):
            one = a.forward_partial(x[i:i + 1], keep[i:i + 1], mode)
            assert torch.allclose(batched[i], one[0], atol=1e-5), (mode, i)


def test_partial_inputs_context_routes_model_calls_and_restores():
    m = _vit()
    a = get_adapter(m)
    x = torch.randn(2, 3, 16, 16)
    keep = random_keep_mask(torch.tensor([4, 9]), 16, generator=torch.Generator().manual_seed(3))
    other = x.clone()  # equal values, another batch: a strategy's own replay batch
    with torch.no_grad():
        dense = m(x)
        with a.partial_inputs(keep, "sparse", x) as partial:
            assert torch.allclose(m(x), a.forward_partial(x, keep, "sparse"))
            assert torch.equal(m(other), dense)
        assert partial.uses == 1
        assert torch.equal(m(x), dense)
        with pytest.raises(RuntimeError):
            with a.partial_inputs(keep, "zero", x):
                raise RuntimeError("boom")
        assert torch.equal(m(x), dense) and "forward" not in vars(m)


def test_mask_replay_without_token_says_how_to_add_it():
    a = get_adapter(_vit())
    with pytest.raises(RuntimeError, match="prepare_model"):
        a.forward_partial(torch.randn(1, 3, 16, 16), torch.ones(1, 16, dtype=torch.bool), "mask")


def test_non_vit_model_rejected_with_clear_message():
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        get_adapter(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="expected a timm VisionTransformer"):
        TimmViTAdapter(nn.Sequential())


def test_image_shape_mismatch_names_fix():
    a = get_adapter(_vit())
    with pytest.raises(ValueError, match="img_size=20, in_chans=1"):
        a.check_images(torch.zeros(1, 1, 20, 20))
