"""How sure the bot is of its best candidate, and where its answering threshold lies.

A `ConfidenceModel` maps the retrieval features (`knowledge.retriever.FEATURES`) to a confidence in
[0, 1]. It comes from one of three places, best first:

1. *calibrated*: `supportbot kb calibrate --queries FILE` fits a logistic regression from the
   features to "the best candidate is the right answer" on labelled queries (out-of-scope ones
   included) and picks the threshold that best meets the chosen objective (`sweep`);
2. *derived*: with no labelled queries, the knowledge base quizzes itself. Held-out example
   questions are searched once with only themselves hidden (they should be answered with their
   entry) and once with their whole entry hidden (a realistic in-domain question the bot cannot
   answer, so it should abstain); the threshold maximises accuracy over both;
3. *default*: a fixed threshold for knowledge bases too small to quiz.

Feedback (the ``feedback`` feature, an endorsement in (-1, 1) of the best candidate by ratings of
similar questions, see `knowledge.feedback`) is not learned: calibration and derivation quiz the
bot without ratings, so a weight fitted on them would be 0. It moves the confidence the retrieval
features give by a bounded, monotone amount instead (`with_feedback`)::

    endorsed (f > 0):  c' = c + gain · f · (1 - c)      toward 1, at most `gain` of the way
    rejected (f < 0):  c' = c · (1 + gain · f)          toward 0, at most `gain` of the way

so no rating leaves the confidence as it was (and costs nothing), an answer customers endorsed
for similar questions becomes more confident and one they rejected less, and confidence stays in
[0, 1]. Whether that crosses the threshold is still the decision policy's call.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bot.errors import KnowledgeError
from knowledge.base import UNIT_KINDS, KnowledgeBase, units_of
from knowledge.retriever import FEATURES, RETRIEVAL_FEATURES, Retriever

DEFAULT_THRESHOLD = 0.45
#: How far clear feedback (every similar rated question agreeing, endorsement → ±1) moves the
#: confidence toward 1 (endorsed) or 0 (rejected): at most half way, so ratings of similar
#: questions tip close calls but cannot, alone, make an unrelated answer certain.
DEFAULT_FEEDBACK_GAIN = 0.5
MIN_DERIVATION_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class ConfidenceModel:
    """Features → confidence, plus the threshold at or above which the bot answers.

    Attributes:
        threshold: answer at or above this confidence.
        origin: ``calibrated``, ``derived``, ``default`` or ``configured``.
        weights: logistic weights of the first ``len(weights)`` retrieval features
            (`RETRIEVAL_FEATURES` order; a feature without a weight counts 0, so calibrations
            written before a feature existed load); None: `heuristic_confidence`.
        bias: the logistic intercept.
        samples: how many queries the model was fitted or derived on.
        feedback_gain: how far clear feedback moves the confidence (`with_feedback`), 0..1.
    """

    threshold: float
    origin: str = "default"
    weights: tuple[float, ...] | None = None
    bias: float = 0.0
    samples: int = 0
    feedback_gain: float = DEFAULT_FEEDBACK_GAIN

    def __post_init__(self) -> None:
        if not 0.0 <= self.feedback_gain <= 1.0:
            raise ValueError(
                f"feedback_gain must be between 0 and 1, not {self.feedback_gain}: fix it in "
                "calibration.json or run `supportbot kb calibrate` again"
            )
        if self.weights is not None and len(self.weights) > len(RETRIEVAL_FEATURES):
            # Feedback moves the confidence through `feedback_gain`; a weight too would count
            # it twice.
            raise ValueError(
                f"a confidence model weighs at most the {len(RETRIEVAL_FEATURES)} retrieval "
                f"features ({', '.join(RETRIEVAL_FEATURES)}), not {len(self.weights)}: "
                "run `supportbot kb calibrate` again"
            )

    def confidence(self, features: Sequence[float]) -> float:
        if self.weights is None:
            base = heuristic_confidence(features)
        else:
            # zip stops at the shorter: a calibration fitted before a feature existed loads.
            z = self.bias + sum(w * f for w, f in zip(self.weights, features, strict=False))
            base = 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))
        feedback = features[FEEDBACK] if len(features) > FEEDBACK else 0.0
        return with_feedback(base, feedback, self.feedback_gain)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"] = list(FEATURES if self.weights is None else FEATURES[: len(self.weights)])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfidenceModel:
        weights = data.get("weights")
        return cls(
            threshold=float(data["threshold"]),
            origin=str(data.get("origin", "calibrated")),
            weights=tuple(float(w) for w in weights) if weights is not None else None,
            bias=float(data.get("bias", 0.0)),
            samples=int(data.get("samples", 0)),
            feedback_gain=float(data.get("feedback_gain", DEFAULT_FEEDBACK_GAIN)),
        )


FEEDBACK = FEATURES.index("feedback")


def with_feedback(confidence: float, feedback: float, gain: float = DEFAULT_FEEDBACK_GAIN) -> float:
    """`confidence` moved by the best candidate's endorsement `feedback` (see module doc).

    Args:
        confidence: what the retrieval features alone give, 0..1.
        feedback: the endorsement, -1..1 (clipped); 0 returns `confidence` unchanged.
        gain: the share of the way to 1 (or 0) that an endorsement of ±1 moves it.
    """
    if feedback == 0.0 or gain == 0.0:
        return confidence
    f = max(-1.0, min(1.0, feedback))
    if f > 0:
        return confidence + gain * f * (1.0 - confidence)
    return confidence * (1.0 + gain * f)


def heuristic_confidence(features: Sequence[float]) -> float:
    """Best cosine similarity times the best entry's share of the nearest-neighbour vote."""
    dense, share = features[0], features[1]
    return max(0.0, min(1.0, dense * share))


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled query's outcome: its features, and whether answering it would be right.

    `declined`: an entry that declines (`Entry.declines`) ranked first, so the bot falls back
    whatever the threshold.
    """

    features: tuple[float, ...]
    in_scope: bool
    top_correct: bool
    declined: bool = False


OBJECTIVES = ("recall", "accuracy", "balanced", "coverage")
#: With the ``recall`` objective: how much in-scope accuracy may be given up for abstentions.
DEFAULT_MAX_MISSED = 0.025
#: With the ``coverage`` objective: the share of out-of-scope questions the bot must decline.
DEFAULT_MIN_OOS_RECALL = 0.70
#: Held-out example questions are easier than real customers' wording (they were written next to
#: their siblings), so a derived threshold gives up a little more to stay low enough.
DERIVED_MAX_MISSED = 0.05


def sweep(
    confidences: Sequence[float],
    samples: Sequence[Sample],
    objective: str = "recall",
    max_missed: float = DEFAULT_MAX_MISSED,
    min_oos_recall: float = DEFAULT_MIN_OOS_RECALL,
) -> float:
    """The threshold that best meets `objective` on the samples.

    Objectives:
        ``recall`` (default): answer nearly everything the bot can answer: the highest threshold
            whose in-scope accuracy stays within `max_missed` of answering everything, so it
            abstains on as many out-of-scope questions as that allows;
        ``accuracy``: right answers plus right abstentions, over all queries;
        ``balanced``: the mean of in-scope accuracy and out-of-scope recall;
        ``coverage``: the dual of ``recall``, for a service that must decline a given share of
            off-topic questions: the threshold with the best in-scope accuracy among those that
            decline at least `min_oos_recall` of the out-of-scope samples (the higher one on a
            tie).

    Raises:
        ValueError: an unknown objective.
        KnowledgeError: ``coverage`` without out-of-scope samples to decline.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if objective == "coverage" and all(s.in_scope for s in samples):
        raise KnowledgeError(
            "the coverage objective needs out-of-scope queries (no expected entry) among the "
            "calibration queries; add some, or choose --objective recall"
        )
    scores = np.asarray(confidences, dtype=np.float64)
    in_scope = np.asarray([s.in_scope for s in samples])
    correct = np.asarray([s.top_correct for s in samples])
    declined = np.asarray([s.declined for s in samples], dtype=bool)
    candidates = np.unique(np.concatenate([[0.0], scores, [1.0]]))
    n_in, n_out = max(int(in_scope.sum()), 1), max(int((~in_scope).sum()), 1)
    reachable = float((in_scope & correct).sum()) / n_in
    best_value, best_threshold = -1.0, DEFAULT_THRESHOLD
    for threshold in candidates:
        answered = (scores >= threshold) & ~declined
        in_scope_accuracy = float((answered & in_scope & correct).sum()) / n_in
        oos_recall = float((~answered & ~in_scope).sum()) / n_out
        if objective == "recall":
            if in_scope_accuracy < reachable - max_missed - 1e-12:
                continue
            value = oos_recall + 1e-6 * in_scope_accuracy
        elif objective == "coverage":
            if oos_recall < min_oos_recall - 1e-12:
                continue
            value = in_scope_accuracy + 1e-6 * oos_recall
        elif objective == "balanced":
            value = 0.5 * (in_scope_accuracy + oos_recall)
        else:
            value = (in_scope_accuracy * n_in + oos_recall * n_out) / len(samples)
        if value > best_value + 1e-12:
            best_value, best_threshold = value, float(threshold)
    return best_threshold


