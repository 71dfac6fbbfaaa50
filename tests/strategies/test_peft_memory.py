"""Memories on the parameter-efficient strategies: core tokensets (``CoreTokensetReplayPlugin``)
and sample replay (Avalanche's ``ReplayPlugin``) with CODA-Prompt and InfLoRA."""
import functools
from dataclasses import replace
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import ClassBalancedBuffer

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin
from avalanche_cts.models import attention_access, get_adapter
from avalanche_cts.strategies import CODAPrompt, InfLoRA
from avalanche_cts.strategies.prompt import CodaPromptAdapter
from baselines_digits import digits_benchmark, pretrained_micro_vit
from conftest import run_interrupted

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:the images are not 8-bit pixels")

BASES = {"coda_prompt": (CODAPrompt, dict(pool_size=6, prompt_length=2)),
         "inflora": (InfLoRA, dict(rank=2))}


@functools.lru_cache(maxsize=1)
def _stream():
    """Two experiences of five digit classes (300 training, 100 test images)."""
    return digits_benchmark(n_experiences=2, n_train=300, n_test=100)


def _images(n: int) -> Tensor:
    """The first ``n`` test images of the first experience, ``(n, 1, 8, 8)``."""
    ds = _stream().test_stream[0].dataset
    return torch.stack([ds[i][0] for i in range(n)])


def _strategy(base: str, plugins, epochs: int = 1):
    cls, options = BASES[base]
    return cls(model=pretrained_micro_vit(), lr=1e-2, train_mb_size=32, train_epochs=epochs,
               eval_mb_size=256, evaluator=EvaluationPlugin(loggers=[]), plugins=plugins,
               **options)


def _current_params(strategy) -> List[Tensor]:
    """The parameters the current experience trains besides its head: the newest prompt
    components (CODA-Prompt) or the low-rank branches ``A_t`` (InfLoRA)."""
    if isinstance(strategy, CODAPrompt):
        pool = strategy.model.pool
        return [pool.prompts[-1], pool.keys[-1], pool.attn[-1]]
    return [layer.branch_A for layer in strategy.layers]


def _token_plugin(mode: str = "zero", mem_weight: float = 1.0, cls=CoreTokensetReplayPlugin,
                  **dropout):
    buffer = CoreTokensetBuffer(budget_fraction=0.2, token_retention=0.5, scorer="rollout",
                                seed=0)
    return cls(buffer, replay_mode=mode, mem_weight=mem_weight, seed=0, **dropout)


RECIPES = {  # replay mode -> new-data dropout
    "zero": {},  # random tokens at the memory's keep rate
    "sparse": dict(dropout_tokens="matched", dropout_schedule="uniform"),  # scored each step
    "mask": dict(dropout_tokens="matched", dropout_refresh="experience"),  # scored once
}


