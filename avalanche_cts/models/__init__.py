"""Model adapters and presets: token-level access to vision transformers of several families.

``get_adapter(model)`` returns the adapter of a model object (token geometry, zero-filled,
sparse and mask-token forwards); ``attention_access(model)`` what the attribution scorers
read (attention maps, key scaling). Families register with ``register_adapter``, most
specific first (:mod:`.adapters`): timm ``VisionTransformer`` (:mod:`.timm_vit`), Hugging
Face ``ViTForImageClassification`` (:mod:`.hf_vit`), BLIP VQA and captioning models
(:mod:`.hf_blip_vl`) and the BLIP vision tower (:mod:`.hf_blip`). Models by name:
``create_model`` (small ViT presets and timm names, :mod:`.presets`), ``load_backbone``
(with pretrained or local weights, :mod:`.loading`) and ``create_blip`` (:mod:`.blip_presets`); BLIP text inputs (tokenizers, the collated batch): :mod:`.blip_text`.
Names are imported on first use.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "attention": ("AttentionAccess", "eval_mode", "forward_hooks", "fused_attention_off"),
    "blip_presets": ("BLIP_PRESETS", "blip_tokenizer", "create_blip", "is_blip_name"),
    "hf_blip_vl": ("BlipVLAdapter", "is_blip_vl", "sequence_nll"),
    "blip_vocab": ("CAPTION_CLASSES", "COLOURS", "SCENE_WORDS", "SHAPES", "scene_tokenizer"),
    "hf_blip": ("HFBlipVisionAdapter", "is_hf_blip", "resize_position_embeddings"),
    "hf_vit": ("HFViTAdapter", "HFVisionAdapter", "is_hf_vit"),
    "blip_text": ("IGNORE_INDEX", "SPECIAL_TOKENS", "TASK_KINDS", "TextSpec", "VLCollator",
                  "closed_tokenizer", "encode", "load_tokenizer", "pre_caption", "pre_question",
                  "primary_target"),
    "timm_vit": ("MASK_TOKEN", "TimmAttentionAccess", "TimmViTAdapter"),
    "presets": ("PRESETS", "create_model", "list_presets", "model_normalization"),
    "loading": ("DEFAULT_BACKBONE", "HEAD_STREAM", "fresh_head", "load_backbone", "load_weights",
                "read_checkpoint"),
    "adapters": ("attention_access", "get_adapter", "register_adapter", "resolve_normalization"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