def fit(
    samples: Sequence[Sample],
    objective: str = "recall",
    max_missed: float = DEFAULT_MAX_MISSED,
    min_oos_recall: float = DEFAULT_MIN_OOS_RECALL,
) -> ConfidenceModel:
    """Fit a logistic confidence model and its threshold on labelled samples.

    Only the retrieval features are fitted (`RETRIEVAL_FEATURES`); feedback is applied on top
    (module doc) and the samples' confidences are computed without it, as the threshold must
    hold for questions nobody rated.
    """
    from sklearn.linear_model import LogisticRegression

    width = len(RETRIEVAL_FEATURES)
    x = np.asarray([s.features[:width] for s in samples], dtype=np.float64)
    y = np.asarray([s.in_scope and s.top_correct for s in samples], dtype=np.int64)
    if len(set(y.tolist())) < 2:
        # Every query right (or every one wrong): nothing to learn; keep the heuristic.
        confidences = [heuristic_confidence(s.features) for s in samples]
        threshold = sweep(confidences, samples, objective, max_missed, min_oos_recall)
        return ConfidenceModel(threshold, "calibrated", None, 0.0, len(samples))
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x, y)
    weights = tuple(float(w) for w in model.coef_[0])
    bias = float(model.intercept_[0])
    fitted = ConfidenceModel(0.5, "calibrated", weights, bias, len(samples))
    confidences = [fitted.confidence(s.features[:width]) for s in samples]
    threshold = sweep(confidences, samples, objective, max_missed, min_oos_recall)
    return ConfidenceModel(threshold, "calibrated", weights, bias, len(samples))


