"""Answering from the knowledge base, and what happens when the bot cannot.

The knowledge base's proposal (retrieval + `policies.decision.decide`) arrives as
`TurnContext.knowledge`; these policies turn it into the turn's decision:

* `RepeatedQuestion`: never the same answer twice; offer other close topics, else a person.
* `KnowledgeAnswer`: a confident answer with an entry not used yet.
* `Clarify`: the 2-3 closest topics when the bot is unsure between them.
* `Fallback`: say so plainly and offer a person; apologise on the first miss in a row only; on
  the `fallback.misses_before_offer`-th miss, offer the handoff (or perform it, if configured).
"""

from __future__ import annotations

from dataclasses import replace

from bot.model import Reply, ReplyKind, Source
from policies.base import HANDOFF_ACTION, Policy
from policies.state import (
    ConversationState,
    HandoffReason,
    KnowledgeResult,
    Outcome,
    PolicyDecision,
    TurnContext,
)

__all__ = ["Clarify", "Fallback", "KnowledgeAnswer", "RepeatedQuestion", "miss"]


def _bullets(intro: str, options: tuple[Source, ...]) -> str:
    return "\n".join([intro, *(f"• {o.title or o.id}" for o in options)])


def miss(
    policy: Policy,
    state: ConversationState,
    *,
    first: str,
    again: str,
    confidence: float | None = None,
) -> PolicyDecision:
    """The decision for a miss: apologise once, offer a person, hand over after N in a row.

    Args:
        policy: the deciding policy (its settings and texts are used).
        state: the conversation so far.
        first: the text of the first miss in a row (the only one that may apologise).
        again: the text of a later miss in a row.
        confidence: the knowledge base's confidence, kept on the reply.
    """
    settings, texts = policy.settings.fallback, policy.texts
    misses = state.consecutive_misses + 1
    # The offer is made once when the run of misses reaches the limit; it is made again only
    # if a clarification came in between.
    offer_due = misses >= settings.misses_before_offer and (
        state.consecutive_misses < settings.misses_before_offer
        or state.last_reply_kind is not ReplyKind.FALLBACK
    )
    if offer_due:
        if settings.handoff_on_misses == "perform":
            return PolicyDecision.handoff(texts.handoff, HandoffReason.REPEATED_MISSES, str(misses))
        return PolicyDecision.say(Reply.fallback(texts.offer_person, confidence), "offer_person")
    text = first if state.consecutive_misses == 0 else again
    return PolicyDecision.say(Reply.fallback(text, confidence), "miss")


def _repeats(knowledge: KnowledgeResult | None, state: ConversationState) -> bool:
    return (
        knowledge is not None
        and knowledge.kind is ReplyKind.ANSWER
        and knowledge.top_entry in state.last_answered_entry_ids
    )


class RepeatedQuestion(Policy):
    """The knowledge base proposes an answer the bot already gave: never say it twice.

    Other close topics (similar enough, not answered yet) are offered as choices, with a person;
    with none, or when the bot's last replies were already misses, the customer is told plainly
    and offered a person (a miss, so `fallback.misses_before_offer` applies).
    """

    name = "repeated_question"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return _repeats(turn.knowledge, state)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        knowledge = turn.knowledge
        if knowledge is None or not knowledge.reply.sources:
            return None
        answered = knowledge.reply.sources[0]
        topic = answered.title or answered.id
        repeat = self.settings.repeat
        seen_titles = {topic}
        options: list[Source] = []
        for candidate in knowledge.candidates:
            title = candidate.title or candidate.id
            if (
                candidate.id in state.last_answered_entry_ids
                or candidate.score < repeat.min_similarity
                or title in seen_titles
            ):
                continue
            seen_titles.add(title)
            options.append(candidate)
            if len(options) == repeat.max_options:
                break
        confidence = knowledge.reply.confidence
        # Other topics are offered once per run of misses; asked yet again, it is a plain miss
        # (which offers a person), so no message repeats either.
        if options and state.consecutive_misses == 0:
            intro = self.texts.repeat(self.texts.repeat_clarify, topic)
            reply = Reply.clarify(_bullets(intro, tuple(options)), tuple(options), confidence)
            reply = replace(reply, actions=(*reply.actions, HANDOFF_ACTION))
            return PolicyDecision.say(reply, "repeated_question")
        offer = self.texts.repeat(self.texts.repeat_offer, topic)
        return miss(self, state, first=offer, again=offer, confidence=confidence)


class KnowledgeAnswer(Policy):
    """A confident answer (with an entry not used yet) is given as the knowledge base wrote it.

    Replies the knowledge path made without searching (an empty or too-long message) pass through
    as they are, and so does another kind a custom responder proposes (a handoff becomes one).
    """

    name = "knowledge_answer"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        knowledge = turn.knowledge
        if knowledge is None:
            return False
        if not knowledge.searched:
            return True
        if knowledge.kind in (ReplyKind.CLARIFY, ReplyKind.FALLBACK):
            return False
        return not _repeats(knowledge, state)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        knowledge = turn.knowledge
        if knowledge is None:
            return None
        if knowledge.kind is ReplyKind.HANDOFF:
            return PolicyDecision(Outcome.HANDOFF, knowledge.reply, HandoffReason.KNOWLEDGE)
        return PolicyDecision.say(knowledge.reply, "answer")


class Clarify(Policy):
    """The bot is unsure between 2-3 close topics: ask which one was meant."""

    name = "clarify"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        knowledge = turn.knowledge
        return knowledge is not None and knowledge.kind is ReplyKind.CLARIFY

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        knowledge = turn.knowledge
        if knowledge is None:
            return None
        options = knowledge.reply.sources
        text = _bullets(self.texts.clarify, options)
        return PolicyDecision.say(
            Reply.clarify(text, options, knowledge.reply.confidence), "clarify"
        )


class Fallback(Policy):
    """Nothing else decided: a miss. Always applies, so every addressed turn gets a decision."""

    name = "fallback"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return True

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        confidence = turn.knowledge.reply.confidence if turn.knowledge is not None else None
        return miss(
            self,
            state,
            first=self.texts.fallback,
            again=self.texts.fallback_again,
            confidence=confidence,
        )
