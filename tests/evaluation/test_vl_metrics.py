"""VQA accuracy against a reference written here from the official evaluation's rules (the
2016 ``vqaEval.py`` that LAVIS uses), BLEU-4 and ROUGE-L by hand and against pycocoevalcap's
own COCO pipeline (PTB tokenizer via Java), the pure-Python PTB fallback against token lists
derived from the PTB rules."""
import math
import shutil

import pytest

from avalanche_cts.evaluation import captions
from avalanche_cts.evaluation.answers import (
    CONTRACTIONS,
    normalize_answer,
    process_punctuation,
    vqa_accuracy,
)
from avalanche_cts.evaluation.captions import PTB_JAVA, PTB_PYTHON, ptb_tokenize_python
from avalanche_cts.evaluation.metrics import (
    bleu4,
    caption_scores,
    label_answer,
    rouge_l,
    vqa_exact_match,
    vqa_soft_accuracy,
)
from avalanche_cts.models.blip_text import pre_caption, pre_question

needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="java is not installed: the COCO PTB tokenizer needs it")

# ---- reference VQA evaluation, from the rules of the official 2016-10 vqaEval.py --------------
OFFICIAL_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
MARKS = ';/[]"{}()=+\\_-><@`,?!'


def ref_punctuation(text):
    """Marks next to a space (or any text with a digit-comma-digit) are deleted, otherwise
    replaced by a space; periods not followed by a digit are deleted (32 at most)."""
    number_comma = any(a.isdigit() and b == "," and c.isdigit()
                       for a, b, c in zip(text, text[1:], text[2:]))
    out = text
    for mark in MARKS:
        spaced = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if spaced or number_comma else " ")
    chars, removed = [], 0
    for i, ch in enumerate(out):
        nxt = out[i + 1] if i + 1 < len(out) else ""
        if ch == "." and not nxt.isdigit() and removed < 32:
            removed += 1
            continue
        chars.append(ch)
    return "".join(chars)


def ref_digits_articles(text):
    numbers = dict(none="0", zero="0", one="1", two="2", three="3", four="4", five="5",
                   six="6", seven="7", eight="8", nine="9", ten="10")
    words = [numbers.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ("a", "an", "the")]
    return " ".join(OFFICIAL_CONTRACTIONS.get(w, w) for w in words)


def ref_accuracy(prediction, answers):
    """The official loop: normalise the prediction; punctuation-process the answers only when
    they disagree; mean over leave-one-out of min(1, matches / 3)."""
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    pred = ref_digits_articles(ref_punctuation(pred))
    gts = [ref_punctuation(a) for a in answers] if len(set(answers)) > 1 else list(answers)
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        accs.append(min(1.0, sum(o == pred for o in others) / 3))
    return sum(accs) / len(accs)


