"""Metrics of generated answers and captions, standalone and as Avalanche plugin metrics.

* :func:`vqa_exact_match`: the generated answer equals the ground-truth label, the most frequent
  reference answer after the official VQA normalisation (:func:`~.answers.normalize_answer`,
  applied to both), the paper's metric;
* :func:`vqa_soft_accuracy`: the official VQA accuracy (:func:`~.answers.vqa_accuracy`, the
  2016 revision of ``vqaEval.py`` that LAVIS uses) over the items that have several answers;
* :func:`bleu4`, :func:`rouge_l` (:func:`caption_scores`: both): corpus BLEU-4 and mean ROUGE-L
  (beta 1.2, best precision and recall over the references) with pycocoevalcap's scorers,
  after the PTB tokenisation COCO evaluation applies to predictions and references
  (:func:`~.captions.tokenize_captions`: Java, or a named pure-Python fallback).

Plugin metrics (``vqa_metrics``, ``caption_metrics``) read the strings a
:class:`~avalanche_cts.strategies.vl.VLTemplate` generates (``strategy.mb_output``) and the batch's
``references``; they emit per experience (``<name>_Exp``) and over the stream
(``<name>_Stream``), plus ``<name>_Forgetting_Exp``: the value right after training on an
experience minus its value now (Avalanche's ``ExperienceForgetting`` rule).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence

from avalanche.evaluation import GenericPluginMetric, PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name

from .answers import normalize_answer, vqa_accuracy
from .captions import caption_tokenizer, tokenize_captions

__all__ = [
    "TextForgetting",
    "TextMetric",
    "bleu4",
    "caption_metrics",
    "caption_scores",
    "coco_tokenized",
    "label_answer",
    "metric_settings",
    "rouge_l",
    "vqa_exact_match",
    "vqa_metrics",
    "vqa_soft_accuracy",
]

Score = Callable[[Sequence[str], Sequence[Sequence[str]]], Optional[float]]
VQA_EVALUATION = "official VQA evaluation, vqaEval.py of 2016-10 (as in LAVIS)"


def metric_settings(kind: str) -> Dict[str, str]:
    """What defines the metrics of a ``vqa`` or ``caption`` stream here (recorded with results):
    the VQA evaluation, or the caption tokenisation (:func:`~.captions.caption_tokenizer`)."""
    if kind == "vqa":
        return dict(vqa=VQA_EVALUATION)
    if kind == "caption":
        return dict(captions=f"COCO BLEU-4 and ROUGE-L (pycocoevalcap) after the "
                             f"{caption_tokenizer()}")
    raise ValueError(f"kind must be 'vqa' or 'caption', got {kind!r}")


def label_answer(answers: Sequence[str]) -> str:
    """The ground-truth label of a question: its most frequent answer after
    :func:`~.answers.normalize_answer` (the first of them on ties), normalised."""
    return Counter(normalize_answer(a) for a in answers).most_common(1)[0][0]


def vqa_exact_match(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Share of predictions whose normalised text equals their label (:func:`label_answer`)."""
    hits = [normalize_answer(p) == label_answer(a) for p, a in zip(predictions, answers)]
    return sum(hits) / len(hits)


def vqa_soft_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]
                      ) -> Optional[float]:
    """Official VQA accuracy (:func:`~.answers.vqa_accuracy`) averaged over the items with
    more than one answer (VQA v2: ten); ``None`` when every item has one answer."""
    scores = [vqa_accuracy(p, a) for p, a in zip(predictions, answers) if len(a) > 1]
    return sum(scores) / len(scores) if scores else None


def coco_tokenized(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    """``(gts, res, tokenizer name)``: pycocoevalcap's dicts of captions tokenised as COCO
    evaluation does it (references and predictions each in one tokenizer call)."""
    flat, tokenizer = tokenize_captions([r for refs in references for r in refs])
    res, _ = tokenize_captions(predictions)
    gts, start = {}, 0
    for i, refs in enumerate(references):
        gts[i] = flat[start:start + len(refs)]
        start += len(refs)
    return gts, {i: [p] for i, p in enumerate(res)}, tokenizer


def _bleu4(gts, res) -> float:
    from pycocoevalcap.bleu.bleu import Bleu

    return float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])


