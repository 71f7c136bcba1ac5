"""Imitation weights from the token-level Levenshtein alignment (algorithms/alignment.py)."""

from __future__ import annotations

from algorithms.alignment import edited_positions, imitation_weights


def test_identical_sequences_all_kept():
    ids = [5, 9, 9, 2, 7]
    assert imitation_weights(ids, ids) == [0.5] * 5
    assert edited_positions(ids, ids) == []


def test_correct_sample_all_kept_even_if_sequences_differ():
    assert imitation_weights([1, 2, 3], [1, 2, 3], correct=True) == [0.5, 0.5, 0.5]
    assert imitation_weights([1, 2], [4, 5, 6], correct=True) == [0.5, 0.5, 0.5]


def test_one_substitution_exactly_one_edited():
    y = [10, 11, 12, 13, 14, 15]
    y_hat = [10, 11, 99, 13, 14, 15]
    assert imitation_weights(y, y_hat) == [0.5, 0.5, 1.0, 0.5, 0.5, 0.5]


def test_insertion_marks_inserted_tokens():
    y = [1, 2, 3, 4]
    y_hat = [1, 2, 7, 8, 3, 4]
    assert imitation_weights(y, y_hat) == [0.5, 0.5, 1.0, 1.0, 0.5, 0.5]


def test_deletion_marks_nothing():
    y = [1, 2, 3, 4, 5]
    y_hat = [1, 2, 5]
    assert imitation_weights(y, y_hat) == [0.5, 0.5, 0.5]


def test_rewritten_tail_and_custom_weights():
    """A kept prefix, then a continuation that shares only its last token with the original."""
    y = [3, 3, 4, 8, 8, 8, 2]
    y_hat = [3, 3, 4, 6, 2]
    assert imitation_weights(y, y_hat, edited=2.0, kept=0.0) == [0.0, 0.0, 0.0, 2.0, 0.0]


def test_empty_sequences():
    assert imitation_weights([], []) == []
    assert imitation_weights([1, 2, 3], []) == []
    assert imitation_weights([], [4, 5]) == [1.0, 1.0]
