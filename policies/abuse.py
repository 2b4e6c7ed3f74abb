"""Abusive and profane messages: a calm reply, and past a threshold a person.

The customer's earlier abusive messages are counted by the engine with `is_abusive` when it builds
the state (`ConversationState.abuse_count`); this message makes one more.
"""

from __future__ import annotations

from dataclasses import replace

from bot.model import Reply
from policies.base import HANDOFF_ACTION, Policy
from policies.matching import matcher
from policies.state import ConversationState, HandoffReason, PolicyDecision, TurnContext

__all__ = ["AbusePolicy"]


class AbusePolicy(Policy):
    """An abusive message gets a calm reply; the `abuse.threshold`-th one a person."""

    name = "abuse"

    def is_abusive(self, text: str) -> bool:
        """Whether `text` holds one of the configured abusive words."""
        return matcher(self.settings.abuse.words).find(text) is not None

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return self.is_abusive(turn.text)

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision:
        count = state.abuse_count + 1
        if count >= self.settings.abuse.threshold:
            return PolicyDecision.handoff(self.texts.handoff, HandoffReason.ABUSE, str(count))
        calm = replace(Reply.smalltalk(self.texts.abuse), actions=(HANDOFF_ACTION,))
        return PolicyDecision.say(calm, "abuse")
