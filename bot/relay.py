"""The human-handoff relay: brings a person from the agents' desk into a customer's conversation.

`Relay` is the engine's `HandoffSink`. On a handoff it links the conversation to a card that the
configured desk (the Slack agents' channel, a Zendesk ticket, a Discord agents' channel) opens;
from then on, while the conversation is human-owned, it carries messages both ways::

    customer message ─ customer_said ─┐                 ┌─ Desk.post(card, text)
                                      ├─ relay_outbox ──┤
    agent reply ───── agent_said ─────┘   (database)    └─ CustomerChannel.post(key, text)

Every message is written to the outbox before it is posted, under an origin key that is unique
(the platform message it came from), so a repeated delivery of the same event is queued once.
`deliver_pending(platform)` posts what is queued for one platform, claiming each row
(pending → posting) before posting it and marking it sent after, so two processes never post the
same row at once. A claim older than `RelayConfig.claim_timeout_s` (its process died between the
claim and recording the post) is taken again; every post carries the row's id (``post_id``), so
a desk or channel that can find what it posted before (Slack's message metadata, Discord's
nonces) returns that copy instead of posting a second one. Each process runs
it for the platforms it serves: a Discord process and the web process relay to each other through
the shared database. What the relay posts itself is remembered (`processed_event`,
``relay-post:<ref>``) and never relayed back.

Agents' commands, in the card's thread:

* the first reply (or ``!claim``) claims the conversation; the claim is recorded with who and when;
* ``!release`` gives the conversation back to the bot and tells the customer;
* ``!resolve`` closes the conversation, gives it back to the bot and tells the customer.

`check_timeouts(now)` releases handoffs nobody claimed before their deadline and offers the
customer another way (email, a ticket).

A card is opened once the customer's handoff message is recorded as posted (its reply's platform
reference), so agents cannot answer before the customer has read it (`RelayConfig.reply_wait_s`
caps the wait). Opening a card first takes the link with an ``opening:`` token and its time; an
opening older than `RelayConfig.opening_grace_s` (its process died) is taken again.

This module imports no platform SDK: adapters supply
`Desk` and `CustomerChannel` implementations and register them with `register_desk` and
`register_channel`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from bot.handoff import Attempt, HandoffRequest
from bot.model import ConversationKey, Owner, ReplyKind, Role, Source, Turn, utcnow
from bot.periodic import every
from bot.storage.store import (
    OPENING_PREFIX,
    RELAY_CLAIM_TIMEOUT_S,
    ConversationInfo,
    OutboxItem,
    RelayLinkInfo,
    Store,
)
from bot.storage.tables import new_id

__all__ = [
    "RELAY_AUTHOR",
    "AuthoredCustomerChannel",
    "CustomerChannel",
    "Desk",
    "Relay",
    "RelayConfig",
    "RelayOutcome",
    "request_from_json",
    "request_to_json",
]

logger = logging.getLogger(__name__)

#: Link states in which messages are relayed.
ACTIVE = ("waiting", "claimed")
_OPENING = OPENING_PREFIX
#: The author of what the relay itself says (to customers: "a person joined"; notes on cards).
RELAY_AUTHOR = "relay"


@runtime_checkable
class Desk(Protocol):
    """Where agents pick up handoffs (an agents' channel, a helpdesk).

    Contract:
        * `open_card` shows the handoff to the agents and returns a reference to it; agents'
          replies under it MUST reach `Relay.agent_said` with that reference.
        * `post` adds a message under a card; it returns the posted message's platform id (so the
          relay ignores it when it comes back as an event), or None. `post_id` is the same on
          every try of one message; with `retaken` (an earlier try may have reached the
          platform: a claim whose process died, a post that failed) an implementation that can
          find a message posted with that `post_id` returns it instead of posting again.
        * Both raise on failure; the relay retries on its next delivery round.
    """

    async def open_card(self, request: HandoffRequest) -> str:
        """Open a card for a handoff; returns its reference."""

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        """Post `text` under the card; returns the new message's id, if known."""


