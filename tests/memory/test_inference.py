"""Top-token inference (``PartialInferencePlugin``, ``RunConfig.inference``): planted models,
the model left as found, and the harness (whole = today's evaluation, resume, reuse)."""
from dataclasses import replace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from conftest import _Tensors, run_interrupted

from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.harness import RunConfig, run
from avalanche_cts.memory.inference import PartialInferencePlugin, top_tokens_mask
from avalanche_cts.models import get_adapter
from avalanche_cts.scorers.base import TokenScorer

DECISIVE = 2  # tokens per image that decide its class (of 16)


class Predictions(SupervisedPlugin):
    """Collects the predicted and true classes of every evaluation batch."""

    def __init__(self):
        super().__init__()
        self.pred, self.true = [], []

    def after_eval_forward(self, strategy, **kw):
        self.pred.append(strategy.mb_output.argmax(1))
        self.true.append(strategy.mb_y)

    def accuracy(self) -> float:
        return float((torch.cat(self.pred) == torch.cat(self.true)).float().mean())


class EmbeddingNormScorer(TokenScorer):
    """Relevance = norm of each token's patch embedding under the model (reads the model)."""

    name = "embedding_norm"

    def score(self, model, images, targets=None):
        return model.patch_embed(images).norm(dim=-1)


def _planted_model():
    """A depth-0 timm ViT on (1, 8, 8) images, 16 tokens of 2x2 pixels: the class is the
    sign of the mean pixel over the tokens it reads (average pooling, one LayerNorm)."""
    from timm.models.vision_transformer import VisionTransformer

    m = VisionTransformer(img_size=8, patch_size=2, in_chans=1, num_classes=2, embed_dim=2,
                          depth=0, num_heads=1, global_pool="avg", class_token=False)
    with torch.no_grad():
        mean_pm = torch.tensor([0.25, -0.25]).view(2, 1, 1, 1)  # +- the mean of a 2x2 patch
        m.patch_embed.proj.weight.copy_(mean_pm.expand(2, 1, 2, 2))
        m.patch_embed.proj.bias.zero_()
        m.pos_embed.zero_()
        m.head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        m.head.bias.zero_()
    get_adapter(m).add_mask_token().data.zero_()  # a dropped token adds nothing to the mean
    return m


def _planted_benchmark(n=64):
    """Class c in {0, 1}: DECISIVE random tokens at +-1 (the class's sign), the other 14
    tokens at -+0.3, which outweigh them in the whole-image mean (a distractor)."""
    from avalanche.benchmarks import nc_benchmark

    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    sign = (2 * y - 1).float()
    tokens = -0.3 * sign[:, None].expand(n, 16).clone()
    for i in range(n):
        tokens[i, torch.randperm(16, generator=gen)[:DECISIVE]] = sign[i]
    x = tokens.view(n, 1, 4, 4).repeat_interleave(2, 2).repeat_interleave(2, 3)
    data = _Tensors(x, y)
    return nc_benchmark(data, data, n_experiences=1, task_labels=False, seed=0,
                        fixed_class_order=[0, 1])


def _eval_accuracy(model, plugins):
    probe = Predictions()
    s = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), 0.0),
              eval_mb_size=16, plugins=[*plugins, probe], evaluator=None)
    s.eval(_planted_benchmark().test_stream)
    return probe.accuracy()


@pytest.mark.parametrize("mode", ["mask", "zero", "sparse"])
def test_top_tokens_keep_the_decisive_tokens_a_random_scorer_does_not(mode):
    keep = DECISIVE / 16
    whole = _eval_accuracy(_planted_model(), [])
    planted = _eval_accuracy(_planted_model(),
                             [PartialInferencePlugin(keep, EmbeddingNormScorer(), mode)])
    rand = _eval_accuracy(_planted_model(), [PartialInferencePlugin(keep, "random", mode)])
    assert whole == 0.0  # the distractor decides every whole image
    assert planted == 1.0
    assert rand < 0.3  # random tokens are mostly the distractor's


def test_top_tokens_mask_keeps_the_highest_scores():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.7, 0.0]])
    assert top_tokens_mask(scores, 0.5).tolist() == [[False, True, True, False],
                                                     [True, False, True, False]]
    assert top_tokens_mask(scores, 0.01).sum(1).tolist() == [1, 1]  # at least one token


def test_keep_one_zero_mode_is_bit_for_bit_the_whole_forward(micro_vit, digits_benchmark):
    outputs = []
    for plugins in ([], [PartialInferencePlugin(1.0, "rollout", "zero")]):
        probe = Predictions()
        logits = []
        probe.after_eval_forward = lambda s, **kw: logits.append(s.mb_output.clone())
        s = Naive(model=micro_vit, optimizer=torch.optim.SGD(micro_vit.parameters(), 0.0),
                  eval_mb_size=64, plugins=[*plugins, probe], evaluator=None)
        s.eval(list(digits_benchmark.test_stream)[:1])
        outputs.append(torch.cat(logits))
    assert torch.equal(outputs[0], outputs[1])


