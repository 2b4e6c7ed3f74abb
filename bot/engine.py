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
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from bot.context import context_for, looks_like_follow_up
from bot.debounce import Clock, Debouncer, Timing
from bot.handoff import (
    Attempt,
    CustomerListener,
    HandoffRequest,
    HandoffSink,
    LoggingHandoffSink,
)
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
from bot.state import read_history
from bot.storage.store import ConversationInfo, ReplyInfo, Store
from bot.text import clean_text
from knowledge.calibration import ConfidenceModel
from knowledge.retriever import Candidate, Retrieval, Retriever
from policies.config import PolicyConfig, load_policy_config
from policies.decision import Decision, DecisionConfig, decide
from policies.escalation import handoff_question
from policies.pipeline import Pipeline, PipelineResult
from policies.sentiment import compound
from policies.smalltalk import SmalltalkConfig, smalltalk_reply
from policies.state import ConversationState, KnowledgeResult, Outcome, TurnContext

logger = logging.getLogger(__name__)

FALLBACK_TEXT = (
    "Sorry, I don't have a good answer for that. Could you rephrase it, "
    "or would you like me to bring in a person?"
)
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


#: Posts a turn's replies on the platform: the message that closed the turn, and the replies.
Deliver = Callable[[InboundMessage, list[Reply]], Awaitable[None]]


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
                    text,
                    context,
                    previous=self._last_answered(history),
                    top=TOP_CANDIDATES,
                    text_vector=retrieval.vector,
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
    """Runs live turns: reads the conversation, asks the policies, and acts on their decision.

    Args:
        store: the database.
        responder: the knowledge path (retrieval and the answering decision); the engine only
            calls its `respond` and reads its `config`.
        policies: the validated policy settings; the bundled defaults when None.
        handoff_sink: receives a `HandoffRequest` for each handoff; by default one that logs.
    """

    def __init__(
        self,
        store: Store,
        responder: Responder,
        *,
        policies: PolicyConfig | None = None,
        handoff_sink: HandoffSink | None = None,
    ) -> None:
        self.store = store
        self.responder = responder
        self.policies = policies if policies is not None else load_policy_config()
        self.handoff_sink: HandoffSink = handoff_sink or LoggingHandoffSink()
        self._pipelines: dict[str, Pipeline] = {}
        self._debouncers: weakref.WeakSet[Debouncer] = weakref.WeakSet()

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

    def handle_burst(self, messages: Sequence[InboundMessage]) -> list[Reply]:
        """Run one turn for several messages from one person in one conversation.

        Every message is de-duplicated and recorded; the turn's text is their texts joined, and it
        gets at most one reply. `Debouncer` groups messages into such bursts.

        Raises:
            ValueError: no messages, or messages from different people or conversations.
        """
        batch = self._check_batch(messages)
        try:
            return self._turn(batch, answer=True)
        except Exception:
            logger.exception(
                "turn failed platform=%s conversation=%s message=%s",
                batch[-1].platform,
                batch[-1].conversation,
                ",".join(m.message_id for m in batch),
            )
            return [Reply.fallback(ERROR_TEXT)]

    def record(self, messages: Sequence[InboundMessage]) -> None:
        """Record messages in their conversation without answering them.

        For a turn cancelled because another person answered first (`human_replied`).
        """
        batch = self._check_batch(messages)
        try:
            self._turn(batch, answer=False)
        except Exception:
            logger.exception(
                "recording failed platform=%s conversation=%s",
                batch[-1].platform,
                batch[-1].conversation,
            )

    @staticmethod
    def _check_batch(messages: Sequence[InboundMessage]) -> list[InboundMessage]:
        batch = list(messages)
        if not batch:
            raise ValueError("a turn needs at least one message")
        first = batch[0]
        if any(m.conversation != first.conversation or m.user != first.user for m in batch):
            raise ValueError("a turn's messages must share one conversation and one author")
        return batch

    def _turn(self, messages: list[InboundMessage], *, answer: bool) -> list[Reply]:
        started = time.perf_counter()
        fresh: list[InboundMessage] = []
        for message in messages:
            message = replace(message, text=clean_text(message.text, normalize=False))
            # Message ids are unique within a platform's workspace, not across workspaces.
            event = f"message:{message.workspace}:{message.message_id}"
            if message.revision:
                event += f":{message.revision}"
            if self.store.claim_event(message.platform, event):
                fresh.append(message)
            else:
                logger.info("duplicate message %s ignored", message.message_id)
        if not fresh:
            return []
        key, user = fresh[0].conversation, fresh[0].user
        conversation = self.store.get_or_create_conversation(key, user)
        unanswered: list[InboundMessage] = []
        for message in fresh:
            answered = message.revision and self.store.answered_message(
                conversation.id, message.message_id
            )
            if answered:
                logger.info(
                    "edit of already answered message %s: no second answer", message.message_id
                )
                continue
            unanswered.append(message)
        if not unanswered:
            return []
        history = read_history(self.store, conversation.id, self.config.state_turns)
        rows = [
            self.store.add_message(conversation.id, Role.USER, m.user, m.text, m.message_id)
            for m in unanswered
        ]
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
        plain = [Turn(t.role, t.text) for t in history[-self.config.history_turns :]]
        result = pipeline.run(turn, state, lambda: self._knowledge(text, plain))
        return self._act(result, conversation, state, rows[-1], started)

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

    def _knowledge(self, text: str, history: Sequence[Turn]) -> KnowledgeResult:
        """The knowledge base's proposal for a message: the `Responder`'s reply and candidates."""
        reply, trace = self.responder.respond(text, history)
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
    ) -> list[Reply]:
        decision, turn = result.decision, result.turn
        if decision.resolve:
            self.store.set_status(conversation.id, "closed")
        elif state.resolved and decision.speaks:
            self.store.set_status(conversation.id, "open")  # a new question reopens the thread
        if decision.outcome is Outcome.SILENT or decision.reply is None:
            logger.debug(
                "turn conversation=%s silent policy=%s reason=%s",
                conversation.id,
                decision.policy,
                decision.reason,
            )
            return []
        reply = decision.reply
        handoff = decision.outcome is Outcome.HANDOFF
        if handoff:
            self.store.set_owner(
                conversation.id,
                Owner.HUMAN,
                actor="bot",
                reason=decision.reason or decision.policy,
            )
        query = turn.knowledge.query if turn.knowledge is not None else turn.text[:200]
        latency = (time.perf_counter() - started) * 1000
        reply_id = self.store.add_reply(
            conversation.id, message_row, reply, query=query, latency_ms=latency
        )
        reply = replace(reply, id=reply_id)
        logger.info(
            "turn conversation=%s policy=%s kind=%s confidence=%s latency_ms=%.1f",
            conversation.id,
            decision.policy,
            reply.kind,
            f"{reply.confidence:.3f}" if reply.confidence is not None else "-",
            latency,
        )
        if handoff:
            self._request_handoff(conversation, state, turn, reply, decision.reason)
        return [reply]

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

    def debouncer(self, deliver: Deliver, *, clock: Clock | None = None) -> Debouncer:
        """A `Debouncer` that runs this engine's turns and hands the replies to `deliver`.

        Bursts become one turn (`handle_burst`); a turn cancelled by `human_replied` is recorded
        unanswered (`record`). The engine's `human_replied` reaches every debouncer made here.

        Args:
            deliver: posts a turn's replies; called with the turn's last message.
            clock: the time source (a `ManualClock` in tests).
        """

        async def on_turn(messages: tuple[InboundMessage, ...]) -> None:
            replies = await asyncio.to_thread(self.handle_burst, messages)
            await deliver(messages[-1], replies)

        async def on_cancel(messages: tuple[InboundMessage, ...]) -> None:
            await asyncio.to_thread(self.record, messages)

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
        return self.store.record_feedback(event)
