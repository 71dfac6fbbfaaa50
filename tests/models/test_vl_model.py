"""BLIP VQA/captioning adapter: token paths against the full tower, resolution, loading, data."""
import pytest
import torch

from avalanche_cts.models import (
    BlipVLAdapter,
    HFBlipVisionAdapter,
    create_blip,
    get_adapter,
    resize_position_embeddings,
)
from avalanche_cts.tokens.normalization import CLIP_MEAN, CLIP_STD
from avalanche_cts.tokens.patches import patchify
from avalanche_cts.benchmarks.vl.scenes import scene_captions, scene_vqa

torch.set_num_threads(1)
NORM = (CLIP_MEAN, CLIP_STD)


@pytest.fixture(scope="module")
def vqa():
    torch.manual_seed(0)
    return create_blip("blip_vqa_tiny").eval()


@pytest.fixture(scope="module")
def stream():
    return scene_vqa(8, 4, normalization=NORM)


def batch_of(bm, n=4, exp=0):
    data = bm.train_stream[exp].dataset
    return bm.collate([data[i] for i in range(n)])


def test_adapter_family_and_geometry(vqa):
    a = get_adapter(vqa)
    assert isinstance(a, BlipVLAdapter) and a.kind == "vqa"
    assert (a.num_tokens, a.grid, a.patch_size, a.in_chans) == (64, (8, 8), 8, 3)
    assert a.normalization.mean == CLIP_MEAN
    assert get_adapter(create_blip("blip_caption_tiny")).kind == "caption"


def test_sparse_path_with_all_tokens_equals_full_tower(vqa):
    a = get_adapter(vqa)
    x = torch.randn(3, 3, 64, 64)
    full, _ = a.tower(x)
    tokens = patchify(x, 8)
    pos = torch.arange(64).expand(3, -1)
    with torch.no_grad():
        torch.testing.assert_close(a.sparse_states(tokens, pos), full, atol=1e-5, rtol=1e-4)
        shuffled = torch.randperm(64)
        sparse = a.sparse_states(tokens[:, shuffled], pos[:, shuffled])
        torch.testing.assert_close(sparse[:, 0], full[:, 0], atol=1e-5, rtol=1e-4)
        zero, _ = a.record_states(tokens, pos, None, "zero")
        torch.testing.assert_close(zero, full, atol=1e-5, rtol=1e-4)


def test_ragged_sparse_records_equal_their_own_forwards(vqa):
    a = get_adapter(vqa)
    x = torch.randn(2, 3, 64, 64)
    keep = torch.zeros(2, 64, dtype=torch.bool)
    keep[0, :5] = True
    keep[1, 10:19] = True
    from avalanche_cts.tokens.patches import gather_tokens

    values, positions, valid = gather_tokens(patchify(x, 8), keep)
    with torch.no_grad():
        states, mask = a.record_states(values, positions, valid, "sparse")
        one = a.sparse_states(values[:1, :5], positions[:1, :5])
    assert states.shape == (2, 10, 64) and mask.tolist()[0] == [1] * 6 + [0] * 4
    torch.testing.assert_close(states[0, :6], one[0], atol=1e-5, rtol=1e-4)


def test_partial_inputs_reach_the_training_forward(vqa, stream):
    a = get_adapter(vqa)
    b = batch_of(stream)
    keep = torch.zeros(4, 64, dtype=torch.bool)
    keep[:, :8] = True
    with torch.no_grad():
        full = a.sample_losses(b)
        for mode in ("zero", "sparse"):
            with a.partial_inputs(keep, mode, b["pixel_values"]) as partial:
                part = a.sample_losses(b)
                other = a.sample_losses(dict(b, pixel_values=b["pixel_values"].clone()))
            assert not torch.allclose(part, full) and partial.uses == 1
            assert torch.allclose(other, full)  # another batch of images stays whole
        assert torch.allclose(a.sample_losses(b), full)  # restored on exit


def test_generation_from_a_full_token_set_equals_full_images(vqa, stream):
    a = get_adapter(vqa)
    b = batch_of(stream)
    x = b["pixel_values"]
    pos = torch.arange(64).expand(4, -1)
    full = a.generate(*a.image_states(x), b, (), max_new_tokens=4)
    states, mask = a.record_states(patchify(x, 8), pos, None, "sparse")
    assert torch.equal(a.generate(states, mask, b, (), max_new_tokens=4), full)


