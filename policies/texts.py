"""What the bot says: the built-in wording for each tone, with the settings' texts on top.

Only `fallback` apologises: a miss after a miss says so without a second "sorry", and no other
text apologises at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from policies.config import PolicySettings, Tone

__all__ = ["BUILT_IN", "Wording", "wording"]

BUILT_IN: Final[dict[Tone, dict[str, str]]] = {
    Tone.INFORMAL: {
        "greeting": "Hi! I'm {bot_name}. What can I help you with?",
        "thanks": "You're welcome! Anything else I can help with?",
        "goodbye": "Goodbye, and have a great day!",
        "fallback": (
            "Sorry, I don't have a good answer for that. Could you rephrase it, "
            "or would you like me to bring in a person?"
        ),
        "fallback_again": (
            "I still don't have a good answer for that. You could try other words, "
            "or I can bring in a person."
        ),
        "offer_person": (
            "I haven't been able to answer this, so a person from our team is your best bet. "
            "Shall I bring one in?"
        ),
        "clarify": "I want to be sure I answer the right question. Which of these do you mean?",
        "repeat_clarify": (
            "I've already shared what I know about “{topic}”. If that didn't help, "
            "did you mean one of these?"
        ),
        "repeat_offer": (
            "I've already shared what I know about “{topic}”, and saying it again won't help. "
            "Would you like me to bring in a person?"
        ),
        "handoff": "I'm bringing in a person from our support team. They'll reply here.",
        "handoff_with_wait": (
            "I'm bringing in a person from our support team. They'll reply here, usually {wait}."
        ),
        "abuse": (
            "I'm here to help, and I'd like to get this sorted for you. "
            "Could you tell me what's going wrong?"
        ),
        "resolved": "Glad that's sorted! I'm here if anything else comes up.",
    },
    Tone.FORMAL: {
        "greeting": "Hello, I am {bot_name}. How may I help you?",
        "thanks": "You are welcome. Is there anything else I can help you with?",
        "goodbye": "Thank you for contacting us. Goodbye.",
        "fallback": (
            "I apologise, but I do not have a reliable answer to that. Could you rephrase your "
            "question, or would you like me to connect you with a member of our team?"
        ),
        "fallback_again": (
            "I still do not have a reliable answer to that. You may rephrase your question, or I "
            "can connect you with a member of our team."
        ),
        "offer_person": (
            "I have not been able to answer your question, so a member of our team would be best "
            "placed to help. Would you like me to connect you?"
        ),
        "clarify": "To make sure I answer the right question, which of these do you mean?",
        "repeat_clarify": (
            "I have already shared the information I have about “{topic}”. If it did not help, "
            "did you mean one of the following?"
        ),
        "repeat_offer": (
            "I have already shared the information I have about “{topic}”. Would you like me to "
            "connect you with a member of our team?"
        ),
        "handoff": "I am connecting you with a member of our support team, who will reply here.",
        "handoff_with_wait": (
            "I am connecting you with a member of our support team, who will reply here, "
            "usually {wait}."
        ),
        "abuse": (
            "I am here to help and would like to resolve this for you. "
            "Could you describe the problem?"
        ),
        "resolved": (
            "I am glad the issue is resolved. Please write again if you need anything further."
        ),
    },
}


class _Keep(dict[str, str]):
    """Format mapping that leaves unknown placeholders in place for a later `format`."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True, slots=True)
class Wording:
    """The texts of one channel, the bot's name filled in.

    `repeat_clarify` and `repeat_offer` still hold ``{topic}``, `handoff` the wait (already in).
    The sign-off is added to `goodbye`, `resolved` and `handoff`.
    """

    greeting: str
    thanks: str
    goodbye: str
    fallback: str
    fallback_again: str
    offer_person: str
    clarify: str
    repeat_clarify: str
    repeat_offer: str
    handoff: str
    abuse: str
    resolved: str

    def repeat(self, template: str, topic: str) -> str:
        """`repeat_clarify` or `repeat_offer` with the topic filled in."""
        return template.replace("{topic}", topic)


def wording(settings: PolicySettings) -> Wording:
    """The texts of a channel: its configured texts, else its tone's built-in wording."""
    persona = settings.persona
    built_in = BUILT_IN[persona.tone]
    configured = settings.texts.model_dump()
    values = _Keep(bot_name=persona.bot_name or "")

    def text(name: str) -> str:
        template = configured.get(name) or built_in[name]
        return template.format_map(values)

    def signed(body: str) -> str:
        return f"{body}\n\n{persona.sign_off}" if persona.sign_off.strip() else body

    wait = settings.handoff.expected_wait.strip()
    handoff = text("handoff_with_wait").replace("{wait}", wait) if wait else text("handoff")
    return Wording(
        greeting=text("greeting"),
        thanks=text("thanks"),
        goodbye=signed(text("goodbye")),
        fallback=text("fallback"),
        fallback_again=text("fallback_again"),
        offer_person=text("offer_person"),
        clarify=text("clarify"),
        repeat_clarify=text("repeat_clarify"),
        repeat_offer=text("repeat_offer"),
        handoff=signed(handoff),
        abuse=text("abuse"),
        resolved=signed(text("resolved")),
    )