def _rouge_l(gts, res) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().compute_score(gts, res)[0])


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """COCO corpus BLEU-4 (closest reference length for the brevity penalty)."""
    return _bleu4(*coco_tokenized(predictions, references)[:2])


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """COCO ROUGE-L: mean over captions of the F-measure (beta 1.2) of the best LCS precision
    and recall over the references."""
    return _rouge_l(*coco_tokenized(predictions, references)[:2])


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]
                   ) -> Dict[str, object]:
    """``{"bleu4", "rougeL", "tokenizer"}``: :func:`bleu4`, :func:`rouge_l` and the name of the
    tokenisation used (:mod:`.captions`)."""
    gts, res, tokenizer = coco_tokenized(predictions, references)
    return dict(bleu4=_bleu4(gts, res), rougeL=_rouge_l(gts, res), tokenizer=tokenizer)


class _Texts:
    """Collects predictions and references; ``result`` scores them with ``score``."""

    def __init__(self, score: Score):
        self.score = score
        self.reset()

    def reset(self) -> None:
        self.predictions: List[str] = []
        self.references: List[List[str]] = []

    def update(self, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        self.predictions += list(predictions)
        self.references += [list(r) for r in references]

    def result(self) -> Optional[float]:
        return self.score(self.predictions, self.references) if self.predictions else None


class TextMetric(GenericPluginMetric):
    """An Avalanche plugin metric over generated text (evaluation only).

    :param name: shown name; ``_Exp`` or ``_Stream`` is appended.
    :param score: ``(predictions, references) -> float or None`` on all collected items.
    :param per: ``"experience"`` or ``"stream"``.
    """

    def __init__(self, name: str, score: Score, per: str = "experience"):
        if per not in ("experience", "stream"):
            raise ValueError(f"per must be 'experience' or 'stream', got {per!r}")
        super().__init__(_Texts(score), reset_at=per, emit_at=per, mode="eval")
        self.name = f"{name}_{'Exp' if per == 'experience' else 'Stream'}"

    def update(self, strategy) -> None:
        self._metric.update(strategy.mb_output, strategy.mbatch["references"])

    def _package_result(self, strategy):
        return None if self.result() is None else super()._package_result(strategy)

    def __str__(self) -> str:
        return self.name


class TextForgetting(PluginMetric):
    """Per experience: its score right after training on it minus its score now (emitted
    for experiences trained before the last one), as ``<name>_Forgetting_Exp``."""

    def __init__(self, name: str, score: Score):
        super().__init__()
        self.name = f"{name}_Forgetting_Exp"
        self._texts = _Texts(score)
        self._initial: Dict[int, float] = {}

    def reset(self) -> None:
        self._texts.reset()

    def result(self) -> Optional[float]:
        return self._texts.result()

    def before_eval_exp(self, strategy) -> None:
        self.reset()

    def after_eval_iteration(self, strategy) -> None:
        self._texts.update(strategy.mb_output, strategy.mbatch["references"])

    def after_eval_exp(self, strategy):
        value = self.result()
        exp = strategy.experience.current_experience
        last = strategy.clock.train_exp_counter - 1
        if value is None or exp > last:
            return None
        if exp == last:
            self._initial[exp] = value
            return None
        if exp not in self._initial:
            return None
        name = get_metric_name(self, strategy, add_experience=True)
        return [MetricValue(self, name, self._initial[exp] - value, strategy.clock.train_iterations)]

    def __str__(self) -> str:
        return self.name


def _metrics(name: str, score: Score, experience: bool, stream: bool, forgetting: bool):
    out: List[PluginMetric] = []
    if experience:
        out.append(TextMetric(name, score, "experience"))
    if stream:
        out.append(TextMetric(name, score, "stream"))
    if forgetting:
        out.append(TextForgetting(name, score))
    return out


def vqa_metrics(experience: bool = True, stream: bool = True, forgetting: bool = True,
                soft: bool = True) -> List[PluginMetric]:
    """``VQA_ExactMatch`` (and ``VQA_SoftAcc`` where items have several answers) plugin
    metrics."""
    out = _metrics("VQA_ExactMatch", vqa_exact_match, experience, stream, forgetting)
    if soft:
        out += _metrics("VQA_SoftAcc", vqa_soft_accuracy, experience, stream, False)
    return out


def caption_metrics(experience: bool = True, stream: bool = True,
                    forgetting: bool = True) -> List[PluginMetric]:
    """``BLEU4`` and ``ROUGE_L`` plugin metrics (COCO definitions and tokenisation)."""
    return (_metrics("BLEU4", bleu4, experience, stream, forgetting)
            + _metrics("ROUGE_L", rouge_l, experience, stream, forgetting))
