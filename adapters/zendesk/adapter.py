"""The Zendesk adapter: answers tickets, hands them to agents, relays agents' comments.

One webhook event, after `routes` has verified and parsed it (`convert.route` decides)::

    ANSWER   claim the comment → Engine.handle (worker thread) → each reply posted as a public
             comment (html with source links) → Engine.attach_platform_ref
             → a reply of kind handoff also hands the ticket over (`hand_off`)
    HANDOFF  (the customer asked for a person) claim → the conversation becomes human-owned →
             the message is recorded (the engine stays silent) → `hand_off`
    AGENT    claim → the conversation becomes human-owned (the bot stays silent from now on)
    RELAY    claim → the registered callbacks get an `AgentComment`
    IGNORE   nothing (the bot's own comments, internal notes, …)

Claims use ``store.claim_event("zendesk", "comment:{subdomain}:{message id}")``, so a repeated
delivery, or the first comment arriving both as ``ticket.created`` and ``ticket.comment_added``, is
handled once. Database calls and the engine run in worker threads; Zendesk calls are async.

A reply's comment is added once even when Zendesk's answer is lost: its update carries the reply's
stored id as custom metadata, and a try that may have arrived is looked for in the ticket's audits
before the next (`ZendeskClient.add_comment_once`, as relayed comments are, `relay`). The outbox's
re-send of a reply a dead worker left (`ZendeskReplySender`) looks there first.

Satisfaction ratings are polled (`sync_satisfaction`, every ``ZENDESK_SATISFACTION_POLL_S`` while
the app runs) and become feedback on the bot's latest reply on the rated ticket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx

from adapters.zendesk import convert, render
from adapters.zendesk.client import (
    REPLY_ID_KEY,
    ZendeskClient,
    ZendeskError,
    comment_id_in,
    comment_id_of,
    make_http_client,
)
from adapters.zendesk.convert import PLATFORM, AgentComment, Route, TicketComment
from adapters.zendesk.payloads import SatisfactionRating, TicketCreate, TicketUpdate
from adapters.zendesk.relay import ZendeskCustomerChannel, ZendeskDesk
from adapters.zendesk.sentiment import SentimentScorer
from adapters.zendesk.settings import ZendeskSettings
from bot.errors import StorageError
from bot.model import ConversationKey, Owner, Reply, ReplyKind, Role, Turn
from bot.outbox import Destination
from bot.periodic import every
from bot.service import Services
from bot.storage.store import ConversationInfo
from bot.text import clean_text

__all__ = ["AgentCommentCallback", "HandoffResult", "Outcome", "ZendeskAdapter"]

logger = logging.getLogger(__name__)

#: Receives each agent's public comment on a ticket opened for another platform's customer.
AgentCommentCallback = Callable[[AgentComment], Awaitable[None]]

#: Turns of history put in a handoff note.
NOTE_TURNS = 12


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one webhook event did (the webhook's response body says it too).

    Attributes:
        route: what the event was taken for.
        status: "done", "duplicate", "ignored" or "failed".
        replies: the bot comments posted.
    """

    route: Route
    status: str
    replies: int = 0


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """A handed-over ticket: the note's comment id (None when Zendesk refused the update)."""

    ticket_id: int
    conversation_id: str
    note_comment_id: int | None


