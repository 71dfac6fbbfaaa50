"""BLIP for VQA and captioning (``BlipForQuestionAnswering``, ``BlipForConditionalGeneration``):
losses, generation and token-level inputs for core tokenset replay.

:class:`BlipVLAdapter` extends the vision-tower adapter (:mod:`.hf_blip`) with the text side,
called on precomputed image states so that every path (full images, token dropout, stored token
records) shares one implementation:

* ``image_states``: the vision tower on full images, or on partial inputs while
  :meth:`~BlipVLAdapter.partial_inputs` is active (how a strategy's own forward sees token
  dropout); ``record_states`` on stored tokens (zero-filled, sparse or mask token);
* ``target_nll``: the teacher-forced negative log-likelihood of each answer or caption (summed
  over its tokens, optional label smoothing as BLIP's ``label_smoothing``), from batches made by
  :class:`~avalanche_cts.models.blip_text.VLCollator`; ``sample_losses`` weights and sums them per item
  (BLIP's weighted VQA answer loss);
* ``generate``: greedy or beam decoding from ``[DEC]`` (VQA, stops at ``[SEP]``) or from
  ``[DEC]`` + the caption prompt, on image states from full images or from a token set;
* scorer targets (:meth:`evidence`, :meth:`losses`): the log-likelihood of each sample's answer
  or caption, read out over all image tokens (the text side cross-attends to every one of them);
* selection features (:meth:`selection_features`): see its docstring.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tokens.patches import take_kept
from .hf_blip import HFBlipVisionAdapter, _vision_tower
from .partial import PartialInputs

__all__ = ["BlipVLAdapter", "is_blip_vl", "sequence_nll"]

_PARTIAL = "_cts_partial_inputs"
"""Model attribute holding the :class:`~.partial.PartialInputs` while
:meth:`BlipVLAdapter.partial_inputs` is active."""


def is_blip_vl(model: nn.Module) -> bool:
    """True for ``BlipForQuestionAnswering`` and ``BlipForConditionalGeneration``."""
    if _vision_tower(model) is None:
        return False
    from transformers import BlipForConditionalGeneration, BlipForQuestionAnswering

    return isinstance(model, (BlipForQuestionAnswering, BlipForConditionalGeneration))


def sequence_nll(logits: Tensor, labels: Tensor, smoothing: float = 0.0) -> Tensor:
    """``(N,)`` summed next-token cross-entropy of ``(N, L, V)`` decoder logits against
    ``(N, L)`` labels (-100 ignored), logits at t predicting label t + 1 (the decoder's shift)."""
    n = logits.shape[0]
    ce = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(),
                         ignore_index=-100, reduction="none", label_smoothing=smoothing)
    return ce.view(n, -1).sum(1)