def test_model_left_as_found_by_a_gradient_scorer(micro_vit):
    plugin = PartialInferencePlugin(0.25, "gradcam", "zero")
    micro_vit.train()
    marker = torch.full_like(micro_vit.head.weight, 7.0)
    micro_vit.head.weight.grad = marker
    with torch.no_grad():  # as Avalanche evaluates
        keep = plugin.keep_mask(micro_vit, torch.rand(4, 1, 8, 8))
    assert keep.shape == (4, get_adapter(micro_vit).num_tokens) and keep.sum(1).tolist() == [4] * 4
    assert all(m.training for m in micro_vit.modules())
    assert micro_vit.head.weight.grad is marker
    assert all(p.grad is None for n, p in micro_vit.named_parameters() if n != "head.weight")
    assert plugin.scored_images == 4


def test_mask_inference_without_a_mask_token_is_refused(micro_vit, digits_benchmark):
    s = Naive(model=micro_vit, optimizer=torch.optim.SGD(micro_vit.parameters(), 0.0),
              eval_mb_size=64, plugins=[PartialInferencePlugin(0.5)], evaluator=None)
    with pytest.raises(ValueError, match="mask token.*'zero' or 'sparse'"):
        s.eval(list(digits_benchmark.test_stream)[:1])
    with pytest.raises(ValueError, match="keep"):
        PartialInferencePlugin(0.0)
    with pytest.raises(ValueError, match="inference mode"):
        PartialInferencePlugin(0.5, mode="blur")


# ------------------------------------------------------------------ harness
@pytest.fixture(scope="module")
def tiny_bm():
    return synthetic_benchmark(2, n_classes=4, train_per_class=32, test_per_class=8,
                               image_size=8, channels=1)


def _cfg(**kw):
    base = dict(model="vit_digits_micro", method="core_tokenset", budget=0.25,
                replay_mode="sparse", epochs=2, batch_size=16, lr=0.01, seed=0)
    return RunConfig(**{**base, **kw})


def test_whole_inference_keeps_todays_settings_and_numbers(tiny_bm):
    whole = _cfg()
    assert not any(k.startswith("inference") for k in whole.shaping())  # old fingerprints hold
    assert whole.key() == "core_tokenset_r0.25_random_rollout_sparse_s0"
    a = run(whole, tiny_bm, log=None)
    b = run(_cfg(inference=1.0, inference_mode="zero"), tiny_bm, log=None)
    assert a["acc_matrix"] == b["acc_matrix"]  # the plugin path, all tokens, zero fill
    assert a["config"]["inference"] == "whole" and b["config"]["inference"] == 1.0


def test_run_with_inference_resumes_records_and_refuses_reuse(tiny_bm, tmp_path):
    from avalanche_cts.harness.report import with_inference
    from avalanche_cts.harness.runner import StaleResultError, load_result, run_settings

    cfg = _cfg(inference=0.5, inference_scorer="random", inference_mode="sparse")
    full = run(replace(cfg, out_dir=str(tmp_path / "full")), tiny_bm, log=None)
    resumed, lines = run_interrupted(cfg, tiny_bm, tmp_path / "cut", "exp 1/2")
    assert "resumed" in lines[0]
    assert resumed["acc_matrix"] == full["acc_matrix"]
    assert full["settings"]["run"]["inference"] == 0.5
    assert full["settings"]["run"]["inference_scorer"] == "random"
    assert "inf0.5-random-sparse" in full["key"]
    assert with_inference("core tokenset", full["config"]) == "core tokenset @top0.5 random sparse"
    data = tiny_bm.info if getattr(tiny_bm, "info", None) else {}
    for other in (_cfg(), replace(cfg, inference=0.25), replace(cfg, inference_mode="zero")):
        with pytest.raises(StaleResultError, match="inference"):
            load_result(tmp_path / "full" / "result.json", run_settings(other, data))
    assert load_result(tmp_path / "full" / "result.json", run_settings(cfg, data)) is not None


@pytest.mark.parametrize("field,value,wanted", [
    ("inference", 0.0, "'whole' or a token keep rate"), ("inference", "all", "'whole' or"),
    ("inference", True, "'whole' or"), ("inference_scorer", "saliency", "one of"),
    ("inference_mode", "blur", "one of")])
def test_inference_settings_are_validated(field, value, wanted):
    with pytest.raises(ValueError, match=f"RunConfig.{field} must be {wanted}"):
        _cfg(**{field: value})


def test_mask_inference_on_a_model_without_mask_token_fails_before_training(tiny_bm):
    with pytest.raises(ValueError, match="mask token"):
        run(_cfg(method="naive", inference=0.5), tiny_bm, log=None)


def test_cli_inference_options_reach_the_config():
    import argparse

    from avalanche_cts.harness.demo import add_inference_arguments, inference_settings

    p = argparse.ArgumentParser()
    add_inference_arguments(p, defaults=False)
    assert inference_settings(p.parse_args([])) == {}
    args = p.parse_args(["--inference", "0.215", "--inference-mode", "zero"])
    assert inference_settings(args) == {"inference": 0.215, "inference_mode": "zero"}
    with pytest.raises(SystemExit):
        p.parse_args(["--inference", "most"])
