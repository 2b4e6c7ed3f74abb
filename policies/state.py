"""What a policy reads and what it returns: the turn, the conversation state, the decision.

The engine builds a `TurnContext` and a `ConversationState` for every turn (from the inbound
messages and the store); policies read them and return a `PolicyDecision`. All are frozen: a
policy cannot change what the next one sees.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.model import Owner, Reply, ReplyKind, Role, Source

__all__ = [
    "MISS_KINDS",
    "ConversationState",
    "HandoffReason",
    "HistoryTurn",
    "KnowledgeResult",
    "Outcome",
    "PolicyDecision",
    "TurnContext",
]

#: Reply kinds that count as a miss: the bot could not answer.
MISS_KINDS: frozenset[ReplyKind] = frozenset({ReplyKind.FALLBACK, ReplyKind.CLARIFY})


class Outcome(enum.StrEnum):
    """What the engine does with a decision."""

    SILENT = "silent"
    REPLY = "reply"
    HANDOFF = "handoff"


class HandoffReason(enum.StrEnum):
    """Why a conversation goes to a person (the handoff record's reason starts with it)."""

    CUSTOMER_REQUEST = "customer_request"
    KEYWORD = "keyword"
    TOPIC = "topic"
    REPEATED_MISSES = "repeated_misses"
    THUMBS_DOWN_REPEAT = "thumbs_down_repeat"
    NEGATIVE_SENTIMENT = "negative_sentiment"
    ABUSE = "abuse"
    KNOWLEDGE = "knowledge"


@dataclass(frozen=True, slots=True)
class KnowledgeResult:
    """What the knowledge base proposes for a turn: the retrieval and `decide()` outcome.

    Attributes:
        reply: the reply the knowledge path composed (answer, clarify or fallback; a custom
            responder may propose another kind).
        query: the retrieval query it used.
        candidates: the closest entries, best first, each scored by its similarity to the query.
        searched: False when the knowledge path answered without searching (an empty or
            too-long message): its reply is then used as it is.
    """

    reply: Reply
    query: str = ""
    candidates: tuple[Source, ...] = ()
    searched: bool = True

    @property
    def kind(self) -> ReplyKind:
        return self.reply.kind

    @property
    def top_entry(self) -> str | None:
        """The entry the reply answers with, or the closest candidate."""
        if self.reply.sources:
            return self.reply.sources[0].id
        return self.candidates[0].id if self.candidates else None


@dataclass(frozen=True, slots=True)
class TurnContext:
    """One turn: the customer's message (or burst of messages) as the policies see it.

    Attributes:
        text: the message text; a burst's messages joined by newlines.
        user: the author's platform id.
        platform: "web", "slack", …
        channel: the channel (settings overrides are per channel).
        addressed: whether the bot was addressed by any of the turn's messages.
        sentiment: the text's VADER compound score, -1 (most negative) to 1.
        conversation: the conversation key, for logs.
        messages: how many inbound messages make the turn (more than one for a burst).
        knowledge: the knowledge base's proposal, filled in by the pipeline when a policy that
            needs it is reached (never for greetings, gated or escalated turns).
    """

    text: str
    user: str
    platform: str = "web"
    channel: str = ""
    addressed: bool = True
    sentiment: float = 0.0
    conversation: str = ""
    messages: int = 1
    knowledge: KnowledgeResult | None = None


@dataclass(frozen=True, slots=True)
class HistoryTurn:
    """One earlier message of the conversation, oldest first in a sequence.

    Attributes:
        role: who wrote it.
        text: what it said.
        reply_kind: for the bot's messages, the kind of reply it was.
        sources: for the bot's messages, the entries it drew on, best first.
        downvoted: for the bot's messages, whether someone rated it 👎.
    """

    role: Role
    text: str
    reply_kind: ReplyKind | None = None
    sources: tuple[Source, ...] = ()
    downvoted: bool = False


@dataclass(frozen=True, slots=True)
class ConversationState:
    """The conversation so far, as the policies need it.

    Build it with `from_history`, which derives the counters from the turns; tests may set the
    counters directly.

    Attributes:
        history: the recent messages, oldest first.
        owner: who answers now.
        customer: the user who started the conversation.
        resolved: the customer marked the thread resolved ("that solved it", ✅).
        consecutive_bot_messages: the bot's messages at the end of the history, no person since.
        consecutive_misses: the bot's fallbacks and clarifications in a row (smalltalk skipped,
            an answer or a person's message ends the run).
        previous_reply_kinds: the kinds of the bot's replies, newest first.
        last_answered_entry_ids: the entries the bot's answers used, newest first, distinct.
        recent_downvote: the bot's latest answer was rated 👎.
        downvoted_entry_ids: the entries of answers rated 👎, newest first.
        downvoted_questions: the customer messages that got those answers.
        customer_questions: the customer's earlier messages, newest first.
        abuse_count: the customer's earlier abusive messages.
    """

    history: tuple[HistoryTurn, ...] = ()
    owner: Owner = Owner.BOT
    customer: str = ""
    resolved: bool = False
    consecutive_bot_messages: int = 0
    consecutive_misses: int = 0
    previous_reply_kinds: tuple[ReplyKind, ...] = ()
    last_answered_entry_ids: tuple[str, ...] = ()
    recent_downvote: bool = False
    downvoted_entry_ids: tuple[str, ...] = ()
    downvoted_questions: tuple[str, ...] = ()
    customer_questions: tuple[str, ...] = ()
    abuse_count: int = 0

    @property
    def last_reply_kind(self) -> ReplyKind | None:
        """The kind of the bot's latest reply, if it made one."""
        return self.previous_reply_kinds[0] if self.previous_reply_kinds else None

    @property
    def last_bot_turn(self) -> HistoryTurn | None:
        """The bot's latest message."""
        return next((t for t in reversed(self.history) if t.role is Role.BOT), None)

    @classmethod
    def from_history(
        cls,
        history: Sequence[HistoryTurn],
        *,
        owner: Owner = Owner.BOT,
        customer: str = "",
        resolved: bool = False,
        is_abusive: Callable[[str], bool] = lambda text: False,
    ) -> ConversationState:
        """Derive the state from the recent messages (oldest first)."""
        turns = tuple(history)
        trailing_bot = 0
        for turn in reversed(turns):
            if turn.role is not Role.BOT:
                break
            trailing_bot += 1
        misses = 0
        for turn in reversed(turns):
            if turn.role is Role.AGENT:
                break
            if turn.role is not Role.BOT or turn.reply_kind is ReplyKind.SMALLTALK:
                continue
            if turn.reply_kind not in MISS_KINDS:
                break
            misses += 1
        kinds = tuple(t.reply_kind for t in reversed(turns) if t.role is Role.BOT and t.reply_kind)
        answered: list[str] = []
        downvoted: list[str] = []
        downvoted_questions: list[str] = []
        latest_answer: HistoryTurn | None = None
        for index in range(len(turns) - 1, -1, -1):
            turn = turns[index]
            if turn.role is not Role.BOT or turn.reply_kind is not ReplyKind.ANSWER:
                continue
            if latest_answer is None:
                latest_answer = turn
            entry = turn.sources[0].id if turn.sources else None
            if entry and entry not in answered:
                answered.append(entry)
            if turn.downvoted:
                if entry and entry not in downvoted:
                    downvoted.append(entry)
                question = next(
                    (t.text for t in reversed(turns[:index]) if t.role is Role.USER), None
                )
                if question:
                    downvoted_questions.append(question)
        user_texts = tuple(t.text for t in reversed(turns) if t.role is Role.USER)
        return cls(
            history=turns,
            owner=owner,
            customer=customer,
            resolved=resolved,
            consecutive_bot_messages=trailing_bot,
            consecutive_misses=misses,
            previous_reply_kinds=kinds,
            last_answered_entry_ids=tuple(answered),
            recent_downvote=latest_answer is not None and latest_answer.downvoted,
            downvoted_entry_ids=tuple(downvoted),
            downvoted_questions=tuple(downvoted_questions),
            customer_questions=user_texts,
            abuse_count=sum(1 for text in user_texts if is_abusive(text)),
        )


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What a policy decided. Build one with the named constructors.

    Attributes:
        outcome: stay silent, reply, or hand the conversation to a person.
        reply: what to say (for `REPLY` and `HANDOFF`).
        reason: why; for a handoff, a `HandoffReason` value, with a detail after ":" where there
            is one ("topic:legal").
        policy: the policy that decided (filled in by the pipeline).
        resolve: the engine marks the conversation resolved.
    """

    outcome: Outcome
    reply: Reply | None = None
    reason: str = ""
    policy: str = ""
    resolve: bool = False

    @classmethod
    def silent(cls, reason: str, *, resolve: bool = False) -> PolicyDecision:
        return cls(Outcome.SILENT, None, reason, resolve=resolve)

    @classmethod
    def say(cls, reply: Reply, reason: str = "", *, resolve: bool = False) -> PolicyDecision:
        return cls(Outcome.REPLY, reply, reason, resolve=resolve)

    @classmethod
    def handoff(cls, text: str, reason: HandoffReason, detail: str = "") -> PolicyDecision:
        return cls(Outcome.HANDOFF, Reply.handoff(text), f"{reason}:{detail}" if detail else reason)

    @property
    def speaks(self) -> bool:
        return self.outcome is not Outcome.SILENT

    @property
    def handoff_reason(self) -> HandoffReason | None:
        """The reason as a `HandoffReason`, for handoffs."""
        if self.outcome is not Outcome.HANDOFF:
            return None
        return HandoffReason(self.reason.split(":", 1)[0])
