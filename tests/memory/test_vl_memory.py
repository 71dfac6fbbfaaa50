"""Image-text records in the token memory: exact bytes (text included), per-task balance,
selectors on BLIP features, persistence, and the replay plugin's memory loss."""
import types

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.memory.records import GROUP_HEADER_BYTES, TEXT_DTYPE, TokenGroup
from avalanche_cts.models import create_blip, get_adapter
from avalanche_cts.tokens.normalization import CLIP_MEAN, CLIP_STD
from avalanche_cts.models.blip_text import primary_target
from avalanche_cts.benchmarks.vl.scenes import scene_captions, scene_vqa

torch.set_num_threads(1)
NORM = (CLIP_MEAN, CLIP_STD)


def test_text_fields_are_counted_byte_for_byte():
    g = TokenGroup(0, 2, num_tokens=64, token_dim=192, dtype=torch.uint8, weighted=False,
                   text_fields=("question", "target"))
    values = [torch.zeros(k, 192, dtype=torch.uint8) for k in (16, 64)]
    positions = [torch.arange(16), torch.arange(64)]
    texts = dict(question=[torch.tensor([5, 6, 7]), torch.tensor([8])],
                 target=[torch.tensor([30000, 2]), torch.tensor([9, 9, 9, 9])])
    g.append(values, positions, [1.0, 1.0], texts=texts)
    # record 1: 16 tokens x (192 + 2 position bytes) + 2 length; record 2: all 64 tokens, no
    # positions; text: 2 bytes per id and per field length
    rec = [16 * 194 + 2 + (3 + 2) * 2 + 2 * 2, 64 * 192 + 2 + (1 + 4) * 2 + 2 * 2]
    assert g.record_nbytes().tolist() == rec
    assert g.nbytes == GROUP_HEADER_BYTES + sum(rec)
    assert g.record_text(0)["target"].tolist() == [30000, 2]
    state = g.state_dict()
    back = TokenGroup.from_state(state)
    assert back.nbytes == g.nbytes and back.record_text(1)["target"].tolist() == [9, 9, 9, 9]
    g.truncate(1)
    assert g.nbytes == GROUP_HEADER_BYTES + rec[0] and g.texts["question"][0].dtype == TEXT_DTYPE
    bad = dict(state, texts=dict(state["texts"], target=dict(ids=state["texts"]["target"]["ids"][:-1],
                                                              lengths=state["texts"]["target"]["lengths"])))
    with pytest.raises(ValueError, match="text field 'target'"):
        TokenGroup.from_state(bad)
    with pytest.raises(ValueError, match="does not fit"):
        g.append(values[:1], positions[:1], [1.0],
                 texts=dict(question=[torch.tensor([1])], target=[torch.tensor([40000])]))


def expected_bytes(buffer):
    total = 0
    for g in buffer.groups.values():
        k = g.lengths.long()
        tok = int((k * (192 + (k < 64) * 2)).sum()) + 2 * len(g)
        text = sum(2 * len(ids) + 2 * len(lengths) for ids, lengths in g.texts.values())
        total += GROUP_HEADER_BYTES + tok + text
    return total


@pytest.fixture(scope="module")
def vqa_stream():
    return scene_vqa(40, 8, normalization=NORM)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_blip("blip_vqa_tiny")


def fill(buffer, model, stream, n=None):
    agent = types.SimpleNamespace(model=model, device="cpu")
    for exp in stream.train_stream[:n]:
        buffer.post_adapt(agent, exp)
    return buffer


@pytest.mark.parametrize("selector", ["random", "herding", "craig", "gradmatch"])
def test_vl_memory_is_exact_balanced_per_task_and_holds_the_text(selector, vqa_stream, model):
    budget = 40_000
    buf = fill(CoreTokensetBuffer(budget_bytes=budget, token_retention=0.25, selector=selector,
                                  scorer="random", seed=0), model, vqa_stream)
    assert buf.nbytes == expected_bytes(buf) <= budget
    assert sorted(buf.groups) == [(0, 0), (0, 1), (0, 2)]
    sizes = [g.nbytes for g in buf.groups.values()]
    assert max(sizes) - min(sizes) <= 16 * 194 + 2 + 4 + 2 * 12  # at most one record apart
    assert budget - buf.nbytes < 3 * (16 * 194 + 60)  # filled up to a record per task
    data = buf.dataset()
    item = data[0]
    assert len(item) == 6 and set(item[5]) == {"question", "target"}
    # every stored text is a real question and its answer from the experience of its task
    task_items = [vqa_stream.train_stream[item[3]].dataset[i] for i in range(40)]
    pairs = {(tuple(it["question"].tolist()), tuple(primary_target(it).tolist())) for it in task_items}
    assert (tuple(item[5]["question"].tolist()), tuple(item[5]["target"].tolist())) in pairs
    batch = buf.collate([data[i] for i in range(3)])
    assert batch.text["decoder_input_ids"].shape[0] == 3 and batch.values.shape[1] == 16


