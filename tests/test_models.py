"""timm ViT adapter: sparse forward against the dense forward, dropped tokens inert."""
import pytest
import timm
import torch
from torch import nn

from avalanche_cts.models import SparseTokenDropout, TimmViTAdapter, get_adapter
from avalanche_cts.tokens import patchify

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


def test_sparse_dropout_keeps_exact_count_in_training_only():
    drop = SparseTokenDropout(keep=5, num_prefix_tokens=1)
    x = torch.randn(4, 17, 8)
    assert drop.train()(x).shape == (4, 6, 8)
    out = drop(x)
    assert torch.equal(out[:, 0], x[:, 0])  # prefix token untouched
    assert torch.equal(drop.eval()(x), x)


def test_sparse_dropout_context_restores_patch_drop():
    m = _vit()
    old = m.patch_drop
    with pytest.raises(RuntimeError):
        with get_adapter(m).sparse_dropout(3):
            assert isinstance(m.patch_drop, SparseTokenDropout)
            raise RuntimeError("boom")
    assert m.patch_drop is old


def test_non_vit_model_rejected_with_clear_message():
    with pytest.raises(TypeError, match="not a supported vision transformer"):
        get_adapter(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="expected a timm VisionTransformer"):
        TimmViTAdapter(nn.Sequential())


def test_image_shape_mismatch_names_fix():
    a = get_adapter(_vit())
    with pytest.raises(ValueError, match="img_size=20, in_chans=1"):
        a.check_images(torch.zeros(1, 1, 20, 20))
