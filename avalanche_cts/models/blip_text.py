"""Text inputs of BLIP models: tokenizers, the special-token conventions and the collated batch.

* :func:`closed_tokenizer` builds a ``BertTokenizer`` from a word list (a generated vocab file,
  no download) with BLIP's special tokens; :func:`load_tokenizer` reads a checkpoint's.
* :class:`TextSpec` holds the ids BLIP's text side uses (pad, ``[CLS]``, ``[SEP]``, the
  decoder's BOS ``[DEC]``) and the caption prompt, taken from a tokenizer.
* :func:`encode` tokenises without special tokens and refuses unknown words (a word missing
  from the vocabulary would silently become ``[UNK]`` and make a task unlearnable).
* :func:`pre_question` / :func:`pre_caption`: BLIP's text clean-up (lower case, ``.!"()*#:;~``
  removed, spaces collapsed, at most 50 words).
* :class:`VLCollator`: image-text items (dicts, see :mod:`avalanche_cts.benchmarks.vl.data`)
  or memory records to BLIP's tensors, with the conventions ``generate`` uses: questions
  ``[CLS] q [SEP]``; decoder inputs ``[DEC] answer [SEP]`` (VQA) or ``[DEC] prompt caption
  [SEP]`` (captioning); labels equal to the decoder inputs with padding (and the caption
  prompt) set to -100 (the decoder shifts them itself).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .._files import write_text
from ..cache import cache_folder

__all__ = [
    "IGNORE_INDEX",
    "SPECIAL_TOKENS",
    "TASK_KINDS",
    "TextSpec",
    "VLCollator",
    "closed_tokenizer",
    "encode",
    "load_tokenizer",
    "pre_caption",
    "pre_question",
    "primary_target",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
"""Special tokens of a closed vocabulary, ids 0-5 (``[DEC]``: BLIP's decoder BOS)."""


def closed_tokenizer(words: Sequence[str], folder: Optional[Union[str, Path]] = None):
    """A ``BertTokenizer`` over ``SPECIAL_TOKENS + words`` (lower case), ``[DEC]`` as BOS.

    The vocab file is written under ``folder`` (default: ``$AVALANCHE_CTS_CACHE/vocab``), named
    after its content, so equal word lists share one file.
    """
    from transformers import BertTokenizer

    words = list(dict.fromkeys(w.lower() for w in words))
    clash = [w for w in words if w.upper() in SPECIAL_TOKENS
             or not re.fullmatch(r"[a-z0-9]+|[^\w\s]", w)]
    if clash:
        raise ValueError(f"vocabulary entries must be words of lower-case letters and digits or "
                         f"single punctuation marks, got {clash}")
    text = "\n".join(SPECIAL_TOKENS + tuple(words)) + "\n"
    if folder is None:
        folder = cache_folder("vocab")
    path = Path(folder) / f"vocab-{hashlib.sha1(text.encode()).hexdigest()[:12]}.txt"
    if not path.is_file():
        write_text(path, text)
    return BertTokenizer(str(path), do_lower_case=True, bos_token="[DEC]")


def load_tokenizer(source: Union[str, Path]):
    """The tokenizer of a BLIP checkpoint (a local folder or a Hugging Face name), with
    ``[DEC]`` registered as BOS (so decoding with ``skip_special_tokens`` drops it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source))
    if tok.bos_token is None and "[DEC]" in tok.get_vocab():
        tok.add_special_tokens({"bos_token": "[DEC]"})
    return tok


@dataclass(frozen=True)
class TextSpec:
    """Token ids of BLIP's conventions.

    :ivar pad: padding id. :ivar cls: ``[CLS]``, first token of a question.
    :ivar sep: ``[SEP]``, end of every sequence (generation stops there).
    :ivar bos: ``[DEC]``, first decoder token (what ``generate`` starts from).
    :ivar prompt: content ids of the caption prompt (``"a picture of"``; empty for VQA).
    :ivar vocab_size: ids are in ``[0, vocab_size)``.
    """

    pad: int
    cls: int
    sep: int
    bos: int
    prompt: Tuple[int, ...] = ()
    vocab_size: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer, prompt: str = "") -> "TextSpec":
        ids = [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
               tokenizer.bos_token_id]
        if any(i is None for i in ids):
            raise ValueError("the tokenizer needs [PAD], [CLS], [SEP] and a BOS token ([DEC])")
        p = tuple(encode(tokenizer, prompt, "caption prompt").tolist()) if prompt else ()
        return cls(*ids, prompt=p, vocab_size=len(tokenizer))


def encode(tokenizer, text: str, what: str = "text") -> Tensor:
    """Content token ids ``(L,)`` int64 of ``text`` (no special tokens).

    :raises ValueError: when a word maps to ``[UNK]`` (naming it and the fix).
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        words = [w for w in text.split() if unk in tokenizer(w, add_special_tokens=False)["input_ids"]]
        raise ValueError(
            f"{what} {text!r}: {words or 'a word'} is not in the tokenizer's vocabulary and would "
            f"become [UNK]; add the word to the vocabulary (closed_tokenizer(words)) or use a "
            f"tokenizer that has it"
        )
    return torch.tensor(ids, dtype=torch.long)


_PUNCT = re.compile(r"([.!\"()*#:;~])")


def pre_question(text: str, max_words: int = 50) -> str:
    """BLIP's question clean-up: lower case, ``.!"()*#:;~`` removed, at most ``max_words``
    words."""
    return " ".join(_PUNCT.sub("", text.lower()).split()[:max_words])


def pre_caption(text: str, max_words: int = 50) -> str:
    """BLIP's caption clean-up: lower case, ``.!"()*#:;~`` replaced by spaces, spaces collapsed,
    at most ``max_words`` words."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split()[:max_words])


IGNORE_INDEX = -100
TASK_KINDS = ("vqa", "caption")


def _pad(rows: Sequence[Tensor], value: int) -> Tensor:
    """``(B, L)`` int64 of 1-D rows padded on the right with ``value``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class VLCollator:
    """Collate function of :class:`ImageTextDataset` items into a BLIP batch.

    Batch keys: ``pixel_values`` ``(B, C, H, W)``; VQA also ``input_ids`` and
    ``attention_mask`` ``(B, Lq)``; ``decoder_input_ids``, ``decoder_attention_mask``,
    ``labels`` ``(N, La)`` for N targets; ``target_owner`` ``(N,)`` (the item each target
    belongs to); ``target_weights`` ``(N,)``; ``task_labels`` ``(B,)``; ``references``
    (lists of strings).

    Training targets: ``vqa`` uses every answer of an item with its weight (BLIP's weighted
    answer loss); ``caption`` draws one reference per item (torch's global RNG, like a random
    augmentation) with weight 1.

    :param spec: the tokenizer's ids and the caption prompt (:class:`TextSpec`).
    :param kind: ``"vqa"`` or ``"caption"``.
    :param max_length: longest decoder sequence in tokens (longer targets are cut, keeping
        ``[SEP]``).
    """

    def __init__(self, spec: TextSpec, kind: str, max_length: int = 40):
        if kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
        if kind == "vqa" and spec.prompt:
            raise ValueError("VQA has no caption prompt: build the TextSpec without one")
        self.spec, self.kind, self.max_length = spec, kind, int(max_length)

    def state(self) -> Dict:
        """JSON-able settings (saved with a memory that holds text)."""
        return dict(spec=asdict(self.spec), kind=self.kind, max_length=self.max_length)

    @classmethod
    def from_state(cls, state: Dict) -> "VLCollator":
        spec = dict(state["spec"], prompt=tuple(state["spec"]["prompt"]))
        return cls(TextSpec(**spec), state["kind"], state["max_length"])

    def text_batch(self, questions: Sequence[Tensor], targets: Sequence[Sequence[Tensor]],
                   weights: Sequence[Tensor]) -> Dict[str, Tensor]:
        """Model tensors from content ids: ``questions[i]`` ``(Lq,)``, ``targets[i]`` a list of
        ``(L,)`` and ``weights[i]`` ``(A_i,)``, all targets used (see :meth:`__call__`)."""
        s = self.spec
        out: Dict[str, Tensor] = {}
        if self.kind == "vqa":
            q = [torch.cat([torch.tensor([s.cls]), t.long(), torch.tensor([s.sep])]) for t in questions]
            out["input_ids"] = _pad(q, s.pad)
            out["attention_mask"] = (_pad([torch.ones(len(r), dtype=torch.long) for r in q], 0))
        prompt = torch.tensor(s.prompt, dtype=torch.long)
        dec, owner, w = [], [], []
        for i, (ts, ws) in enumerate(zip(targets, weights)):
            for t, wt in zip(ts, ws.tolist()):
                body = torch.cat([prompt, t.long()])[: self.max_length - 2]
                dec.append(torch.cat([torch.tensor([s.bos]), body, torch.tensor([s.sep])]))
                owner.append(i)
                w.append(wt)
        ids = _pad(dec, s.pad)
        mask = _pad([torch.ones(len(r), dtype=torch.long) for r in dec], 0)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, 1:1 + len(prompt)] = IGNORE_INDEX
        out.update(decoder_input_ids=ids, decoder_attention_mask=mask, labels=labels,
                   target_owner=torch.tensor(owner, dtype=torch.long),
                   target_weights=torch.tensor(w, dtype=torch.float32))
        return out

    def __call__(self, items: List[Dict]) -> Dict:
        questions = [it["question"] for it in items]
        if self.kind == "vqa":
            targets = [it["targets"] for it in items]
            weights = [it["target_weights"] for it in items]
        else:
            pick = [int(torch.randint(len(it["targets"]), ())) for it in items]
            targets = [[it["targets"][k]] for it, k in zip(items, pick)]
            weights = [torch.ones(1)] * len(items)
        batch = self.text_batch(questions, targets, weights)
        batch.update(pixel_values=torch.stack([it["pixel_values"] for it in items]),
                     task_labels=torch.tensor([it["task"] for it in items], dtype=torch.long),
                     references=[it["references"] for it in items])
        return batch


def primary_target(item: Dict) -> Tensor:
    """The target a memory record keeps: the highest-weight answer (first on ties) or the
    first reference caption."""
    return item["targets"][int(torch.argmax(item["target_weights"]))]
