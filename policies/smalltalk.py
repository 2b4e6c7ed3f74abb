"""Greetings, thanks and goodbyes get a short reply without a knowledge search."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def smalltalk_reply(text: str, config: SmalltalkConfig | None = None) -> str | None:
    """The reply to a pure greeting, thanks or goodbye; None when the text is anything else."""
    config = config or SmalltalkConfig()
    if len(text) > 80:
        return None
    stripped = " ".join(_NOT_WORD.sub(" ", text.casefold()).split())
    name = " ".join(_NOT_WORD.sub(" ", config.bot_name.casefold()).split())
    if name and stripped.endswith(" " + name):
        stripped = stripped[: -len(name) - 1]
    if _GREETING.match(stripped):
        return config.greeting.format(bot_name=config.bot_name)
    if _THANKS.match(stripped):
        return config.thanks.format(bot_name=config.bot_name)
    if _GOODBYE.match(stripped):
        return config.goodbye.format(bot_name=config.bot_name)
    return None
