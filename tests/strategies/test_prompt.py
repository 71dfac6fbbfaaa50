"""CODA-Prompt: prefix attention, component weights, orthogonal growth, frozen past, end to end."""
import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention

from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_cts.strategies import CODAPrompt, count_trainable
from avalanche_cts.strategies.prompt import CodaPromptPool, PrefixAttention
from baselines_digits import digits_benchmark, pretrained_micro_vit

torch.set_num_threads(1)


def _reference_attention(attn, x, pk, pv, key_mask=None):
    """Multi-head attention written out: softmax(q [pk; k]^T / sqrt(h)) [pv; v]."""
    b, n, d = x.shape
    h, hd = attn.num_heads, attn.head_dim
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(d, dim=-1)
    k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
    split = lambda t: t.reshape(b, t.shape[1], h, hd).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(hd)
    if key_mask is not None:
        visible = torch.cat([torch.ones(b, pk.shape[1], dtype=torch.bool), key_mask], 1)
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, d)
    return attn.proj(out)


def test_prefix_attention_matches_written_out_attention():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, qkv_bias=True).eval()
    wrapped = PrefixAttention(attn)
    x, pk, pv = torch.randn(3, 5, 16), torch.randn(3, 4, 16), torch.randn(3, 4, 16)
    with torch.no_grad():
        assert torch.allclose(wrapped(x), attn(x))
        wrapped.prefix = (pk, pv)
        out = wrapped(x)
        assert torch.allclose(out, _reference_attention(attn, x, pk, pv), atol=1e-5)
        assert not torch.allclose(out, attn(x), atol=1e-3)
        keep = torch.tensor([[True] * 5, [True, True, False, True, False], [False] + [True] * 4])
        masked = wrapped(x, attn_mask=keep[:, None, None, :])
        assert torch.allclose(masked, _reference_attention(attn, x, pk, pv, keep), atol=1e-5)


def test_component_weights_are_cosine_similarities():
    torch.manual_seed(0)
    pool = CodaPromptPool(embed_dim=8, n_layers=2, length=4)
    pool.add_components(3)
    pool.add_components(3)
    query = torch.randn(5, 8)
    keys, attn, prompts = (torch.cat(list(p), 1) for p in (pool.keys, pool.attn, pool.prompts))
    expected = torch.zeros(5, 2, 4, 8)
    for b in range(5):
        for layer in range(2):
            for m in range(6):
                alpha = F.cosine_similarity(query[b] * attn[layer, m], keys[layer, m], dim=0)
                expected[b, layer] += alpha * prompts[layer, m]
    assert torch.allclose(pool(query), expected, atol=1e-5)


def test_new_components_are_orthogonal_to_old_ones():
    torch.manual_seed(0)
    pool = CodaPromptPool(embed_dim=16, n_layers=2, length=2)
    pool.add_components(4)
    pool.add_components(4)
    for plist in (pool.keys, pool.attn, pool.prompts):
        assert not plist[0].requires_grad and plist[1].requires_grad
        for layer in range(2):
            rows = torch.cat([plist[0][layer], plist[1][layer]]).flatten(1)
            assert torch.allclose(rows @ rows.T, torch.eye(8), atol=1e-5)


class InitialPrompts(SupervisedPlugin):
    """Records the newest prompt components as initialised, before each experience."""

    def __init__(self):
        super().__init__()
        self.initial = []

    def before_training_exp(self, strategy, **kwargs):
        self.initial.append(strategy.model.pool.prompts[-1].detach().clone())


@pytest.fixture(scope="module")
def coda_run():
    bm = digits_benchmark(n_experiences=2)
    ev = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])
    init = InitialPrompts()
    s = CODAPrompt(model=pretrained_micro_vit(), pool_size=20, prompt_length=4, lr=1e-2,
                   train_mb_size=32, train_epochs=3, eval_mb_size=256, evaluator=ev,
                   plugins=[init])
    s.train(bm.train_stream[0])
    snapshot = {k: v.clone() for k, v in s.model.state_dict().items()}
    s.train(bm.train_stream[1])
    trainable_second = count_trainable(s.model)
    return bm, s, snapshot, trainable_second, s.eval(bm.test_stream), init.initial


def test_past_components_heads_and_backbone_stay_frozen(coda_run):
    _, s, snapshot, _, _, initial = coda_run
    now = s.model.state_dict()
    for key, before in snapshot.items():
        if key != "heads.class_ids":  # everything of task 0, and the ViT
            assert torch.equal(now[key], before), key
    assert not torch.equal(initial[0], snapshot["pool.prompts.0"])  # task 0 trained
    assert not torch.equal(s.model.pool.prompts[1], initial[1])  # task 1 trained its own


def test_trainable_parameter_count(coda_run):
    bm, s, _, trainable_second, _, _ = coda_run
    d, layers, k, length = 32, 2, 20 // 2, 4  # vit_digits_micro has 2 blocks: both prompted
    c = len(bm.train_stream[1].classes_in_this_experience)
    assert s.model.layers == [0, 1]
    assert trainable_second == layers * k * (2 * d + length * d) + d * c + c


def test_end_to_end_beats_chance_on_small_vit(coda_run):
    _, s, _, _, metrics, _ = coda_run
    assert s.model.vit.num_features == 32  # no hard-coded 768
    assert metrics["Top1_Acc_Stream/eval_phase/test_stream/Task000"] > 0.3  # chance 0.1
    assert len(s.heads.heads) == 2 and len(s.model.pool.keys) == 2


def test_resume_rebuilds_the_strategy(coda_run):
    bm, s, _, _, _, _ = coda_run
    fresh = CODAPrompt(model=pretrained_micro_vit(), pool_size=20, prompt_length=4, lr=1e-2,
                       evaluator=EvaluationPlugin(loggers=[]))
    fresh.load_state_dict(s.state_dict())
    fresh.model.load_state_dict(s.model.state_dict())
    x = torch.stack([bm.test_stream[1].dataset[i][0] for i in range(20)])
    with torch.no_grad():
        assert torch.equal(fresh.model.eval()(x), s.model.eval()(x))
    assert fresh.n_experiences == 2 and count_trainable(fresh.model) == 0