class BlipVLAdapter(HFBlipVisionAdapter):
    """Token-level adapter of a BLIP VQA or captioning model (see the module docstring).

    :param model: ``BlipForQuestionAnswering`` (``kind = "vqa"``) or
        ``BlipForConditionalGeneration`` (``kind = "caption"``).
    :param image_size: input side (default: the vision config's).
    :param sketch_dim: width of the selection features' gradient factor for vocabularies
        larger than it (see :meth:`selection_features`).
    """

    sketch_dim = 512

    def __init__(self, model: nn.Module, image_size=None):
        if not is_blip_vl(model):
            raise TypeError(f"expected BlipForQuestionAnswering or BlipForConditionalGeneration, "
                            f"got {type(model).__name__}")
        super().__init__(model, image_size=image_size)
        from transformers import BlipForQuestionAnswering

        self.kind = "vqa" if isinstance(model, BlipForQuestionAnswering) else "caption"
        self.text_config = model.config.text_config

    # --------------------------------------------------------------- vision side
    def image_states(self, images: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """``(states (B, N, D), mask)`` of images, with the partial inputs of an active
        :meth:`partial_inputs` context (mask: see :meth:`record_states`)."""
        partial = getattr(self.model, _PARTIAL, None)
        if partial is None or not partial.applies(images):
            return self.tower(images)[0], None
        keep, mode = partial.keep, partial.mode
        if mode == "zero":
            return self.zero_states(images, keep), None
        values, positions, valid = take_kept(images, keep, self.patch_size)
        return self.record_states(values, positions, valid, mode)

    @contextlib.contextmanager
    def partial_inputs(self, keep: Tensor, mode: str, images: Tensor) -> Iterator[PartialInputs]:
        """Within the context, :meth:`image_states` (used by the VL template's forward) of
        ``images`` (that tensor, the batch ``keep`` was drawn for) keeps only the tokens of the
        ``(B, T)`` bool mask ``keep``, fed in replay ``mode``; other images stay whole."""
        partial = PartialInputs(images, keep, mode)
        setattr(self.model, _PARTIAL, partial)
        try:
            yield partial
        finally:
            delattr(self.model, _PARTIAL)

    # ----------------------------------------------------------------- text side
    @property
    def label_smoothing(self) -> float:
        """Label smoothing of the training loss (BLIP's ``text_config.label_smoothing``)."""
        return float(self.model.text_decoder.label_smoothing)

    def _question_states(self, states: Tensor, mask: Optional[Tensor], text: Dict) -> Tensor:
        enc_mask = mask if mask is not None else torch.ones(states.shape[:2], dtype=torch.long,
                                                            device=states.device)
        return self.model.text_encoder(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"],
            encoder_hidden_states=states, encoder_attention_mask=enc_mask).last_hidden_state

    def _context(self, states: Tensor, mask: Optional[Tensor], text: Dict
                 ) -> Tuple[Tensor, Tensor]:
        """What the decoder cross-attends to, per item: question states (VQA) or image states
        (captioning), with their attention mask."""
        if self.kind == "vqa":
            return self._question_states(states, mask, text), text["attention_mask"]
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        return states, mask

    def decoder_outputs(self, states: Tensor, mask: Optional[Tensor], text: Dict
                        ) -> Tuple[Tensor, Tensor]:
        """``(hidden (N, L, D), logits (N, L, V))`` of the decoder over the N targets of
        ``text``; ``hidden`` is the input of the LM head's last linear layer."""
        ctx, ctx_mask = self._context(states, mask, text)
        owner = text["target_owner"]
        dec = self.model.text_decoder
        out = dec.bert(input_ids=text["decoder_input_ids"],
                       attention_mask=text["decoder_attention_mask"],
                       encoder_hidden_states=ctx[owner], encoder_attention_mask=ctx_mask[owner],
                       is_decoder=True)
        hidden = dec.cls.predictions.transform(out.last_hidden_state)
        return hidden, dec.cls.predictions.decoder(hidden)

    def target_nll(self, states: Tensor, mask: Optional[Tensor], text: Dict,
                   smoothing: float = 0.0) -> Tensor:
        """``(N,)`` summed NLL of each target (answer or caption) given image states."""
        return sequence_nll(self.decoder_outputs(states, mask, text)[1], text["labels"], smoothing)

    def per_item(self, values: Tensor, text: Dict, batch_size: int) -> Tensor:
        """``(B,)`` weighted sums of per-target ``values`` ``(N,)`` over each item's targets."""
        w = text["target_weights"].to(values.dtype)
        out = values.new_zeros(batch_size)
        return out.index_add(0, text["target_owner"], w * values)

    def sample_losses(self, batch: Dict) -> Tensor:
        """``(B,)`` training loss of each item of a :class:`~avalanche_cts.models.blip_text.VLCollator`
        batch: the weighted target NLL with the model's label smoothing (token dropout applies
        inside :meth:`partial_inputs`)."""
        images = batch["pixel_values"]
        states, mask = self.image_states(images)
        nll = self.target_nll(states, mask, batch, self.label_smoothing)
        return self.per_item(nll, batch, images.shape[0])

    def record_loss(self, batch, values: Tensor, mode: str) -> Tensor:
        """``(B,)`` loss of memory records (:data:`avalanche_cts.memory.plugin.MemoryLoss`): their
        tokens in replay ``mode`` and the stored question and answer or caption."""
        states, mask = self.record_states(values, batch.positions, batch.valid, mode)
        nll = self.target_nll(states, mask, batch.text, self.label_smoothing)
        return self.per_item(nll, batch.text, values.shape[0])

    @torch.no_grad()
    def generate(self, states: Tensor, mask: Optional[Tensor], text: Dict, prompt: Sequence[int],
                 max_new_tokens: int = 20, num_beams: int = 1, min_new_tokens: int = 0) -> Tensor:
        """Token ids ``(B, L)`` generated after ``[DEC]`` (+ ``prompt`` for captions) from image
        states, stopping at ``[SEP]``; returned without ``[DEC]`` and the prompt."""
        cfg = self.text_config
        b = states.shape[0]
        owner = torch.arange(b, device=states.device)
        ctx, ctx_mask = self._context(states, mask, dict(text, target_owner=owner))
        start = torch.tensor([cfg.bos_token_id, *prompt], device=states.device).expand(b, -1)
        out = self.model.text_decoder.generate(
            input_ids=start, eos_token_id=cfg.sep_token_id, pad_token_id=cfg.pad_token_id,
            encoder_hidden_states=ctx, encoder_attention_mask=ctx_mask,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, num_beams=num_beams,
            do_sample=False)
        return out[:, start.shape[1]:]

    # ----------------------------------------------------------- scorer targets
    def _text(self, targets) -> Optional[Dict]:
        return targets if isinstance(targets, dict) else None

    def evidence(self, images: Tensor, targets) -> Tuple[Tensor, Optional[Tensor]]:
        """``(B,)`` log-likelihood of each sample's answer or caption (weighted over its
        targets) and the image states it read; without text targets the vision tower's
        pooled embedding is explained (as :class:`HFBlipVisionAdapter`)."""
        text = self._text(targets)
        if text is None:
            return super().evidence(images, targets)
        states, _ = self.tower(images)
        ll = -self.target_nll(states, None, text)
        return self.per_item(ll, text, images.shape[0]), states

    def losses(self, images: Tensor, targets) -> Tensor:
        text = self._text(targets)
        if text is None:
            return super().losses(images, targets)
        return -self.evidence(images, text)[0]

    def resolve_targets(self, images: Tensor, targets, mode: str):
        text = self._text(targets)
        if text is None:
            return super().resolve_targets(images, targets, mode)
        if mode != "label":
            raise ValueError("BLIP scorers explain each sample's own answer or caption: use "
                             "target='label'")
        return text

    def take_targets(self, targets, idx: Tensor):
        text = self._text(targets)
        if text is None:
            return super().take_targets(targets, idx)
        return _take_text(text, idx)

    def eval_scope(self) -> nn.Module:
        return self.model

    # ---------------------------------------------------------- selection features
    @torch.no_grad()
    def selection_features(self, batch: Dict) -> Tuple[Tensor, Tensor]:
        """Per item: a pooled image-text embedding ``(B, D)`` and the output factor ``(B, V)``
        of its LM-head gradient, for the sample selectors.

        For the decoder's last linear layer ``z_t = W h_t + b``, the gradient of a target's
        NLL is ``sum_t e_t (x) [h_t, 1]`` with ``e_t = softmax(z_t) - onehot(y_t)``. We keep the
        rank-one form the selectors' kernel uses: ``h`` = mean of ``h_t`` over the target
        tokens (the embedding, also used by herding) and ``e`` = mean of ``e_t``; exact for
        one-token answers, the mean-token approximation for longer ones. Targets are
        weighted per item as in the loss. For vocabularies larger than ``sketch_dim`` (BERT's
        30,524), ``e`` is compressed by a fixed count sketch (each token id added with a
        random sign into one of ``sketch_dim`` buckets, seed 0), which keeps inner products
        unbiased, so the selectors' kernels stay faithful at ``sketch_dim`` floats per sample.
        """
        images = batch["pixel_values"]
        states, mask = self.image_states(images)
        hidden, logits = self.decoder_outputs(states, mask, batch)
        labels = batch["labels"][:, 1:]
        hidden, logits = hidden[:, :-1].float(), logits[:, :-1].float()
        real = (labels != -100)
        err = logits.softmax(-1)
        err.scatter_add_(-1, labels.clamp_min(0)[..., None], -real[..., None].float())
        n = real.sum(1, keepdim=True).clamp_min(1)
        h = (hidden * real[..., None]).sum(1) / n
        e = (err * real[..., None]).sum(1) / n
        w = batch["target_weights"][:, None].float()
        b = images.shape[0]
        owner = batch["target_owner"]
        e = e.new_zeros(b, e.shape[1]).index_add(0, owner, w * e)
        return h.new_zeros(b, h.shape[1]).index_add(0, owner, w * h), self._sketch(e)

    def _sketch(self, e: Tensor) -> Tensor:
        """``(B, V)`` -> ``(B, sketch_dim)`` count sketch when ``V > sketch_dim``."""
        v = e.shape[1]
        if v <= self.sketch_dim:
            return e
        g = torch.Generator().manual_seed(0)
        bucket = torch.randint(self.sketch_dim, (v,), generator=g).to(e.device)
        sign = (torch.randint(2, (v,), generator=g) * 2 - 1).to(e)
        return e.new_zeros(e.shape[0], self.sketch_dim).index_add(1, bucket, e * sign)


def _take_text(text: Dict, idx: Tensor) -> Dict:
    """The rows of a text batch for items ``idx`` (in that order, repeats allowed)."""
    idx = idx.to(text["target_owner"].device)
    out = {}
    if "input_ids" in text:
        out.update(input_ids=text["input_ids"][idx], attention_mask=text["attention_mask"][idx])
    owner = text["target_owner"]
    rows, new_owner = [], []
    for j, i in enumerate(idx.tolist()):
        r = (owner == i).nonzero()[:, 0]
        rows.append(r)
        new_owner.append(torch.full_like(r, j))
    rows = torch.cat(rows)
    for k in ("decoder_input_ids", "decoder_attention_mask", "labels", "target_weights"):
        out[k] = text[k][rows]
    out["target_owner"] = torch.cat(new_owner)
    return out
