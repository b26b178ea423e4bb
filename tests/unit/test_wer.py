"""WER: Whisper-style normalisation on both sides, corpus rate = total errors / total words."""

from __future__ import annotations

import math

import pytest

from audiary.evaluation.wer import normalize, wer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IF THE READER WILL EXCUSE ME", "if the reader will excuse me"),
        ("Printing, then, for our purpose!", "printing then for our purpose"),
        ("of about fourteen fifty-five,", "of about 1455"),
        ("of about 1455", "of about 1455"),
        ("The colour, Mr. Smith?", "the color mister smith"),
        ("uh so this is um the sick corpus", "so this is the sick corpus"),
        ("I'm saying", "i am saying"),
        ("  spaced \t out \n text ", "spaced out text"),
    ],
)
def test_normalize_unifies_case_punctuation_numbers_and_spelling(text, expected):
    assert normalize(text) == expected


def test_reference_styles_do_not_count_as_errors():
    references = ["THE FIRST BOOKS WERE PRINTED IN 1455", "the first books were printed in 1455"]
    hypotheses = [
        "The first books were printed in fourteen fifty-five.",
        "The first books, printed in",
    ]
    result = wer(references, hypotheses)
    assert (result.errors, result.deletions, result.words) == (2, 2, 14)
    assert result.wer == pytest.approx(2 / 14)


def test_substitution_and_deletion():
    result = wer(["alpha beta gamma delta"], ["alpha omega gamma"])
    assert (result.substitutions, result.deletions, result.insertions) == (1, 1, 0)
    assert (result.errors, result.words, result.hits) == (2, 4, 2)
    assert result.wer == 0.5


def test_insertions_count_against_reference_words():
    result = wer(["alpha beta"], ["alpha beta gamma"])
    assert (result.insertions, result.errors, result.words) == (1, 1, 2)
    assert result.wer == 0.5


def test_corpus_rate_is_total_errors_over_total_words_not_a_mean_of_rates():
    result = wer(["alpha beta gamma delta", "epsilon zeta"], ["alpha beta gamma delta", "eta"])
    # Per pair: 0/4 and 2/2 (mean 0.5); over the corpus: 2/6.
    assert (result.errors, result.words) == (2, 6)
    assert result.wer == pytest.approx(1 / 3)


def test_empty_hypothesis_deletes_every_word():
    result = wer(["alpha beta gamma"], [""])
    assert (result.deletions, result.wer) == (3, 1.0)


def test_reference_that_normalises_to_nothing_counts_hypothesis_words_as_insertions():
    result = wer(["uh", "alpha beta"], ["alpha", "alpha beta"])
    assert (result.insertions, result.errors, result.words) == (1, 1, 2)
    assert result.wer == 0.5


def test_no_reference_words_at_all():
    assert wer([""], [""]).wer == 0.0
    assert math.isinf(wer([""], ["alpha"]).wer)


def test_one_hypothesis_per_reference():
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        wer(["alpha", "beta"], ["alpha"])
