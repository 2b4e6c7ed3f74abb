"""The dialogue engine: one decision per turn, the same for every platform.

`Engine.handle` is the whole turn for a live message::

    de-duplicate (database) → find or create the conversation → record the message
    → smalltalk? → build the query (follow-ups read the history) → retrieve → decide
    → compose the reply with its sources → record the reply

`Responder.respond` is the decision part alone (no database): `supportbot eval` runs it so offline
figures measure exactly what live messages get.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bot.context import context_for, looks_like_follow_up
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    InboundMessage,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Source,
    Turn,
)
from bot.storage.store import ReplyInfo, Store
from bot.text import clean_text
from knowledge.calibration import ConfidenceModel
from knowledge.retriever import Candidate, Retrieval, Retriever
from policies.decision import Decision, DecisionConfig, decide
from policies.smalltalk import SmalltalkConfig, smalltalk_reply

logger = logging.getLogger(__name__)

FALLBACK_TEXT = (
    "Sorry, I don't have a good answer for that. Could you rephrase it, "
    "or would you like me to bring in a person?"
)
CLARIFY_TEXT = "I want to be sure I answer the right question. Which of these do you mean?"
ERROR_TEXT = "Sorry, something went wrong on my side while answering. Please try again in a moment."
#: Candidates kept per query: enough for recall@5 and the reciprocal rank in evaluation.
TOP_CANDIDATES = 20
TOO_LONG_TEXT = (
    "That message is too long for me to read in one go ({length} characters; the limit is "
    "{limit}). Could you send the main question in a shorter message?"
)


@dataclass(frozen=True, slots=True)
class Trace:
    """How a reply was reached: the query, the decision and where the time went (ms)."""

    query: str
    used_context: bool
    decision: Decision | None
    retrieval: Retrieval | None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    history_turns: int = 8
    max_message_chars: int = 4000
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    smalltalk: SmalltalkConfig = field(default_factory=SmalltalkConfig)


class Responder:
    """The decision path alone: text and history in, reply out; touches no database.

    Args:
        retriever: searches the loaded knowledge base.
        confidence: turns retrieval features into a confidence and holds the threshold.
        config: engine settings.
    """

    def __init__(
        self,
        retriever: Retriever,
        confidence: ConfidenceModel,
        config: EngineConfig | None = None,
    ) -> None:
        self.retriever = retriever
        self.confidence = confidence
        self.config = config or EngineConfig()

    def respond(self, text: str, history: Sequence[Turn] = ()) -> tuple[Reply, Trace]:
        """Decide the reply to `text` given the conversation so far (oldest first)."""
        started = time.perf_counter()
        text = clean_text(text)
        if len(text) > self.config.max_message_chars:
            reply = Reply.fallback(
                TOO_LONG_TEXT.format(length=len(text), limit=self.config.max_message_chars)
            )
            return reply, Trace(text[:200], False, None, None)
        if not text:
            return Reply.smalltalk("I'm here. What would you like to know?"), Trace(
                "", False, None, None
            )
        small = smalltalk_reply(text, self.config.smalltalk)
        if small is not None:
            return Reply.smalltalk(small), Trace(text, False, None, None)

        context = context_for(history, self._topic_of) if history else None
        retrieval = self.retriever.retrieve(text, top=TOP_CANDIDATES)
        confidence = self.confidence.confidence(retrieval.features)
        used_context = False
        if context:
            follow_up = looks_like_follow_up(text)
            if follow_up or confidence < self.confidence.threshold:
                contextual = self.retriever.retrieve_follow_up(
                    text, context, previous=self._last_answered(history), top=TOP_CANDIDATES
                )
                contextual_confidence = self.confidence.confidence(contextual.features)
                # Not a follow-up by its look: use the context only if it makes an answer.
                if follow_up or contextual_confidence >= self.confidence.threshold:
                    retrieval, confidence, used_context = contextual, contextual_confidence, True
        policy_started = time.perf_counter()
        decision = decide(retrieval, confidence, self.confidence.threshold, self.config.decision)
        reply = self._compose(decision)
        timings = dict(retrieval.timings)
        timings["policy_ms"] = (time.perf_counter() - policy_started) * 1000
        timings["total_ms"] = (time.perf_counter() - started) * 1000
        return reply, Trace(retrieval.query, used_context, decision, retrieval, timings)

    def _topic_of(self, bot_text: str) -> str | None:
        """The question of the entry whose answer the bot said, if it was one."""
        entry = self.retriever.kb.entry_by_answer(bot_text)
        if entry is None:
            return None
        return entry.question or entry.title

    def _last_answered(self, history: Sequence[Turn]) -> str | None:
        """The id of the entry the bot's last turn answered with, if it was an answer."""
        last_bot = next((t.text for t in reversed(history) if t.role is Role.BOT), None)
        entry = self.retriever.kb.entry_by_answer(last_bot) if last_bot else None
        return entry.id if entry else None

    @staticmethod
    def _source(candidate: Candidate, score: float) -> Source:
        entry = candidate.entry
        return Source(
            id=entry.id,
            score=round(score, 4),
            title=entry.title or entry.question,
            url=entry.url,
        )

    def _compose(self, decision: Decision) -> Reply:
        if decision.kind is ReplyKind.ANSWER:
            best = decision.candidates[0]
            return Reply.answer(
                best.entry.answer, (self._source(best, decision.confidence),), decision.confidence
            )
        if decision.kind is ReplyKind.CLARIFY:
            options = tuple(self._source(c, c.dense) for c in decision.candidates)
            lines = [CLARIFY_TEXT, *(f"• {o.title or o.id}" for o in options)]
            return Reply.clarify("\n".join(lines), options, decision.confidence)
        return Reply.fallback(FALLBACK_TEXT, decision.confidence)