class ZendeskAdapter:
    """Zendesk for the bot: answers tickets, and is the agents' desk for other platforms.

    Args:
        services: the bot's services (engine and database).
        settings: Zendesk settings; validated here.
        http: the HTTP client for the API (tests pass one with a transport); by default one is
            made from `settings` and closed with the adapter.

    Raises:
        ConfigError: the settings cannot work.
    """

    def __init__(
        self,
        services: Services,
        settings: ZendeskSettings,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        settings.check()
        assert settings.bot_user_id is not None and settings.webhook_secret is not None
        self.settings = settings
        self.services = services
        self.engine = services.engine
        self.store = services.store
        self.workspace = settings.workspace
        self.bot_user_id: int = settings.bot_user_id
        self.webhook_secret = settings.webhook_secret.get_secret_value().encode()
        self.client = ZendeskClient(http or make_http_client(settings))
        self.sentiment = SentimentScorer()
        self._callbacks: list[AgentCommentCallback] = []
        self._join_relay()

    # Registration ----------------------------------------------------------------------------

    def _join_relay(self) -> None:
        """Serve Zendesk's customers (and the agents' desk, when it is Zendesk) for the relay."""
        relay = self.services.relay
        if relay is None:
            return
        relay.register_channel(PLATFORM, ZendeskCustomerChannel(self))
        if relay.config.desk != PLATFORM:
            return
        relay.register_desk(PLATFORM, ZendeskDesk(self))

        async def to_relay(comment: AgentComment) -> None:
            message_id = comment.comment_id or comment.sent_at.isoformat()
            await asyncio.to_thread(
                relay.agent_said,
                str(comment.ticket_id),
                comment.author_name or comment.author_id,
                comment.text,
                str(message_id),
            )

        self.on_agent_comment(to_relay)

    def on_agent_comment(self, callback: AgentCommentCallback) -> None:
        """Call `callback` with every agent's public comment on a relay ticket (one opened by
        `create_ticket_for`), instead of letting the engine answer it."""
        self._callbacks.append(callback)

    def key(self, ticket_id: int) -> ConversationKey:
        """The conversation of a ticket."""
        return convert.conversation_key(self.workspace, ticket_id)

    # Webhook events --------------------------------------------------------------------------

    async def handle(self, comment: TicketComment) -> Outcome:
        """Act on one comment of a verified webhook event (see the module docstring).

        Failures of the Zendesk API are logged and reported as status "failed"; the event stays
        claimed (Zendesk's retry would not help a refused comment, and might post twice).
        """
        decision = convert.route(
            comment,
            bot_user_id=self.bot_user_id,
            handoff_keywords=self.settings.handoff_keywords,
        )
        if decision is Route.IGNORE:
            return Outcome(decision, "ignored")
        claimed = await asyncio.to_thread(
            self.store.claim_event, PLATFORM, f"comment:{self.workspace}:{comment.message_id}"
        )
        if not claimed and decision is Route.ANSWER:
            # Zendesk sends the event again when a worker died before answering it: the turn
            # runs as a redelivery, which answers only what no finished turn covered.
            outcome = await self._answer(comment, redelivered=True)
            if outcome.status == "done" and not outcome.replies:
                logger.info("duplicate Zendesk comment %s ignored", comment.message_id)
                return Outcome(decision, "duplicate")
            return outcome
        if not claimed:
            logger.info("duplicate Zendesk comment %s ignored", comment.message_id)
            return Outcome(decision, "duplicate")
        try:
            if decision is Route.ANSWER:
                return await self._answer(comment)
            if decision is Route.HANDOFF:
                await self._customer_asks_for_person(comment)
            elif decision is Route.AGENT:
                await self._agent_took_over(comment)
            else:
                await self._relay(comment)
        except (ZendeskError, StorageError):
            logger.exception(
                "Zendesk ticket %s: %s of comment %s failed",
                comment.ticket_id,
                decision,
                comment.message_id,
            )
            return Outcome(decision, "failed")
        return Outcome(decision, "done")

    async def _answer(self, comment: TicketComment, *, redelivered: bool = False) -> Outcome:
        message = convert.to_inbound(comment, self.workspace)
        replies = await asyncio.to_thread(
            self.engine.handle_burst, [message], redelivered=redelivered
        )
        posted = 0
        for reply in replies:
            try:
                await self.post_reply(comment.ticket_id, reply)
            except (ZendeskError, StorageError):
                logger.exception(
                    "Zendesk ticket %s: posting reply %s failed", comment.ticket_id, reply.id
                )
                return Outcome(Route.ANSWER, "failed", posted)
            posted += 1
            if reply.kind is ReplyKind.HANDOFF:
                await self.hand_off(
                    comment.ticket_id,
                    reason="the bot handed the conversation over",
                    actor="bot",
                    customer=comment.author_id,
                )
        return Outcome(Route.ANSWER, "done", posted)

    async def post_reply(self, ticket_id: int, reply: Reply) -> int | None:
        """Post a reply as the bot's public comment and remember where it went.

        Returns:
            The comment's id, where Zendesk's answer names it.

        Raises:
            ZendeskError: Zendesk refused the comment.
        """
        comment_id, ref = await self.add_reply_comment(ticket_id, reply)
        if reply.id:
            await asyncio.to_thread(self.engine.attach_platform_ref, reply.id, ref)
        logger.info("Zendesk ticket %s: posted %s reply %s", ticket_id, reply.kind, reply.id)
        return comment_id

    async def add_reply_comment(
        self, ticket_id: int, reply: Reply, *, look_first: bool = False
    ) -> tuple[int | None, str]:
        """Add a reply as the bot's public comment; its comment id and platform reference.

        The comment's update carries the reply's id (`REPLY_ID_KEY`), so a try that may have
        reached Zendesk is found in the ticket's audits rather than added again
        (`ZendeskClient.add_comment_once`); a reply without an id cannot be, and is retried
        only through rate limits.

        Args:
            ticket_id: the ticket.
            reply: the reply.
            look_first: an earlier process may have added it (the outbox's re-send after a
                crash, `bot.outbox`): look in the ticket's audits before the first try too.

        Raises:
            ZendeskError: Zendesk refused the comment, or every try failed.
        """
        update: TicketUpdate = {"comment": render.reply_comment(reply, author_id=self.bot_user_id)}
        # Retried through storms and timeouts, never added twice.
        audit = await self.client.add_comment_once(
            ticket_id, update, key=REPLY_ID_KEY, value=reply.id, look_first=look_first
        )
        comment_id = comment_id_in(audit)
        # The comment's id; failing that (an answer without the audit's events), the audit's.
        where = comment_id if comment_id is not None else f"audit:{audit.get('id')}"
        return comment_id, f"{self.workspace}:{ticket_id}:{where}"

    async def _customer_asks_for_person(self, comment: TicketComment) -> None:
        conversation = await self._conversation(comment.ticket_id, comment.author_id)
        already_human = conversation.owner is Owner.HUMAN
        # Human-owned first, so the engine records the message without answering it.
        await asyncio.to_thread(
            self.store.set_owner,
            conversation.id,
            Owner.HUMAN,
            f"zendesk:{comment.author_id}",
            "customer asked for a person",
        )
        await asyncio.to_thread(self.engine.handle, convert.to_inbound(comment, self.workspace))
        if already_human:
            return
        await self.hand_off(
            comment.ticket_id,
            reason="the customer asked for a person",
            actor=f"zendesk:{comment.author_id}",
            customer=comment.author_id,
        )

    async def _agent_took_over(self, comment: TicketComment) -> None:
        conversation = await self._conversation(
            comment.ticket_id, comment.requester_id or comment.author_id
        )
        await asyncio.to_thread(
            self.store.set_owner,
            conversation.id,
            Owner.HUMAN,
            f"zendesk:{comment.author_id}",
            "agent replied",
        )
        await asyncio.to_thread(
            self.store.add_message,
            conversation.id,
            Role.AGENT,
            comment.author_id,
            clean_text(comment.body, normalize=False),
            comment.message_id,
        )

    async def _relay(self, comment: TicketComment) -> None:
        agent_comment = convert.to_agent_comment(comment)
        if not self._callbacks:
            logger.warning(
                "Zendesk ticket %s: an agent's comment for %s has no relay registered",
                comment.ticket_id,
                agent_comment.origin,
            )
        for callback in list(self._callbacks):
            try:
                await callback(agent_comment)
            except Exception:
                logger.exception("Zendesk relay callback %r failed", callback)

    async def _conversation(self, ticket_id: int, customer: str) -> ConversationInfo:
        return await asyncio.to_thread(
            self.store.get_or_create_conversation, self.key(ticket_id), customer
        )

    # Handoff ---------------------------------------------------------------------------------

    async def hand_off(
        self,
        ticket_id: int,
        *,
        reason: str,
        actor: str = "bot",
        customer: str | None = None,
    ) -> HandoffResult:
        """Hand a ticket to the agents.

        The conversation becomes human-owned first (so the bot is silent even if Zendesk then
        fails), then one ticket update adds an internal note (the question, the bot's last answer
        and its sources, the customer's sentiment, the conversation so far) and sets the status,
        group and tags configured by ``ZENDESK_HANDOFF_*``.

        Args:
            ticket_id: the ticket.
            reason: why, for the note and the handoff record.
            actor: who decided (``zendesk:{user id}`` for the customer, "bot" for the engine).
            customer: the customer's user id, for a conversation the bot has not seen yet.

        Returns:
            The result; `note_comment_id` is None when Zendesk refused the update (logged).
        """
        conversation = await self._conversation(ticket_id, customer or "")
        await asyncio.to_thread(self.store.set_owner, conversation.id, Owner.HUMAN, actor, reason)
        note = await asyncio.to_thread(self._handoff_note, conversation.id, reason)
        update: TicketUpdate = {
            "comment": render.handoff_note(note, author_id=self.bot_user_id),
            "status": self.settings.handoff_status,
        }
        if self.settings.handoff_group_id is not None:
            update["group_id"] = self.settings.handoff_group_id
        if self.settings.handoff_tags:
            update["additional_tags"] = list(self.settings.handoff_tags)
        try:
            response = await self.client.update_ticket(ticket_id, update)
        except ZendeskError:
            logger.exception("Zendesk ticket %s: the handoff note was refused", ticket_id)
            return HandoffResult(ticket_id, conversation.id, None)
        logger.info("Zendesk ticket %s handed to the agents (%s)", ticket_id, reason)
        return HandoffResult(ticket_id, conversation.id, comment_id_of(response))

    def _handoff_note(self, conversation_id: str, reason: str) -> render.HandoffNote:
        history = self.store.history(conversation_id, limit=NOTE_TURNS)
        latest = self.store.latest_reply(conversation_id)
        customer_turns = [turn.text for turn in history if turn.role is Role.USER]
        question = _question(history, latest.query if latest else None)
        return render.HandoffNote(
            reason=reason,
            question=question,
            answer=latest.text if latest is not None else None,
            sources=latest.sources if latest is not None else (),
            sentiment=self.sentiment.score(customer_turns),
            transcript=tuple(history),
        )

    # Other platforms' customers --------------------------------------------------------------

    async def create_ticket_for(
        self,
        transcript: Sequence[Turn],
        customer: str,
        platform: str,
        *,
        origin: ConversationKey | None = None,
        subject: str | None = None,
    ) -> int:
        """Open a ticket for a customer of another platform who needs a person.

        The ticket's first comment is an internal note with the transcript; its requester is
        ``ZENDESK_RELAY_REQUESTER_ID`` (a placeholder end-user) or else the bot's account; its
        external id names `origin`, so agents' public comments on it go to the callbacks
        registered with `on_agent_comment` rather than to the engine.

        Args:
            transcript: the conversation so far, oldest first.
            customer: the customer's name or id on their platform.
            platform: "slack", "discord", "web", ...
            origin: the customer's conversation (where the relay should answer).
            subject: the ticket's subject (a default names the customer and platform).

        Returns:
            The new ticket's id.

        Raises:
            ZendeskError: the ticket was not created.
        """
        ticket: TicketCreate = {
            "subject": subject or f"{customer} on {platform} asked for a person",
            "comment": render.transcript_comment(
                transcript, customer=customer, platform=platform, author_id=self.bot_user_id
            ),
            "requester_id": self.settings.relay_requester_id or self.bot_user_id,
            "tags": [*self.settings.relay_tags, f"supportbot_{_tag(platform)}"],
        }
        if origin is not None:
            ticket["external_id"] = convert.relay_external_id(origin)
        if self.settings.handoff_group_id is not None:
            ticket["group_id"] = self.settings.handoff_group_id
        response = await self.client.create_ticket(ticket)
        ticket_id = (response.get("ticket") or {}).get("id")
        if not isinstance(ticket_id, int):
            raise ZendeskError(
                "Zendesk created a ticket but did not say its id", status=None, path="tickets.json"
            )
        conversation = await self._conversation(ticket_id, f"{platform}:{customer}")
        await asyncio.to_thread(
            self.store.set_owner,
            conversation.id,
            Owner.HUMAN,
            "bot",
            f"ticket for {origin or platform}",
        )
        logger.info("Zendesk ticket %s opened for %s on %s", ticket_id, customer, platform)
        return ticket_id

    # Satisfaction ratings --------------------------------------------------------------------

    async def sync_satisfaction(self, *, since: float | None = None) -> int:
        """Turn satisfaction ratings of tickets the bot answered into feedback rows.

        good → up, bad → down, on the bot's latest posted reply on the ticket, by the requester.
        Ratings of tickets the bot never answered are skipped; a rating seen before (same id,
        score and update time) changes nothing.

        Args:
            since: read ratings created from this Unix time on; by default
                ``ZENDESK_SATISFACTION_LOOKBACK_S`` ago.

        Returns:
            How many feedback rows were recorded or changed.

        Raises:
            ZendeskError: the ratings could not be read.
        """
        start = since if since is not None else time.time() - self.settings.satisfaction_lookback_s
        recorded = 0
        async for rating in self.client.satisfaction_ratings(start_time=int(start)):
            ticket_id = rating.get("ticket_id")
            if not isinstance(ticket_id, int):
                continue
            recorded += await asyncio.to_thread(self._record_rating, ticket_id, rating)
        if recorded:
            logger.info("Zendesk satisfaction ratings: %d feedback rows recorded", recorded)
        return recorded

    def _record_rating(self, ticket_id: int, rating: SatisfactionRating) -> int:
        conversation = self.store.find_conversation(self.key(ticket_id))
        if conversation is None:
            return 0
        reply = self.store.latest_reply(conversation.id, posted=True)
        if reply is None:
            return 0
        event = convert.feedback_from_rating(rating, reply.id, self.workspace)
        if event is None:
            return 0
        return 1 if self.engine.record_feedback(event) else 0

    async def _poll_satisfaction(self) -> None:
        await every(
            self.settings.satisfaction_poll_s,
            self.sync_satisfaction,
            "Zendesk satisfaction poll",
            (ZendeskError,),
        )

    # Lifetime --------------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        poller: asyncio.Task[None] | None = None
        if self.settings.satisfaction_poll_s > 0:
            poller = asyncio.create_task(self._poll_satisfaction(), name="zendesk-satisfaction")
        relay_task: asyncio.Task[None] | None = None
        if self.services.relay is not None:
            relay_task = asyncio.create_task(
                self.services.relay.run((PLATFORM,)), name="zendesk-relay"
            )
        # Replies stored but never posted (a dead worker, a refused post) go out once.
        sweeper = self.services.sweeper()
        sweeper.add_sender(ZendeskReplySender(self))
        sweep_task = asyncio.create_task(sweeper.run(), name="zendesk-outbox")
        try:
            yield
        finally:
            for task in (sweep_task, poller, relay_task):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self.client.aclose()

    def lifetime(self) -> AbstractAsyncContextManager[None]:
        """Runs while the app does: polls satisfaction ratings, closes the HTTP client after."""
        return self._lifetime()


class ZendeskReplySender:
    """Posts Zendesk replies that were stored but never posted (`bot.outbox.ReplySender`):
    the ticket's audits are searched for the comment carrying the reply's id first."""

    platform = PLATFORM

    def __init__(self, adapter: ZendeskAdapter) -> None:
        self.adapter = adapter

    async def resend(self, reply: Reply, destination: Destination) -> str:
        """Add the comment unless the ticket has it already; its platform reference."""
        try:
            ticket_id = int(destination.thread)
        except ValueError as e:
            raise ValueError(f"not a Zendesk ticket: {destination.thread!r}") from e
        _, ref = await self.adapter.add_reply_comment(ticket_id, reply, look_first=True)
        return ref


def _question(history: Sequence[Turn], query: str | None) -> str | None:
    """The customer's question: the first thing they wrote, else the last retrieval query."""
    first = next((turn.text for turn in history if turn.role is Role.USER), None)
    return first or query or None


def _tag(value: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in value.lower()).strip("_") or "other"
