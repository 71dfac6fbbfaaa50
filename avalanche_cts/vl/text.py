"""Text for BLIP: tokenizers, the special-token conventions, and the official text normalisers.

* :func:`closed_tokenizer` builds a ``BertTokenizer`` from a word list (a generated vocab file,
  no download) with BLIP's special tokens; :func:`load_tokenizer` reads a checkpoint's.
* :class:`TextSpec` holds the ids BLIP's text side uses (pad, ``[CLS]``, ``[SEP]``, the
  decoder's BOS ``[DEC]``) and the caption prompt, taken from a tokenizer.
* :func:`encode` tokenises without special tokens and refuses unknown words (a word missing
  from the vocabulary would silently become ``[UNK]`` and make a task unlearnable).
* :func:`pre_question` / :func:`pre_caption`: BLIP's text clean-up (lower case, ``.!"()*#:;~``
  removed, spaces collapsed, at most 50 words).
* :func:`normalize_answer`: the official VQA answer normalisation (GT-Vision-Lab ``vqaEval.py``:
  punctuation, number words to digits, articles dropped, contractions), written anew.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..cache import cache_root

__all__ = [
    "SPECIAL_TOKENS",
    "TextSpec",
    "closed_tokenizer",
    "encode",
    "load_tokenizer",
    "normalize_answer",
    "pre_caption",
    "pre_question",
    "process_punctuation",
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
        folder = cache_root() / "vocab"
    path = Path(folder) / f"vocab-{hashlib.sha1(text.encode()).hexdigest()[:12]}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{id(text)}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
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


# ------------------------------------------------------- official VQA normalisation
_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}
_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
_APOSTROPHE = "\u2019"
_CONTRACTED = (
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't didnt:didn't "
    "doesnt:doesn't dont:don't hadnt:hadn't hasnt:hasn't havent:haven't hed:he'd hes:he's "
    "howd:how'd howll:how'll hows:how's Im:I'm Ive:I've isnt:isn't itd:it'd itll:it'll "
    "maam:ma'am mightnt:mightn't mightve:might've mustnt:mustn't mustve:must've neednt:needn't "
    "notve:not've oclock:o'clock oughtnt:oughtn't shant:shan't shouldve:should've "
    "shouldnt:shouldn't somebodyll:somebody'll somebodys:somebody's someoned:someone'd "
    "someonell:someone'll someones:someone's somethingll:something'll thats:that's "
    "thered:there'd therere:there're theres:there's theyd:they'd theyll:they'll "
    "theyre:they're theyve:they've twas:'twas wasnt:wasn't weve:we've werent:weren't "
    "whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd "
    "wheres:where's whereve:where've whod:who'd wholl:who'll whos:who's whove:who've "
    "whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't "
    "yall:y'all youd:you'd youll:you'll youre:you're youve:you've"
)
_CONTRACTIONS = {}
for _pair in _CONTRACTED.split():
    _k, _v = _pair.split(":")
    # the official table writes most expansions with a typographic apostrophe
    keep = _k in ("weve", "wheres", "whove")
    _CONTRACTIONS[_k] = _v if keep else _v.replace("'", _APOSTROPHE)
_PUNCT_CHARS = [";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<",
                "@", "`", ",", "?"]
_COMMA_IN_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")


def process_punctuation(text: str) -> str:
    """The official rule: a punctuation mark next to a space (or any text with a comma inside
    a number) is deleted, otherwise replaced by a space; periods not between digits go."""
    out = text
    glued = _COMMA_IN_NUMBER.search(text) is not None
    for p in _PUNCT_CHARS:
        out = out.replace(p, "" if glued or (p + " " in text or " " + p in text) else " ")
    return _PERIOD.sub("", out)


def _digits_articles(text: str) -> str:
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as the official VQA evaluation compares it: whitespace cleaned, punctuation
    (:func:`process_punctuation`), lower case, number words to digits, articles dropped,
    contractions restored."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles(process_punctuation(text))
