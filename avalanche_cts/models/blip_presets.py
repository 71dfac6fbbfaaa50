"""BLIP models by name: tiny presets built from configs, and the paper's checkpoints.

``create_blip(name, ...)``:

* ``blip_vqa_tiny`` / ``blip_caption_tiny``: ``BlipForQuestionAnswering`` /
  ``BlipForConditionalGeneration`` for the generated 64 x 64 scenes (patch 8, T = 64; vision
  width 64, 4 layers; text width 64, 2 layers; about 0.3 M parameters) over the closed scene
  vocabulary, randomly initialised (``harness.pretrain_vl`` pretrains them);
* ``Salesforce/blip-vqa-base`` (480 px, the paper's VQA resolution: the 384 px position table is
  interpolated) and ``Salesforce/blip-image-captioning-base`` (384 px), through
  ``from_pretrained`` from a local folder (``checkpoint=``) or the Hugging Face hub.

Inputs are normalised with the BLIP processor's constants (OpenAI CLIP mean and std).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from torch import nn

from ..registry import Registry

__all__ = ["BLIP_PRESETS", "blip_tokenizer", "create_blip", "is_blip_name"]

_TINY_INIT = 0.08
"""Init std of the tiny presets (BLIP's is 0.02). At width 64, 0.02 leaves attention near
uniform for thousands of steps: measured on "what shape is the <colour> object" (two objects),
std 0.02 stays at 69% (naming a shape in the picture, no selection) after 500 steps where 0.08
reaches 92% (99.7% from a pretrained vision tower)."""
_TINY_VISION = dict(image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=128, initializer_range=_TINY_INIT)
_TINY_TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=48, initializer_range=_TINY_INIT)

BLIP_PRESETS: Registry = Registry("BLIP model", {
    "blip_vqa_tiny": dict(kind="vqa", vision=_TINY_VISION, text=_TINY_TEXT),
    "blip_caption_tiny": dict(kind="caption", vision=_TINY_VISION, text=_TINY_TEXT),
    "Salesforce/blip-vqa-base": dict(kind="vqa", image_size=480),
    "Salesforce/blip-image-captioning-base": dict(kind="caption", image_size=384),
})
"""Tiny presets (``vision``/``text`` config keywords) and checkpoints (``image_size``)."""


def is_blip_name(name: str) -> bool:
    """Whether ``name`` is a BLIP preset or checkpoint of :data:`BLIP_PRESETS`."""
    return name in BLIP_PRESETS


def list_blip() -> List[str]:
    return BLIP_PRESETS.names()


def blip_tokenizer(name: str, checkpoint: Optional[str] = None):
    """The tokenizer a BLIP model ``name`` reads: the scene vocabulary for tiny presets, the
    checkpoint's (local folder ``checkpoint`` or the hub name) otherwise."""
    _check(name)
    if "vision" in BLIP_PRESETS.load(name):
        from .blip_vocab import scene_tokenizer

        return scene_tokenizer()
    from .blip_text import load_tokenizer

    return load_tokenizer(checkpoint or name)


def _check(name: str) -> None:
    if name not in BLIP_PRESETS:
        raise ValueError(f"unknown BLIP model {name!r}; choose one of {list_blip()}")


def create_blip(name: str, *, checkpoint: Optional[str] = None, image_size: Optional[int] = None,
                label_smoothing: Optional[float] = None, **config) -> nn.Module:
    """Build BLIP model ``name`` (see the module docstring).

    :param checkpoint: a local folder of ``save_pretrained`` files (config, weights); for tiny
        presets it replaces the random initialisation, for checkpoint names the hub download.
    :param image_size: run resolution (default: the preset's); position embeddings are
        resampled to it (:func:`~.hf_blip.resize_position_embeddings`).
    :param label_smoothing: BLIP's ``text_config.label_smoothing`` of the training loss
        (default: the config's; official BLIP fine-tuning uses 0.1).
    :param config: tiny presets only: ``BlipConfig`` keywords (``vision_config``/
        ``text_config`` dicts are merged into the preset's).
    """
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipForQuestionAnswering

    from .hf_blip import resize_position_embeddings

    _check(name)
    preset = BLIP_PRESETS.load(name)
    cls = BlipForQuestionAnswering if preset["kind"] == "vqa" else BlipForConditionalGeneration
    if "vision" in preset and checkpoint is None:
        tok = blip_tokenizer(name)
        text = dict(preset["text"], vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                    bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                    eos_token_id=tok.sep_token_id, **config.pop("text_config", {}))
        vision = dict(preset["vision"], **config.pop("vision_config", {}))
        model = cls(BlipConfig(text_config=text, vision_config=vision, **config))
    else:
        if config:
            raise ValueError(f"config keywords {sorted(config)} apply to tiny presets only; "
                             f"{name} loads its own config")
        try:
            model = cls.from_pretrained(checkpoint or name)
        except OSError as e:
            raise FileNotFoundError(
                f"could not load {name} from {checkpoint or 'the Hugging Face hub'} ({e}). "
                f"Download it once (huggingface-cli download {name} --local-dir DIR) and pass "
                f"checkpoint=DIR (--checkpoint DIR); the folder needs config.json, the weights "
                f"(model.safetensors) and the tokenizer files (vocab.txt, tokenizer_config.json)"
            ) from None
    size = image_size or preset.get("image_size")
    if size:
        resize_position_embeddings(model, size)
    if label_smoothing is not None:
        model.config.text_config.label_smoothing = float(label_smoothing)
        model.text_decoder.label_smoothing = float(label_smoothing)
    return model
