"""Escalation: the triggers that hand a conversation to a person.

* `ExplicitRequest`: the customer asks for a person ("human", "real person", the *Talk to a
  person* button), or says "yes" to the bot's offer of one.
* `EscalationTopics`: configured keywords and topics (billing disputes, legal threats…).
* `ThumbsDownRepeat`: the customer rated the bot's answer 👎 and asks the same question again.
* `NegativeSentiment`: the customer sounds upset (VADER) and the bot has no fresh, confident
  answer for them.

Repeated misses are the fallback policy's trigger (`policies.knowledge.Fallback`), abuse the abuse
policy's (`policies.abuse`).
"""

from __future__ import annotations

from bot.model import ReplyKind
from policies.base import Policy
from policies.matching import is_acknowledgement, is_affirmative, matcher, similar_questions
from policies.smalltalk import classify
from policies.state import ConversationState, HandoffReason, PolicyDecision, TurnContext

__all__ = [
    "EscalationTopics",
    "ExplicitRequest",
    "NegativeSentiment",
    "ThumbsDownRepeat",
    "handoff_question",
]


class ExplicitRequest(Policy):
    """The customer asks for a person, or accepts the bot's offer of one."""

    name = "explicit_request"

    def _accepts_offer(self, turn: TurnContext, state: ConversationState) -> bool:
        # Every fallback offers a person ("…or would you like me to bring in a person?").
        return state.last_reply_kind is ReplyKind.FALLBACK and is_affirmative(turn.text)

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        if matcher(self.settings.escalation.request_phrases).find(turn.text):
            return True
        return self._accepts_offer(turn, state)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        phrase = matcher(self.settings.escalation.request_phrases).find(turn.text)
        detail = phrase if phrase is not None else "accepted offer"
        return PolicyDecision.handoff(self.texts.handoff, HandoffReason.CUSTOMER_REQUEST, detail)


class EscalationTopics(Policy):
    """Configured keywords and topics always go to a person."""

    name = "escalation_topics"

    def _match(self, text: str) -> tuple[HandoffReason, str] | None:
        escalation = self.settings.escalation
        keyword = matcher(escalation.keywords).find(text)
        if keyword is not None:
            return HandoffReason.KEYWORD, keyword
        for topic, phrases in escalation.topics.items():
            if matcher(phrases).find(text) is not None:
                return HandoffReason.TOPIC, topic
        return None

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return self._match(turn.text) is not None

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        found = self._match(turn.text)
        if found is None:
            return None
        return PolicyDecision.handoff(self.texts.handoff, *found)


class ThumbsDownRepeat(Policy):
    """A 👎 on the bot's latest answer, then the same question again: a person.

    "The same question" is the same entry proposed again, or the customer's words close to the
    question that got the 👎 (`repeat.question_similarity`).
    """

    name = "thumbs_down_repeat"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        if not state.recent_downvote:
            return False
        knowledge = turn.knowledge
        if knowledge is not None and knowledge.top_entry in state.downvoted_entry_ids:
            return True
        similarity = self.settings.repeat.question_similarity
        return any(similar_questions(turn.text, q, similarity) for q in state.downvoted_questions)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        return PolicyDecision.handoff(self.texts.handoff, HandoffReason.THUMBS_DOWN_REPEAT)


class NegativeSentiment(Policy):
    """An upset customer the bot cannot answer well goes to a person.

    An upset customer whose question the bot can answer, with an entry it has not used yet, gets
    the answer: that is the fastest help. Anything less (a clarification, a fallback, the same
    answer again) is handed to a person instead.
    """

    name = "negative_sentiment"
    needs_knowledge = True

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        sentiment = self.settings.sentiment
        if not sentiment.enabled or turn.sentiment > sentiment.threshold:
            return False
        knowledge = turn.knowledge
        fresh_answer = (
            knowledge is not None
            and knowledge.kind is ReplyKind.ANSWER
            and knowledge.top_entry not in state.last_answered_entry_ids
        )
        return not fresh_answer

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        return PolicyDecision.handoff(
            self.texts.handoff, HandoffReason.NEGATIVE_SENTIMENT, f"{turn.sentiment:+.2f}"
        )


def handoff_question(text: str, state: ConversationState, request_phrases: tuple[str, ...]) -> str:
    """The customer's question for the person taking over.

    When the turn only asks for a person ("talk to a person", "yes please"), the question is the
    customer's latest earlier message that is more than that; otherwise it is the turn itself.
    """

    def only_asks_for_person(candidate: str) -> bool:
        found = matcher(request_phrases).find(candidate)
        short = len(candidate.split()) <= 8
        return is_affirmative(candidate) or (found is not None and short)

    def is_question(candidate: str) -> bool:
        return not (
            only_asks_for_person(candidate)
            or is_acknowledgement(candidate)
            or classify(candidate) is not None
        )

    if not only_asks_for_person(text):
        return text
    return next((q for q in state.customer_questions if is_question(q)), text)
