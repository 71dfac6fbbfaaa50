"""A tiny BLIP memorises a handful of answers and captions and generates them exactly: the
teacher-forcing conventions (BOS, label shift, prompt masking) agree with generation."""
import pytest
import torch

from avalanche_cts.models import create_blip, get_adapter
from avalanche_cts.tokens.normalization import CLIP_MEAN, CLIP_STD
from avalanche_cts.benchmarks.vl.data import ImageTextDataset
from avalanche_cts.models.blip_text import VLCollator
from avalanche_cts.benchmarks.vl.scenes import (
    CAPTION_PROMPT,
    scene_captions,
    scene_tokenizer,
    scene_vqa,
)
from avalanche_cts.models.blip_text import TextSpec, encode

torch.set_num_threads(1)
NORM = (CLIP_MEAN, CLIP_STD)


def overfit(model, batch, steps=150, lr=3e-3):
    adapter = get_adapter(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = adapter.sample_losses(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def decode(tok, ids):
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


def test_vqa_memorises_multi_word_answers():
    torch.manual_seed(0)
    tok = scene_tokenizer()
    images = scene_vqa(6, 1, normalization=NORM).train_stream[0].dataset._datasets[0].images
    qa = [("what colour is the circle", "red"), ("how many squares are there", "3"),
          ("what is left of the triangle", "blue square"), ("is there a circle", "yes"),
          ("what shape is the green object", "large green triangle"),
          ("what is left of the circle", "a small red circle in the top left")]
    data = ImageTextDataset(images[:len(qa)], [encode(tok, q) for q, _ in qa],
                            [[encode(tok, a)] for _, a in qa], [[a] for _, a in qa], 0,
                            normalization=NORM)
    collate = VLCollator(TextSpec.from_tokenizer(tok), "vqa")
    batch = collate([data[i] for i in range(len(data))])
    model = create_blip("blip_vqa_tiny")
    assert overfit(model, batch) < 0.05
    adapter = get_adapter(model)
    ids = adapter.generate(*adapter.image_states(batch["pixel_values"]), batch, (), max_new_tokens=12)
    assert decode(tok, ids) == [a for _, a in qa]


def test_captioning_memorises_captions_after_the_prompt():
    torch.manual_seed(1)
    bm = scene_captions(4, 1, normalization=NORM)
    data = bm.train_stream[1].dataset
    items = [data[i] for i in range(4)]
    for it in items:  # one reference each, so the target is fixed
        it["targets"], it["references"] = it["targets"][:1], it["references"][:1]
    batch = bm.collate(items)
    assert len(bm.collate.spec.prompt) == len(CAPTION_PROMPT.split())
    model = create_blip("blip_caption_tiny")
    assert overfit(model, batch, steps=200) < 0.05
    adapter = get_adapter(model)
    ids = adapter.generate(*adapter.image_states(batch["pixel_values"]), batch,
                           bm.collate.spec.prompt, max_new_tokens=12)
    assert decode(bm.tokenizer, ids) == [it["references"][0] for it in items]


@pytest.mark.parametrize("kind", ["vqa", "caption"])
def test_label_smoothing_changes_only_the_loss_value(kind):
    torch.manual_seed(0)
    bm = (scene_vqa if kind == "vqa" else scene_captions)(4, 1, normalization=NORM)
    batch = bm.collate([bm.train_stream[0].dataset[i] for i in range(4)])
    name = "blip_vqa_tiny" if kind == "vqa" else "blip_caption_tiny"
    torch.manual_seed(0)
    plain = create_blip(name).eval()
    torch.manual_seed(0)
    smooth = create_blip(name, label_smoothing=0.1).eval()
    with torch.no_grad():
        a, b = get_adapter(plain).sample_losses(batch), get_adapter(smooth).sample_losses(batch)
    assert not torch.allclose(a, b)
