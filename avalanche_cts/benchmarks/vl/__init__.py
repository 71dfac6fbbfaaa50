"""Vision-language streams for BLIP (dict items, :mod:`.data`): generated scenes
(:mod:`.scenes`: ``scene_vqa``, ``scene_captions``) and the paper's data from local files
(:mod:`.real`: ``vqa_sequence``, ``coco_class_captions``). Names are imported on first use.
"""
from ..._lazy import lazy_exports

_EXPORTS = {
    "scenes": ("CAPTION_CLASSES", "CAPTION_PROMPT", "COLOURS", "PRETRAIN_TEMPLATES", "SCENE_SIZE",
               "SCENE_WORDS", "SHAPES", "VQA_TASKS", "draw_scenes", "pretraining_vqa",
               "scene_captions", "scene_tokenizer", "scene_vqa"),
    "real": ("COCO_CLASSES", "COCO_LAYOUT", "VQA_LAYOUT", "coco_class_captions", "vqa_sequence"),
    "data": ("ImageTextDataset", "vl_benchmark"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
