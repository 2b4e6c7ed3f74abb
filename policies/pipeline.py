"""The order in which the policies run: this module is the one place that says it.

The engine builds the turn and the conversation state, then asks the pipeline for one decision.
The pipeline asks each policy in turn whether it applies; the first that applies and decides wins.
Policies before the knowledge line never need a search; the pipeline runs the knowledge lookup the
engine hands it (retrieval + `policies.decision.decide`) at most once, and only when the turn gets
past the line, so greetings, gated and escalated turns never touch the index.

====  ======================  ===========================================================
 #    policy                  decides
====  ======================  ===========================================================
 1    addressed_gate          silent while a person owns the conversation, or when the bot
                              was not addressed
 2    resolved_thread         silent in a resolved thread, unless the message asks something
                              new (or asks for a person)
 3    marks_resolved          "thanks, that solved it" / ✅: resolve the thread, one short
                              reply (or none)
 4    bot_message_cap         silent once the bot posted max_consecutive_bot_messages in a row
 5    explicit_request        a person, when asked for one ("human", "talk to someone", the
                              button) or when the customer says yes to the bot's offer
 6    abuse                   calm reply to an abusive message; a person at the threshold
 7    escalation_topics       a person, for configured keywords and topics (billing dispute,
                              cancellation, legal…)
 8    smalltalk               greetings, thanks, goodbyes in the channel's persona
----  ----------------------  ----- knowledge line: the lookup runs here, once ------------
 9    thumbs_down_repeat      a person, when the customer rated the last answer 👎 and asks
                              the same question again
 10   negative_sentiment      a person, when the customer sounds upset (VADER) and the bot
                              has no fresh confident answer
 11   repeated_question       never the same answer twice: other close topics, else a person
                              is offered (a miss)
 12   knowledge_answer        the confident answer (or the knowledge path's own reply to an
                              empty or too-long message)
 13   clarify                 the 2-3 closest topics, when they are close
 14   fallback                a miss: say so plainly, apologise only on the first miss in a
                              row, offer a person; at misses_before_offer misses in a row
                              offer (or perform) the handoff
====  ======================  ===========================================================

Why this order: silence comes first (a gated turn must not even be classified), then what the
customer says about the conversation itself (resolved, wants a person, abusive), then what needs
no search, then the knowledge base. A request for a person comes before abuse: "this stupid bot,
get me a human" gets a human, not a calm "what's going wrong?". Negative sentiment sits after the
lookup on purpose: an upset customer whose question has a confident, fresh answer gets it at once;
only an upset customer the bot cannot help well goes straight to a person. The engine acts on the
decision (`bot.engine`); nothing here sends, stores or searches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from policies.abuse import AbusePolicy
from policies.base import Policy
from policies.config import PolicySettings
from policies.escalation import (
    EscalationTopics,
    ExplicitRequest,
    NegativeSentiment,
    ThumbsDownRepeat,
)
from policies.knowledge import Clarify, Fallback, KnowledgeAnswer, RepeatedQuestion
from policies.smalltalk import SmalltalkPolicy
from policies.state import ConversationState, KnowledgeResult, PolicyDecision, TurnContext
from policies.texts import Wording, wording
from policies.turn_taking import AddressedGate, BotMessageCap, MarksResolved, ResolvedThread

__all__ = ["ORDER", "Pipeline", "PipelineResult"]

logger = logging.getLogger(__name__)

#: The policies, in the order they are asked (see the table above).
ORDER: Final[tuple[type[Policy], ...]] = (
    AddressedGate,
    ResolvedThread,
    MarksResolved,
    BotMessageCap,
    ExplicitRequest,
    AbusePolicy,
    EscalationTopics,
    SmalltalkPolicy,
    ThumbsDownRepeat,
    NegativeSentiment,
    RepeatedQuestion,
    KnowledgeAnswer,
    Clarify,
    Fallback,
)

KnowledgeLookup = Callable[[], KnowledgeResult]


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """The turn's decision and how it was reached.

    Attributes:
        decision: what to do; `decision.policy` names the policy that decided.
        turn: the turn as the deciding policy saw it (with `knowledge` when it was looked up).
        asked: the names of the policies asked, in order, the deciding one last.
    """

    decision: PolicyDecision
    turn: TurnContext
    asked: tuple[str, ...]


class Pipeline:
    """The policies of one channel's settings, in `ORDER`.

    Args:
        settings: the channel's validated settings.
        policies: the policy classes, in order (the default is `ORDER`; tests may pass others).
    """

    def __init__(
        self, settings: PolicySettings, policies: tuple[type[Policy], ...] = ORDER
    ) -> None:
        self.settings = settings
        self.texts: Wording = wording(settings)
        self.policies: tuple[Policy, ...] = tuple(cls(settings, self.texts) for cls in policies)
        self._abuse = AbusePolicy(settings, self.texts)

    @property
    def order(self) -> tuple[str, ...]:
        """The policies' names, in the order they are asked."""
        return tuple(policy.name for policy in self.policies)

    def is_abusive(self, text: str) -> bool:
        """Whether a message is abusive by this channel's settings (to count earlier ones)."""
        return self._abuse.is_abusive(text)

    def run(
        self,
        turn: TurnContext,
        state: ConversationState,
        knowledge: KnowledgeLookup | None = None,
    ) -> PipelineResult:
        """The decision for a turn: the first policy that applies and decides.

        Args:
            turn: the turn.
            state: the conversation so far.
            knowledge: runs the knowledge lookup; called at most once, when the first policy
                that needs it is reached (`turn.knowledge` already set is used as it is).

        Returns:
            The decision; `Fallback` always applies, so there is one for every turn.
        """
        asked: list[str] = []
        for policy in self.policies:
            if policy.needs_knowledge and turn.knowledge is None and knowledge is not None:
                turn = replace(turn, knowledge=knowledge())
            asked.append(policy.name)
            if not policy.applies(turn, state):
                continue
            decision = policy.decide(turn, state)
            if decision is None:
                continue
            decision = replace(decision, policy=policy.name)
            logger.debug(
                "conversation=%s policy=%s outcome=%s reason=%s",
                turn.conversation,
                policy.name,
                decision.outcome,
                decision.reason,
            )
            return PipelineResult(decision, turn, tuple(asked))
        # Only reached with a custom policy list that has no catch-all.
        return PipelineResult(PolicyDecision.silent("no_policy"), turn, tuple(asked))
