"""Caption tokenisation as COCO caption evaluation does it, before BLEU and ROUGE-L.

COCO evaluation (pycocoevalcap, BLIP's ``coco_caption_eval``) passes predictions and references
through pycocoevalcap's ``PTBTokenizer``: Stanford CoreNLP 3.4.1's PTB tokenizer (Java, one
caption per line, lower-cased), which splits punctuation and clitics off words (``man ,``,
``dog 's``, ``do n't``), then drops the tokens in ``PUNCTUATIONS`` (quotes, ``. ? ! , : ; -
-- ...``). Brackets become ``-lrb-`` ``-rrb-`` and the like and stay, as in COCO.

* :func:`tokenize_captions`: that pipeline through Java when ``java`` is on the path
  (:data:`PTB_JAVA`), else :func:`ptb_tokenize_python` (:data:`PTB_PYTHON`); returns the name of
  the one used with the captions.
* :func:`ptb_tokenize_python`: a pure-Python fallback that reproduces the PTB tokenizer's output
  on punctuation, clitics, brackets, numbers and its abbreviation list. Known differences:
  URLs and e-mail addresses with punctuation, SGML tags, apostrophes inside a word other than
  a clitic (``y'all``, ``rock'n'roll``), and the Java lexer's look across lines (a caption
  ending in a single letter and a period, followed by one starting with ``The``).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator, List, Sequence, Tuple

__all__ = ["PTB_JAVA", "PTB_PYTHON", "caption_tokenizer", "ptb_tokenize_java",
           "ptb_tokenize_python", "tokenize_captions"]

PTB_JAVA = "PTB tokenizer (Stanford CoreNLP 3.4.1, Java)"
PTB_PYTHON = "PTB tokenizer, pure-Python fallback (no Java)"


def _dropped() -> frozenset:
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

    return frozenset(PUNCTUATIONS)


def caption_tokenizer() -> str:
    """The name of the tokenisation :func:`tokenize_captions` uses here."""
    return PTB_JAVA if shutil.which("java") else PTB_PYTHON


@contextmanager
def _stderr_to(file) -> Iterator[None]:
    """Send this process's (and its children's) standard error to ``file`` meanwhile: the Java
    tokenizer reports its speed there on every call."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@lru_cache(maxsize=32)
