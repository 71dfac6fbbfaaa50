"""Vision-language metrics as Avalanche metrics: VQA exact match and soft accuracy after the
official answer normalisation (:mod:`.answers`), BLEU-4 and ROUGE-L (:mod:`.metrics`).
Names are imported on first use.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "metrics": ("TextForgetting", "TextMetric", "bleu4", "caption_metrics", "caption_scores",
                "label_answer", "rouge_l", "vqa_exact_match", "vqa_metrics", "vqa_soft_accuracy"),
    "answers": ("normalize_answer", "process_punctuation"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
