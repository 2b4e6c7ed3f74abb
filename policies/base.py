"""The shape of a policy: "does it apply?" apart from "what does it decide?".

A policy is built once per channel settings and then only reads: `applies` and `decide` take the
turn and the conversation state and return a value; they send nothing, store nothing and search
nothing (the knowledge base's proposal arrives in `TurnContext.knowledge`).
"""

from __future__ import annotations

import abc
from typing import ClassVar

from bot.model import Action, ActionKind
from policies.config import PolicySettings
from policies.state import ConversationState, PolicyDecision, TurnContext
from policies.texts import Wording

__all__ = ["HANDOFF_ACTION", "Policy"]

#: The "Talk to a person" button, offered with replies that are not answers.
HANDOFF_ACTION = Action(ActionKind.HANDOFF, "Talk to a person")


class Policy(abc.ABC):
    """One rule of the conversation.

    Contract:
        * `applies` is cheap and has no side effects; the pipeline calls `decide` only when it
          returned True.
        * `decide` returns the decision, or None to let the next policy decide after all.
        * Both are pure: the same turn, state and settings always give the same answer.

    Args:
        settings: the channel's validated settings.
        texts: the channel's wording.

    Attributes:
        name: a short stable name, used in logs and `PolicyDecision.policy`.
        needs_knowledge: the pipeline fills in `TurnContext.knowledge` (runs the retrieval once)
            before asking this policy.
    """

    name: ClassVar[str]
    needs_knowledge: ClassVar[bool] = False

    def __init__(self, settings: PolicySettings, texts: Wording) -> None:
        self.settings = settings
        self.texts = texts

    @abc.abstractmethod
    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        """Whether this policy has something to say about the turn."""

    @abc.abstractmethod
    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        """The decision for a turn it applies to (None: let the next policy decide)."""

    def __repr__(self) -> str:
        return f"<policy {self.name}>"
