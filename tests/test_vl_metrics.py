"""VQA answer normalisation and accuracy, BLEU-4 and ROUGE-L against hand-computed values."""
import math

import pytest

from avalanche_cts.evaluation.metrics import (
    bleu4,
    caption_scores,
    label_answer,
    rouge_l,
    vqa_exact_match,
    vqa_soft_accuracy,
)
from avalanche_cts.evaluation.answers import normalize_answer, process_punctuation
from avalanche_cts.models.blip_text import pre_caption, pre_question


@pytest.mark.parametrize("raw, normalised", [
    ("Two", "2"),
    ("the dog.", "dog"),
    ("A red, blue ball", "red blue ball"),
    ("1,000", "1000"),
    ("3.5", "3.5"),
    ("dont", "don\u2019t"),
    ("  yes\n", "yes"),
    ("none", "0"),
])
def test_official_answer_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_punctuation_rule_depends_on_spacing():
    assert process_punctuation("black/white") == "black white"  # glued: replaced by a space
    assert process_punctuation("black / white") == "black  white"  # spaced: deleted


def test_blip_text_cleanup():
    assert pre_question("What colour is the cube?!") == "what colour is the cube?"
    assert pre_caption("A man (smiling);  riding a horse.") == "a man smiling riding a horse"


def test_exact_match_uses_the_most_frequent_answer_after_normalisation():
    answers = [["two", "2", "2"], ["dog"], ["cat", "dog", "dog"]]
    assert label_answer(answers[0]) == "2"
    assert vqa_exact_match(["Two", "the dog", "cat"], answers) == pytest.approx(2 / 3)


def test_soft_accuracy_worked_example():
    # ten answers: two say "2", eight say "3". Predicting "2": leaving out one of the "2"s
    # leaves 1 match (1/3), leaving out a "3" leaves 2 matches (2/3): (2/3 + 16/3) / 10 = 0.6
    answers = ["2"] * 2 + ["3"] * 8
    assert vqa_soft_accuracy(["2"], [answers]) == pytest.approx(0.6)
    assert vqa_soft_accuracy(["two"], [answers]) == pytest.approx(0.6)  # prediction normalised
    assert vqa_soft_accuracy(["3"], [answers]) == pytest.approx(1.0)  # >= 3 matches everywhere
    assert vqa_soft_accuracy(["4"], [answers]) == 0.0
    assert vqa_soft_accuracy(["2"], [["2"]]) is None  # defined for ten answers only


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