@runtime_checkable
class CustomerChannel(Protocol):
    """Where a customer's conversation happens, seen from the relay.

    Contract:
        * `post` shows `text` to the customer in the conversation at `key` and returns the posted
          message's platform id, or None; it raises on failure (the relay retries). `post_id`
          and `retaken` are as for `Desk.post`.
    """

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        """Post an agent's (or the relay's) message to the customer."""


@runtime_checkable
class AuthoredCustomerChannel(CustomerChannel, Protocol):
    """A `CustomerChannel` that shows who wrote each relayed message (a terminal, say).

    Contract:
        * As `CustomerChannel.post`; the relay calls `post_as` instead, with `author` the
          agent's name (or platform id) or `RELAY_AUTHOR` for the relay's own notices.
    """

    async def post_as(
        self, key: ConversationKey, text: str, author: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        """Post `text` by `author` to the customer."""


class RelayOutcome(StrEnum):
    """What `Relay.agent_said` did with an agent's message."""

    RELAYED = "relayed"
    CLAIMED = "claimed"
    RELEASED = "released"
    RESOLVED = "resolved"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The relay's settings and the texts it posts.

    Attributes:
        desk: the platform whose desk opens cards ("slack", "zendesk", "discord").
        timeout_s: how long a handoff may wait for an agent before the customer is offered
            another way.
        poll_s: how often adapters run `deliver_pending` and `check_timeouts`.
        contact: the other way offered when nobody claims in time, completing "You can ..."
            (e.g. "email help@yourcompany.com"); `SUPPORTBOT_HANDOFF_CONTACT`.
        opening_grace_s: a card opening taken longer ago than this and never finished (its
            process died between taking it and recording the card) is taken again;
            `SUPPORTBOT_RELAY_OPENING_GRACE_S`. Keep it well above a desk's slowest answer: a
            live but slower process would open a second card (it then notes the duplicate).
        reply_wait_s: the card waits until the customer's handoff message is recorded as
            posted (its platform reference), so agents cannot answer before the customer has
            read "a person will reply"; after this long it opens anyway (a failed or unrecorded
            post); `SUPPORTBOT_RELAY_REPLY_WAIT_S`.
        retry_max_s: a message whose posting failed is tried again after `poll_s`, then after
            twice as long each time, up to this (a platform down for minutes is not hammered
            every second, nor its failure logged every second). The wait is recorded on the
            message, so it holds for every process that serves the platform.
        give_up_after_s: a message still failing this long after it was queued is given up
            (status "failed", logged as an error): its target is gone for good (an uninstalled
            workspace, a deleted channel).
        claim_timeout_s: a message claimed for posting this long ago and not recorded as posted
            (nor failed) is taken again by the next round of any process: the one that claimed
            it died. Keep it above the longest a post with its retries can take (Slack's
            `post_once` waits up to a minute or so), or a live but slow process and another
            one both post (Slack and Discord then still find the first copy).
    """

    desk: str
    timeout_s: float = 600.0
    poll_s: float = 1.0
    opening_grace_s: float = 60.0
    reply_wait_s: float = 10.0
    retry_max_s: float = 300.0
    give_up_after_s: float = 24 * 3600.0
    claim_timeout_s: float = RELAY_CLAIM_TIMEOUT_S
    claimed_text: str = "A person from our support team has joined the conversation."
    released_text: str = (
        "Our support team has handed the conversation back to me. Ask me anything, or ask for a "
        "person again at any time."
    )
    resolved_text: str = (
        "Our support team marked this conversation as resolved. Write again if you need more help."
    )
    contact: str = "open a ticket on our help center"
    timeout_text: str = (
        "Sorry, nobody from our support team is free right now. You can {contact}, and we will "
        "get back to you. Meanwhile, I'm still here to help."
    )
    claimed_note: str = "Claimed by {agent}."
    claimed_in_place_note: str = "Claimed by {agent}, who answered in the customer's conversation."
    released_note: str = "Released by {agent}: the bot answers again."
    resolved_note: str = "Resolved by {agent}."
    timeout_note: str = "Nobody claimed this in time; the customer was offered email or a ticket."
    inactive_note: str = "This conversation is no longer handed over ({state}); nothing was sent."
    duplicate_note: str = (
        "This card was opened twice (a slow desk): continue in the other card, this one gets "
        "no messages."
    )


# Serializing a HandoffRequest, so that another process can open its card ----------------------


def request_to_json(request: HandoffRequest) -> dict[str, Any]:
    """A `HandoffRequest` as JSON-ready data (inverse: `request_from_json`)."""
    return {
        "conversation_id": request.conversation_id,
        "key": str(request.key),
        "customer": request.customer,
        "platform": request.platform,
        "question": request.question,
        "reason": request.reason,
        "attempts": [
            {
                "text": a.text,
                "kind": a.kind.value,
                "sources": [
                    {"id": s.id, "score": s.score, "title": s.title, "url": s.url}
                    for s in a.sources
                ],
            }
            for a in request.attempts
        ],
        "sentiment": request.sentiment,
        "transcript": [{"role": t.role.value, "text": t.text} for t in request.transcript],
        "reply_id": request.reply_id,
        "requested_at": request.requested_at.isoformat(),
    }


def request_from_json(data: dict[str, Any]) -> HandoffRequest:
    """The `HandoffRequest` that `request_to_json` wrote."""
    return HandoffRequest(
        conversation_id=str(data["conversation_id"]),
        key=ConversationKey.parse(str(data["key"])),
        customer=str(data["customer"]),
        platform=str(data["platform"]),
        question=str(data["question"]),
        reason=str(data["reason"]),
        attempts=tuple(
            Attempt(
                str(a["text"]),
                ReplyKind(a["kind"]),
                tuple(
                    Source(str(s["id"]), float(s["score"]), s.get("title"), s.get("url"))
                    for s in a.get("sources", ())
                ),
            )
            for a in data.get("attempts", ())
        ),
        sentiment=float(data.get("sentiment", 0.0)),
        transcript=tuple(Turn(Role(t["role"]), str(t["text"])) for t in data.get("transcript", ())),
        reply_id=str(data.get("reply_id", "")),
        requested_at=datetime.fromisoformat(str(data["requested_at"])),
    )


class Relay:
    """The engine's handoff sink that relays between customers and agents (see module docs).

    Args:
        store: the shared database.
        config: the desk, timeout and texts.
        clock: the current time (aware UTC); tests pass a fixed one.
    """

    def __init__(
        self,
        store: Store,
        config: RelayConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.config = config
        self._clock = clock
        self._desks: dict[str, Desk] = {}
        self._channels: dict[str, CustomerChannel] = {}

    # Registration ------------------------------------------------------------------------------

    def register_desk(self, platform: str, desk: Desk) -> None:
        """Serve the agents' desk of `platform` in this process."""
        self._desks[platform] = desk

    def register_channel(self, platform: str, channel: CustomerChannel) -> None:
        """Serve the customers of `platform` in this process."""
        self._channels[platform] = channel

    @property
    def platforms(self) -> tuple[str, ...]:
        """The platforms this process delivers to (desks and customer channels)."""
        return tuple(sorted({*self._desks, *self._channels}))

    # Handoffs ----------------------------------------------------------------------------------

    def request(self, handoff: HandoffRequest) -> None:
        """Link the conversation to a card that the desk's process opens on its next round."""
        deadline = self._clock() + timedelta(seconds=self.config.timeout_s)
        self.store.open_relay_link(
            handoff.conversation_id, self.config.desk, request_to_json(handoff), deadline
        )
        logger.info(
            "relay: handoff of conversation %s queued for the %s desk",
            handoff.conversation_id,
            self.config.desk,
        )

    # Inbound -----------------------------------------------------------------------------------

    def customer_said(self, key: ConversationKey, text: str, message_id: str) -> bool:
        """Relay a customer's message to the card, if the conversation is handed over.

        Returns:
            True if the message was queued for the agents.
        """
        if self.store.has_event(key.platform, f"relay-post:{message_id}"):
            return False
        conversation = self.store.find_conversation(key)
        if conversation is None or conversation.owner is not Owner.HUMAN:
            return False
        link = self.store.relay_link(conversation.id)
        if link is None or link.state not in ACTIVE:
            return False
        card = link.card_ref if link.card_ref and not link.card_ref.startswith(_OPENING) else ""
        return self.store.enqueue_relay(
            conversation.id,
            direction="to_agent",
            target_platform=link.desk,
            target_ref=card,
            text=text,
            author=conversation.customer,
            origin_key=f"customer:{key}:{message_id}",
        )

    def agent_said(self, card_ref: str, agent: str, text: str, message_id: str) -> RelayOutcome:
        """Handle an agent's message under a card: a command, or a reply for the customer.

        It runs under the customer conversation's turn lock (`Store.conversation_lock`), like the
        customer's own turns, so claims, releases and relayed replies fall between turns.
        """
        link = self.store.relay_link_by_card(card_ref)
        conversation = None if link is None else self.store.get_conversation(link.conversation_id)
        if conversation is None:
            return RelayOutcome.IGNORED
        with self.store.conversation_lock(str(conversation.key)):
            return self._agent_said(card_ref, agent, text, message_id)

    def _agent_said(self, card_ref: str, agent: str, text: str, message_id: str) -> RelayOutcome:
        link = self.store.relay_link_by_card(card_ref)
        if link is None or self.store.has_event(link.desk, f"relay-post:{message_id}"):
            return RelayOutcome.IGNORED
        if not self.store.claim_event(f"relay:{link.desk}", f"agent:{card_ref}:{message_id}"):
            return RelayOutcome.DUPLICATE
        words = text.strip().split(maxsplit=1)
        command = words[0].lower() if words else ""
        if link.state not in ACTIVE:
            self._note(link, self.config.inactive_note.format(state=link.state), message_id)
            return RelayOutcome.IGNORED
        if command == "!claim":
            self._claim(link, agent, message_id)
            return RelayOutcome.CLAIMED
        if command == "!release":
            return self._give_back(link, agent, message_id, resolve=False)
        if command == "!resolve":
            return self._give_back(link, agent, message_id, resolve=True)
        claimed = link.state == "waiting" and self._claim(link, agent, message_id)
        conversation = self.store.get_conversation(link.conversation_id)
        if conversation is None:
            return RelayOutcome.IGNORED
        self.store.add_message(conversation.id, Role.AGENT, agent, text, message_id)
        self._queue_for_customer(
            conversation, text, agent, f"agent:{link.desk}:{card_ref}:{message_id}"
        )
        return RelayOutcome.CLAIMED if claimed else RelayOutcome.RELAYED

    def _claim(self, link: RelayLinkInfo, agent: str, message_id: str) -> bool:
        now = self._clock()
        if not self.store.set_relay_state(
            link.conversation_id,
            "claimed",
            from_states=("waiting",),
            claimed_by=agent,
            claimed_at=now,
        ):
            return False
        self.store.record_handoff(
            link.conversation_id, Owner.HUMAN, Owner.HUMAN, actor=agent, reason="claimed"
        )
        logger.info("relay: conversation %s claimed by %s", link.conversation_id, agent)
        self._tell_customer(link, self.config.claimed_text, f"claimed:{message_id}")
        self._note(link, self.config.claimed_note.format(agent=agent), message_id)
        return True

    def _give_back(
        self, link: RelayLinkInfo, agent: str, message_id: str, *, resolve: bool
    ) -> RelayOutcome:
        state = "resolved" if resolve else "released"
        if not self.store.set_relay_state(link.conversation_id, state, from_states=ACTIVE):
            return RelayOutcome.IGNORED
        self.store.set_owner(link.conversation_id, Owner.BOT, actor=agent, reason=state)
        if resolve:
            self.store.set_status(link.conversation_id, "closed")
        text = self.config.resolved_text if resolve else self.config.released_text
        self._tell_customer(link, text, f"{state}:{message_id}")
        note = self.config.resolved_note if resolve else self.config.released_note
        self._note(link, note.format(agent=agent), message_id)
        logger.info("relay: conversation %s %s by %s", link.conversation_id, state, agent)
        return RelayOutcome.RESOLVED if resolve else RelayOutcome.RELEASED

    # Agents answering in the customer's own conversation (native takeover) ---------------------

    def agent_joined(self, conversation_id: str, agent: str, message_id: str) -> bool:
        """An agent answered the customer in their own conversation, not under the card.

        A waiting link becomes theirs (claimed, so it no longer times out) and the card says so.
        The customer is not told: they see the agent. The engine records the owner change.

        Returns:
            Whether a waiting link was claimed.
        """
        link = self.store.relay_link(conversation_id)
        if link is None or link.state != "waiting":
            return False
        if not self.store.set_relay_state(
            conversation_id,
            "claimed",
            from_states=("waiting",),
            claimed_by=agent,
            claimed_at=self._clock(),
        ):
            return False
        self._note(link, self.config.claimed_in_place_note.format(agent=agent), message_id)
        logger.info("relay: conversation %s claimed in place by %s", conversation_id, agent)
        return True

    def agent_gave_back(
        self, conversation_id: str, agent: str, message_id: str, *, resolve: bool
    ) -> bool:
        """``!release`` or ``!resolve`` typed in the customer's own conversation: the same as
        under the card (the customer is told, the card notes it), when a link is active.

        Returns:
            Whether an active link was released or resolved.
        """
        link = self.store.relay_link(conversation_id)
        if link is None or link.state not in ACTIVE:
            return False
        outcome = self._give_back(link, agent, f"in-place:{message_id}", resolve=resolve)
        return outcome is not RelayOutcome.IGNORED

    def _tell_customer(self, link: RelayLinkInfo, text: str, origin: str) -> None:
        conversation = self.store.get_conversation(link.conversation_id)
        if conversation is None:
            return
        self.store.add_message(conversation.id, Role.BOT, RELAY_AUTHOR, text)
        self._queue_for_customer(
            conversation, text, RELAY_AUTHOR, f"relay:{conversation.id}:{origin}"
        )

    def _queue_for_customer(
        self, conversation: ConversationInfo, text: str, author: str, origin_key: str
    ) -> None:
        """Queue `text` for the customer's own platform, once per `origin_key`."""
        self.store.enqueue_relay(
            conversation.id,
            direction="to_customer",
            target_platform=conversation.key.platform,
            target_ref=str(conversation.key),
            text=text,
            author=author,
            origin_key=origin_key,
        )

    def _note(self, link: RelayLinkInfo, text: str, origin: str) -> None:
        card = link.card_ref if link.card_ref and not link.card_ref.startswith(_OPENING) else ""
        self.store.enqueue_relay(
            link.conversation_id,
            direction="to_agent",
            target_platform=link.desk,
            target_ref=card,
            text=text,
            author=RELAY_AUTHOR,
            origin_key=f"note:{link.conversation_id}:{origin}",
        )

    # Timeouts ----------------------------------------------------------------------------------

    def check_timeouts(self, now: datetime | None = None) -> int:
        """Release the handoffs nobody claimed in time and offer their customers another way.

        Returns:
            How many handoffs timed out.
        """
        now = now or self._clock()
        expired = 0
        for link in self.store.expired_relay_links(now):
            if not self.store.set_relay_state(
                link.conversation_id, "released", from_states=("waiting",)
            ):
                continue  # claimed meanwhile
            expired += 1
            self.store.set_owner(link.conversation_id, Owner.BOT, actor="relay", reason="timeout")
            stamp = link.created_at.isoformat()
            text = self.config.timeout_text.format(contact=self.config.contact)
            self._tell_customer(link, text, f"timeout:{stamp}")
            self._note(link, self.config.timeout_note, f"timeout:{stamp}")
            logger.info("relay: handoff of conversation %s timed out", link.conversation_id)
        return expired

    # Delivery ----------------------------------------------------------------------------------

    async def deliver_pending(self, platform: str) -> int:
        """Open the cards and post the messages queued for `platform`; returns how many posted.

        Failures are logged and left queued, backing off (see `_failed`). The back-off is kept
        on the message's row, so no process sharing the database tries a message before its
        time, and a restarted process remembers it.
        """
        posted = 0
        desk = self._desks.get(platform)
        if desk is not None:
            for link in await asyncio.to_thread(self._links_to_open, platform):
                posted += await self._open_card(desk, link)
        now = self._clock()
        listed = await asyncio.to_thread(
            self.store.pending_relay,
            platform,
            now=now,
            claim_timeout_s=self.config.claim_timeout_s,
        )
        for item in listed:
            posted += await self._deliver(item, now)
        return posted

    def _links_to_open(self, desk: str) -> list[RelayLinkInfo]:
        """The links whose card to open now: unopened or stale openings, once the customer's
        handoff message is posted (or `reply_wait_s` passed)."""
        now = self._clock()
        stale_before = now - timedelta(seconds=self.config.opening_grace_s)
        links = self.store.relay_links_to_open(desk, stale_before=stale_before)
        reply_ids = {str(link.request.get("reply_id") or "") for link in links} - {""}
        posted = self.store.posted_replies(reply_ids)
        wait = timedelta(seconds=self.config.reply_wait_s)
        ready: list[RelayLinkInfo] = []
        for link in links:
            reply_id = str(link.request.get("reply_id") or "")
            if not reply_id or reply_id in posted:
                ready.append(link)
            elif now - link.created_at >= wait:
                logger.warning(
                    "relay: the handoff message of conversation %s is not recorded as posted "
                    "after %.0f s; opening its card anyway",
                    link.conversation_id,
                    self.config.reply_wait_s,
                )
                ready.append(link)
        return ready

    async def _open_card(self, desk: Desk, link: RelayLinkInfo) -> int:
        """Take the link's opening (atomically: one process opens a card), open it, record it."""
        token = f"{_OPENING}{new_id()}"
        stale = link.card_ref  # None, or the token of an opening that never finished
        taken = await asyncio.to_thread(
            self.store.set_relay_card,
            link.conversation_id,
            token,
            expect=stale,
            opening_at=self._clock(),
        )
        if not taken:
            return 0  # another process took it
        if stale is not None:
            logger.warning(
                "relay: the card opening of conversation %s taken at %s never finished; "
                "opening it again",
                link.conversation_id,
                link.opening_at.isoformat() if link.opening_at else "an unknown time",
            )
        try:
            card_ref = await desk.open_card(request_from_json(link.request))
        except Exception:
            logger.exception("relay: cannot open a card for conversation %s", link.conversation_id)
            await asyncio.to_thread(
                self.store.set_relay_card, link.conversation_id, None, expect=token
            )
            return 0
        recorded = await asyncio.to_thread(
            self.store.set_relay_card, link.conversation_id, card_ref, expect=token
        )
        if not recorded:
            # This process took longer than `opening_grace_s` and another one opened a card
            # meanwhile: that one is the card. Say so on this one, so no agent waits in it.
            logger.warning(
                "relay: card %s for conversation %s was opened too late; another card replaced it",
                card_ref,
                link.conversation_id,
            )
            try:
                await desk.post(
                    card_ref, self.config.duplicate_note, post_id=f"duplicate-{card_ref}"
                )
            except Exception:
                logger.exception("relay: cannot mark card %s as a duplicate", card_ref)
            return 0
        logger.info("relay: card %s opened for conversation %s", card_ref, link.conversation_id)
        return 1

    async def _deliver(self, item: OutboxItem, now: datetime) -> int:
        desk = self._desks.get(item.target_platform)
        channel = self._channels.get(item.target_platform)
        target = item.target_ref
        if item.direction == "to_agent":
            if desk is None:
                return 0
            if not target:
                link = await asyncio.to_thread(self.store.relay_link, item.conversation_id)
                if link is None or not link.card_ref or link.card_ref.startswith(_OPENING):
                    return 0  # the card is not open yet: next round
                target = link.card_ref
        elif channel is None:
            return 0
        retaken = await asyncio.to_thread(
            self.store.claim_relay_delivery,
            item.id,
            now=now,
            claim_timeout_s=self.config.claim_timeout_s,
        )
        if retaken is None:
            return 0  # another process took it, or put it off after a failure of its own
        if retaken and item.status == "posting":
            logger.warning(
                "relay: message %s on %s was claimed at %s and never recorded as posted; "
                "posting it again unless it is already there",
                item.id,
                item.target_platform,
                item.claimed_at.isoformat() if item.claimed_at else "an unknown time",
            )
        post_id = f"relay-{item.id}"
        try:
            if item.direction == "to_agent":
                assert desk is not None
                ref = await desk.post(target, item.text, post_id=post_id, retaken=retaken)
            else:
                assert channel is not None
                key = ConversationKey.parse(target)
                if isinstance(channel, AuthoredCustomerChannel):
                    ref = await channel.post_as(
                        key, item.text, item.author, post_id=post_id, retaken=retaken
                    )
                else:
                    ref = await channel.post(key, item.text, post_id=post_id, retaken=retaken)
        except Exception as exc:
            await self._failed(item, exc)
            return 0
        if ref:
            # Before marking it sent: a process that dies in between leaves the claim to expire,
            # and the next one finds the same message and records the same reference.
            await asyncio.to_thread(
                self.store.claim_event, item.target_platform, f"relay-post:{ref}"
            )
        await asyncio.to_thread(self.store.mark_relay_sent, item.id)
        return 1

    async def _failed(self, item: OutboxItem, exc: Exception) -> None:
        """A posting failed: the store puts the message off (`poll_s` doubling up to
        `retry_max_s`), or gives it up once it is `give_up_after_s` old. The count of failed
        tries is the row's, whichever process made them, so the traceback is logged at a
        message's first failure only, and one line at each later one."""
        now = self._clock()
        recorded = await asyncio.to_thread(
            self.store.relay_delivery_failed,
            item.id,
            now=now,
            first_delay_s=self.config.poll_s,
            max_delay_s=self.config.retry_max_s,
            give_up_after_s=self.config.give_up_after_s,
        )
        if recorded.status == "failed":
            logger.error(
                "relay: message %s on %s given up after %d tries since %s: %s",
                item.id,
                item.target_platform,
                recorded.attempts,
                item.created_at.isoformat(),
                exc,
            )
        elif recorded.attempts == 1:
            logger.exception(
                "relay: cannot post message %s on %s; trying again", item.id, item.target_platform
            )
        else:
            assert recorded.next_attempt_at is not None
            logger.warning(
                "relay: message %s on %s still not posted (try %d, next in %.0f s): %s",
                item.id,
                item.target_platform,
                recorded.attempts,
                (recorded.next_attempt_at - now).total_seconds(),
                exc,
            )

    async def run_round(self, platforms: Iterable[str] | None = None) -> int:
        """One polling round: time out stale handoffs, then deliver for each platform."""
        await asyncio.to_thread(self.check_timeouts)
        posted = 0
        for platform in platforms if platforms is not None else self.platforms:
            posted += await self.deliver_pending(platform)
        return posted

    async def run(self, platforms: Iterable[str] | None = None) -> None:
        """Poll until cancelled, every `config.poll_s` seconds; errors are logged, not raised."""
        chosen = tuple(platforms) if platforms is not None else None
        await every(self.config.poll_s, lambda: self.run_round(chosen), "relay: delivery round")