class Engine:
    """Runs live turns: the database around the `Responder`'s decision.

    Args:
        store: the database.
        responder: the decision path.
    """

    def __init__(self, store: Store, responder: Responder) -> None:
        self.store = store
        self.responder = responder

    @property
    def config(self) -> EngineConfig:
        return self.responder.config

    def handle(self, message: InboundMessage) -> list[Reply]:
        """Run one turn for a live message; returns the replies to send (none for duplicates).

        Failures stay inside the turn: the customer gets an apology, the error is logged.
        """
        try:
            return self._handle(message)
        except Exception:
            logger.exception(
                "turn failed platform=%s conversation=%s message=%s",
                message.platform,
                message.conversation,
                message.message_id,
            )
            return [Reply.fallback(ERROR_TEXT)]

    def _handle(self, message: InboundMessage) -> list[Reply]:
        started = time.perf_counter()
        message = replace(message, text=clean_text(message.text, normalize=False))
        # Message ids are unique within a platform's workspace, not across workspaces.
        event = f"message:{message.workspace}:{message.message_id}"
        if message.revision:
            event += f":{message.revision}"
        if not self.store.claim_event(message.platform, event):
            logger.info("duplicate message %s ignored", message.message_id)
            return []
        conversation = self.store.get_or_create_conversation(message.conversation, message.user)
        if message.revision and self.store.answered_message(conversation.id, message.message_id):
            logger.info("edit of already answered message %s: no second answer", message.message_id)
            return []
        history = self.store.history(conversation.id, limit=self.config.history_turns)
        message_row = self.store.add_message(
            conversation.id, Role.USER, message.user, message.text, message.message_id
        )
        if conversation.owner is Owner.HUMAN or not message.addressed:
            return []
        reply, trace = self.responder.respond(message.text, history)
        latency = (time.perf_counter() - started) * 1000
        reply_id = self.store.add_reply(
            conversation.id, message_row, reply, query=trace.query, latency_ms=latency
        )
        logger.info(
            "turn conversation=%s kind=%s confidence=%s latency_ms=%.1f",
            conversation.id,
            reply.kind,
            f"{reply.confidence:.3f}" if reply.confidence is not None else "-",
            latency,
        )
        return [replace(reply, id=reply_id)]

    def takes_part_in(self, key: ConversationKey) -> bool:
        """Whether the bot has a conversation at `key` (e.g. it answered in that thread)."""
        return self.store.find_conversation(key) is not None

    def owner_of(self, key: ConversationKey) -> Owner | None:
        """Who owns the conversation at `key`, or None when there is none."""
        conversation = self.store.find_conversation(key)
        return None if conversation is None else conversation.owner

    def attach_platform_ref(self, reply_id: str, ref: str) -> None:
        """Remember where a reply was posted (e.g. "C123:1700000000.000100" on Slack)."""
        self.store.set_reply_platform_ref(reply_id, ref)

    def reply_posted_as(self, ref: str) -> ReplyInfo | None:
        """The reply posted at a platform reference, or None: how reactions find their reply."""
        return self.store.find_reply_by_platform_ref(ref)

    def record_feedback(self, event: FeedbackEvent) -> bool:
        """Store a rating of a reply; False when it was a repeat that changed nothing."""
        if not self.store.claim_event(event.platform, f"feedback:{event.event_id}"):
            return False
        return self.store.record_feedback(event)