# prediction, ten human answers, official accuracy worked out by hand from the rules
HELD_OUT = [
    ("yes!", ["yes"] * 10, 1.0),                                    # '!' is punctuation
    ("dont", ["don't"] * 10, 1.0),                                  # contraction, ASCII apostrophe
    ("cant", ["can't"] * 10, 1.0),
    ("t-shirt", ["t shirt"] * 5 + ["shirt"] * 5, 1.0),              # glued hyphen -> space
    ("10:30", ["10:30"] * 10, 1.0),                                 # ':' is not punctuation
    ("men's", ["men's"] * 10, 1.0),                                 # "'" is not punctuation
    ("somethingd", ["something'd"] * 10, 1.0),
    ("Two", ["2"] * 10, 1.0),                                       # number word, case
    ("two", ["two"] * 10, 0.0),                                     # agreeing answers stay raw
    ("the dog", ["dog"] * 10, 1.0),                                 # article
    ("a dog", ["dog"] * 3 + ["cat"] * 7, 0.9),                      # 3 humans agree
    ("red", ["red"] + ["blue"] * 9, 0.3),                           # 1 human agrees
    ("two", ["2"] * 2 + ["3"] * 8, 0.6),                            # 2 humans agree
    ("blue", ["blue"] * 4 + ["red"] * 6, 1.0),                      # 4 humans agree
    ("1,000", ["1000"] * 5 + ["1,000"] * 5, 1.0),                   # comma inside a number
    ("black/white", ["black and white"] * 5 + ["black white"] * 5, 1.0),
    ("black / white", ["black white"] * 10, 1.0),                   # spaced mark deleted
    ("10:30", ["10:30"] * 3 + ["10 30"] * 7, 0.9),
    ("dog's", ["dog's"] * 2 + ["dogs"] * 8, 0.6),                   # possessive, 2 agree
    ("yes.", ["yes"] * 10, 1.0),                                    # final period
    ("3.5", ["3.5"] * 10, 1.0),                                     # decimal point kept
    ("im", ["i'm"] * 10, 0.0),                                      # key "Im" never matches
    ("yes", ["yes!"] * 10, 0.0),                                    # agreeing answers stay raw
    ("  Yes\n", ["yes"] * 10, 1.0),                                 # whitespace, case
    ("red, white", ["red white"] * 5 + ["red, white"] * 5, 1.0),
    ("{yes}", ["yes"] * 10, 1.0),                                   # braces are punctuation
    ("couldnt've", ["couldn't've"] * 10, 1.0),
    ("the three", ["3"] * 10, 1.0),
    ("none", ["0"] * 10, 1.0),
    ("dogs'", ["dogs"] * 10, 0.0),                                  # apostrophe kept
    ("t - shirt", ["t shirt"] * 10, 1.0),
    ("skate board", ["skate-board"] * 2 + ["skateboard"] * 8, 0.6),
]


def test_contraction_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS == OFFICIAL_CONTRACTIONS


@pytest.mark.parametrize("prediction, answers, expected", HELD_OUT)
def test_official_vqa_accuracy_on_held_out_cases(prediction, answers, expected):
    assert ref_accuracy(prediction, answers) == pytest.approx(expected)
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_soft_accuracy_is_the_mean_over_questions_with_several_answers():
    preds = [p for p, _, _ in HELD_OUT] + ["2"]
    answers = [a for _, a, _ in HELD_OUT] + [["2"]]  # one answer: left out
    expected = sum(e for _, _, e in HELD_OUT) / len(HELD_OUT)
    assert vqa_soft_accuracy(preds, answers) == pytest.approx(expected)
    assert vqa_soft_accuracy(["2"], [["2"]]) is None
    with pytest.raises(ValueError, match="at least two"):
        vqa_accuracy("2", ["2"])


@pytest.mark.parametrize("raw, normalised", [
    ("Two", "2"), ("the dog.", "dog"), ("A red, blue ball", "red blue ball"), ("1,000", "1000"),
    ("3.5", "3.5"), ("dont", "don't"), ("  yes\n", "yes"), ("none", "0"), ("t-shirt", "t shirt"),
    ("10:30", "10:30"), ("men's", "men's"), ("yes!", "yes"),
])
def test_official_answer_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised
    assert ref_digits_articles(ref_punctuation(raw.strip())) == normalised


def test_punctuation_rule_depends_on_spacing_and_numbers():
    assert process_punctuation("black/white") == "black white"  # glued: replaced by a space
    assert process_punctuation("black / white") == "black  white"  # spaced: deleted
    assert process_punctuation("1,000 a/b") == "1000 ab"  # a number comma: every mark deleted
    # the official call passes re.UNICODE (32) as the count: at most 32 periods go
    assert process_punctuation("." * 40) == "." * 8 == ref_punctuation("." * 40)


def test_exact_match_label_is_the_most_frequent_normalised_answer():
    answers = ["two"] * 3 + ["2"] * 3 + ["3"] * 4  # raw: "3" leads; normalised: "2" has 6
    assert label_answer(answers) == "2"
    assert vqa_exact_match(["Two", "3"], [answers, answers]) == 0.5
    assert vqa_exact_match(["the dog", "cat"], [["dog"], ["cat", "dog", "dog"]]) == 0.5