class MemoryGradients(SupervisedPlugin):
    """Before each backward of the second experience: the memory loss of a batch of the
    token memory and its gradient norms on the current prompts / branches and new head."""

    def __init__(self, memory: CoreTokensetReplayPlugin):
        super().__init__()
        self.memory = memory
        self.losses: List[float] = []
        self.norms: List[List[float]] = []

    def before_backward(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter != 1:
            return
        buf = self.memory.storage_policy
        batch = next(iter(DataLoader(buf.dataset(), batch_size=16, collate_fn=buf.collate)))
        loss = self.memory.replay_loss(batch)
        params = _current_params(strategy) + [strategy.heads.heads[-1].weight]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.losses.append(float(loss.detach()))
        self.norms.append([0.0 if g is None else float(g.norm()) for g in grads])


def _train_two(base: str, plugin) -> Dict[str, Tensor]:
    bm = _stream()
    s = _strategy(base, [plugin])
    for exp in bm.train_stream:
        s.train(exp)
    return {k: v.detach().clone() for k, v in s.model.state_dict().items()}


def assert_memory_changes_training(with_memory: Dict[str, Tensor],
                                   without: Dict[str, Tensor]) -> None:
    """The trained model differs from the run whose memory term weighs 0."""
    changed = [k for k in with_memory if not torch.equal(with_memory[k], without[k])]
    assert changed, "the memory did not change training: same model as without its loss"


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("mode", sorted(RECIPES))
def test_core_tokenset_replay_trains_the_current_prompts_or_branch(base, mode):
    memory = _token_plugin(mode, **RECIPES[mode])
    probe = MemoryGradients(memory)
    bm = _stream()
    s = _strategy(base, [memory, probe])
    s.train(bm.train_stream[0])
    assert memory.storage_policy.num_records > 0
    s.train(bm.train_stream[1])
    assert probe.losses and min(probe.losses) > 0
    for norms in probe.norms:  # every current prompt / branch and the new head get gradient
        assert min(norms) > 0, norms
    assert memory.last_mem_loss is not None and float(memory.last_mem_loss) > 0


@pytest.mark.parametrize("base", sorted(BASES))
def test_memory_changes_training_and_a_silent_memory_does_not(base):
    class ReplaysNothing(CoreTokensetReplayPlugin):
        """Planted: fills its memory and drops tokens, but never adds a memory loss."""

        def before_backward(self, strategy, **kwargs):
            pass

    reference = _train_two(base, _token_plugin(mem_weight=0.0))
    assert_memory_changes_training(_train_two(base, _token_plugin()), reference)
    with pytest.raises(AssertionError, match="did not change training"):
        assert_memory_changes_training(_train_two(base, _token_plugin(cls=ReplaysNothing)),
                                       reference)


class ReplayedLoss(SupervisedPlugin):
    """Before each backward of the second experience: the seen-class CE of the replayed
    (old-class) samples of the mini-batch and its gradient norms on the current prompts /
    branches."""

    def __init__(self):
        super().__init__()
        self.replayed, self.norms = [], []

    def before_backward(self, strategy, **kwargs):
        if strategy.clock.train_exp_counter != 1:
            return
        old = ~strategy.heads.is_current(strategy.mb_y)
        self.replayed.append(int(old.sum()))
        if old.any():
            loss = F.cross_entropy(strategy.mb_output[old], strategy.mb_y[old])
            grads = torch.autograd.grad(loss, _current_params(strategy), retain_graph=True)
            self.norms.append([float(g.norm()) for g in grads])


@pytest.mark.parametrize("base", sorted(BASES))
def test_sample_replay_concatenates_old_classes_and_trains_on_them(base):
    probe = ReplayedLoss()
    replay = ReplayPlugin(mem_size=40, batch_size=16, batch_size_mem=16,
                          storage_policy=ClassBalancedBuffer(max_size=40, adaptive_size=True))
    bm = _stream()
    s = _strategy(base, [replay, probe])
    for exp in bm.train_stream:
        s.train(exp)
    assert probe.replayed and min(probe.replayed) > 0  # every step replays old classes
    assert probe.norms and min(min(n) for n in probe.norms) > 0


def test_mixed_criterion_is_local_ce_plus_seen_class_ce():
    """Against a written-out computation on a planted batch of current and replayed labels."""
    s = _strategy("coda_prompt", [])
    heads = s.heads
    heads.add_head([3, 7])
    heads.add_head([1, 5])  # current
    torch.manual_seed(0)
    s.mb_output = torch.randn(5, heads.num_classes)
    s.mb_output[:, [0, 2, 4, 6, 8, 9]] = -1000.0  # no head
    s.mbatch = [None, torch.tensor([1, 7, 5, 3, 5])]
    s.is_training = True
    logits = s.mb_output
    reference = (F.cross_entropy(logits[[0], :][:, [1, 5]], torch.tensor([0]))
                 + F.cross_entropy(logits[[2, 4], :][:, [1, 5]], torch.tensor([1, 1])) * 2
                 + F.cross_entropy(logits[[1, 3]], torch.tensor([7, 3])) * 2) / 5
    torch.testing.assert_close(s.criterion(), reference)
    s.mbatch = [None, torch.tensor([1, 5, 5])]  # current classes only: the local CE as before
    s.mb_output = logits[:3]
    torch.testing.assert_close(s.criterion(), F.cross_entropy(logits[:3, [1, 5]],
                                                              torch.tensor([0, 1, 1])))
    s.mbatch = [None, torch.tensor([1, 2])]
    with pytest.raises(ValueError, match=r"labels \[2\] have no head"):
        s.criterion()


def _coda_after_one_experience():
    s = _strategy("coda_prompt", [])
    s.train(_stream().train_stream[0])
    return s


def test_coda_adapter_partial_forwards_run_the_prompted_model():
    """Whole inputs through the token paths give the prompted model's logits; a padded
    sparse batch gives each sample's own sparse logits (the prefix attention takes the mask)."""
    s = _coda_after_one_experience()
    net = s.model.eval()
    adapter = get_adapter(net)
    assert isinstance(adapter, CodaPromptAdapter) and adapter.num_classes == 10
    x = _images(6)
    with torch.no_grad():
        full = net(x)
        keep = torch.ones(6, adapter.num_tokens, dtype=torch.bool)
        torch.testing.assert_close(adapter.forward_partial(x, keep, "zero"), full)
        torch.testing.assert_close(adapter.forward_partial(x, keep, "sparse"), full,
                                   atol=1e-5, rtol=1e-5)
        keep = torch.rand(6, adapter.num_tokens, generator=torch.Generator().manual_seed(0)) < 0.5
        keep[:, 0] = True
        padded = adapter.forward_partial(x, keep, "sparse")
        alone = torch.cat([adapter.forward_partial(x[i:i + 1], keep[i:i + 1], "sparse")
                           for i in range(6)])
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
        # the prompts matter: the unprompted ViT's features through the head differ
        assert not torch.allclose(net.heads(net.features(x)), full, atol=1e-3)


def test_coda_attention_access_reads_the_prompted_pass_only():
    s = _coda_after_one_experience()
    access = attention_access(s.model)
    x = _images(4)
    logits, maps = access.forward_with_attention(x, access.block_indices())
    n = access.seq_len
    assert len(maps) == access.num_blocks
    assert all(m.shape == (4, access.num_heads, n, n) for m in maps)
    torch.testing.assert_close(logits, s.model(x))
    prompted = [m.sum(-1) for m in maps[:len(s.model.layers)]]  # mass to prompts left out
    assert all(bool((r < 1 - 1e-4).any()) and bool((r <= 1 + 1e-5).all()) for r in prompted)
    unprompted = [m.sum(-1) for m in maps[len(s.model.layers):]]
    assert all(torch.allclose(r, torch.ones_like(r), atol=1e-5) for r in unprompted)


def test_inflora_adapter_serves_the_adapted_model():
    s = _strategy("inflora", [], epochs=1)
    s.train(_stream().train_stream[0])
    adapter = get_adapter(s.model)
    assert adapter.num_classes == s.heads.num_classes
    x = _images(4)
    keep = torch.ones(4, adapter.num_tokens, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(adapter.forward_partial(x, keep, "sparse"), s.model(x),
                                   atol=1e-5, rtol=1e-5)
    access = attention_access(s.model)
    _, maps = access.forward_with_attention(x, access.block_indices())
    assert len(maps) == access.num_blocks


# ------------------------------------------------------------------- harness
COMBINATIONS = [("coda_prompt", "core_tokenset"), ("inflora", "core_tokenset"),
                ("coda_prompt", "replay"), ("inflora", "replay")]


@pytest.mark.parametrize("base, method", COMBINATIONS)
def test_harness_run_resumes_bit_for_bit(tmp_path, base, method):
    from avalanche_cts.benchmarks import synthetic_benchmark
    from avalanche_cts.harness import RunConfig, run

    bm = synthetic_benchmark(3, n_classes=6, train_per_class=24, test_per_class=6,
                             image_size=8, channels=1)
    cfg = RunConfig(method=method, budget=0.2, model="vit_digits_micro", epochs=2,
                    batch_size=16, lr=0.01, seed=1, replay_mode="mask",  # a learned token
                    options={"base": base, "base_options": BASES[base][1]})
    whole = run(replace(cfg, out_dir=str(tmp_path / "a")), bm, log=None)
    resumed, lines = run_interrupted(cfg, bm, tmp_path / "b", "exp 2/3")
    assert "resumed" in lines[0] and f"[{base}+{method}_r0.2" in lines[0]
    assert resumed["acc_matrix"] == whole["acc_matrix"]
    assert resumed["memory_bytes"] == whole["memory_bytes"] > 0


def test_harness_refuses_an_unknown_base():
    from avalanche_cts.benchmarks import synthetic_benchmark
    from avalanche_cts.harness import RunConfig, run

    bm = synthetic_benchmark(2, n_classes=4, train_per_class=4, test_per_class=2,
                             image_size=8, channels=1)
    cfg = RunConfig(method="core_tokenset", budget=0.2, model="vit_digits_micro",
                    options={"base": "ewc"})
    with pytest.raises(ValueError, match=r"options\['base'\] must be one of"):
        run(cfg, bm, log=None)


@pytest.mark.parametrize("method", ["core_tokenset", "replay"])
def test_a_peft_base_refuses_blip_models(method):
    from avalanche_cts.harness import RunConfig
    from avalanche_cts.harness.methods import build_strategy
    from avalanche_cts.models.blip_presets import create_blip

    cfg = RunConfig(method=method, budget=0.2, model="blip_vqa_tiny",
                    options={"base": "coda_prompt"})
    with pytest.raises(ValueError, match="is for classifiers"):
        build_strategy(cfg, create_blip("blip_vqa_tiny"), EvaluationPlugin(loggers=[]))


@pytest.mark.parametrize("base", sorted(BASES))
def test_harness_mask_token_is_trained_with_the_peft_parameters(base):
    """The PEFT strategy freezes the model it adapts; the mask token is added after it."""
    from avalanche_cts import create_model
    from avalanche_cts.harness import RunConfig
    from avalanche_cts.harness.methods import build_strategy

    cfg = RunConfig(method="core_tokenset", budget=0.2, model="vit_digits_micro",
                    replay_mode="mask", options={"base": base, "base_options": BASES[base][1]})
    s = build_strategy(cfg, create_model("vit_digits_micro"), EvaluationPlugin(loggers=[]))
    tokens = [p for n, p in s.model.named_parameters() if n.endswith("cts_mask_token")]
    assert len(tokens) == 1 and tokens[0].requires_grad
    assert isinstance(s, BASES[base][0])


# ------------------------------------------- CODA-Prompt: query of the whole image
class PromptsSeen:
    """The prompts ``(B, L/2, D)`` (key half, first prompted block) of every prompted pass."""

    def __init__(self, net):
        self.seen: List[Tensor] = []
        net.prefixed[0].register_forward_pre_hook(self._record)

    def _record(self, module, args):
        if module.prefix is not None:
            self.seen.append(module.prefix[0].detach().clone())


def _key_prompts(net, query: Tensor) -> Tensor:
    """The first prompted block's key prompts that ``query`` ``(B, D)`` selects."""
    return net.pool(query)[:, 0, :net.pool.length // 2]


def _unprompted_query(net, run) -> Tensor:
    """``run()``'s features with no prefix set in any block (the ViT as frozen)."""
    assert all(pa.prefix is None for pa in net.prefixed)
    with torch.no_grad():
        return run()


def _dropped_batch(mode: str, query: str):
    """A CODA model after one experience with ``query``, six images, a keep mask of about
    half of their tokens (the class token's neighbour kept), and a prompt recorder."""
    net = _coda_after_one_experience().model.eval()
    net.query = query
    adapter = get_adapter(net)
    if mode == "mask":
        adapter.add_mask_token(torch.Generator().manual_seed(0))
    x = _images(6)
    keep = torch.rand(6, adapter.num_tokens, generator=torch.Generator().manual_seed(1)) < 0.5
    keep[:, 0] = True
    return net, adapter, x, keep, PromptsSeen(net)


@pytest.mark.parametrize("mode", ["zero", "sparse", "mask"])
def test_coda_whole_query_selects_the_whole_images_prompts_for_dropped_new_data(mode):
    from avalanche_cts.models.timm_vit import TimmViTAdapter
    from avalanche_cts.tokens.patches import zero_dropped

    net, adapter, x, keep, prompts = _dropped_batch(mode, "whole")
    with torch.no_grad(), adapter.partial_inputs(keep, mode, x) as applied:
        logits = net(x)  # as the strategy's forward calls the model on the dropped batch
    assert applied.uses == 1 and len(prompts.seen) == 1
    whole = _unprompted_query(net, lambda: net.vit.forward_head(
        net.vit.forward_features(x), pre_logits=True))
    partial = _unprompted_query(net, lambda: TimmViTAdapter(net.vit).forward_partial(
        x, keep, mode))
    torch.testing.assert_close(prompts.seen[0], _key_prompts(net, whole))
    assert not torch.allclose(prompts.seen[0], _key_prompts(net, partial), atol=1e-4)
    if mode == "zero":  # the prompted pass still sees the partial input
        with torch.no_grad():
            reference = net.heads(net.features(zero_dropped(x, keep, adapter.patch_size),
                                               net.pool(whole)))
        torch.testing.assert_close(logits, reference)


@pytest.mark.parametrize("mode", ["zero", "mask"])
def test_coda_records_keep_their_own_query_and_partial_is_todays_forward(mode):
    from avalanche_cts.models.timm_vit import TimmViTAdapter
    from avalanche_cts.tokens.patches import take_kept

    net, adapter, x, keep, prompts = _dropped_batch(mode, "partial")
    with torch.no_grad():
        with adapter.partial_inputs(keep, mode, x):
            dropped = net(x)
        torch.testing.assert_close(dropped, adapter.forward_partial(x, keep, mode),
                                   rtol=0, atol=0)  # bit for bit the partial input's forward
        record = take_kept(x, keep, adapter.patch_size)
        partial_record = adapter.forward_record(*record, mode)
        net.query = "whole"
        whole_record = adapter.forward_record(*record, mode)
    torch.testing.assert_close(whole_record, partial_record, rtol=0, atol=0)
    query = _unprompted_query(net, lambda: TimmViTAdapter(net.vit).forward_partial(x, keep, mode))
    for seen in prompts.seen:  # dropped batch, forward_partial, both records
        torch.testing.assert_close(seen, _key_prompts(net, query))


def test_harness_coda_core_tokenset_with_the_whole_query_trains_two_experiences():
    from avalanche_cts.benchmarks import synthetic_benchmark
    from avalanche_cts.harness import RunConfig, run

    bm = synthetic_benchmark(2, n_classes=4, train_per_class=24, test_per_class=6,
                             image_size=8, channels=1)
    base = dict(BASES["coda_prompt"][1], query="whole")
    cfg = RunConfig(method="core_tokenset", budget=0.2, model="vit_digits_micro", epochs=1,
                    batch_size=16, lr=0.01, seed=1, replay_mode="mask",
                    options={"base": "coda_prompt", "base_options": base})
    res = run(cfg, bm, log=None)
    assert len(res["acc_matrix"]) == 2 and res["memory_bytes"] > 0
    assert res["config"]["options"]["base_options"]["query"] == "whole"


@pytest.mark.parametrize("options, phrase", [
    ({"base": "inflora", "base_options": {"query": "whole"}},
     "options.base_options has ['query'], which base 'inflora' does not read"),
    ({"base_options": {"query": "whole"}}, "set options.base too"),
    ({"base": "coda_prompt", "base_options": "whole"},
     "options.base_options of base 'coda_prompt' must be a mapping"),
])
def test_config_refuses_base_options_the_base_does_not_read(options, phrase):
    from avalanche_cts.harness import RunConfig

    with pytest.raises(ValueError) as info:
        RunConfig(method="core_tokenset", budget=0.2, model="vit_digits_micro", options=options)
    assert phrase in str(info.value), str(info.value)


def test_coda_refuses_an_unknown_query():
    from avalanche_cts import create_model
    from avalanche_cts.harness import RunConfig
    from avalanche_cts.harness.methods import build_strategy

    cfg = RunConfig(method="core_tokenset", budget=0.2, model="vit_digits_micro",
                    options={"base": "coda_prompt", "base_options": {"query": "scene"}})
    with pytest.raises(ValueError, match=r"query must be one of \('partial', 'whole'\)"):
        build_strategy(cfg, create_model("vit_digits_micro"), EvaluationPlugin(loggers=[]))
