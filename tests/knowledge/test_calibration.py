"""Tests for knowledge.calibration: threshold sweeps, the logistic fit and derivation."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bot.cli.common import OBJECTIVE_CHOICES
from bot.errors import KnowledgeError
from knowledge.base import KnowledgeBase
from knowledge.calibration import (
    DEFAULT_FEEDBACK_GAIN,
    DEFAULT_THRESHOLD,
    OBJECTIVES,
    ConfidenceModel,
    Sample,
    derive,
    fit,
    heuristic_confidence,
    sweep,
    with_feedback,
)
from knowledge.embeddings import Embedder
from knowledge.retriever import FEATURES, RETRIEVAL_FEATURES, Retriever
from knowledge.types import Entry

NO_FEATURES = (0.0,) * len(FEATURES)


def _samples(
    right: list[float], oos: list[float], wrong: list[float] | None = None
) -> tuple[list[float], list[Sample]]:
    """Confidences and samples: in-scope answered right, out-of-scope, in-scope answered wrong."""
    wrong = wrong or []
    confidences = [*right, *oos, *wrong]
    samples = (
        [Sample(NO_FEATURES, True, True)] * len(right)
        + [Sample(NO_FEATURES, False, False)] * len(oos)
        + [Sample(NO_FEATURES, True, False)] * len(wrong)
    )
    return confidences, samples


# Set A: keeping every answerable question forces a low threshold (0.3); maximising either
# accuracy or balanced accuracy gives up the 0.3 question to reject four more out-of-scope
# ones (threshold 0.8: 2 of 3 in scope kept, 5 of 5 out of scope rejected).
SET_A = _samples(right=[0.9, 0.8, 0.3], oos=[0.7, 0.6, 0.5, 0.4, 0.2])
# Set B: ten in-scope questions, two out of scope. Raising the threshold from 0.5 to 0.9 loses
# two right answers to reject one more out-of-scope question: a bad trade in raw accuracy
# (11 → 10 of 12), a good one in balanced accuracy ((1 + .5)/2 → (.8 + 1)/2).
SET_B = _samples(right=[0.9] * 8 + [0.5, 0.55], oos=[0.6, 0.1])


@pytest.mark.parametrize(
    ("data", "objective", "expected"),
    [
        (SET_A, "recall", 0.3),
        (SET_A, "accuracy", 0.8),
        (SET_A, "balanced", 0.8),
        (SET_B, "recall", 0.5),
        (SET_B, "accuracy", 0.5),
        (SET_B, "balanced", 0.9),
    ],
)
def test_sweep_picks_the_threshold_each_objective_wants(
    data: tuple[list[float], list[Sample]], objective: str, expected: float
) -> None:
    confidences, samples = data
    assert sweep(confidences, samples, objective) == pytest.approx(expected)


def test_sweep_recall_gives_up_no_more_than_max_missed() -> None:
    confidences, samples = SET_B
    # 20% of in-scope accuracy may go: 0.9 keeps 8 of 10 and rejects both out-of-scope ones.
    assert sweep(confidences, samples, "recall", max_missed=0.2) == pytest.approx(0.9)
    assert sweep(confidences, samples, "recall", max_missed=0.15) == pytest.approx(0.5)


def test_sweep_coverage_answers_the_most_while_declining_the_share_asked() -> None:
    confidences, samples = SET_A
    # Declining 70% of five out-of-scope questions means four: any threshold above 0.6 keeps 2
    # of 3 answers; on that tie the higher one (0.8) declines the fifth as well.
    assert sweep(confidences, samples, "coverage") == pytest.approx(0.8)
    # Declining one of five is enough at 0.3, which keeps all three answers.
    assert sweep(confidences, samples, "coverage", min_oos_recall=0.2) == pytest.approx(0.3)
    confidences, samples = SET_B
    assert sweep(confidences, samples, "coverage", min_oos_recall=0.5) == pytest.approx(0.5)
    assert sweep(confidences, samples, "coverage", min_oos_recall=1.0) == pytest.approx(0.9)


def test_sweep_coverage_without_out_of_scope_samples_says_what_to_do() -> None:
    confidences, samples = _samples(right=[0.9, 0.4], oos=[])
    with pytest.raises(KnowledgeError, match="out-of-scope queries"):
        sweep(confidences, samples, "coverage")


def test_the_cli_offers_every_objective() -> None:
    assert OBJECTIVE_CHOICES == OBJECTIVES


def test_sweep_counts_declined_questions_as_abstentions_at_any_threshold() -> None:
    """An out-of-scope question that an entry declines is rejected however low the threshold,
    so the sweep need not raise the threshold (losing answers) to reject it."""
    confidences = [0.9, 0.8, 0.5, 0.7, 0.6]
    plain = [Sample(NO_FEATURES, True, True)] * 3 + [Sample(NO_FEATURES, False, False)] * 2
    declined = plain[:3] + [Sample(NO_FEATURES, False, False, declined=True)] * 2
    # Without declines, "accuracy" gives up the 0.5 answer to reject both (threshold 0.8).
    assert sweep(confidences, plain, "accuracy") == pytest.approx(0.8)
    # Declined, both are rejected anyway: the lowest threshold keeps every answer.
    assert sweep(confidences, declined, "accuracy") == pytest.approx(0.0)


def test_sweep_recall_is_measured_against_what_is_reachable() -> None:
    # Two of the four in-scope questions are answered wrong at any threshold: the recall
    # objective keeps the reachable 2 of 4, not 4 of 4, and rejects both out-of-scope ones.
    confidences, samples = _samples(right=[0.8, 0.7], oos=[0.4, 0.6], wrong=[0.95, 0.3])
    assert sweep(confidences, samples, "recall") == pytest.approx(0.7)


def test_sweep_default_objective_is_recall() -> None:
    confidences, samples = SET_A
    assert sweep(confidences, samples) == sweep(confidences, samples, "recall")


def test_sweep_with_everything_separable_rejects_every_out_of_scope_question() -> None:
    confidences, samples = _samples(right=[0.9, 0.85, 0.7], oos=[0.4, 0.2, 0.1])
    for objective in OBJECTIVES:
        threshold = sweep(confidences, samples, objective)
        assert 0.4 < threshold <= 0.7, objective


def test_sweep_rejects_an_unknown_objective() -> None:
    confidences, samples = SET_A
    with pytest.raises(ValueError, match="unknown objective 'precision'"):
        sweep(confidences, samples, "precision")


# --- the confidence model --------------------------------------------------------------------


def test_heuristic_confidence_is_dense_times_share_clamped() -> None:
    assert heuristic_confidence((0.8, 0.5, 0.0, 0.0, 0.0)) == pytest.approx(0.4)
    assert heuristic_confidence((-0.2, 0.5, 0.0, 0.0, 0.0)) == 0.0
    assert heuristic_confidence((1.5, 1.0, 0.0, 0.0, 0.0)) == 1.0


def test_confidence_model_is_a_logistic_of_the_features() -> None:
    model = ConfidenceModel(0.5, "calibrated", weights=(2.0, 0, 0, 0, 0), bias=-1.0)
    assert model.confidence((0.5, 0, 0, 0, 0)) == pytest.approx(0.5)
    assert model.confidence((1.0, 0, 0, 0, 0)) == pytest.approx(1 / (1 + math.exp(-1)))
    assert model.confidence((1e6, 0, 0, 0, 0)) == pytest.approx(1.0)  # no overflow
    assert model.confidence((-1e6, 0, 0, 0, 0)) == pytest.approx(0.0)
    default = ConfidenceModel(DEFAULT_THRESHOLD)
    assert default.origin == "default"
    assert default.confidence((0.8, 0.5, 0, 0, 0)) == pytest.approx(0.4)


def _separable(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        dense, share = rng.uniform(0.75, 0.95), rng.uniform(0.6, 1.0)
        margin, votes = rng.uniform(0.1, 0.3), rng.uniform(0.6, 1.0)
        samples.append(Sample((dense, share, margin, votes, rng.uniform()), True, True))
    for i in range(n):
        dense, share = rng.uniform(0.2, 0.5), rng.uniform(0.1, 0.4)
        margin, votes = rng.uniform(0.0, 0.05), rng.uniform(0.2, 0.4)
        features = (dense, share, margin, votes, rng.uniform())
        samples.append(Sample(features, i % 2 == 0, False))  # out of scope, or answered wrong
    return samples


def test_fit_orders_positives_above_negatives() -> None:
    samples = _separable(40, seed=0)
    model = fit(samples)
    assert model.origin == "calibrated"
    assert model.samples == len(samples)
    assert model.weights is not None and len(model.weights) == len(RETRIEVAL_FEATURES)
    positives = [model.confidence(s.features) for s in samples if s.in_scope and s.top_correct]
    negatives = [
        model.confidence(s.features) for s in samples if not (s.in_scope and s.top_correct)
    ]
    assert min(positives) > max(negatives)
    assert 0.0 < model.threshold <= min(positives)
    out_of_scope = [model.confidence(s.features) for s in samples if not s.in_scope]
    assert max(out_of_scope) < model.threshold
    # Fresh samples from the same distributions are told apart too.
    for sample in _separable(20, seed=1):
        answered = model.confidence(sample.features) >= model.threshold
        if sample.in_scope and sample.top_correct:
            assert answered
        elif not sample.in_scope:
            assert not answered


def test_fit_with_one_class_keeps_the_heuristic() -> None:
    samples = [s for s in _separable(10, seed=2) if s.top_correct]
    model = fit(samples)
    assert model.weights is None
    assert model.origin == "calibrated"
    assert model.samples == len(samples)


def test_confidence_model_json_round_trip() -> None:
    model = fit(_separable(30, seed=3), objective="balanced")
    data = model.to_json()
    assert data["features"] == list(RETRIEVAL_FEATURES)
    assert data["feedback_gain"] == DEFAULT_FEEDBACK_GAIN
    restored = ConfidenceModel.from_json(json.loads(json.dumps(data)))
    assert restored == model
    features = (0.7, 0.5, 0.1, 0.6, 0.2, 0.4)
    assert restored.confidence(features) == model.confidence(features)


def test_confidence_model_from_minimal_json() -> None:
    model = ConfidenceModel.from_json({"threshold": "0.4"})
    assert model == ConfidenceModel(0.4, "calibrated", None, 0.0, 0)


# --- feedback: a bounded move of the confidence -------------------------------------------------

GRID = [i / 10 for i in range(11)]


@pytest.mark.parametrize("gain", [0.0, 0.25, DEFAULT_FEEDBACK_GAIN, 1.0])
def test_with_feedback_is_bounded_and_monotone(gain: float) -> None:
    for confidence in GRID:
        assert with_feedback(confidence, 0.0, gain) == confidence  # no rating, no change
        moved = [with_feedback(confidence, f, gain) for f in (-1.0, -0.5, 0.0, 0.5, 1.0)]
        assert moved == sorted(moved)  # more endorsement, more confidence
        for value in moved:
            assert 0.0 <= value <= 1.0
        # At most `gain` of the way to certainty, or to nothing.
        assert moved[-1] <= confidence + gain * (1 - confidence) + 1e-12
        assert moved[0] >= confidence * (1 - gain) - 1e-12
        # Out-of-range endorsements are clipped, not extrapolated.
        assert with_feedback(confidence, 7.0, gain) == moved[-1]
        assert with_feedback(confidence, -7.0, gain) == moved[0]
    for feedback in (-1.0, -0.3, 0.3, 1.0):
        ordered = [with_feedback(c, feedback, gain) for c in GRID]
        assert ordered == sorted(ordered)  # keeps the order of confidences


def test_endorsement_raises_and_rejection_lowers_both_kinds_of_model() -> None:
    heuristic = ConfidenceModel(0.3)
    features = (0.6, 0.4, 0.05, 0.4, 0.2)
    base = heuristic.confidence(features)
    assert base == pytest.approx(0.24)
    assert heuristic.confidence((*features, 0.0)) == base
    endorsed = heuristic.confidence((*features, 0.5))
    assert endorsed == pytest.approx(0.24 + 0.5 * 0.5 * 0.76)
    assert endorsed >= heuristic.threshold > base  # the close call is now answered
    assert heuristic.confidence((*features, -1.0)) == pytest.approx(0.12)
    calibrated = ConfidenceModel(0.5, "calibrated", (2.0, 0, 0, 0, 0), bias=-1.0)
    logistic = calibrated.confidence((0.5, 0, 0, 0, 0, 0.0))
    assert logistic == pytest.approx(0.5)
    assert calibrated.confidence((0.5, 0, 0, 0, 0, 1.0)) == pytest.approx(0.75)
    assert calibrated.confidence((0.5, 0, 0, 0, 0, -1.0)) == pytest.approx(0.25)
    assert replace(calibrated, feedback_gain=0.0).confidence((0.5, 0, 0, 0, 0, 1.0)) == 0.5


def test_a_calibration_written_before_the_feedback_feature_still_loads() -> None:
    old = {
        "threshold": 0.42,
        "origin": "calibrated",
        "weights": [3.0, 2.0, 1.0, 0.5, 0.25],
        "bias": -3.0,
        "samples": 120,
        "features": ["dense", "share", "margin", "votes", "lexical"],
    }
    model = ConfidenceModel.from_json(old)
    assert model.feedback_gain == DEFAULT_FEEDBACK_GAIN
    features = (0.8, 0.6, 0.1, 0.8, 0.5)
    z = -3.0 + 3.0 * 0.8 + 2.0 * 0.6 + 1.0 * 0.1 + 0.5 * 0.8 + 0.25 * 0.5
    expected = 1 / (1 + math.exp(-z))
    assert model.confidence(features) == pytest.approx(expected)
    assert model.confidence((*features, 0.0)) == pytest.approx(expected)
    assert model.confidence((*features, 0.8)) > expected


def test_fit_leaves_feedback_out_of_the_logistic() -> None:
    rng = np.random.default_rng(5)
    samples = [
        Sample((*s.features, float(rng.uniform(-1, 1))), s.in_scope, s.top_correct)
        for s in _separable(30, seed=4)
    ]
    model = fit(samples)
    plain = fit([Sample(s.features[:5], s.in_scope, s.top_correct) for s in samples])
    assert model.weights == plain.weights and model.threshold == plain.threshold


def test_a_feedback_gain_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match="feedback_gain"):
        ConfidenceModel(0.4, feedback_gain=1.5)
    with pytest.raises(ValueError, match="feedback_gain"):
        ConfidenceModel.from_json({"threshold": 0.4, "feedback_gain": -0.1})
    # A weight for feedback as well would count it twice.
    with pytest.raises(ValueError, match="retrieval features"):
        ConfidenceModel(0.4, "calibrated", weights=(1.0,) * len(FEATURES))


# --- derivation on real knowledge bases ------------------------------------------------------


@pytest.mark.model
def test_derive_on_the_sample_kb(sample_kb: KnowledgeBase) -> None:
    model = derive(sample_kb, Retriever(sample_kb))
    assert model.origin == "derived"
    assert 0.0 < model.threshold < 1.0
    assert model.weights is None
    assert 20 <= model.samples <= 400
    # The ingest that built the sample KB stored the same derivation in its manifest.
    assert sample_kb.manifest is not None
    assert sample_kb.manifest.derived_threshold == pytest.approx(model.threshold)
    assert sample_kb.manifest.derived_from == model.samples
    # Deterministic for a seed; reports progress once per sample.
    seen: list[tuple[int, int]] = []
    again = derive(
        sample_kb, Retriever(sample_kb), max_samples=30, progress=lambda i, n: seen.append((i, n))
    )
    assert again.samples == 30
    assert seen == [(i, 30) for i in range(1, 31)]
    assert derive(sample_kb, Retriever(sample_kb), max_samples=30) == again


@pytest.mark.model
def test_derive_on_a_two_entry_kb_falls_back_to_the_default(
    tmp_path: Path, embedder: Embedder
) -> None:
    kb = KnowledgeBase(tmp_path / "index", embedder)
    kb.ingest(
        [
            Entry(
                id="a",
                question="How do I reset my password?",
                answer="Use the reset link.",
                examples=tuple(f"password question {i}" for i in range(15)),
            ),
            Entry(
                id="b",
                question="How do I export to PDF?",
                answer="Export > PDF.",
                examples=tuple(f"pdf question {i}" for i in range(15)),
            ),
        ]
    )
    model = derive(kb, Retriever(kb))
    assert model == ConfidenceModel(DEFAULT_THRESHOLD, "default")