def test_blip_text_cleanup():
    assert pre_question("What colour is the cube?!") == "what colour is the cube?"
    assert pre_caption("A man (smiling);  riding a horse.") == "a man smiling riding a horse"


# ---- captions -------------------------------------------------------------------------------
def test_bleu4_by_hand():
    cand = "the cat sat on the mat"
    # vs "the cat sat on a mat": clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; same length
    geo = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu4([cand], [["the cat sat on a mat"]]) == pytest.approx(geo, abs=1e-6)
    # closest reference 7 words > 6: brevity penalty exp(1 - 7/6)
    assert bleu4([cand], [["the cat sat on a mat today"]]) == pytest.approx(
        geo * math.exp(1 - 7 / 6), abs=1e-6)
    assert bleu4(["The cat sat on a mat."], [["the cat sat on a mat"]]) == pytest.approx(1.0)


def test_rouge_l_by_hand():
    cand = "the cat sat on the mat"
    # LCS with "the cat sat on a mat" is 5: P = R = 5/6, F = 5/6
    assert rouge_l([cand], [["the cat sat on a mat"]]) == pytest.approx(5 / 6)
    # best precision 5/6 (first reference) and best recall 1 (second, "the cat"): beta 1.2
    p, r, b2 = 5 / 6, 1.0, 1.2 ** 2
    expected = (1 + b2) * p * r / (r + b2 * p)
    assert rouge_l([cand], [["the cat sat on a mat", "the cat"]]) == pytest.approx(expected)
    scores = caption_scores([cand, cand], [["the cat sat on a mat"], ["the cat sat on a mat"]])
    assert scores["rougeL"] == pytest.approx(5 / 6)


# token lists derived by hand from the PTB rules: punctuation split off and dropped, clitics
# split, brackets as -lrb- ..., numbers and abbreviations kept whole
PTB_CASES = [
    ("A man, riding a horse.", "a man riding a horse"),
    ("a dog's bone", "a dog 's bone"),
    ("the dogs' bones", "the dogs bones"),
    ("I don't know, it can't be: cannot", "i do n't know it ca n't be can not"),
    ("a t-shirt and/or a hat?", "a t-shirt and/or a hat"),
    ("Is it 10:30?", "is it 10:30"),
    ("a man (smiling) riding [fast]", "a man -lrb- smiling -rrb- riding -lsb- fast -rsb-"),
    ('"quoted" and \'single\' text', "quoted and single text"),
    ("1,000 people at 3.5 km", "1,000 people at 3.5 km"),
    ("wait... what?! no!!!", "wait what ?! no !!!"),
    ("pizza & beer; salad: yes - no -- maybe", "pizza & beer salad yes no maybe"),
    ("Mr. Smith at St. Louis etc.", "mr. smith at st. louis etc."),
    ("the U.S. flag.", "the u.s. flag"),
    ("$5 for 50% off", "$ 5 for 50 % off"),
    ("a / b /c", "a / b / c"),
    ("plan x. The end", "plan x the end"),
    ("no. 5 and no. way", "no. 5 and no way"),
    ("the dog\u2019s \u201cball\u201d", "the dog 's ball"),
    ("it's a kids' toy, isn't it?", "it 's a kids toy is n't it"),
    ("a 2-year-old boy's well-worn shirt.", "a 2-year-old boy 's well-worn shirt"),
    ("", ""),
]


@pytest.mark.parametrize("caption, tokens", PTB_CASES)
def test_python_ptb_fallback_follows_the_ptb_rules(caption, tokens):
    assert ptb_tokenize_python([caption]) == [tokens]


@needs_java
def test_python_ptb_fallback_equals_the_java_tokenizer():
    lines = [c for c, _ in PTB_CASES] + [
        "Two dogs, a cat's bowl; and (maybe) a bird's nest?", "A DOG'S LIFE!",
        "A black-and-white photo of a man's hat/scarf...", "they're here -- we'll see.",
    ]
    assert ptb_tokenize_python(lines) == list(captions.ptb_tokenize_java(tuple(lines)))


