"""The dialogue engine: one decision per turn, the same for every platform.

Policies decide, the engine acts. `Engine.handle` (one message) and `Engine.handle_burst` (several
messages from one person, one turn) run a live turn::

    de-duplicate (database) → find or create the conversation → read its state → record the
    message(s) → the policy pipeline decides (`policies.pipeline`; it asks the `Responder` for the
    knowledge base's proposal only when the turn gets that far) → act: stay silent, reply, or hand
    over (owner → human, a handoff reply, a `HandoffRequest` to the sink) → record the reply

At most one reply per turn. `Responder.respond` is the knowledge part alone (no database, no
conversation policies): `supportbot eval` runs it, so offline figures measure the retrieval and
the answering decision that live turns use.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from bot.compose.base import (
    ComposeOutcome,
    Composer,
    ComposeRequest,
    Composition,
    ExtractiveComposer,
    passages_for,
)
from bot.context import context_for, looks_like_follow_up
from bot.debounce import Clock, Debouncer, Timing
from bot.faults import crash_point
from bot.handoff import (
    Attempt,
    CustomerListener,
    DeskCoverage,
    HandoffRequest,
    HandoffSink,
    LoggingHandoffSink,
)
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    FeedbackReason,
    FeedbackValue,
    InboundMessage,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Source,
    Turn,
)
from bot.outbox import Destination
from bot.ratelimit import SLOW_DOWN_TEXT, RateLimiter, Verdict
from bot.redact import redact_text
from bot.relay import Relay
from bot.storage.store import (
    SILENT_TURN_PLATFORM,
    ConversationInfo,
    KeptContext,
    ReplyInfo,
    Store,
    TurnMessage,
    silent_turn_key,
)
from bot.text import clean_text
from knowledge.batching import Batcher
from knowledge.calibration import ConfidenceModel
from knowledge.retriever import FOLLOW_UP_DEPTH, Candidate, ContextSearch, Retrieval, Retriever
from knowledge.types import Context
from monitoring.telemetry import conversation_scope, set_conversation_id
from policies.config import PolicyConfig, load_policy_config
from policies.decision import Decision, DecisionConfig, decide
from policies.escalation import handoff_question
from policies.pipeline import Pipeline, PipelineResult
from policies.sentiment import compound
from policies.smalltalk import SmalltalkConfig, smalltalk_reply
from policies.state import (
    ConversationState,
    HistoryTurn,
    KnowledgeResult,
    Outcome,
    TurnContext,
)

logger = logging.getLogger(__name__)

FALLBACK_TEXT = (
    "Sorry, I don't have a good answer for that. Could you rephrase it, "
    "or would you like me to bring in a person?"
)
#: What choosing "talk to a person" among the 👎 reasons says on the customer's behalf.
PERSON_REQUEST_TEXT = "I'd like to talk to a person"
CLARIFY_TEXT = "I want to be sure I answer the right question. Which of these do you mean?"
ERROR_TEXT = "Sorry, something went wrong on my side while answering. Please try again in a moment."
#: Candidates kept per query: enough for recall@5 and the reciprocal rank in evaluation.
TOP_CANDIDATES = 20
#: Candidates the policies see (other close topics for a repeated question).
POLICY_CANDIDATES = 8
#: The bot's replies a handoff request lists as what it tried.
HANDOFF_ATTEMPTS = 3
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
    """Settings of the decision path.

    Attributes:
        history_turns: the messages a follow-up is read against.
        state_turns: the messages the conversation state is built from (misses, repeats, 👎,
            abuse count, resolved thread).
        max_message_chars: longer messages are refused politely.
        decision: the answering decision's settings.
        smalltalk: the `Responder`'s own smalltalk (the engine's comes from the policy settings).
    """

    history_turns: int = 8
    state_turns: int = 40
    max_message_chars: int = 4000
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    smalltalk: SmalltalkConfig = field(default_factory=SmalltalkConfig)


#: What an agent types, first word, in a customer's conversation to give it back to the bot.
RELEASE_COMMAND = "!release"
#: ... to close it and give it back to the bot.
RESOLVE_COMMAND = "!resolve"
#: ... to take it over without writing anything else.
CLAIM_COMMAND = "!claim"
#: The reason recorded when an agent takes a conversation over by answering in it.
AGENT_REPLIED = "agent replied"


class AgentAction(StrEnum):
    """What `Engine.agent_wrote` made of an agent's message in a customer's conversation."""

    #: The agent now owns the conversation; the change is recorded with who and when.
    TOOK_OVER = "took_over"
    #: A person already owned it: the message is stored, nothing else changes.
    REPLIED = "replied"
    #: ``!release``: the bot owns the conversation (again; also when it already did).
    RELEASED = "released"
    #: ``!resolve``: the conversation is closed and the bot owns it again.
    RESOLVED = "resolved"
    #: The writer is the conversation's own customer: handle the message as a customer turn.
    CUSTOMER = "customer"
    #: The bot has no conversation there: the message is not the agents' business here.
    IGNORED = "ignored"
    #: The same message again (a retried delivery).
    DUPLICATE = "duplicate"


#: 👎 reasons that say nothing about which entry fits the question (the entry is stale, or the
#: customer wants a person): they do not move ranking.
UNRANKED_REASONS: frozenset[str] = frozenset(
    {FeedbackReason.OUTDATED.value, FeedbackReason.TALK_TO_PERSON.value}
)


def ranking_sign(value: FeedbackValue | None, reason: str | None) -> int:
    """How a rating moves ranking: +1 (👍), -1 (👎), 0 (withdrawn, or a 👎 about staleness or
    asking for a person)."""
    if value is None:
        return 0
    if value is FeedbackValue.UP:
        return 1
    return 0 if reason in UNRANKED_REASONS else -1


class TurnListener(Protocol):
    """Hears what the engine did, e.g. to count it (`monitoring.telemetry.PrometheusTelemetry`).

    Methods are called in the thread that ran the turn; they must be quick and must not raise
    (an exception is logged and ignored).
    """

    def replied(self, kind: str, latency_ms: float) -> None:
        """A reply of `kind` was stored, `latency_ms` after the turn started."""

    def handed_over(self) -> None:
        """The bot handed a conversation to a person."""

    def rated(self, value: str | None) -> None:
        """A rating changed the stored feedback: "up", "down", or None (withdrawn)."""


@dataclass(frozen=True, slots=True)
class FeedbackOutcome:
    """What `Engine.respond_to_feedback` did: whether the ratings changed, what to post."""

    recorded: bool
    replies: tuple[Reply, ...] = ()


#: Posts a turn's replies on the platform: the message that closed the turn, and the replies.
Deliver = Callable[[InboundMessage, list[Reply]], Awaitable[None]]


class Responder:
    """The decision path alone: text and history in, reply out; touches no database.

    Args:
        retriever: searches the loaded knowledge base.
        confidence: turns retrieval features into a confidence and holds the threshold.
        config: engine settings.
        batch_window_ms: with a value, concurrent `respond` calls (the web app's threads) wait
            up to this long for each other and are decided together by one `respond_many`
            (`knowledge.batching.Batcher`); None: each call decides on its own.
    """

    def __init__(
        self,
        retriever: Retriever,
        confidence: ConfidenceModel,
        config: EngineConfig | None = None,
        *,
        batch_window_ms: float | None = None,
    ) -> None:
        self.retriever = retriever
        self.confidence = confidence
        self.config = config or EngineConfig()
        self.batcher: Batcher[tuple[str, Sequence[Turn]], tuple[Reply, Trace]] | None = None
        if batch_window_ms is not None:
            self.batcher = Batcher(self._respond_batch, window_s=batch_window_ms / 1000)

    def respond(self, text: str, history: Sequence[Turn] = ()) -> tuple[Reply, Trace]:
        """Decide the reply to `text` given the conversation so far (oldest first)."""
        if self.batcher is not None:
            return self.batcher.call((text, tuple(history)))
        return self.respond_many([text], [history])[0]

    def close(self) -> None:
        """Stop the batcher's thread, if any."""
        if self.batcher is not None:
            self.batcher.close()

    def prefetch(self, text: str, *, start: bool = False) -> None:
        """Start embedding `text` in the background if deciding it will search (not smalltalk,
        empty or too long): `respond(text)` then finds its vector ready (`Embedder.prefetch`;
        `start` as there)."""
        cleaned = clean_text(text)
        if self._without_search(cleaned) is None:
            self.retriever.kb.embedder.prefetch(cleaned, start=start)

    def context_of(self, history: Sequence[Turn]) -> Context | None:
        """The context a message after `history` is searched with, if it needs one (`_decide`):
        the last question and the topic of the answer (`bot.context.context_for`)."""
        return context_for(history, self.retriever.kb.entry_by_answer) if history else None

    def anticipate(
        self, history: Sequence[Turn], keep: Callable[[str, bytes], None] | None = None
    ) -> None:
        """Have the vectors of the context that the conversation's next message would be read
        in ready while the customer writes it (`Embedder.anticipate`, only while the process is
        idle): if that message is a follow-up, or unclear alone, its search with the context
        (`_decide`) finds them ready. Usually the question's vector is cached from its own turn
        and the topic's is in the index, so nothing needs embedding here. `keep(key, data)` is
        told the question's vector, for another process's `offer`."""
        context = self.context_of(history)
        if context is None:
            return
        embedder = self.retriever.kb.embedder
        for part in self.retriever.context_parts_to_embed(context):
            embedder.anticipate(part, keep if part == context.question else None)

    def prefetch_context(self, text: str, context: Context) -> None:
        """Start embedding the parts of `context` (`context_of` the history before `text`) that
        are not at hand if `text` will certainly be searched with it: a message that looks
        like a follow-up always is (`_decide`). Their forward pass then runs while the message
        itself is searched, instead of after (`Embedder.prefetch`); nothing for a part that is
        cached, in the index, or ready already (anticipated, or kept by another worker)."""
        cleaned = clean_text(text)
        if not looks_like_follow_up(cleaned) or self._without_search(cleaned) is not None:
            return
        embedder = self.retriever.kb.embedder
        for part in self.retriever.context_parts_to_embed(context):
            if not embedder.anticipated(part):
                embedder.prefetch(part)

    def offer(self, context: Context, key: str, data: bytes) -> bool:
        """Take the vector of a part of `context` (`context_of` this turn's history) as another
        process anticipated it (`anticipate`'s `keep`): if it was embedded for that part, by
        this model, a search with that context finds it ready (`Embedder.offer`)."""
        embedder = self.retriever.kb.embedder
        return any(
            embedder.offer(part, key, data)
            for part in self.retriever.context_parts_to_embed(context)
        )

    def _respond_batch(self, items: list[tuple[str, Sequence[Turn]]]) -> list[tuple[Reply, Trace]]:
        return self.respond_many([text for text, _ in items], [h for _, h in items])

    def respond_many(
        self,
        texts: Sequence[str],
        histories: Sequence[Sequence[Turn]] | None = None,
    ) -> list[tuple[Reply, Trace]]:
        """Decide the replies to several messages at once; the same decisions as `respond`.

        The messages that need the knowledge base are retrieved together
        (`Retriever.retrieve_many`: one embedding pass, one FAISS search); each is then decided
        on its own, follow-ups with their own history. For a batch, each trace's ``total_ms``
        is the batch's time divided by the number of messages.

        Args:
            texts: the messages.
            histories: each message's conversation so far (oldest first); none by default.

        Raises:
            ValueError: `histories` does not have one history per text.
        """
        if histories is None:
            histories = [()] * len(texts)
        if len(histories) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(histories)} histories")
        started = time.perf_counter()
        cleaned = [clean_text(text) for text in texts]
        results: list[tuple[Reply, Trace] | None] = [self._without_search(t) for t in cleaned]
        pending = [i for i, result in enumerate(results) if result is None]
        # A message with a history may be searched again with its context (`_decide`): ranked
        # as deep as that search needs, it is not searched again alone.
        depth = FOLLOW_UP_DEPTH if any(histories[i] for i in pending) else 0
        ahead: list[ContextSearch] = []
        if len(pending) == 1:
            only = pending[0]
            retrievals = [
                self.retriever.retrieve(
                    cleaned[only],
                    top=TOP_CANDIDATES,
                    depth=depth,
                    meanwhile=self._context_ahead(histories[only], ahead),
                )
            ]
        else:
            retrievals = self.retriever.retrieve_many(
                [cleaned[i] for i in pending], top=TOP_CANDIDATES, depth=depth
            )
        for i, retrieval in zip(pending, retrievals, strict=True):
            results[i] = self._decide(
                cleaned[i], histories[i], retrieval, ahead[0] if ahead else None
            )
        total_ms = (time.perf_counter() - started) * 1000 / max(len(texts), 1)
        out = []
        for result in results:
            assert result is not None
            if result[1].timings:
                result[1].timings["total_ms"] = total_ms
            out.append(result)
        return out

    def _without_search(self, text: str) -> tuple[Reply, Trace] | None:
        """The reply to a message that needs no knowledge base (too long, empty, smalltalk)."""
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
        return None

    def _context_ahead(
        self, history: Sequence[Turn], found: list[ContextSearch]
    ) -> Callable[[], None] | None:
        """For a message after `history`: the search of its context, to run while its own
        vector is being computed (`Retriever.retrieve(..., meanwhile=...)`), adding the result
        to `found` for `_decide`. A message with a context is searched with it when it looks
        like a follow-up or is unclear alone, which only its own search tells; the wait costs
        the turn nothing, and a follow-up's turn then searches once after the wait instead of
        twice. None without a context."""
        context = self.context_of(history)
        if context is None:
            return None

        def search() -> None:
            searched = self.retriever.search_context(context, top=TOP_CANDIDATES)
            if searched is not None:
                found.append(searched)

        return search

    def _decide(
        self,
        text: str,
        history: Sequence[Turn],
        retrieval: Retrieval,
        ahead: ContextSearch | None = None,
    ) -> tuple[Reply, Trace]:
        """The answering decision for a retrieved message, reading follow-ups in context
        (`ahead`: its context searched already, `_context_ahead`)."""
        context = self.context_of(history)
        confidence = self.confidence.confidence(retrieval.features)
        used_context = False
        if context:
            follow_up = looks_like_follow_up(text)
            if follow_up or confidence < self.confidence.threshold:
                contextual = self.retriever.retrieve_follow_up(
                    text,
                    context,
                    previous=self._last_answered(history),
                    top=TOP_CANDIDATES,
                    searched=retrieval,
                    ahead=ahead,
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
        return reply, Trace(retrieval.query, used_context, decision, retrieval, timings)

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
    """Runs live turns: reads the conversation, asks the policies, and acts on their decision.

    Args:
        store: the database.
        responder: the knowledge path (retrieval and the answering decision); the engine only
            calls its `respond` and reads its `config`.
        policies: the validated policy settings; the bundled defaults when None.
        handoff_sink: receives a `HandoffRequest` for each handoff; by default one that logs.
            A sink that reports nobody would pick a handoff up (`bot.handoff.DeskCoverage`, as
            `build_services` sets when no desk is configured) makes the handoff reply say how
            to reach a person instead, and the conversation stays with the bot.
    """

    def __init__(
        self,
        store: Store,
        responder: Responder,
        *,
        policies: PolicyConfig | None = None,
        handoff_sink: HandoffSink | None = None,
        composer: Composer | None = None,
        compose_passages: int = 3,
        rate_limiter: RateLimiter | None = None,
        redact_transcripts: bool = False,
    ) -> None:
        self.store = store
        self.responder = responder
        #: Per-user limits checked before any work on a turn (`bot.ratelimit`); None: no limit.
        self.rate_limiter = rate_limiter
        #: Store customers' messages with personal data masked (`bot.redact`); the turn reads
        #: the real text.
        self.redact_transcripts = redact_transcripts
        # Words ANSWER replies (docs/generative.md); the default keeps the entry's own text.
        self.composer: Composer = composer or ExtractiveComposer()
        self.compose_passages = compose_passages
        self.policies = policies if policies is not None else load_policy_config()
        self.handoff_sink: HandoffSink = handoff_sink or LoggingHandoffSink()
        self._pipelines: dict[str, Pipeline] = {}
        self._debouncers: weakref.WeakSet[Debouncer] = weakref.WeakSet()
        #: Told about every reply, handoff and rating (e.g. the Prometheus counters).
        self.listeners: list[TurnListener] = []
        #: Seconds a stored reply is left to the process that stored it before a sweeper may
        #: send it (`bot.outbox`; ``SUPPORTBOT_OUTBOX_HOLD_S``).
        self.outbox_hold_s = 30.0

    @property
    def config(self) -> EngineConfig:
        return self.responder.config

    def pipeline_for(self, key: ConversationKey) -> Pipeline:
        """The policy pipeline of a conversation's channel (per-channel settings applied)."""
        name, settings = self.policies.resolve(key.platform, key.channel)
        pipeline = self._pipelines.get(name)
        if pipeline is None:
            pipeline = self._pipelines[name] = Pipeline(settings)
        return pipeline

    # Turns -------------------------------------------------------------------------------------

    def handle(self, message: InboundMessage) -> list[Reply]:
        """Run one turn for a live message; returns the replies to send (none or one).

        Failures stay inside the turn: the customer gets an apology, the error is logged.
        """
        return self.handle_burst([message])

    def handle_burst(
        self, messages: Sequence[InboundMessage], *, redelivered: bool = False
    ) -> list[Reply]:
        """Run one turn for several messages from one person in one conversation.

        Every message is de-duplicated and recorded; the turn's text is their texts joined, and it
        gets at most one reply. `Debouncer` groups messages into such bursts.

        `redelivered`: the messages were accepted before (`bot.outbox` inbox) by a process that
        may have died mid-turn. A message whose de-duplication claim exists then counts as new
        unless a reply to it is stored already (that reply goes out through the outbox); its
        customer message is not stored twice. Under the conversation's turn lock no other turn
        of it runs, so this never answers a message that another live process is answering.

        Raises:
            ValueError: no messages, or messages from different people or conversations.
        """
        batch = self._check_batch(messages)
        limited = self._over_rate_limit(batch)
        if limited is not None:
            return limited
        self._prefetch(batch)
        try:
            key = str(batch[-1].conversation)
            # One turn of a conversation at a time, across threads and worker processes: its
            # turns are stored in order and each reads the one before (Store.conversation_lock).
            with conversation_scope(key), self.store.conversation_lock(key):
                return self._turn(batch, answer=True, redelivered=redelivered)
        except Exception:
            logger.exception(
                "turn failed platform=%s conversation=%s message=%s",
                batch[-1].platform,
                batch[-1].conversation,
                ",".join(m.message_id for m in batch),
            )
            return [Reply.fallback(ERROR_TEXT)]

    def _prefetch(self, batch: Sequence[InboundMessage]) -> None:
        """Start embedding the turn's text while its storage runs (`Responder.prefetch`): the
        forward pass overlaps the database round trips instead of following them.

        The text is the one `_continue_turn` asks about when every message is new (the usual
        case); otherwise the prefetched vector is simply not used. Only for messages addressed
        to the bot: the others are mostly not answered. With an in-process database the turn's
        storage holds the GIL, so the pass is started before the storage begins
        (`Store.in_process`).
        """
        if not any(m.addressed for m in batch):
            return
        text = "\n".join(t for m in batch if (t := clean_text(m.text, normalize=False)))
        if not text:
            return
        try:
            self.responder.prefetch(text, start=self.store.in_process)
        except Exception:  # only a head start: the turn embeds the text itself
            logger.warning("prefetching a turn's query vector failed", exc_info=True)

    def record(self, messages: Sequence[InboundMessage]) -> None:
        """Record messages in their conversation without answering them.

        For a turn cancelled because another person answered first (`human_replied`).
        """
        batch = self._check_batch(messages)
        try:
            with self.store.conversation_lock(str(batch[-1].conversation)):
                self._turn(batch, answer=False)
        except Exception:
            logger.exception(
                "recording failed platform=%s conversation=%s",
                batch[-1].platform,
                batch[-1].conversation,
            )

    def _over_rate_limit(self, batch: Sequence[InboundMessage]) -> list[Reply] | None:
        """None when the author may be answered; else what to say (once "slow down", then
        nothing). Checked before anything is stored or searched."""
        limiter = self.rate_limiter
        if limiter is None:
            return None
        last = batch[-1]
        key = f"{last.platform}:{last.workspace}:{last.user}"
        verdict = limiter.check(key, cost=min(len(batch), limiter.limit.messages))
        if verdict is Verdict.ALLOW:
            return None
        logger.info(
            "rate limit: %s from platform=%s %s",
            verdict,
            last.platform,
            ",".join(m.message_id for m in batch),
        )
        return [Reply.smalltalk(SLOW_DOWN_TEXT)] if verdict is Verdict.SLOW_DOWN else []

    @staticmethod
    def _check_batch(messages: Sequence[InboundMessage]) -> list[InboundMessage]:
        batch = list(messages)
        if not batch:
            raise ValueError("a turn needs at least one message")
        first = batch[0]
        if any(m.conversation != first.conversation or m.user != first.user for m in batch):
            raise ValueError("a turn's messages must share one conversation and one author")
        return batch

    def _turn(
        self, messages: list[InboundMessage], *, answer: bool, redelivered: bool = False
    ) -> list[Reply]:
        started = time.perf_counter()
        opened = self._open_turn(messages, redelivered=redelivered)
        if opened is None:
            return []
        return self._continue_turn(*opened, answer, started)

    def _open_turn(
        self, messages: Sequence[InboundMessage], *, redelivered: bool = False
    ) -> tuple[ConversationInfo, list[InboundMessage], list[HistoryTurn], list[int]] | None:
        """Claim, record and read a turn's storage in one transaction (`Store.open_turn`;
        `redelivered` as there).

        Returns:
            The conversation, the messages to answer, the history before them and their
            stored rows; None when there is nothing to answer (repeats, answered edits).
        """
        cleaned = [replace(m, text=clean_text(m.text, normalize=False)) for m in messages]
        first = cleaned[0]
        opening = self.store.open_turn(
            first.platform,
            first.conversation,
            first.user,
            [
                TurnMessage(
                    # Message ids are unique within a platform's workspace, not across them.
                    event_id=f"message:{m.workspace}:{m.message_id}"
                    + (f":{m.revision}" if m.revision else ""),
                    platform_message_id=m.message_id,
                    author=m.user,
                    text=redact_text(m.text) if self.redact_transcripts else m.text,
                    edit=bool(m.revision),
                )
                for m in cleaned
            ],
            self.config.state_turns,
            redelivered=redelivered,
        )
        for message, status in zip(cleaned, opening.status, strict=True):
            if status == "duplicate":
                logger.info("duplicate message %s ignored", message.message_id)
            elif status == "handled":
                logger.info("redelivered message %s was handled", message.message_id)
            elif status == "answered":
                logger.info(
                    "edit of already answered message %s: no second answer", message.message_id
                )
        if opening.conversation is None:
            return None
        set_conversation_id(opening.conversation.id)
        unanswered = [m for m, st in zip(cleaned, opening.status, strict=True) if st == "recorded"]
        if not unanswered:
            return None
        return opening.conversation, unanswered, opening.history, list(opening.rows)

    def _continue_turn(
        self,
        conversation: ConversationInfo,
        unanswered: list[InboundMessage],
        history: list[HistoryTurn],
        rows: Sequence[int],
        answer: bool,
        started: float,
    ) -> list[Reply]:
        """The turn once its messages are stored: the policies decide, the engine acts."""
        key, user = conversation.key, unanswered[0].user
        if conversation.owner is Owner.HUMAN:
            self._pass_to_person(conversation, unanswered)
        if not answer:
            return []

        pipeline = self.pipeline_for(key)
        state = ConversationState.from_history(
            history,
            owner=conversation.owner,
            customer=conversation.customer,
            resolved=conversation.status == "closed",
            is_abusive=pipeline.is_abusive,
        )
        text = "\n".join(m.text for m in unanswered if m.text)
        turn = TurnContext(
            text=text,
            user=user,
            platform=key.platform,
            channel=key.channel,
            addressed=any(m.addressed for m in unanswered),
            sentiment=compound(text),
            conversation=str(key),
            messages=len(unanswered),
        )
        plain = [self._plain_turn(t) for t in history[-self.config.history_turns :]]
        if plain:
            self._prepare_context(text, plain, conversation.context)
        traces: list[Trace] = []
        result = pipeline.run(turn, state, lambda: self._knowledge(text, plain, traces))
        result, composition = self._compose_answer(result, key, text, plain, traces)
        replies = self._act(
            result, conversation, state, rows[-1], started, composition, answering=unanswered[-1]
        )
        if replies and result.decision.outcome is not Outcome.HANDOFF:
            self._anticipate(conversation.id, rows[-1], unanswered[-1], replies[0])
        return replies

    def _anticipate(
        self, conversation_id: str, row: int, message: InboundMessage, reply: Reply
    ) -> None:
        """Start on the context of the conversation's next message (`Responder.anticipate`),
        built from this turn as the next one will read it back from storage. Once embedded,
        the vector is kept with the conversation (`Store.keep_context`), so the worker that
        gets the next message finds it too (`_prepare_context`)."""
        stored = redact_text(message.text) if self.redact_transcripts else message.text
        said = HistoryTurn(Role.BOT, reply.text, reply.kind, reply.sources)
        keep = functools.partial(self._keep_context, conversation_id, row)
        try:
            self.responder.anticipate([Turn(Role.USER, stored), self._plain_turn(said)], keep)
        except Exception:  # only a head start: the next turn embeds the context itself
            logger.warning("anticipating the next message's context failed", exc_info=True)

    def _keep_context(self, conversation_id: str, row: int, key: str, vector: bytes) -> None:
        """Store an anticipated context vector with its conversation (the anticipating
        thread calls it, in a quiet moment)."""
        self.store.keep_context(conversation_id, row, key, vector)

    def _prepare_context(
        self, text: str, history: Sequence[Turn], kept: KeptContext | None
    ) -> None:
        """Have the vector of the context `text` may be searched with ready before the search
        needs it: the one kept with the conversation by another worker (or this one), if it
        fits (`Responder.offer`); for a follow-up, one started on the prefetch thread now
        (`Responder.prefetch_context`)."""
        try:
            context = self.responder.context_of(history)
            if context is None:
                return
            if kept is not None:
                self.responder.offer(context, kept.key, kept.vector)
            self.responder.prefetch_context(text, context)
        except Exception:  # only a head start: the turn embeds the context itself
            logger.warning("getting a turn's context vector ready failed", exc_info=True)

    def _plain_turn(self, turn: HistoryTurn) -> Turn:
        """A history line as the knowledge path reads it, with its reply's kind
        (`bot.context.context_for`: only an answer gives a follow-up its topic).

        A generated answer is read as the text of the entry it answered with, so follow-ups
        ("and for business?") find their topic as they do after an extractive answer. The
        bot's only lines without a reply are the relay's notices to the customer (an agent
        took the conversation, gave it back, or none came: `Relay._tell_customer`), the
        handoff's own wording, so they are read as a handoff.
        """
        if turn.role is Role.BOT and turn.reply_kind is None:
            return Turn(turn.role, turn.text, ReplyKind.HANDOFF)
        if (
            turn.role is Role.BOT
            and turn.reply_kind is ReplyKind.ANSWER
            and turn.sources
            and not isinstance(self.composer, ExtractiveComposer)
        ):
            entry = self.responder.retriever.kb.entry(turn.sources[0].id)
            if entry is not None:
                return Turn(turn.role, entry.answer, turn.reply_kind)
        return Turn(turn.role, turn.text, turn.reply_kind)

    def _compose_answer(
        self,
        result: PipelineResult,
        key: ConversationKey,
        text: str,
        history: Sequence[Turn],
        traces: Sequence[Trace],
    ) -> tuple[PipelineResult, Composition | None]:
        """Let the composer word the turn's answer; only the knowledge base's own ANSWER.

        Clarifications, fallbacks, handoffs and smalltalk go out as the policies wrote them. The
        composer never raises by contract; should one still do so, the extractive answer goes.
        """
        decision, knowledge = result.decision, result.turn.knowledge
        reply = decision.reply
        retrieval = traces[-1].retrieval if traces else None
        if (
            isinstance(self.composer, ExtractiveComposer)
            or decision.outcome is not Outcome.REPLY
            or reply is None
            or reply.kind is not ReplyKind.ANSWER
            or knowledge is None
            or reply is not knowledge.reply
            or not reply.sources
            or retrieval is None
        ):
            return result, None
        first = self.responder.retriever.kb.entry(reply.sources[0].id)
        if first is None:
            return result, None
        texts = [(reply.sources[0], first.answer, first.title or first.question)]
        for candidate in retrieval.candidates:
            if len(texts) >= self.compose_passages:
                break
            if candidate.entry.id != first.id:
                entry = candidate.entry
                texts.append(
                    (
                        Responder._source(candidate, candidate.dense),
                        entry.answer,
                        entry.title or entry.question,
                    )
                )
        persona = self.pipeline_for(key).settings.persona
        request = ComposeRequest(
            question=text,
            reply=reply,
            passages=passages_for(reply, texts),
            history=tuple(history),
            bot_name=persona.bot_name or self.config.smalltalk.bot_name,
            tone=str(persona.tone),
        )
        try:
            composition = self.composer.compose(request)
        except Exception:
            logger.exception("composer %s failed; the extractive answer goes out", self.composer)
            return result, None
        if composition.reply is not reply:
            result = replace(result, decision=replace(decision, reply=composition.reply))
        return result, composition

    def _pass_to_person(
        self, conversation: ConversationInfo, messages: Sequence[InboundMessage]
    ) -> None:
        """While a person owns the conversation, the sink (the relay) hears the customer."""
        sink = self.handoff_sink
        if not isinstance(sink, CustomerListener):
            return
        for message in messages:
            if message.user != conversation.customer or not message.text:
                continue
            try:
                sink.customer_said(conversation.key, message.text, message.message_id)
            except Exception:
                logger.exception(
                    "relaying a customer message failed conversation=%s message=%s",
                    conversation.id,
                    message.message_id,
                )

    def _knowledge(
        self, text: str, history: Sequence[Turn], traces: list[Trace] | None = None
    ) -> KnowledgeResult:
        """The knowledge base's proposal for a message: the `Responder`'s reply and candidates."""
        reply, trace = self.responder.respond(text, history)
        if traces is not None:
            traces.append(trace)
        retrieval = trace.retrieval
        candidates: tuple[Source, ...] = reply.sources
        if retrieval is not None:
            candidates = tuple(
                Source(
                    c.entry.id,
                    round(c.dense, 4),
                    c.entry.title or c.entry.question,
                    c.entry.url,
                )
                for c in retrieval.candidates[:POLICY_CANDIDATES]
            )
        searched = retrieval is not None or trace.decision is not None
        return KnowledgeResult(reply, trace.query, candidates, searched)

    def _act(
        self,
        result: PipelineResult,
        conversation: ConversationInfo,
        state: ConversationState,
        message_row: int,
        started: float,
        composition: Composition | None = None,
        *,
        answering: InboundMessage | None = None,
    ) -> list[Reply]:
        decision, turn = result.decision, result.turn
        if decision.resolve:
            self.store.set_status(conversation.id, "closed")
        elif state.resolved and decision.speaks:
            self.store.set_status(conversation.id, "open")  # a new question reopens the thread
        if decision.outcome is Outcome.SILENT or decision.reply is None:
            # So that a redelivery of this message is not answered (`handle_burst`).
            self.store.claim_event(
                SILENT_TURN_PLATFORM, silent_turn_key(conversation.id, message_row)
            )
            logger.debug(
                "turn conversation=%s silent policy=%s reason=%s",
                conversation.id,
                decision.policy,
                decision.reason,
            )
            return []
        reply = decision.reply
        handoff = decision.outcome is Outcome.HANDOFF
        no_desk = self._no_desk_reply(conversation.key) if handoff else None
        if no_desk is not None:
            # Nobody would pick it up: say how to reach a person, keep answering, and record
            # the request (bot to bot) so that monitoring still sees it.
            reply = replace(reply, text=no_desk)
            self.store.record_handoff(
                conversation.id,
                Owner.BOT,
                Owner.BOT,
                actor="bot",
                reason=f"no_desk:{decision.reason or decision.policy}",
            )
        elif handoff:
            self.store.set_owner(
                conversation.id,
                Owner.HUMAN,
                actor="bot",
                reason=decision.reason or decision.policy,
            )
        query = turn.knowledge.query if turn.knowledge is not None else turn.text[:200]
        latency = (time.perf_counter() - started) * 1000
        # Into the outbox: stored with where it goes before anyone sends it (bot.outbox).
        destination = Destination.of(answering, reply).to_json() if answering else None
        reply_id = self.store.add_reply(
            conversation.id,
            message_row,
            reply,
            query=query,
            latency_ms=latency,
            destination=destination,
            hold_s=self.outbox_hold_s,
        )
        crash_point("after_reply_stored")
        reply = replace(reply, id=reply_id)
        if composition is not None and composition.outcome is not ComposeOutcome.EXTRACTIVE:
            self._log_composition(reply_id, composition)
        logger.info(
            "turn conversation=%s policy=%s kind=%s confidence=%s latency_ms=%.1f",
            conversation.id,
            decision.policy,
            reply.kind,
            f"{reply.confidence:.3f}" if reply.confidence is not None else "-",
            latency,
        )
        self._tell("replied", reply.kind.value, latency)
        if handoff:
            self._tell("handed_over")
            self._request_handoff(conversation, state, turn, reply, decision.reason)
        return [reply]

    def _tell(self, hook: str, *args: object) -> None:
        """Call `hook` on every listener; a failing listener never fails the turn."""
        for listener in self.listeners:
            try:
                getattr(listener, hook)(*args)
            except Exception:
                logger.exception("listener %r failed in %s", listener, hook)

    def _no_desk_reply(self, key: ConversationKey) -> str | None:
        """The sink's text when nobody would pick a handoff up (`DeskCoverage`), else None."""
        sink = self.handoff_sink
        if not isinstance(sink, DeskCoverage):
            return None
        try:
            return sink.no_desk_reply(key)
        except Exception:
            logger.exception("handoff sink coverage check failed conversation=%s", key)
            return None

    def _log_composition(self, reply_id: str, composition: Composition) -> None:
        """Keep how a generated answer went with its reply, for error analysis."""
        try:
            self.store.add_composition(
                reply_id,
                composer=composition.composer,
                outcome=composition.outcome.value,
                reason=composition.reason,
                model=composition.model,
                prompt_version=composition.prompt_version,
                generated=composition.generated,
                support=[asdict(s) for s in composition.support],
                latency_ms=round(composition.latency_ms, 1),
            )
        except Exception:
            # The reply is stored and goes out; only the analysis row is lost.
            logger.exception("logging the composition of reply %s failed", reply_id)

    def _request_handoff(
        self,
        conversation: ConversationInfo,
        state: ConversationState,
        turn: TurnContext,
        reply: Reply,
        reason: str,
    ) -> None:
        settings = self.pipeline_for(conversation.key).settings
        attempts = tuple(
            Attempt(t.text, t.reply_kind, t.sources)
            for t in state.history
            if t.role is Role.BOT and t.reply_kind is not None
        )[-HANDOFF_ATTEMPTS:]
        transcript = (
            *(Turn(t.role, t.text) for t in state.history),
            Turn(Role.USER, turn.text),
            Turn(Role.BOT, reply.text),
        )
        request = HandoffRequest(
            conversation_id=conversation.id,
            key=conversation.key,
            customer=conversation.customer or turn.user,
            platform=conversation.key.platform,
            question=handoff_question(turn.text, state, settings.escalation.request_phrases),
            reason=reason,
            attempts=attempts,
            sentiment=turn.sentiment,
            transcript=transcript,
            reply_id=reply.id,
        )
        try:
            self.handoff_sink.request(request)
        except Exception:
            # The conversation is already the agents' and the customer was told: keep the turn.
            logger.exception(
                "handoff sink failed conversation=%s reason=%s", conversation.id, reason
            )

    # Turn-taking hooks for adapters --------------------------------------------------------------

    def mark_resolved(self, key: ConversationKey) -> bool:
        """The customer marked the conversation resolved (e.g. a ✅ reaction).

        The bot then stays silent there until the customer asks something new.

        Returns:
            True if an open conversation was marked, False if there is none or it was already.
        """
        conversation = self.store.find_conversation(key)
        if conversation is None or conversation.status == "closed":
            return False
        self.store.set_status(conversation.id, "closed")
        logger.info("conversation %s marked resolved", conversation.id)
        return True

    def timing_for(self, key: ConversationKey) -> Timing:
        """The burst window and head start of a conversation's channel, from the settings."""
        turn_taking = self.pipeline_for(key).settings.turn_taking
        return Timing(turn_taking.burst_window_seconds, turn_taking.head_start_seconds)

    def debouncer(
        self,
        deliver: Deliver,
        *,
        clock: Clock | None = None,
        finished: Callable[[tuple[InboundMessage, ...]], Awaitable[None]] | None = None,
    ) -> Debouncer:
        """A `Debouncer` that runs this engine's turns and hands the replies to `deliver`.

        Bursts become one turn (`handle_burst`); a turn cancelled by `human_replied` is recorded
        unanswered (`record`). The engine's `human_replied` reaches every debouncer made here.

        Args:
            deliver: posts a turn's replies; called with the turn's last message.
            clock: the time source (a `ManualClock` in tests).
            finished: called with a turn's messages once it was delivered or recorded (e.g. to
                mark them done in the inbox, `bot.outbox`).
        """

        async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
            replies = await asyncio.to_thread(self.handle_burst, messages)
            await deliver(messages[-1], replies)
            if finished is not None:
                await finished(messages)

        async def on_cancel(messages: tuple[InboundMessage, ...]) -> None:
            await asyncio.to_thread(self.record, messages)
            if finished is not None:
                await finished(messages)

        debouncer = Debouncer(on_turn, timing=self.timing_for, on_cancel=on_cancel, clock=clock)
        self._debouncers.add(debouncer)
        return debouncer

    def human_replied(self, key: ConversationKey, user: str) -> bool:
        """Another person answered in a conversation: cancel the bot's pending answer there.

        Call it from the event loop that runs the debouncers, for every message by a person
        other than the customer (an agent, another member of a shared channel).

        Returns:
            Whether a pending bot answer was cancelled.
        """
        cancelled = [d.human_replied(key, user) for d in list(self._debouncers)]
        return any(cancelled)

    def agent_wrote(
        self, key: ConversationKey, agent: str, text: str, message_id: str
    ) -> AgentAction:
        """A human agent wrote in a customer's conversation on the customer's own platform.

        The first such message takes the conversation over: the owner becomes human, recorded
        with the agent as actor and the reason "agent replied" (when the bot had handed over and
        nobody had taken it yet, the agent's taking it is recorded the same way), and a waiting
        relay link is marked claimed by them, so it no longer times out. The message is stored
        as an `agent` message. From then on the bot stays silent there (the `addressed_gate`).
        ``!release`` (first word) gives the conversation back to the bot and ``!resolve`` also
        closes it, with the relay's semantics when a relay link is active; ``!claim`` takes over
        without a message. Adapters decide who is an agent, cancel the bot's pending answer with
        `human_replied` first (on the event loop), then call this in a worker thread.

        Args:
            key: the customer's conversation.
            agent: the agent's platform user id.
            text: what the agent wrote, as plain text.
            message_id: the platform message id (de-duplicates repeated deliveries).

        It runs under the conversation's turn lock (`Store.conversation_lock`), so a customer's
        turn in progress in any worker finishes first and the next one sees the new owner.
        """
        with self.store.conversation_lock(str(key)):
            return self._agent_wrote(key, agent, text, message_id)

    def _agent_wrote(
        self, key: ConversationKey, agent: str, text: str, message_id: str
    ) -> AgentAction:
        conversation = self.store.find_conversation(key)
        if conversation is None:
            return AgentAction.IGNORED
        if conversation.customer == agent:
            return AgentAction.CUSTOMER
        if not self.store.claim_event(key.platform, f"agent:{key.workspace}:{message_id}"):
            return AgentAction.DUPLICATE
        words = text.strip().split(maxsplit=1)
        command = words[0].lower() if words else ""
        relay = self.handoff_sink if isinstance(self.handoff_sink, Relay) else None
        if command in (RELEASE_COMMAND, RESOLVE_COMMAND):
            resolve = command == RESOLVE_COMMAND
            if conversation.owner is Owner.BOT and not resolve:
                return AgentAction.RELEASED  # the bot owns it already: nothing changes
            if relay is not None:
                relay.agent_gave_back(conversation.id, agent, message_id, resolve=resolve)
            reason = "resolved" if resolve else "released"
            self.store.set_owner(conversation.id, Owner.BOT, actor=agent, reason=reason)
            if resolve:
                self.store.set_status(conversation.id, "closed")
            logger.info("conversation %s %s by agent %s", conversation.id, reason, agent)
            return AgentAction.RESOLVED if resolve else AgentAction.RELEASED

        took_over = False
        if conversation.owner is Owner.BOT:
            self.store.set_owner(conversation.id, Owner.HUMAN, actor=agent, reason=AGENT_REPLIED)
            took_over = True
        elif self.store.last_owner_actor(conversation.id) == "bot":
            # Handed over by the bot and not taken by anyone yet: this agent takes it.
            self.store.record_handoff(
                conversation.id, Owner.HUMAN, Owner.HUMAN, actor=agent, reason=AGENT_REPLIED
            )
            took_over = True
        if relay is not None:
            relay.agent_joined(conversation.id, agent, message_id)
        body = clean_text(text, normalize=False)
        if body and command != CLAIM_COMMAND:
            self.store.add_message(conversation.id, Role.AGENT, agent, body, message_id)
        if took_over:
            logger.info("conversation %s taken over by agent %s", conversation.id, agent)
            return AgentAction.TOOK_OVER
        return AgentAction.REPLIED

    # Lookups for adapters ------------------------------------------------------------------------

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
        changed = self.store.record_feedback(event)
        if changed:
            self._tell("rated", None if event.value is None else event.value.value)
            try:
                self._learn(event)
            except Exception:
                # The rating is stored; ranking picks it up on the next start.
                logger.exception("feedback on reply %s not applied to ranking", event.reply_id)
        return changed

    def load_feedback(self) -> int:
        """Fill the retriever's feedback index from the stored ratings of answers.

        Call once at start-up (`build_services` does); later ratings are applied as they come.

        Returns:
            How many ratings now move ranking.
        """
        retriever = self.responder.retriever
        index = retriever.feedback
        if index is None:
            return 0
        ratings = [r for r in self.store.ratings() if r.reply.sources and r.reply.query]
        if not ratings:
            return 0
        vectors = retriever.kb.embedder.encode([r.reply.query for r in ratings])
        kept = index.extend(
            (
                (r.reply.id, r.user),
                vector,
                r.reply.sources[0].id,
                ranking_sign(r.value, r.reason),
            )
            for r, vector in zip(ratings, vectors, strict=True)
        )
        logger.info("feedback ranking: %d ratings loaded", kept)
        return kept

    def _learn(self, event: FeedbackEvent) -> None:
        """Apply a changed rating to the retriever's feedback index."""
        index = self.responder.retriever.feedback
        if index is None:
            return
        key = (event.reply_id, event.user)
        sign = ranking_sign(event.value, event.reason)
        if sign == 0:
            index.remove(key)
            return
        reply = self.store.get_reply(event.reply_id)
        if reply is None or reply.kind != ReplyKind.ANSWER or not reply.sources or not reply.query:
            return
        index.set(key, self.responder.retriever.embed(reply.query), reply.sources[0].id, sign)

    def respond_to_feedback(self, event: FeedbackEvent) -> FeedbackOutcome:
        """Record a rating and return what the bot says after it (the same on every platform).

        * a 👎 given without a reason: the quick reasons (`Reply.feedback_reasons`; not stored,
          its id is the rated reply's so that the reason buttons name it);
        * the reason "talk to a person": the turn that asking for a person makes in the rated
          reply's conversation (the escalation policy hands it over), as the "Talk to a person"
          button does;
        * anything else (👍, another reason, a withdrawn rating, a repeat): nothing.

        Raises:
            StorageError: there is no reply `event.reply_id`.
        """
        if not self.record_feedback(event):
            return FeedbackOutcome(False)
        if event.value is FeedbackValue.DOWN and event.reason is None:
            return FeedbackOutcome(True, (Reply.feedback_reasons(event.reply_id),))
        if event.reason != FeedbackReason.TALK_TO_PERSON:
            return FeedbackOutcome(True)
        reply = self.store.get_reply(event.reply_id)
        conversation = None if reply is None else self.store.get_conversation(reply.conversation_id)
        if conversation is None:
            return FeedbackOutcome(True)
        key = conversation.key
        request = InboundMessage(
            platform=key.platform,
            workspace=key.workspace,
            channel=key.channel,
            thread=key.thread,
            user=event.user,
            message_id=f"feedback-reason:{event.event_id}",
            text=PERSON_REQUEST_TEXT,
        )
        return FeedbackOutcome(True, tuple(self.handle(request)))