def ptb_tokenize_java(captions: Tuple[str, ...]) -> Tuple[str, ...]:
    """``captions`` through pycocoevalcap's ``PTBTokenizer`` in one call (needs ``java``)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with tempfile.TemporaryFile("w+") as err:
        try:
            with _stderr_to(err):
                out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
        except OSError as e:
            raise RuntimeError(f"pycocoevalcap's PTBTokenizer could not run ({e}); it needs "
                               f"`java` and writes a temporary file next to its jar") from None
        err.seek(0)
        if len(out) != len(captions):
            raise RuntimeError(f"the Java PTB tokenizer returned {len(out)} of {len(captions)} "
                               f"captions; its messages: {err.read().strip()[-500:]!r}")
    return tuple(out[i][0] for i in range(len(captions)))


def tokenize_captions(captions: Sequence[str]) -> Tuple[List[str], str]:
    """``(tokenised captions, tokenizer name)``: space-separated tokens as COCO evaluation
    feeds them to BLEU and ROUGE-L."""
    if caption_tokenizer() == PTB_JAVA:
        return list(ptb_tokenize_java(tuple(captions))), PTB_JAVA
    return ptb_tokenize_python(captions), PTB_PYTHON


# ---- the pure-Python fallback -------------------------------------------------------------
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# abbreviations that keep their period (the PTB lexer's lists, lower case) ...
_ABBREVIATIONS = frozenset((
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri "
    "ala ariz calif colo conn dak fla ga ind kan kans ky md mich minn mo mont neb nev okla penn "
    "tenn va vt wis wisc wyo inc co cos corp pty ptys ltd plc bancorp dept bhd assn univ intl "
    "sys ph tel est ext sq ft jr sr bros blvd rd esq etc al seq mr mrs ms dr drs prof profs "
    "sen sens rep reps atty attys lt col gen messrs gov govs adm rev maj sgt cpl pvt mt capt st "
    "ste ave pres lieut hon brig cmdr comdr pfc spc supt supts det vs alex wm jos cie cf treas "
    "invt elec natl mfg mtg").split())
# ... only when capitalised (they are also common words) ...
_CAPITALISED = frozenset("ark del ill la mass miss ore pa tex wash".split())
# ... only before a number
_BEFORE_NUMBER = frozenset("no nos prop".split())
# a single letter's period ends a sentence before these words (case-sensitive)
_SENTENCE_STARTS = frozenset((
    "About According Additionally After An A As At But Earlier He Her Here However If In It "
    "Last Many More Mr. Ms. Now Once One Other Our She Since So Some Such That The Then There "
    "These They This We When While What Yet You").split())
_ACRONYM = re.compile(r"[A-Za-z](\.[A-Za-z])*")
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                "wanna": ("wan", "na"), "lemme": ("lem", "me"), "gimme": ("gim", "me"),
                "'tis": ("'t", "is"), "'twas": ("'t", "was")}
# words that keep a leading apostrophe
_APOSTROPHE_WORDS = re.compile(r"'(em|cause|till?|n'?|[2-9]0s|\d\d|tis|twas|s|m|d|ll|re|ve)",
                               re.IGNORECASE)
_CLITIC = re.compile(r"^(.*[^'])(n't|'s|'m|'d|'ll|'re|'ve)$", re.IGNORECASE)
_SUBSTITUTIONS = [
    (re.compile("[\u2018\u2019\u201a\u201b]"), "'"),
    (re.compile("[\u201c\u201d\u201e\u201f\u00ab\u00bb]"), '"'),
    (re.compile(r"''|[\"`;]"), " "),                              # quotes, semicolons: dropped
    (re.compile(r"[()\[\]{}]"), lambda m: f" {m.group()} "),    # -lrb- etc. in _token
    (re.compile(r"(?<!\d)[,:]|[,:](?!\d)"), " "),                 # not inside a number
    (re.compile(r"(?<!\S)\.{2,}|-{2,}"), " "),                    # dashes, ellipses (see _token)
    (re.compile(r"(?<![A-Z])[&+](?![A-Z])|[=*^~|\\<>%]"), lambda m: f" {m.group()} "),
    (re.compile(r"[A-Z]*\$"), lambda m: f" {m.group()} "),
    (re.compile(r"#(?=\d)"), " # "),
    (re.compile(r"(?<![^\W_])[!?]+|[!?]+(?![^\W_])"), lambda m: f" {m.group()} "),
    (re.compile(r"(?<!\S)-+(?!\d)|-+(?!\S)"), " "),               # hyphens at a word's edge
    (re.compile(r"(?<![^\W_])/|/(?![^\W_])"), " / "),
    (re.compile(r"(?<!\S)\.(?!\d)"), " "),                      # a leading period
    (re.compile(r"(\d*[.:,]\d+)(?=[A-Za-z])"), r"\1 "),           # 12:00pm -> 12:00 pm
]


def _keeps_period(word: str, following: str) -> bool:
    """Whether ``word.`` keeps its period before the word ``following``."""
    low = word.lower()
    if len(word) == 1 and word.isalpha():
        return following not in _SENTENCE_STARTS
    return (_ACRONYM.fullmatch(word) is not None or low in _ABBREVIATIONS
            or (low in _CAPITALISED and word[:1].isupper())
            or (low in _BEFORE_NUMBER and following[:1].isdigit()))


def _token(tok: str, following: str) -> List[str]:
    """One whitespace-separated piece: quotes and periods peeled, clitics split."""
    while tok.startswith("'") and not _APOSTROPHE_WORDS.fullmatch(tok):
        tok = tok[1:]
    while True:
        if tok.endswith("'") and tok.lower() != "'n'":
            tok = tok[:-1]
        elif tok.endswith(".") and tok != ".":
            word = tok.rstrip(".")
            if not _keeps_period(word, following):
                tok = word
            elif tok != word + ".":
                tok = word + "."
            else:
                break
        else:
            break
    low = tok.lower()
    if low in _BRACKETS:
        return [_BRACKETS[low]]
    if low in _SPLIT_WORDS:
        return list(_SPLIT_WORDS[low])
    clitics = []
    while (m := _CLITIC.match(tok)) is not None:
        tok = m.group(1)
        clitics.insert(0, m.group(2))
    return [tok] + clitics


def _line(caption: str, dropped: frozenset) -> str:
    text = caption.replace("\n", " ")
    for pattern, repl in _SUBSTITUTIONS:
        text = pattern.sub(repl, text)
    pieces = text.split()
    tokens = [t for p, following in zip(pieces, pieces[1:] + [""]) for t in _token(p, following)]
    return " ".join(t.lower() for t in tokens if t and t.lower() not in dropped)


def ptb_tokenize_python(captions: Sequence[str]) -> List[str]:
    """``captions`` as pycocoevalcap's ``PTBTokenizer`` returns them (module docstring)."""
    dropped = _dropped()
    return [_line(c, dropped) for c in captions]
