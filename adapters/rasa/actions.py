"""The custom actions: the bot's knowledge, handoff and feedback, for a Rasa assistant.

Each action turns the Rasa tracker into the shared model (`convert`), runs the same engine every
other platform uses (policies, knowledge base, composer, handoff relay, database) in a worker
thread, and answers with messages for the user and events for the tracker:

- ``action_answer_from_kb``: the customer's latest message is one bot turn. Messages: the reply
  (with sources and buttons). Events: ``SlotSet`` of ``supportbot_reply_id`` and
  ``supportbot_reply_kind``; ``ConversationPaused`` when the turn handed the conversation to a
  person (Rasa then stays quiet until an agent resumes it).
- ``action_handoff_to_human``: asks for a person on the customer's behalf, as the "Talk to a
  person" button does everywhere; the engine's escalation policy hands over (or, with no desk
  configured, tells the customer how to reach one).
- ``action_record_feedback``: rates the reply in ``supportbot_reply_id`` with the
  ``supportbot_feedback`` entity or slot ("up"/"down"), or the ``feedback_up``/``feedback_down``
  intent; a 👎 without a reason gets the quick reasons as buttons; the reason "talk to a
  person" hands over.

Replies go back in the action's response, so handing them to Rasa is posting them: each is
recorded as sent then (`posted_ref`), as the web chat does, and no outbox sweeper is needed
(none serves Rasa).

Actions never raise: a failure is logged and the customer gets an apology.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from adapters.rasa.convert import (
    FEEDBACK_SLOT,
    PLATFORM,
    REASON_SLOT,
    REPLY_ID_SLOT,
    REPLY_KIND_SLOT,
    feedback_from,
    inbound_from_tracker,
    message_key,
    posted_ref,
    reply_message,
)
from bot.engine import ERROR_TEXT, PERSON_REQUEST_TEXT, Engine
from bot.errors import StorageError
from bot.model import FeedbackEvent, Owner, Reply, ReplyKind

__all__ = ["ACTION_NAMES", "RasaActions"]

logger = logging.getLogger(__name__)

ASK_TEXT = "I'm here. What would you like to know?"
NO_REPLY_TEXT = "I can't tell which answer you're rating: please use the buttons under an answer."
NO_VALUE_TEXT = "Was my last answer helpful? Please answer with 👍 or 👎."
THANKS_TEXT = "Thanks for your feedback!"

#: An action: (dispatcher, tracker, domain) → events.
ActionFunction = Callable[[Any, Any, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


class RasaActions:
    """The three actions, bound to one engine.

    Args:
        engine: the bot's engine (`bot.service.build_services`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def functions(self) -> dict[str, ActionFunction]:
        """Action name → the function rasa_sdk's `ActionExecutor.register_function` takes."""
        return {
            "action_answer_from_kb": self.answer_from_kb,
            "action_handoff_to_human": self.handoff_to_human,
            "action_record_feedback": self.record_feedback,
        }

    async def answer_from_kb(
        self, dispatcher: Any, tracker: Any, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """One bot turn for the customer's latest message."""
        from rasa_sdk.events import SlotSet

        message = inbound_from_tracker(tracker.sender_id, tracker.latest_message, tracker.events)
        if message is None:
            dispatcher.utter_message(text=ASK_TEXT)
            return []
        replies = await self._turn(message)
        if replies is None:
            dispatcher.utter_message(text=ERROR_TEXT)
            return []
        await self._handed_over(replies)
        return self._say(dispatcher, replies, SlotSet)

    async def handoff_to_human(
        self, dispatcher: Any, tracker: Any, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Ask for a person on the customer's behalf."""
        from rasa_sdk.events import SlotSet

        message = inbound_from_tracker(
            tracker.sender_id,
            tracker.latest_message,
            tracker.events,
            text=PERSON_REQUEST_TEXT,
            suffix=":handoff",
        )
        assert message is not None  # the text is given
        replies = await self._turn(message)
        if replies is None:
            dispatcher.utter_message(text=ERROR_TEXT)
            return []
        await self._handed_over(replies)
        return self._say(dispatcher, replies, SlotSet)

    async def record_feedback(
        self, dispatcher: Any, tracker: Any, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Rate the last answer."""
        from rasa_sdk.events import SlotSet

        slots = tracker.slots or {}
        reply_id = slots.get(REPLY_ID_SLOT)
        value, reason = feedback_from(tracker.latest_message, slots)
        reset = [SlotSet(FEEDBACK_SLOT, None), SlotSet(REASON_SLOT, None)]
        if not isinstance(reply_id, str) or not reply_id:
            dispatcher.utter_message(text=NO_REPLY_TEXT)
            return reset
        if value is None:
            dispatcher.utter_message(text=NO_VALUE_TEXT)
            return reset
        key = message_key(tracker.sender_id, tracker.latest_message or {}, tracker.events)
        event = FeedbackEvent(
            platform=PLATFORM,
            reply_id=reply_id,
            user=tracker.sender_id,
            value=value,
            event_id=f"{tracker.sender_id}:{key}",
            reason=reason.value if reason is not None else None,
        )
        try:
            outcome = await asyncio.to_thread(self.engine.respond_to_feedback, event)
        except Exception:
            logger.exception("recording feedback on reply %s failed", reply_id)
            dispatcher.utter_message(text=ERROR_TEXT)
            return reset
        if outcome.replies:
            await self._handed_over(outcome.replies)
            return reset + self._say(dispatcher, list(outcome.replies), SlotSet, keep_id=True)
        if outcome.recorded:
            dispatcher.utter_message(text=THANKS_TEXT)
        return reset

    async def _turn(self, message: Any) -> list[Reply] | None:
        try:
            return await asyncio.to_thread(self.engine.handle, message)
        except Exception:
            # Engine.handle keeps failures inside the turn; this is the adapter's own boundary.
            logger.exception("rasa turn failed conversation=%s", message.channel)
            return None

    async def _handed_over(self, replies: Sequence[Reply]) -> None:
        """Record the replies as posted: they go back in this response, which is all the
        sending there is; a stored reply left "pending" would look unsent forever. The relay
        also opens a handoff's card only once its reply is posted."""
        for reply in replies:
            if not reply.id:
                continue
            try:
                await asyncio.to_thread(
                    self.engine.attach_platform_ref, reply.id, posted_ref(reply)
                )
            except StorageError:
                logger.warning("rasa: cannot record reply %s as posted", reply.id)

    def _say(
        self,
        dispatcher: Any,
        replies: list[Reply],
        slot_set: Callable[[str, Any], dict[str, Any]],
        *,
        keep_id: bool = False,
    ) -> list[dict[str, Any]]:
        """Utter the replies; the events that record them on the tracker."""
        from rasa_sdk.events import ConversationPaused

        events: list[dict[str, Any]] = []
        for reply in replies:
            dispatcher.utter_message(**reply_message(reply))
            if not keep_id:
                events.append(slot_set(REPLY_ID_SLOT, reply.id or None))
                events.append(slot_set(REPLY_KIND_SLOT, reply.kind.value))
        if not replies and not keep_id:
            events.append(slot_set(REPLY_KIND_SLOT, "silent"))
        if any(r.kind is ReplyKind.HANDOFF for r in replies):
            key = None
            for reply in replies:
                stored = self.engine.store.get_reply(reply.id) if reply.id else None
                if stored is not None:
                    key = stored.conversation_id
            conversation = self.engine.store.get_conversation(key) if key else None
            if conversation is not None and conversation.owner is Owner.HUMAN:
                events.append(ConversationPaused())
        return events


ACTION_NAMES: tuple[str, ...] = (
    "action_answer_from_kb",
    "action_handoff_to_human",
    "action_record_feedback",
)