def test_loss_equals_hugging_face_forward(vqa, stream):
    b = batch_of(stream)
    with torch.no_grad():
        mine = get_adapter(vqa).sample_losses(b)
        out = vqa(input_ids=b["input_ids"], pixel_values=b["pixel_values"],
                  attention_mask=b["attention_mask"], decoder_input_ids=b["decoder_input_ids"],
                  decoder_attention_mask=b["decoder_attention_mask"], labels=b["labels"])
    tokens = (b["labels"][:, 1:] != -100).sum()
    # HF averages over target tokens; ours sums per answer (BLIP's reduction="none")
    torch.testing.assert_close(mine.sum() / tokens, out.loss, atol=1e-5, rtol=1e-5)


def test_other_resolution_interpolates_position_embeddings(vqa):
    a96 = HFBlipVisionAdapter(vqa, image_size=96)
    assert a96.num_tokens == 144 and a96.interpolate
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        full, _ = a96.tower(x)
        sparse = a96.sparse_states(patchify(x, 8), torch.arange(144).expand(2, -1))
    torch.testing.assert_close(sparse, full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="image_size"):
        get_adapter(vqa).check_images(x)
    model = create_blip("blip_vqa_tiny", image_size=96)
    assert get_adapter(model).num_tokens == 144 and not get_adapter(model).interpolate


def test_resize_position_embeddings_matches_interpolation(vqa):
    import copy

    model = copy.deepcopy(vqa)
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        ref = vqa.vision_model(pixel_values=x, interpolate_pos_encoding=True).last_hidden_state
        resize_position_embeddings(model, 80)
        out = model.vision_model(pixel_values=x).last_hidden_state
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert model.config.vision_config.image_size == 80


def test_local_checkpoint_loads(tmp_path, vqa):
    vqa.save_pretrained(tmp_path)
    loaded = create_blip("blip_vqa_tiny", checkpoint=str(tmp_path), label_smoothing=0.1)
    assert loaded.text_decoder.label_smoothing == 0.1
    for (k, v), (k2, v2) in zip(vqa.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    with pytest.raises(FileNotFoundError, match="checkpoint=DIR"):
        create_blip("Salesforce/blip-vqa-base", checkpoint=str(tmp_path / "missing"))


def test_scene_streams_are_avalanche_benchmarks_with_task_labels(stream):
    assert len(stream.train_stream) == 3
    for t, exp in enumerate(stream.train_stream):
        assert exp.task_label == t and exp.dataset[0]["task"] == t
    item = stream.test_stream[2].dataset[0]
    assert item["pixel_values"].shape == (3, 64, 64) and len(item["references"]) == 1
    base = stream.train_stream[0].dataset._datasets[0]
    assert base.regions.sum(1).min() >= 4  # the object asked about covers 2 x 2 tokens
    caps = scene_captions(4, 2, normalization=NORM)
    assert len(caps.train_stream) == 5
    assert all(len(caps.test_stream[t].dataset[0]["references"]) >= 2 for t in range(5))


def test_collate_uses_generate_conventions(stream):
    b = batch_of(stream)
    spec = stream.collate.spec
    assert (b["decoder_input_ids"][:, 0] == spec.bos).all()
    assert (b["input_ids"][:, 0] == spec.cls).all()
    assert (b["labels"] == -100).eq(b["decoder_attention_mask"] == 0).all()
    caps = scene_captions(4, 2, normalization=NORM)
    c = caps.collate([caps.train_stream[0].dataset[i] for i in range(2)])
    p = len(caps.collate.spec.prompt)
    assert (c["labels"][:, 1:1 + p] == -100).all() and (c["labels"][:, 1 + p] >= 0).all()


def test_unknown_words_raise():
    from avalanche_cts.benchmarks.vl.scenes import scene_tokenizer
    from avalanche_cts.models.blip_text import encode

    with pytest.raises(ValueError, match="'zebra'"):
        encode(scene_tokenizer(), "what colour is the zebra", "question")
