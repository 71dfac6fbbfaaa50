"""Vision-language metrics as Avalanche metrics (:mod:`.metrics`): VQA exact match and soft
accuracy as the official VQA evaluation computes them (:mod:`.answers`), BLEU-4 and ROUGE-L
after COCO's PTB tokenisation (:mod:`.captions`).
Names are imported on first use.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "metrics": ("TextForgetting", "TextMetric", "bleu4", "caption_metrics", "caption_scores",
                "coco_tokenized", "label_answer", "metric_settings", "rouge_l", "vqa_exact_match", "vqa_metrics",
                "vqa_soft_accuracy"),
    "answers": ("CONTRACTIONS", "normalize_answer", "process_digit_article",
                "process_punctuation", "vqa_accuracy"),
    "captions": ("PTB_JAVA", "PTB_PYTHON", "caption_tokenizer", "ptb_tokenize_java",
                 "ptb_tokenize_python", "tokenize_captions"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
