"""Feedback that changes ranking and answers: `knowledge.feedback.FeedbackIndex`, the retriever's
hook, the confidence it moves, the engine's wiring and the replay of `supportbot eval
--feedback-replay`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bot.engine import Responder, ranking_sign
from bot.evaluate import Query, feedback_replay, load_queries, split_halves
from bot.model import FeedbackEvent, FeedbackValue, InboundMessage, ReplyKind
from bot.service import build_services, confidence_model
from bot.settings import Settings
from knowledge.base import KnowledgeBase
from knowledge.calibration import with_feedback
from knowledge.feedback import FeedbackConfig, FeedbackIndex
from knowledge.retriever import Retriever

SAMPLE_QUERIES = Path(__file__).resolve().parents[2] / "knowledge" / "sample" / "queries.jsonl"
QUESTION = "What's the process for opening a brand-new Lumen Notes account?"
#: Not the same words: ratings count for similar questions, not only for repeats.
SIMILAR = "How do I open a new Lumen Notes account?"


def _unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# The index alone (small hand-made vectors) ---------------------------------------------------


def test_an_empty_index_is_inactive_and_boosts_nothing() -> None:
    index = FeedbackIndex()
    assert not index.active and len(index) == 0
    assert index.boosts(_unit(1, 0, 0)) == {}


def test_endorsed_entries_gain_rejected_ones_lose_for_similar_questions_only() -> None:
    index = FeedbackIndex(FeedbackConfig(threshold=0.8, max_boost=0.2, saturation=1.0))
    index.set("a", _unit(1, 0, 0), "good", +1)
    index.set("b", _unit(1, 0.1, 0), "bad", -1)
    index.set("c", _unit(0, 1, 0), "elsewhere", +1)

    boosts = index.boosts(_unit(1, 0.05, 0))

    assert boosts["good"] > 0 > boosts["bad"]
    assert "elsewhere" not in boosts  # cosine 0.05 < 0.8: another question
    assert index.boosts(_unit(0, 0, 1)) == {}


def test_boosts_stay_within_the_bound_however_many_ratings_agree() -> None:
    config = FeedbackConfig(threshold=0.5, max_boost=0.15, saturation=1.5, neighbours=500)
    index = FeedbackIndex(config)
    for n in range(300):
        index.set(("up", n), _unit(1, 0, 0.001 * n), "popular", +1)
        index.set(("down", n), _unit(1, 0, 0.001 * n), "hated", -1)
    boosts = index.boosts(_unit(1, 0, 0))
    assert 0.149 < boosts["popular"] <= config.max_boost
    assert -config.max_boost <= boosts["hated"] < -0.149
    # One rating only nudges.
    single = FeedbackIndex(config)
    single.set("one", _unit(1, 0, 0), "popular", +1)
    assert 0 < single.boosts(_unit(1, 0, 0))["popular"] < config.max_boost * 0.7


def test_a_rating_again_replaces_and_a_withdrawn_one_is_forgotten() -> None:
    index = FeedbackIndex(FeedbackConfig(threshold=0.5))
    index.set(("reply", "ann"), _unit(1, 0), "entry", +1)
    index.set(("reply", "ann"), _unit(1, 0), "entry", -1)
    assert len(index) == 1 and index.boosts(_unit(1, 0))["entry"] < 0
    index.set(("reply", "bob"), _unit(1, 0), "entry", +1)
    assert index.boosts(_unit(1, 0)) == {}  # one up, one down: they cancel
    index.remove(("reply", "bob"))
    index.set(("reply", "ann"), _unit(1, 0), "entry", 0)
    assert not index.active
    index.remove("never-there")


def test_bad_ratings_and_settings_are_refused() -> None:
    index = FeedbackIndex()
    with pytest.raises(ValueError, match="sign"):
        index.set("k", _unit(1, 0), "e", 2)
    with pytest.raises(ValueError, match="non-zero"):
        index.set("k", np.zeros(2, dtype=np.float32), "e", 1)
    index.set("k", _unit(1, 0), "e", 1)
    with pytest.raises(ValueError, match="dimensions"):
        index.boosts(_unit(1, 0, 0))
    with pytest.raises(ValueError, match="threshold"):
        FeedbackConfig(threshold=2.0)
    with pytest.raises(ValueError, match="max_boost"):
        FeedbackConfig(max_boost=-0.1)


def test_which_ratings_move_ranking() -> None:
    assert ranking_sign(FeedbackValue.UP, None) == 1
    assert ranking_sign(FeedbackValue.DOWN, None) == -1
    assert ranking_sign(FeedbackValue.DOWN, "wrong_answer") == -1
    assert ranking_sign(FeedbackValue.DOWN, "not_what_i_asked") == -1
    assert ranking_sign(FeedbackValue.DOWN, "outdated") == 0
    assert ranking_sign(FeedbackValue.DOWN, "talk_to_person") == 0
    assert ranking_sign(None, None) == 0


# The retriever with the real model -----------------------------------------------------------


@pytest.mark.model
def test_feedback_on_a_similar_question_flips_the_ranking_within_bounds(
    sample_kb: KnowledgeBase,
) -> None:
    config = FeedbackConfig()
    index = FeedbackIndex(config)
    retriever = Retriever(sample_kb, feedback=index)
    plain = retriever.retrieve(QUESTION, top=20)
    first, second = plain.candidates[0].entry.id, plain.candidates[1].entry.id
    other = retriever.retrieve("How do I export a note to PDF?", top=20)
    assert all(c.feedback == 0.0 for c in plain.candidates)

    # Three customers asked something similar: the top entry was wrong, the runner-up right.
    similar = retriever.embed(SIMILAR)
    for user in ("ann", "bob", "cy"):
        index.set(("r1", user), similar, first, -1)
        index.set(("r2", user), similar, second, +1)
    rated = retriever.retrieve(QUESTION, top=20)

    assert rated.candidates[0].entry.id == second
    by_id = {c.entry.id: c for c in rated.candidates}
    assert 0 < by_id[second].feedback <= config.max_boost
    assert -config.max_boost <= by_id[first].feedback < 0
    # The base score is untouched: only the bounded feedback term moved.
    base = {c.entry.id: c.score for c in plain.candidates}
    assert by_id[second].score - base[second] == pytest.approx(by_id[second].feedback, abs=1e-6)
    # The confidence feature is the new top's boost over the bound; before it was 0.
    assert plain.features[-1] == 0.0
    assert rated.features[-1] == pytest.approx(by_id[second].feedback / config.max_boost)
    # An unrelated question ranks exactly as before, with the same features.
    again = retriever.retrieve("How do I export a note to PDF?", top=20)
    assert [c.entry.id for c in again.candidates] == [c.entry.id for c in other.candidates]
    assert all(c.feedback == 0.0 for c in again.candidates)
    assert again.features == other.features


@pytest.mark.model
def test_replay_on_the_sample_queries_does_not_hurt_half_b(sample_kb: KnowledgeBase) -> None:
    queries = load_queries(SAMPLE_QUERIES)
    half_a, half_b = split_halves(queries, seed=0)
    assert len(half_a) + len(half_b) == len(queries)
    assert not {q.text for q in half_a} & {q.text for q in half_b}
    responder = Responder(Retriever(sample_kb), confidence_model(sample_kb))

    result = feedback_replay(responder, queries, seed=0)

    assert result.half_b == len(half_b) and result.rated > 0
    assert result.endorsed > 0
    assert result.after["recall_at_1"] >= result.before["recall_at_1"]
    assert result.after["mrr"] >= result.before["mrr"]
    data = result.as_dict()
    assert set(data["delta"]) >= {"recall_at_1", "mrr", "accuracy"}
    assert responder.retriever.feedback is None  # put back


# Feedback changes answers, not only ranking (deterministic replays on the sample KB) ---------


def _seed_rating_first(queries: list[Query]) -> int:
    """A split seed that puts the first query in half A (rated) and the second in half B."""
    return next(s for s in range(100) if split_halves(queries, s)[0][0] == queries[0])


@pytest.mark.model
@pytest.mark.parametrize(
    ("rated", "measured", "entry_id", "without"),
    [
        pytest.param(
            "How do 'can comment' and 'can edit' differ for a person I add?",
            "What's the difference between giving someone 'can comment' and 'can edit'?",
            "roles-permissions",
            ReplyKind.FALLBACK,  # and the right entry only second
            id="fallback-becomes-the-right-answer",
        ),
        pytest.param(
            "What do I get if I don't pay?",
            "What do I get without paying anything?",
            "pricing-free",
            ReplyKind.CLARIFY,
            id="clarify-becomes-the-right-answer",
        ),
    ],
)
def test_replayed_feedback_turns_an_unsure_reply_into_the_right_answer(
    sample_kb: KnowledgeBase, rated: str, measured: str, entry_id: str, without: ReplyKind
) -> None:
    queries = [Query(rated, entry_id), Query(measured, entry_id)]
    seed = _seed_rating_first(queries)
    model = confidence_model(sample_kb)
    responder = Responder(Retriever(sample_kb), model)
    reply, _ = responder.respond(measured)
    assert reply.kind is without

    result = feedback_replay(responder, queries, seed=seed)

    assert result.half_b == 1 and result.endorsed >= 1
    assert result.before["accuracy"] == 0.0
    assert result.after["accuracy"] == 1.0 and result.after["recall_at_1"] == 1.0
    # Ranking alone (no feedback in the confidence, as before) puts the entry first but the
    # bot still does not answer with it.
    ranking_only = Responder(Retriever(sample_kb), replace(model, feedback_gain=0.0))
    only = feedback_replay(ranking_only, queries, seed=seed)
    assert only.after["recall_at_1"] == 1.0 and only.after["accuracy"] == 0.0


@pytest.mark.model
@pytest.mark.parametrize(
    ("rated", "measured"),
    [
        (
            "Can I text my team by SMS from Lumen?",
            "Can I send SMS text messages to my team from Lumen Notes?",
        ),
        ("What is Lumen's share price today?", "What's Lumen's stock price today?"),
    ],
)
def test_a_replayed_thumbs_down_turns_a_wrong_answer_into_an_abstention(
    sample_kb: KnowledgeBase, rated: str, measured: str
) -> None:
    queries = [Query(rated, None), Query(measured, None)]  # nothing in the KB answers these
    seed = _seed_rating_first(queries)
    model = confidence_model(sample_kb)
    responder = Responder(Retriever(sample_kb), model)
    reply, _ = responder.respond(measured)
    assert reply.kind is ReplyKind.ANSWER  # wrongly

    result = feedback_replay(responder, queries, seed=seed)

    assert (result.endorsed, result.rejected) == (0, 1)
    assert result.before["oos_recall"] == 0.0 and result.after["oos_recall"] == 1.0
    ranking_only = Responder(Retriever(sample_kb), replace(model, feedback_gain=0.0))
    assert feedback_replay(ranking_only, queries, seed=seed).after["oos_recall"] == 0.0


@pytest.mark.model
def test_feedback_moves_the_confidence_within_its_bound(sample_kb: KnowledgeBase) -> None:
    index = FeedbackIndex()
    model = confidence_model(sample_kb)
    responder = Responder(Retriever(sample_kb, feedback=index), model)
    plain, trace = responder.respond(QUESTION)
    assert plain.confidence is not None and trace.retrieval is not None
    top = trace.retrieval.candidates[0].entry.id
    similar = responder.retriever.embed(SIMILAR)

    # However many customers agree, the confidence moves at most `feedback_gain` of the way.
    for n in range(40):
        index.set(("up", n), similar, top, +1)
    endorsed, trace = responder.respond(QUESTION)
    assert trace.retrieval is not None and trace.retrieval.top is not None
    assert trace.retrieval.top.entry.id == top
    assert 0.9 < trace.retrieval.features[-1] <= 1.0
    ceiling = with_feedback(plain.confidence, 1.0, model.feedback_gain)
    assert endorsed.confidence is not None
    assert plain.confidence < endorsed.confidence <= ceiling < 1.0

    for n in range(40):
        index.set(("up", n), similar, top, -1)
    rejected, trace = responder.respond(QUESTION)
    assert rejected.confidence is not None and trace.retrieval is not None
    floor = plain.confidence * (1 - model.feedback_gain)
    if trace.retrieval.candidates[0].entry.id == top:
        assert floor <= rejected.confidence < plain.confidence
    else:  # another entry overtook it: its own confidence, with no rating of its own
        assert trace.retrieval.features[-1] == 0.0


# The engine: ratings flow from the store into ranking, and back in after a restart -----------


@pytest.mark.model
def test_ratings_through_the_engine_change_ranking_and_survive_a_restart(
    data_dir: Path, embedder: object
) -> None:
    settings = Settings(data_dir=data_dir)
    services = build_services(settings, embedder=embedder)
    engine = services.engine
    index = services.retriever.feedback
    assert index is not None and not index.active

    [reply] = engine.handle(
        InboundMessage("web", "", uuid.uuid4().hex, "ann", uuid.uuid4().hex, SIMILAR)
    )
    assert reply.kind is ReplyKind.ANSWER
    for user in ("ann", "bob"):
        event = FeedbackEvent("web", reply.id, user, FeedbackValue.DOWN, uuid.uuid4().hex)
        assert engine.record_feedback(event)
    boosts = index.boosts(services.retriever.embed(QUESTION))
    assert boosts[reply.sources[0].id] < 0
    # "outdated" says nothing about ranking: bob's rating stops counting.
    outdated = FeedbackEvent(
        "web", reply.id, "bob", FeedbackValue.DOWN, uuid.uuid4().hex, reason="outdated"
    )
    assert engine.record_feedback(outdated)
    assert len(index) == 1
    services.store.close()

    restarted = build_services(settings, embedder=embedder)
    try:
        assert restarted.retriever.feedback is not None
        assert len(restarted.retriever.feedback) == 1
        again = restarted.retriever.feedback.boosts(restarted.retriever.embed(QUESTION))
        assert boosts[reply.sources[0].id] < again[reply.sources[0].id] < 0
    finally:
        restarted.store.close()
