"""The official VQA evaluation (GT-Vision-Lab ``vqaEval.py``), written anew.

We match the revision of 2016-10-08 ("fixed the apostrophe symbol issue"), the one LAVIS
(BLIP's successor code base) ships as ``lavis/common/vqa_tools/vqa_eval.py`` and most papers
report: ASCII apostrophes in the contraction table; ``:`` and ``'`` are not punctuation,
``- ! { }`` are.

* :func:`process_punctuation` and :func:`process_digit_article`: the two normalisation steps;
  :func:`normalize_answer`: both, after whitespace clean-up (what the prediction gets).
* :func:`vqa_accuracy`: the evaluation loop's score of one question, in its order of operations.
"""
from __future__ import annotations

import re
from typing import Dict, Sequence

__all__ = ["ARTICLES", "CONTRACTIONS", "NUMBER_WORDS", "PUNCTUATION", "normalize_answer",
           "process_digit_article", "process_punctuation", "vqa_accuracy"]

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
"""The marks :func:`process_punctuation` deletes or turns into spaces, in the official order."""
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}
NUMBER_WORDS["none"] = "0"
ARTICLES = ("a", "an", "the")

# expansion: the keys that map to it (the official table, all 120 keys). ``let's`` and ``she's``
# map to themselves, ``somebody'd`` to ``somebodyd``; the capitalised keys (``Im``, ``Ive``,
# ``Id've``, ``I'dve``) never match because words are lower-cased first, as in the original.
_TABLE = """
ain't: aint | aren't: arent | can't: cant | could've: couldve | couldn't: couldnt
couldn't've: couldn'tve couldnt've | didn't: didnt | doesn't: doesnt | don't: dont
hadn't: hadnt | hadn't've: hadnt've hadn'tve | hasn't: hasnt | haven't: havent | he'd: hed
he'd've: hed've he'dve | he's: hes | how'd: howd | how'll: howll | how's: hows
I'd've: Id've I'dve | I'm: Im | I've: Ive | isn't: isnt | it'd: itd | it'd've: itd've it'dve
it'll: itll | let's: let's | ma'am: maam | mightn't: mightnt | mightn't've: mightnt've mightn'tve
might've: mightve | mustn't: mustnt | must've: mustve | needn't: neednt | not've: notve
o'clock: oclock | oughtn't: oughtnt | 'ow's'at: ow's'at 'ows'at 'ow'sat | shan't: shant
she'd've: shed've she'dve | she's: she's | should've: shouldve | shouldn't: shouldnt
shouldn't've: shouldnt've shouldn'tve | somebodyd: somebody'd
somebody'd've: somebodyd've somebody'dve | somebody'll: somebodyll | somebody's: somebodys
someone'd: someoned | someone'd've: someoned've someone'dve | someone'll: someonell
someone's: someones | something'd: somethingd | something'd've: somethingd've something'dve
something'll: somethingll | that's: thats | there'd: thered | there'd've: thered've there'dve
there're: therere | there's: theres | they'd: theyd | they'd've: theyd've they'dve
they'll: theyll | they're: theyre | they've: theyve | 'twas: twas | wasn't: wasnt
we'd've: wed've we'dve | we've: weve | weren't: werent | what'll: whatll | what're: whatre
what's: whats | what've: whatve | when's: whens | where'd: whered | where's: wheres
where've: whereve | who'd: whod | who'd've: whod've who'dve | who'll: wholl | who's: whos
who've: whove | why'll: whyll | why're: whyre | why's: whys | won't: wont | would've: wouldve
wouldn't: wouldnt | wouldn't've: wouldnt've wouldn'tve | y'all: yall | y'all'll: yall'll y'allll
y'all'd've: yall'd've y'alld've y'all'dve | you'd: youd | you'd've: youd've you'dve
you'll: youll | you're: youre | you've: youve
"""


def _contractions(table: str) -> Dict[str, str]:
    out = {}
    for entry in table.replace("\n", " | ").split("|"):
        if entry.strip():
            expansion, keys = entry.split(": ")
            out.update({k: expansion.strip() for k in keys.split()})
    return out


CONTRACTIONS = _contractions(_TABLE)
"""Contraction key -> expansion, as in the official table."""

_NUMBER_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
# The official code calls ``periodStrip.sub("", text, re.UNICODE)``: the flag lands in the
# ``count`` argument, so at most 32 periods go.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str) -> str:
    """Each mark of :data:`PUNCTUATION` is deleted when ``text`` has it next to a space (or has
    a comma between digits anywhere), else replaced by a space; then periods not followed by
    a digit are deleted (``3.5`` stays, ``yes.`` -> ``yes``)."""
    out = text
    number_comma = _NUMBER_COMMA.search(text) is not None
    for p in PUNCTUATION:
        touches_space = p + " " in text or " " + p in text
        out = out.replace(p, "" if touches_space or number_comma else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """Lower case, number words to digits (``none`` -> ``0``), articles dropped, then
    contraction keys expanded (:data:`CONTRACTIONS`); words joined by single spaces."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _clean(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_answer(text: str) -> str:
    """An answer as the official evaluation normalises the prediction: tabs and newlines to
    spaces, stripped, :func:`process_punctuation`, :func:`process_digit_article`."""
    return process_digit_article(process_punctuation(_clean(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Official accuracy of one prediction against the human answers (VQA v2: ten).

    As the official loop does it: the prediction is always normalised
    (:func:`normalize_answer`); the answers are compared raw when they all agree, and only
    through :func:`process_punctuation` when they do not. The score is the mean over leaving
    each answer out of ``min(1, matches among the others / 3)``.
    """
    if len(answers) < 2:
        raise ValueError(f"the VQA accuracy needs at least two human answers, got {len(answers)}")
    pred = normalize_answer(prediction)
    gts = list(answers)
    if len(set(gts)) > 1:
        gts = [process_punctuation(a) for a in gts]
    hits = [g == pred for g in gts]
    total = sum(hits)
    return sum(min(1.0, (total - h) / 3) for h in hits) / len(gts)
