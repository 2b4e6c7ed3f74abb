"""Greetings, thanks and goodbyes get a short reply without a knowledge search."""

from __future__ import annotations

import re
from dataclasses import dataclass

_GREETING = re.compile(
    r"^(hi|hello|hey|hiya|howdy|yo|good (morning|afternoon|evening)|greetings)( there)?"
    r"( (bot|team|all|everyone|folks))?[\s!.,:)]*$",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^(thanks|thank you|thx|ty|cheers|many thanks|thanks a lot|thank you so much|"
    r"great,? thanks|perfect,? thanks|ok,? thanks|awesome,? thanks)( so much)?"
    r"( (bot|team|again))?[\s!.,:)]*$",
    re.IGNORECASE,
)
_GOODBYE = re.compile(
    r"^(bye|goodbye|see you|see ya|cya|have a (good|nice|great) (day|one|evening))[\s!.,:)]*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class SmalltalkConfig:
    bot_name: str = "Lumen Assistant"
    greeting: str = "Hi! I'm {bot_name}. What can I help you with?"
    thanks: str = "You're welcome! Anything else I can help with?"
    goodbye: str = "Goodbye, and have a great day!"


def smalltalk_reply(text: str, config: SmalltalkConfig | None = None) -> str | None:
    """The reply to a pure greeting, thanks or goodbye; None when the text is anything else."""
    config = config or SmalltalkConfig()
    stripped = " ".join(text.strip().split())
    if len(stripped) > 60:
        return None
    if _GREETING.match(stripped):
        return config.greeting.format(bot_name=config.bot_name)
    if _THANKS.match(stripped):
        return config.thanks.format(bot_name=config.bot_name)
    if _GOODBYE.match(stripped):
        return config.goodbye.format(bot_name=config.bot_name)
    return None