def derive(
    kb: KnowledgeBase,
    retriever: Retriever,
    *,
    max_samples: int = 400,
    seed: int = 0,
    objective: str = "recall",
    max_missed: float = DERIVED_MAX_MISSED,
    progress: Callable[[int, int], None] | None = None,
) -> ConfidenceModel:
    """Derive a threshold from the knowledge base's own example questions (see module doc)."""
    import numpy.typing as npt

    vectors: npt.NDArray[np.float32] = np.load(kb.directory / "vectors.npy", mmap_mode="r")
    texts: list[str] = []
    for entry in kb.entries:
        texts.extend(text for _, text in units_of(entry))
    question_kinds = {UNIT_KINDS.index("question"), UNIT_KINDS.index("example")}
    per_entry = np.bincount(kb.unit_entry, minlength=len(kb.entries))
    eligible = [
        u
        for u in range(len(kb.unit_entry))
        if int(kb.unit_kind[u]) in question_kinds and per_entry[kb.unit_entry[u]] >= 2
    ]
    if len(eligible) < MIN_DERIVATION_SAMPLES or len(kb.entries) < 3:
        return ConfidenceModel(DEFAULT_THRESHOLD, "default")
    rng = random.Random(seed)
    chosen = sorted(rng.sample(eligible, min(max_samples, len(eligible))))
    samples: list[Sample] = []
    for i, unit in enumerate(chosen):
        own = int(kb.unit_entry[unit])
        vector = np.asarray(vectors[unit], dtype=np.float32)
        hidden_self = retriever.search(vector, texts[unit], exclude_units=(unit,))
        top = hidden_self.top
        samples.append(
            Sample(hidden_self.features, True, top is not None and kb.position(top.entry.id) == own)
        )
        hidden_entry = retriever.search(vector, texts[unit], exclude_entries=(own,))
        samples.append(Sample(hidden_entry.features, False, False))
        if progress:
            progress(i + 1, len(chosen))
    confidences = [heuristic_confidence(s.features) for s in samples]
    threshold = sweep(confidences, samples, objective, max_missed)
    return ConfidenceModel(threshold, "derived", None, 0.0, len(chosen))
