"""Turn-taking: when the bot stays silent, and when a thread is resolved.

* `AddressedGate`: silent in a conversation a person owns, and when the bot was not addressed.
* `ResolvedThread`: silent in a resolved thread unless the message asks something new.
* `MarksResolved`: "thanks, that solved it" or ✅ resolves the thread (one short reply at most).
* `BotMessageCap`: silent once the bot posted too many messages in a row.

One reply per turn at most is the engine's rule (it acts on one decision per turn), not a policy.
"""

from __future__ import annotations

from bot.model import Owner, Reply
from policies.base import Policy
from policies.matching import looks_like_new_question, matcher
from policies.state import ConversationState, PolicyDecision, TurnContext

__all__ = ["AddressedGate", "BotMessageCap", "MarksResolved", "ResolvedThread"]


class AddressedGate(Policy):
    """Speak only when addressed, and never while a person owns the conversation."""

    name = "addressed_gate"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return state.owner is Owner.HUMAN or not turn.addressed

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        return PolicyDecision.silent(
            "human_owner" if state.owner is Owner.HUMAN else "not_addressed"
        )


class ResolvedThread(Policy):
    """After the customer marked the thread resolved, only a new question gets a reply."""

    name = "resolved_thread"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        if not state.resolved:
            return False
        if matcher(self.settings.escalation.request_phrases).find(turn.text):
            return False  # "actually, can I talk to a person" reopens it
        return not looks_like_new_question(turn.text)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        return PolicyDecision.silent("resolved")


class MarksResolved(Policy):
    """A resolving message ("that fixed it", ✅) marks the thread resolved.

    A message with a question mark is never resolving: "that worked, but what about PDFs?" asks
    something new.
    """

    name = "marks_resolved"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        if state.resolved or "?" in turn.text:
            return False
        resolution = self.settings.resolution
        if any(emoji in turn.text for emoji in resolution.emoji):
            return True
        return matcher(resolution.phrases).find(turn.text) is not None

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        if self.settings.resolution.acknowledge:
            reply = Reply.smalltalk(self.texts.resolved)
            return PolicyDecision.say(reply, "resolved", resolve=True)
        return PolicyDecision.silent("resolved", resolve=True)


class BotMessageCap(Policy):
    """Never more than `max_consecutive_bot_messages` bot messages in a row."""

    name = "bot_message_cap"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        limit = self.settings.turn_taking.max_consecutive_bot_messages
        return state.consecutive_bot_messages >= limit

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        return PolicyDecision.silent("bot_message_cap")
