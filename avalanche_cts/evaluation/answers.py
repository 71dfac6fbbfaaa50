"""The official VQA answer normalisation (GT-Vision-Lab ``vqaEval.py``: punctuation, number
words to digits, articles dropped, contractions), written anew."""
from __future__ import annotations

import re

__all__ = ["normalize_answer", "process_punctuation"]

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
