"""The pipeline: the documented order, first match wins, the knowledge lookup only when needed."""

from __future__ import annotations

from typing import Any

import pytest

import policies.pipeline as pipeline_module
from bot.model import Owner, ReplyKind
from policies.base import Policy
from policies.pipeline import ORDER, Pipeline
from policies.state import (
    ConversationState,
    KnowledgeResult,
    Outcome,
    PolicyDecision,
    TurnContext,
)
from tests.policies.builders import (
    answer,
    bot,
    clarify,
    fallback,
    settings,
    source,
    state,
    turn,
    user,
)

EXPECTED_ORDER = (
    "addressed_gate",
    "resolved_thread",
    "marks_resolved",
    "bot_message_cap",
    "explicit_request",
    "abuse",
    "escalation_topics",
    "smalltalk",
    "thumbs_down_repeat",
    "negative_sentiment",
    "repeated_question",
    "knowledge_answer",
    "clarify",
    "fallback",
)


class Lookup:
    """A knowledge lookup that counts its calls."""

    def __init__(self, result: KnowledgeResult) -> None:
        self.result = result
        self.calls = 0

    def __call__(self) -> KnowledgeResult:
        self.calls += 1
        return self.result


def run(text: str, conversation: ConversationState, result: KnowledgeResult, **fields: Any):  # type: ignore[no-untyped-def]
    lookup = Lookup(result)
    outcome = Pipeline(settings()).run(turn(text, **fields), conversation, lookup)
    return outcome, lookup


def test_the_order_is_the_documented_one() -> None:
    assert Pipeline(settings()).order == EXPECTED_ORDER
    assert tuple(cls.name for cls in ORDER) == EXPECTED_ORDER
    table = pipeline_module.__doc__ or ""
    positions = [table.index(f" {name} ") for name in EXPECTED_ORDER]
    assert positions == sorted(positions), "the module docstring's table lists another order"


def test_policies_before_the_knowledge_line_need_no_search() -> None:
    needs = [cls.needs_knowledge for cls in ORDER]
    line = needs.index(True)
    assert EXPECTED_ORDER[line] == "thumbs_down_repeat"
    assert all(needs[line:]) and not any(needs[:line])


@pytest.mark.parametrize(
    ("text", "conversation", "fields", "policy", "outcome"),
    [
        ("How do I export?", state(owner=Owner.HUMAN), {}, "addressed_gate", Outcome.SILENT),
        ("human please", state(), {"addressed": False}, "addressed_gate", Outcome.SILENT),
        ("thanks again!", state(resolved=True), {}, "resolved_thread", Outcome.SILENT),
        ("that solved it, thanks", state(), {}, "marks_resolved", Outcome.REPLY),
        ("hello", state(user("q"), bot(), bot(), bot()), {}, "bot_message_cap", Outcome.SILENT),
        ("stupid bot, get me a human", state(), {}, "explicit_request", Outcome.HANDOFF),
        ("stupid bot, I got charged twice", state(), {}, "abuse", Outcome.REPLY),
        ("hi, can I talk to a human", state(), {}, "explicit_request", Outcome.HANDOFF),
        ("hello, I got charged twice", state(), {}, "escalation_topics", Outcome.HANDOFF),
        ("hello", state(), {}, "smalltalk", Outcome.REPLY),
    ],
)
def test_policies_before_the_line_decide_without_a_search(
    text: str,
    conversation: ConversationState,
    fields: dict[str, Any],
    policy: str,
    outcome: Outcome,
) -> None:
    result, lookup = run(text, conversation, answer("export-pdf"), **fields)

    assert result.decision.policy == policy
    assert result.decision.outcome is outcome
    assert result.asked[-1] == policy
    assert result.asked == EXPECTED_ORDER[: len(result.asked)]
    assert lookup.calls == 0
    assert result.turn.knowledge is None