# caption sets where COCO's tokenisation matters: predictions as BLIP writes them, references
# as people do
CAPTION_SETS = {
    "commas": (["a man riding a horse at the beach", "a dog on a couch next to a cat"],
               [["A man, riding a horse, on a beach.", "A man on a horse, at the beach."],
                ["A dog, sitting on a couch, next to a cat.", "Dog and cat, on a couch."]]),
    "possessives": (["a man's hat on the dog's head", "a woman's bag on a table"],
                    [["A man's hat on a dog's head.", "The dog's head wears a man's hat."],
                     ["The woman's bag is on the table.", "A woman's handbag on a table."]]),
    "hyphens": (["a black and white photo of a double decker bus", "a man in a t-shirt outside"],
                [["A black-and-white photo of a double-decker bus.", "A double-decker - bus."],
                 ["A man in a t-shirt.", "A man wearing a t-shirt -- outside."]]),
    "slashes": (["a red and white sign on a post", "a black/white cat on a mat"],
                [["A red/white sign on a pole / post.", "Red and white sign / pole."],
                 ["A black/white cat.", "A cat, black / white, on a mat."]]),
    "questions": (["is that a cat on the bed", "what a big brown dog"],
                  [["Is that a cat on the bed?", "A cat on the bed?"],
                   ["What a big dog!", "What a big dog?! Brown?"]]),
}
# (BLEU-4, ROUGE-L) of each set by pycocoevalcap 1.2's own pipeline (coco_pipeline, Java)
COCO_SCORES = {
    "commas": (0.8208222466117706, 0.9067307692307693),
    "hyphens": (0.4114010209877148, 0.765906072678981),
    "possessives": (0.6434588840695094, 0.873015873015873),
    "questions": (0.7952707286726124, 0.9535315985130111),
    "slashes": (0.4033603928107645, 0.7865892972275951),
}


def coco_pipeline(predictions, references):
    """pycocoevalcap's own steps: PTBTokenizer on gts and res, then Bleu(4) and Rouge()."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(references)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(predictions)})
    return Bleu(4).compute_score(gts, res, verbose=0)[0][3], Rouge().compute_score(gts, res)[0]


@needs_java
@pytest.mark.parametrize("name", sorted(CAPTION_SETS))
def test_caption_scores_equal_the_coco_pipeline(name):
    predictions, references = CAPTION_SETS[name]
    bleu, rouge = coco_pipeline(predictions, references)
    assert (bleu, rouge) == pytest.approx(COCO_SCORES[name], abs=1e-12)
    scores = caption_scores(predictions, references)
    assert scores["tokenizer"] == PTB_JAVA
    assert scores["bleu4"] == pytest.approx(bleu, abs=1e-12)
    assert scores["rougeL"] == pytest.approx(rouge, abs=1e-12)
    assert bleu4(predictions, references) == pytest.approx(bleu, abs=1e-12)
    assert rouge_l(predictions, references) == pytest.approx(rouge, abs=1e-12)


@pytest.mark.parametrize("name", sorted(CAPTION_SETS))
def test_without_java_the_named_fallback_gives_the_coco_scores(name, monkeypatch):
    monkeypatch.setattr(captions.shutil, "which", lambda _: None)
    scores = caption_scores(*CAPTION_SETS[name])
    assert scores["tokenizer"] == PTB_PYTHON
    assert (scores["bleu4"], scores["rougeL"]) == pytest.approx(COCO_SCORES[name], abs=1e-12)


def test_a_failing_java_tokenizer_is_reported(monkeypatch):
    from pycocoevalcap.tokenizer import ptbtokenizer

    monkeypatch.setattr(ptbtokenizer.PTBTokenizer, "tokenize", lambda self, caps: {})
    with pytest.raises(RuntimeError, match="returned 0 of 1 captions"):
        captions.ptb_tokenize_java(("a caption no other test tokenises",))
