"""Metrics of generated answers and captions, standalone and as Avalanche plugin metrics.

* :func:`vqa_exact_match`: the generated answer equals the ground-truth label (the most frequent
  reference answer) after the official VQA normalisation (:func:`~.text.normalize_answer`),
  the paper's metric;
* :func:`vqa_soft_accuracy`: the official VQA accuracy for items with ten answers: the mean over
  the ten leave-one-out subsets of ``min(1, matches / 3)`` (GT-Vision-Lab ``vqaEval.py``: the
  prediction is normalised; the answers only lose punctuation, and only when they disagree);
* :func:`bleu4`, :func:`rouge_l` (:func:`caption_scores`: both): corpus BLEU-4 and mean ROUGE-L
  (beta 1.2, best precision and recall over the references) with pycocoevalcap's scorers. COCO's Java ``PTBTokenizer`` is replaced
  by :func:`~.text.pre_caption` (lower case, punctuation removed) on both sides.

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

from .answers import normalize_answer, process_punctuation
from ..models.blip_text import pre_caption

__all__ = [
    "TextMetric",
    "TextForgetting",
    "bleu4",
    "caption_metrics",
    "caption_scores",
    "label_answer",
    "rouge_l",
    "vqa_exact_match",
    "vqa_metrics",
    "vqa_soft_accuracy",
]

Score = Callable[[Sequence[str], Sequence[Sequence[str]]], Optional[float]]


def label_answer(answers: Sequence[str]) -> str:
    """The ground-truth label of a question: its most frequent answer (first on ties)."""
    return Counter(answers).most_common(1)[0][0]


def vqa_exact_match(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Share of predictions equal to their label (:func:`label_answer`) after normalisation."""
    hits = [normalize_answer(p) == normalize_answer(label_answer(a))
            for p, a in zip(predictions, answers)]
    return sum(hits) / len(hits)


def _soft(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    accs = [min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3)
            for i in range(len(gts))]
    return sum(accs) / len(accs)


def vqa_soft_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]
                      ) -> Optional[float]:
    """Official VQA accuracy over the items that have ten answers (``None`` if none has)."""
    scores = [_soft(p, a) for p, a in zip(predictions, answers) if len(a) == 10]
    return sum(scores) / len(scores) if scores else None


def _coco(predictions: Sequence[str], references: Sequence[Sequence[str]]):
    """pycocoevalcap's ``(gts, res)`` dicts of tokenised captions."""
    res = {i: [pre_caption(p)] for i, p in enumerate(predictions)}
    gts = {i: [pre_caption(r) for r in refs] for i, refs in enumerate(references)}
    return gts, res


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """COCO corpus BLEU-4 (closest reference length for the brevity penalty)."""
    from pycocoevalcap.bleu.bleu import Bleu

    return float(Bleu(4).compute_score(*_coco(predictions, references), verbose=0)[0][3])


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """COCO ROUGE-L: mean over captions of the F-measure (beta 1.2) of the best LCS precision
    and recall over the references."""
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().compute_score(*_coco(predictions, references))[0])


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]
                   ) -> Dict[str, float]:
    """``{"bleu4": ..., "rougeL": ...}`` of captions (:func:`bleu4`, :func:`rouge_l`)."""
    return dict(bleu4=bleu4(predictions, references), rougeL=rouge_l(predictions, references))


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
    """``VQA_ExactMatch`` (and ``VQA_SoftAcc`` where items have ten answers) plugin metrics."""
    out = _metrics("VQA_ExactMatch", vqa_exact_match, experience, stream, forgetting)
    if soft:
        out += _metrics("VQA_SoftAcc", vqa_soft_accuracy, experience, stream, False)
    return out


def caption_metrics(experience: bool = True, stream: bool = True,
                    forgetting: bool = True) -> List[PluginMetric]:
    """``BLEU4`` and ``ROUGE_L`` plugin metrics (COCO definitions)."""
    return (_metrics("BLEU4", bleu4, experience, stream, forgetting)
            + _metrics("ROUGE_L", rouge_l, experience, stream, forgetting))
