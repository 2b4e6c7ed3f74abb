"""Greetings, thanks and goodbyes get a short reply without a knowledge search.

`classify` tells which (if any) a message is; `smalltalk_reply` answers it from a
`SmalltalkConfig` (the `Responder`'s path); `SmalltalkPolicy` answers it in the channel's persona
(the engine's path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bot.model import Reply
from policies.base import Policy
from policies.state import ConversationState, PolicyDecision, TurnContext

__all__ = ["SmalltalkConfig", "SmalltalkKind", "SmalltalkPolicy", "classify", "smalltalk_reply"]

SmalltalkKind = Literal["greeting", "thanks", "goodbye"]

# Matched against the text with punctuation and emoji folded to spaces ("Hey there, bot! 👋"
# reads "hey there bot"), so an addressee after a comma or a trailing emoji still counts.
_ADDRESSEE = r"( (bot|team|all|everyone|folks|guys|there|again|friend))*"
_GREETING = re.compile(
    r"^(hi|hello|hey|hiya|howdy|yo|good (morning|afternoon|evening)|greetings)" + _ADDRESSEE + "$"
)
_THANKS = re.compile(
    r"^((ok|okay|great|perfect|awesome|cool) )?"
    r"(thanks|thank you|thx|ty|cheers|many thanks|thanks a lot|thank you so much)"
    r"( (so|very) much)?" + _ADDRESSEE + "$"
)
_GOODBYE = re.compile(
    r"^(bye|goodbye|bye bye|see you|see ya|cya|have a (good|nice|great) (day|one|evening))"
    + _ADDRESSEE
    + "$"
)
_NOT_WORD = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class SmalltalkConfig:
    bot_name: str = "Lumen Assistant"
    greeting: str = "Hi! I'm {bot_name}. What can I help you with?"
    thanks: str = "You're welcome! Anything else I can help with?"
    goodbye: str = "Goodbye, and have a great day!"


def classify(text: str, bot_name: str = "") -> SmalltalkKind | None:
    """Whether `text` is a pure greeting, thanks or goodbye (the bot's name may follow)."""
    if len(text) > 80:
        return None
    stripped = " ".join(_NOT_WORD.sub(" ", text.casefold()).split())
    name = " ".join(_NOT_WORD.sub(" ", bot_name.casefold()).split())
    if name and stripped.endswith(" " + name):
        stripped = stripped[: -len(name) - 1]
    if _GREETING.match(stripped):
        return "greeting"
    if _THANKS.match(stripped):
        return "thanks"
    if _GOODBYE.match(stripped):
        return "goodbye"
    return None


def smalltalk_reply(text: str, config: SmalltalkConfig | None = None) -> str | None:
    """The reply to a pure greeting, thanks or goodbye; None when the text is anything else."""
    config = config or SmalltalkConfig()
    kind = classify(text, config.bot_name)
    if kind is None:
        return None
    template = {"greeting": config.greeting, "thanks": config.thanks, "goodbye": config.goodbye}
    return template[kind].format(bot_name=config.bot_name)


class SmalltalkPolicy(Policy):
    """Greetings, thanks and goodbyes: a short reply in the channel's persona, no search."""

    name = "smalltalk"

    def applies(self, turn: TurnContext, state: ConversationState) -> bool:
        return classify(turn.text, self.settings.persona.bot_name or "") is not None

    def decide(self, turn: TurnContext, state: ConversationState) -> PolicyDecision | None:
        kind = classify(turn.text, self.settings.persona.bot_name or "")
        if kind is None:
            return None
        text = {
            "greeting": self.texts.greeting,
            "thanks": self.texts.thanks,
            "goodbye": self.texts.goodbye,
        }[kind]
        return PolicyDecision.say(Reply.smalltalk(text), kind)
