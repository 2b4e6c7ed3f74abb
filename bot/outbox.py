"""The inbox and the reply outbox: nothing accepted is lost, nothing is answered twice.

Two tables hold the work a process took on until it is finished (docs/reliability.md):

* **Inbox** (`inbox` rows, `Store.accept_inbound`): an adapter that acknowledges a platform
  event before answering it (Slack) first records the message, de-duplicated by its event key,
  held by the process for `hold_s` seconds. When the turn has run it marks the row done
  (`Store.inbox_done`). A row still pending after its hold belongs to a process that died: a
  sweeper claims it and hands it to the platform's `InboxHandler`, which runs the turn again
  (`Engine.handle_burst(..., redelivered=True)`: a message already answered is not answered
  again, its stored reply goes out through the outbox).
* **Reply outbox** (delivery columns of `reply`): the engine stores every turn's reply with its
  `Destination` ("pending", held by the storing process) before anyone sends it; the adapter
  sends it and records the platform's reference (`Store.set_reply_platform_ref`), which marks it
  sent in the same statement. A reply still pending after its hold is claimed by a sweeper and
  given to the platform's `ReplySender`, which must look for an earlier copy on the platform
  (the process may have died after posting, before recording it) and post only when there is
  none.

Claims are single conditional UPDATEs (pending, hold expired), so of several processes sweeping
at once exactly one gets a row; the hold they set keeps the others off while it works.

Finished inbox rows are deleted after `Sweeper.inbox_retention_s` (a week by default;
`Store.prune_inbox`, at most once an hour). De-duplication outlives them: it rests on the
`processed_event` row written with each, which is kept, so a platform retrying even after a week
is still refused.

This module knows no platform SDK: adapters register objects implementing `ReplySender` and
`InboxHandler`, and run a `Sweeper` for the platforms they serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol

from bot.errors import StorageError
from bot.model import (
    Action,
    ActionKind,
    ConversationKey,
    InboundMessage,
    Reply,
    ReplyKind,
)
from bot.periodic import every, logged
from bot.storage.store import InboundClaim, PendingReply, ReplyInfo, Store

__all__ = [
    "AcceptedMessages",
    "Destination",
    "InboxHandler",
    "ReplySender",
    "SweepCounts",
    "Sweeper",
    "inbound_from_json",
    "inbound_to_json",
    "reply_from_stored",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a reply goes: enough for the platform's adapter to post it without the turn.

    Attributes:
        platform: the platform ("slack", "discord", "zendesk", "web", ...).
        workspace: the team, guild or subdomain ("" where there is one).
        channel: the channel, DM or ticket.
        thread: the thread ("" for none).
        message_id: the inbound message answered (a reply reference, e.g. on Discord).
        actions: the reply's buttons, which the `reply` row does not keep.
    """

    platform: str
    workspace: str
    channel: str
    thread: str = ""
    message_id: str = ""
    actions: tuple[Action, ...] = ()

    @classmethod
    def of(cls, message: InboundMessage, reply: Reply) -> Destination:
        """The destination of `reply`, answering `message` in its thread."""
        return cls(
            message.platform,
            message.workspace,
            message.channel,
            message.thread,
            message.message_id,
            reply.actions,
        )

    def to_json(self) -> dict[str, Any]:
        """The destination as JSON for the `reply.destination` column."""
        return {
            "platform": self.platform,
            "workspace": self.workspace,
            "channel": self.channel,
            "thread": self.thread,
            "message_id": self.message_id,
            "actions": [
                {"kind": action.kind.value, "label": action.label, "value": action.value}
                for action in self.actions
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Destination:
        """Inverse of `to_json`.

        Raises:
            ValueError: the data is not a destination.
        """
        try:
            actions = tuple(
                Action(ActionKind(item["kind"]), str(item["label"]), str(item.get("value", "")))
                for item in data.get("actions") or ()
            )
            return cls(
                str(data["platform"]),
                str(data.get("workspace", "")),
                str(data["channel"]),
                str(data.get("thread", "")),
                str(data.get("message_id", "")),
                actions,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a reply destination: {data!r}") from exc


def reply_from_stored(info: ReplyInfo, destination: Destination | None = None) -> Reply:
    """The `Reply` to send again for a stored reply.

    Its buttons come from `destination`; without one, from its kind, as the named
    constructors of `Reply` make them.
    """
    kind = ReplyKind(info.kind)
    sources = tuple(info.sources)
    if destination is not None:
        actions = destination.actions
    elif kind is ReplyKind.ANSWER:
        actions = Reply.answer(info.text, sources).actions
    elif kind is ReplyKind.CLARIFY:
        actions = Reply.clarify(info.text, sources).actions
    elif kind is ReplyKind.FALLBACK:
        actions = Reply.fallback(info.text).actions
    else:
        actions = ()
    return Reply(info.text, kind, sources, actions, info.confidence, info.id)


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a (read-only) payload: mappings become dicts, sequences lists."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def inbound_to_json(message: InboundMessage) -> dict[str, Any]:
    """An inbound message as JSON for the inbox (its raw payload included)."""
    return {
        "platform": message.platform,
        "workspace": message.workspace,
        "channel": message.channel,
        "thread": message.thread,
        "user": message.user,
        "message_id": message.message_id,
        "text": message.text,
        "addressed": message.addressed,
        "sent_at": message.sent_at.isoformat(),
        "revision": message.revision,
        "raw": _plain(message.raw),
    }


def inbound_from_json(data: Mapping[str, Any]) -> InboundMessage:
    """Inverse of `inbound_to_json`.

    Raises:
        ValueError: the data is not an inbound message.
    """
    try:
        return InboundMessage(
            platform=str(data["platform"]),
            workspace=str(data["workspace"]),
            channel=str(data["channel"]),
            user=str(data["user"]),
            message_id=str(data["message_id"]),
            text=str(data["text"]),
            thread=str(data.get("thread", "")),
            addressed=bool(data.get("addressed", True)),
            sent_at=datetime.fromisoformat(str(data["sent_at"])),
            revision=str(data.get("revision", "")),
            raw=data.get("raw") or {},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an inbound message: {exc}") from exc


class AcceptedMessages:
    """The inbox keys of the messages a process accepted, kept until their turn has run; then
    `finish` marks their rows done. An adapter hands `finish` to its debouncer (``finished=``).

    Args:
        store: the database.
        platform: the inbox rows' platform.
    """

    def __init__(self, store: Store, platform: str) -> None:
        self.store = store
        self.platform = platform
        self._keys: dict[tuple[ConversationKey, str, str], str] = {}

    def remember(self, message: InboundMessage, key: str) -> None:
        """`message` was accepted into the inbox under `key`."""
        self._keys[(message.conversation, message.message_id, message.revision)] = key

    async def finish(self, messages: Sequence[InboundMessage]) -> None:
        """Mark these messages' inbox rows done: their turn ran (or was recorded)."""
        keys = [
            key
            for m in messages
            if (key := self._keys.pop((m.conversation, m.message_id, m.revision), None))
        ]
        if not keys:
            return
        try:
            await asyncio.to_thread(self.store.inbox_done, self.platform, keys)
        except StorageError as e:
            # The turn is stored; a sweeper finds it answered and only marks the rows done.
            logger.warning("%s: cannot mark %d inbox row(s) done: %s", self.platform, len(keys), e)


class ReplySender(Protocol):
    """Sends an outbox reply again, for one platform. The contract:

    `resend` MUST first look on the platform for a copy of the reply posted earlier (the
    process that stored it may have posted it and died before recording that) and return that
    copy's reference instead of posting; only when there is none it posts. It returns the
    platform reference to record (the same shape the adapter's live path records), and raises
    any exception when the reply could not be sent: the sweeper tries again later, up to its
    `max_attempts`. It MUST NOT record the reference itself; the sweeper does.
    """

    @property
    def platform(self) -> str:
        """The platform this sender serves (`Destination.platform`)."""
        ...

    async def resend(self, reply: Reply, destination: Destination) -> str:
        """Send `reply` to `destination` unless it is there already; its platform reference."""
        ...


class InboxHandler(Protocol):
    """Answers an accepted message whose process died, for one platform. The contract:

    `redeliver` runs the turn again for `message` (with ``redelivered=True``, so a message
    answered before is not answered twice), sends the replies through the adapter's usual path
    and returns when that is done; the sweeper then marks the inbox row done. It raises when the
    turn could not run; the sweeper tries again later.
    """

    @property
    def platform(self) -> str:
        """The platform this handler serves (`InboundClaim.platform`)."""
        ...

    async def redeliver(self, message: InboundMessage, extra: Mapping[str, Any]) -> None:
        """Run the turn for `message` again and send its replies; `extra` is what the adapter
        stored beside the message (e.g. its route)."""
        ...


@dataclass(slots=True)
class SweepCounts:
    """What one sweep did."""

    redelivered: int = 0
    resent: int = 0
    failed: int = 0
    given_up: int = 0

    def __bool__(self) -> bool:
        return bool(self.redelivered or self.resent or self.failed or self.given_up)


@dataclass(slots=True)
class Sweeper:
    """Claims expired inbox rows and unsent replies for the registered platforms, and finishes
    them. One per serving process; several processes sweep the same database safely.

    Args:
        store: the database.
        hold_s: how long a claim keeps other sweepers off (the work must finish within it).
        interval_s: seconds between sweeps in `run`.
        max_attempts: claims after which an item is given up ("failed") and logged as an error.
        batch: the most items of each kind claimed per sweep.
        inbox_retention_s: finished inbox rows older than this are deleted (`prune`), by `run`
            at most once every `PRUNE_EVERY_S`.
    """

    store: Store
    hold_s: float = 30.0
    interval_s: float = 5.0
    max_attempts: int = 5
    batch: int = 20
    inbox_retention_s: float = 7 * 24 * 3600.0
    senders: dict[str, ReplySender] = field(default_factory=dict)
    inboxes: dict[str, InboxHandler] = field(default_factory=dict)
    # When `run` last pruned (monotonic seconds), None before the first time.
    _pruned_at: float | None = field(default=None, init=False, repr=False)

    PRUNE_EVERY_S: ClassVar[float] = 3600.0
    """The least time between two prunes in `run`."""

    def add_sender(self, sender: ReplySender) -> None:
        """Send this platform's unsent replies with `sender`."""
        self.senders[sender.platform] = sender

    def add_inbox(self, handler: InboxHandler) -> None:
        """Answer this platform's abandoned inbound messages with `handler`."""
        self.inboxes[handler.platform] = handler

    async def sweep(self) -> SweepCounts:
        """One round: abandoned inbound messages first (their replies then go out at once),
        then unsent replies. Failures are logged and counted, never raised."""
        counts = SweepCounts()
        if self.inboxes:
            claims = await asyncio.to_thread(
                self.store.claim_inbound, tuple(self.inboxes), hold_s=self.hold_s, limit=self.batch
            )
            for claim in claims:
                await self._redeliver(claim, counts)
        if self.senders:
            pending = await asyncio.to_thread(
                self.store.claim_replies, tuple(self.senders), hold_s=self.hold_s, limit=self.batch
            )
            for item in pending:
                await self._resend(item, counts)
        if counts:
            logger.info(
                "outbox sweep: %d redelivered, %d resent, %d failed, %d given up",
                counts.redelivered,
                counts.resent,
                counts.failed,
                counts.given_up,
            )
        return counts

    async def _redeliver(self, claim: InboundClaim, counts: SweepCounts) -> None:
        handler = self.inboxes[claim.platform]
        try:
            message = inbound_from_json(claim.payload.get("message") or {})
        except ValueError:
            logger.error("inbox row %d cannot be read; given up", claim.id)
            await asyncio.to_thread(self.store.give_up_inbound, claim.id)
            counts.given_up += 1
            return
        if claim.attempts > self.max_attempts:
            logger.error(
                "inbound message %s/%s failed %d times; given up",
                claim.platform,
                claim.dedupe_key,
                claim.attempts - 1,
            )
            await asyncio.to_thread(self.store.give_up_inbound, claim.id)
            counts.given_up += 1
            return
        logger.warning(
            "inbound message %s/%s was accepted but not answered in time: answering it (try %d)",
            claim.platform,
            claim.dedupe_key,
            claim.attempts,
        )
        try:
            await handler.redeliver(message, claim.payload.get("extra") or {})
            await asyncio.to_thread(self.store.inbox_done, claim.platform, (claim.dedupe_key,))
        except Exception:
            logger.exception("answering inbound message %s again failed", claim.dedupe_key)
            counts.failed += 1
            return
        counts.redelivered += 1

    async def _resend(self, item: PendingReply, counts: SweepCounts) -> None:
        reply_id = item.reply.id
        if item.attempts > self.max_attempts:
            logger.error(
                "reply %s could not be sent in %d tries; given up", reply_id, item.attempts - 1
            )
            await asyncio.to_thread(self.store.give_up_reply, reply_id)
            counts.given_up += 1
            return
        try:
            destination = Destination.from_json(item.destination)
        except ValueError:
            logger.error("reply %s has an unreadable destination; given up", reply_id)
            await asyncio.to_thread(self.store.give_up_reply, reply_id)
            counts.given_up += 1
            return
        sender = self.senders[destination.platform]
        logger.warning(
            "reply %s was stored but not sent in time: sending it (try %d)", reply_id, item.attempts
        )
        try:
            ref = await sender.resend(reply_from_stored(item.reply, destination), destination)
            await asyncio.to_thread(self.store.set_reply_platform_ref, reply_id, ref)
        except Exception:
            logger.exception("sending reply %s again failed", reply_id)
            counts.failed += 1
            return
        counts.resent += 1

    async def prune(self) -> int:
        """Delete finished inbox rows older than `inbox_retention_s`; how many went."""
        pruned = await asyncio.to_thread(
            self.store.prune_inbox, timedelta(seconds=self.inbox_retention_s)
        )
        if pruned:
            logger.info(
                "inbox: %d finished row(s) older than %.0fs deleted", pruned, self.inbox_retention_s
            )
        return pruned

    async def run(self) -> None:
        """Sweep now and then every `interval_s` seconds until cancelled; prune the inbox at
        the first sweep and then at most once every `PRUNE_EVERY_S`."""
        await every(self.interval_s, self._round, "outbox sweep", (StorageError,))

    async def _round(self) -> None:
        await logged(self.sweep(), "outbox sweep", (StorageError,))
        now = time.monotonic()
        if self._pruned_at is None or now - self._pruned_at >= self.PRUNE_EVERY_S:
            # Also after a failure: a database away is not tried again at every sweep.
            self._pruned_at = now
            await logged(self.prune(), "inbox prune", (StorageError,))