def test_vl_memory_state_round_trip_and_replay_loss(vqa_stream, model):
    buf = fill(CoreTokensetBuffer(budget_fraction=0.2, token_retention=0.25, scorer="gradlrp",
                                  selector="gradmatch"), model, vqa_stream, 2)
    state = buf.state_dict()
    other = CoreTokensetBuffer(budget_fraction=0.2, token_retention=0.25, scorer="gradlrp",
                               selector="gradmatch")
    other.load_state_dict(state)
    assert other.nbytes == buf.nbytes and other.items.text_fields == ("question", "target")
    assert buf.nbytes <= int(0.2 * buf.seen_bytes)
    plugin = CoreTokensetReplayPlugin(other, replay_mode="sparse", seed=0)
    plugin._adapter = get_adapter(model)
    batch = other.collate([other.dataset()[i] for i in range(4)])
    for mode in ("zero", "sparse"):
        plugin.replay_mode = mode
        loss = plugin.replay_loss(batch)
        assert loss.shape == () and torch.isfinite(loss)


def test_caption_records_keep_one_reference(model):
    caps = scene_captions(12, 2, normalization=NORM)
    torch.manual_seed(0)
    cap_model = create_blip("blip_caption_tiny")
    buf = fill(CoreTokensetBuffer(budget_bytes=20_000, token_retention=0.5), cap_model, caps, 2)
    assert buf.nbytes == expected_bytes(buf) <= 20_000
    rec = buf.dataset()[0]
    assert len(rec[5]["question"]) == 0 and len(rec[5]["target"]) >= 5


@pytest.mark.parametrize("refresh", ["step", "experience"])
def test_matched_dropout_explains_each_items_answer(vqa_stream, refresh):
    """Matched dropout on BLIP keeps the tokens that explain each item's own answer (the
    scorer's target is the batch's text), top-k at the memory's retention."""
    import copy

    from avalanche.training.plugins import EvaluationPlugin

    from avalanche_cts import get_scorer
    from avalanche_cts.strategies.vl import VLNaive

    torch.manual_seed(0)
    model = create_blip("blip_vqa_tiny")
    buf = CoreTokensetBuffer(budget_fraction=0.1, token_retention=0.25, scorer="gradlrp",
                             token_choice="topk")
    plugin = CoreTokensetReplayPlugin(buf, replay_mode="zero", dropout_tokens="matched",
                                      dropout_refresh=refresh, seed=0)
    seen, draw = [], plugin.dropout.keep_mask

    def wrapped(m, batch, num_tokens):
        if not seen:  # the first batch, under the model the scores were computed with
            ref = get_scorer("gradlrp")
            seen.append((ref.score(m, batch["pixel_values"], batch),
                         ref.score(m, batch["pixel_values"], None)))
        keep = draw(m, batch, num_tokens)
        seen.append(keep)
        return keep

    plugin.dropout.keep_mask = wrapped
    s = VLNaive(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                tokenizer=vqa_stream.tokenizer, train_mb_size=16, train_epochs=1, eval_mb_size=16,
                evaluator=EvaluationPlugin(loggers=[]), plugins=[plugin])
    s.train(vqa_stream.train_stream[0])
    (answer_scores, pooled_scores), keep = seen[0], seen[1]
    k = round(0.25 * 64)
    top = answer_scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    assert torch.equal(keep, torch.zeros_like(keep).scatter_(1, top, True))
    pooled = pooled_scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    assert not torch.equal(top, pooled)  # the answer target matters
    assert len(seen) - 1 == s.clock.train_exp_iterations