DOWNVOTED = state(user("How do I export a PDF?"), bot("A", entry="export-pdf", downvoted=True))
ANSWERED = state(user("How do I export a PDF?"), bot("A", entry="export-pdf"))


@pytest.mark.parametrize(
    ("text", "conversation", "result", "sentiment", "policy", "kind"),
    [
        ("export pdf again", DOWNVOTED, answer("export-pdf"), 0.0, "thumbs_down_repeat", "handoff"),
        ("awful, hopeless", state(), fallback(), -0.9, "negative_sentiment", "handoff"),
        ("awful, export?", state(), answer("export-pdf"), -0.9, "knowledge_answer", "answer"),
        ("export pdf again", ANSWERED, answer("export-pdf"), 0.0, "repeated_question", "fallback"),
        ("export pdf", state(), answer("export-pdf"), 0.0, "knowledge_answer", "answer"),
        ("price", state(), clarify(source("a"), source("b")), 0.0, "clarify", "clarify"),
        ("weather", state(), fallback(), 0.0, "fallback", "fallback"),
    ],
)
def test_policies_after_the_line_search_once(
    text: str,
    conversation: ConversationState,
    result: KnowledgeResult,
    sentiment: float,
    policy: str,
    kind: str,
) -> None:
    outcome, lookup = run(text, conversation, result, sentiment=sentiment)

    assert outcome.decision.policy == policy
    assert outcome.decision.reply is not None
    assert outcome.decision.reply.kind is ReplyKind(kind)
    assert lookup.calls == 1
    assert outcome.turn.knowledge is result
    assert outcome.asked == EXPECTED_ORDER[: len(outcome.asked)]


def test_the_first_policy_that_applies_wins() -> None:
    # Abusive, asking for a person, and on a legal topic: the request for a person decides.
    result, _ = run("you idiot, get me a human, my lawyer is waiting", state(), fallback())
    assert result.decision.policy == "explicit_request"
    # Without the request, the insult comes before the topic.
    result, _ = run("you idiot, my lawyer is waiting", state(), fallback())
    assert result.decision.policy == "abuse"


def test_a_given_knowledge_result_is_used_without_a_lookup() -> None:
    given = turn("export", knowledge=answer("export-pdf"))
    result = Pipeline(settings()).run(given, state())
    assert result.decision.policy == "knowledge_answer"


def test_without_a_lookup_the_fallback_still_decides() -> None:
    result = Pipeline(settings()).run(turn("what is this"), state())
    assert result.decision.policy == "fallback"
    assert result.decision.outcome is Outcome.REPLY


class _Pass(Policy):
    name = "pass"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return True

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        return None


def test_a_policy_may_decline_after_applying_and_an_empty_list_is_silent() -> None:
    result = Pipeline(settings(), (_Pass,)).run(turn("x"), state())
    assert result.decision.outcome is Outcome.SILENT
    assert result.decision.reason == "no_policy"
    assert result.asked == ("pass",)


def test_per_channel_settings_change_the_decision() -> None:
    strict = settings({"escalation": {"keywords": ["export"]}})
    result = Pipeline(strict).run(turn("export pdf"), state(), Lookup(answer("export-pdf")))
    assert result.decision.reason == "keyword:export"


def test_is_abusive_uses_the_channel_words() -> None:
    assert Pipeline(settings()).is_abusive("shut up")
    assert not Pipeline(settings({"abuse": {"words": ["darn"]}})).is_abusive("shut up")


def test_the_docs_list_the_same_order() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    rows = [
        line.split("|")[2].strip().strip("`")
        for line in docs.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    ]
    assert tuple(rows) == EXPECTED_ORDER


def test_the_docs_describe_every_setting() -> None:
    from pathlib import Path

    from policies.config import PolicySettings

    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    for section, field in PolicySettings.model_fields.items():
        assert f"`{section}`" in docs, section
        annotation = field.annotation
        assert annotation is not None
        for key in annotation.model_fields:
            assert f"`{key}`" in docs, f"{section}.{key}"
