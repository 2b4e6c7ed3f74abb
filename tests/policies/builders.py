"""Hand-built settings, turns, states and knowledge proposals for the policy tests."""

from __future__ import annotations

from typing import Any, TypeVar

from bot.model import Owner, Reply, ReplyKind, Role, Source
from policies.base import Policy
from policies.config import PolicyConfig, PolicySettings
from policies.state import ConversationState, HistoryTurn, KnowledgeResult, TurnContext
from policies.texts import Wording, wording


def settings(overrides: dict[str, Any] | None = None) -> PolicySettings:
    """The bundled defaults with `overrides` merged in, validated."""
    return PolicyConfig.from_mapping(overrides or {}, "test.yaml").base


def texts(overrides: dict[str, Any] | None = None) -> Wording:
    return wording(settings(overrides))


P = TypeVar("P", bound=Policy)


def make(cls: type[P], overrides: dict[str, Any] | None = None) -> P:
    """A policy built on the defaults with `overrides` merged in."""
    return cls(settings(overrides), texts(overrides))


def turn(text: str, **fields: Any) -> TurnContext:
    fields.setdefault("user", "ann")
    return TurnContext(text=text, **fields)


def user(text: str) -> HistoryTurn:
    return HistoryTurn(Role.USER, text)


def agent(text: str) -> HistoryTurn:
    return HistoryTurn(Role.AGENT, text)


def bot(
    text: str = "an answer",
    kind: ReplyKind = ReplyKind.ANSWER,
    entry: str | None = None,
    *,
    downvoted: bool = False,
) -> HistoryTurn:
    sources = (Source(entry, 0.9, entry.replace("-", " ").title()),) if entry else ()
    return HistoryTurn(Role.BOT, text, kind, sources, downvoted)


def state(
    *history: HistoryTurn,
    owner: Owner = Owner.BOT,
    resolved: bool = False,
    abusive: tuple[str, ...] = (),
) -> ConversationState:
    return ConversationState.from_history(
        history,
        owner=owner,
        customer="ann",
        resolved=resolved,
        is_abusive=lambda text: any(word in text for word in abusive),
    )


def source(entry: str, score: float = 0.8, title: str | None = None) -> Source:
    return Source(entry, score, title or entry.replace("-", " ").title())


def answer(entry: str, *others: Source, confidence: float = 0.9) -> KnowledgeResult:
    """The knowledge base proposes a confident answer with `entry`."""
    best = source(entry, confidence)
    reply = Reply.answer(f"The answer of {entry}.", (best,), confidence)
    return KnowledgeResult(reply, "query", (best, *others))


def clarify(*options: Source, confidence: float = 0.4) -> KnowledgeResult:
    text = "Which one?\n" + "\n".join(f"• {o.title}" for o in options)
    return KnowledgeResult(Reply.clarify(text, options, confidence), "query", options)


def fallback(*candidates: Source, confidence: float = 0.1) -> KnowledgeResult:
    reply = Reply.fallback("Sorry, no idea.", confidence)
    return KnowledgeResult(reply, "query", candidates)
