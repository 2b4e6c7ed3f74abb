"""The thin transport shell: a discord.py client that feeds the engine and posts its replies.

discord.py's `state.py` parses the gateway; this module only dispatches. Every decision is a pure
function in `convert.py` (what to answer, which conversation, where the answer goes) or
`render.py` (what the messages look like); the engine runs in a worker thread
(`asyncio.to_thread`) because it does database and model work. Rate limits, heartbeats,
reconnects and RESUME are discord.py's; a message delivered twice (a replay after RESUME) is
answered once because the inbox and the engine de-duplicate by message id in the database.
On top of that: posts that discord.py's retries could not get through are tried again with the
same nonce (`_send_once`), after a session Discord could not resume the messages written
meanwhile are read over REST (`_catch_up`), and every message the bot answers (and every button
click that speaks for the customer) is recorded in the inbox before its turn, so a process that
dies mid-turn leaves it to the next one's sweeper (`_accept`, `recovery.DiscordInbox`). See
docs/faults.md and docs/reliability.md.

    gateway ─▶ discord.py state ─▶ dispatch (drops bots' traffic) ─▶ on_message / reactions /
    buttons ─▶ convert ─▶ engine (thread) ─▶ render ─▶ REST (threads, messages)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from adapters.discord.convert import (
    DM_WORKSPACE,
    HANDOFF_TEXT,
    PLATFORM,
    AgentReply,
    MessageFacts,
    Place,
    Placement,
    ReactionFacts,
    Routing,
    Why,
    button_feedback,
    button_message,
    content_missing,
    conversation_key,
    feedback_value,
    from_bot,
    is_agent,
    is_agents_traffic,
    message_facts,
    placement,
    reaction_facts,
    reaction_feedback,
    reply_ref,
    strip_mentions,
    to_agent_reply,
    to_inbound,
    why_answer,
)
from adapters.discord.recovery import DiscordInbox, DiscordReplySender, inbox_key, inbox_payload
from adapters.discord.relay import DiscordCustomerChannel, DiscordDesk
from adapters.discord.render import (
    CHOOSE_PREFIX,
    DOWN_ID,
    HANDOFF_ID,
    REASON_TEMPLATE,
    UP_ID,
    ButtonSpec,
    HandoffCard,
    buttons_for,
    conversation_from_footer,
    handoff_embed,
    persistent_buttons,
    reason_id,
    render_reply,
    thread_name,
)
from adapters.discord.settings import PORTAL, DiscordSettings
from bot.debounce import Clock, Debouncer
from bot.engine import AgentAction, Engine
from bot.errors import ConfigError, StorageError
from bot.faults import crash_point
from bot.model import (
    ConversationKey,
    FeedbackEvent,
    FeedbackReason,
    FeedbackValue,
    InboundMessage,
    Reply,
)
from bot.outbox import AcceptedMessages, Destination, Sweeper
from bot.relay import Relay

__all__ = [
    "AgentReplyHandler",
    "FeedbackView",
    "ShardedSupportBotClient",
    "SupportBotClient",
    "build_client",
    "discord_endpoints",
    "intents_for",
    "serve",
]

logger = logging.getLogger(__name__)

#: Called with each agent's message in a handoff card's thread (the relay comes later).
AgentReplyHandler = Callable[[AgentReply], Awaitable[None]]
ButtonHandler = Callable[[str, "discord.Interaction[Any]"], Awaitable[None]]

INTENT_HELP = (
    f"turn on the Message Content intent: {PORTAL} → your application → Bot → Privileged "
    "Gateway Intents → Message Content Intent, save, and restart `supportbot discord`"
)
NO_CONTENT_WARNING = (
    "Discord delivered a message with no text (message %s in channel %s): the Message Content "
    "intent is off, so the bot can only read DMs and messages that mention it. To answer "
    "support channels and forum posts, " + INTENT_HELP
)
PERMISSION_HELP = (
    "check the bot's permissions there: View Channel, Send Messages, Send Messages in Threads, "
    "Create Public Threads, Read Message History"
)
THANKS_UP = "Thanks for the feedback! 👍"
THANKS_DOWN = "Thanks for telling us. We'll use it to improve this answer."
REPLY_GONE = "Sorry, I can't find that answer any more."
THANKS_REASON = "Thanks, noted. That helps us fix it."


# Endpoints -------------------------------------------------------------------------------------


@contextmanager
def discord_endpoints(api_url: str | None, gateway_url: str | None = None) -> Iterator[None]:
    """Point discord.py at another Discord (a local fake) inside the block, and only there.

    discord.py reads its REST base from the class attribute `discord.http.Route.BASE` and, for an
    unsharded client, its first gateway URL from `DiscordWebSocket.DEFAULT_GATEWAY`; both are
    process-wide, so they are set here and restored on exit. With `api_url` set and no
    `gateway_url`, the client asks the API (`GET /gateway/bot`) at login, as sharded clients do.

    Args:
        api_url: e.g. ``http://127.0.0.1:8765/api/v10``; None leaves discord.py untouched.
        gateway_url: e.g. ``ws://127.0.0.1:8765/gateway``.
    """
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    if api_url is not None:
        Route.BASE = api_url.rstrip("/")
    if gateway_url is not None:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway


def intents_for(settings: DiscordSettings) -> discord.Intents:
    """Servers, server and DM messages, reactions and typing; message content when configured."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    # Typing keeps a customer's pending turn open (the debouncer's `extend`).
    intents.guild_typing = True
    intents.dm_typing = True
    intents.message_content = settings.message_content
    return intents


# Buttons ---------------------------------------------------------------------------------------


class _Button(discord.ui.Button["FeedbackView"]):
    def __init__(self, spec: ButtonSpec, on_click: ButtonHandler | None) -> None:
        super().__init__(
            style=discord.ButtonStyle(spec.style),
            label=spec.label or None,
            custom_id=spec.custom_id,
            emoji=spec.emoji,
        )
        self._on_click = on_click

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        if self._on_click is not None and self.custom_id is not None:
            await self._on_click(self.custom_id, interaction)


class FeedbackView(discord.ui.View):
    """Buttons with fixed custom ids and no timeout: a persistent view.

    The client registers one instance holding every button (`persistent_buttons()`) at start-up,
    with `on_click` set; it answers clicks on any message, also after a restart. Messages are
    sent with a stopped instance holding only their own buttons, which supplies the components
    without discord.py keeping a view per message in memory.
    """

    def __init__(self, buttons: Sequence[ButtonSpec], on_click: ButtonHandler | None = None):
        super().__init__(timeout=None)
        for spec in buttons:
            self.add_item(_Button(spec, on_click))

    async def on_error(
        self,
        interaction: discord.Interaction[Any],
        error: Exception,
        item: discord.ui.Item[Any],
        /,
    ) -> None:
        """A failing click is logged with its button; the bot keeps running."""
        custom_id = getattr(item, "custom_id", "?")
        logger.error("Discord: button %s failed", custom_id, exc_info=error)


class _ReasonButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=REASON_TEMPLATE,
):
    """A quick-reason button (after a 👎); its custom id names the reason and the rated reply."""

    def __init__(self, reason: str, reply_id: str) -> None:
        super().__init__(discord.ui.Button(custom_id=reason_id(reason, reply_id), label=reason))
        self.reason = reason
        self.reply_id = reply_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> _ReasonButton:
        return cls(match["reason"], match["reply"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, SupportBotClient):
            await client._on_reason(self.reason, self.reply_id, interaction)


def _display_view(buttons: Sequence[ButtonSpec]) -> FeedbackView:
    view = FeedbackView(buttons)
    view.stop()
    return view


# The client ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    """Where an answer is posted, and the message it replies to (if it is a reply)."""

    channel: discord.abc.Messageable
    reference: discord.Message | discord.PartialMessage | None = None


#: Reactions by which a customer marks a conversation resolved.
RESOLVE_EMOJI = frozenset({"✅", "✔️", "☑️"})
#: How long closing waits for the turns still pending to be answered.
CLOSE_GRACE_S = 10.0
#: How far before the lost connection a new session re-reads messages (clock skew, events in
#: flight).
CATCH_UP_MARGIN_S = 60.0
#: Messages re-read per channel at most when catching up.
CATCH_UP_LIMIT = 200
#: Channels (DMs, threads) of recent conversations remembered for catching up.
RECENT_CHANNELS = 1000
#: Tries of one message post in all, on top of discord.py's own retries within each.
SEND_ATTEMPTS = 5
#: The first wait after a failed post; it doubles with each try.
SEND_BACKOFF_S = 0.5
#: The longest wait between two tries.
SEND_MAX_WAIT_S = 30.0


class SendGaveUp(Exception):
    """A message could not be posted after `SEND_ATTEMPTS` tries (the cause is chained).

    Attributes:
        reply_id: the reply it carried ("" for none).
    """

    def __init__(self, reply_id: str) -> None:
        super().__init__(f"reply {reply_id or '-'} not posted")
        self.reply_id = reply_id


def message_nonce(reply_id: str, index: int) -> str:
    """The nonce of a reply's ``index``-th message: the same on every try (Discord keeps at
    most 25 characters), a random one for a message without a reply id."""
    seed = f"{reply_id}:{index}" if reply_id else uuid.uuid4().hex
    return hashlib.sha256(seed.encode()).hexdigest()[:25]


class SupportBotClient(discord.Client):
    """The support bot on the Discord gateway.

    Args:
        settings: the Discord settings.
        engine: the shared engine (its calls block: they run in worker threads).
        clock: the time source of the turn-taking debouncer (a `ManualClock` in tests).
        **options: passed to `discord.Client` (e.g. `guild_ready_timeout` in tests).
    """

    def __init__(
        self,
        settings: DiscordSettings,
        engine: Engine,
        *,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        # No message cache: handlers use the objects they were given (a cached message would be
        # changed in place by a later edit while its handler waits) and memory stays flat.
        options.setdefault("max_messages", None)
        options.setdefault(
            "allowed_mentions",
            discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True),
        )
        super().__init__(intents=intents_for(settings), **options)
        self.settings = settings
        self.engine = engine
        self.routing = Routing(
            support_channels=frozenset(settings.support_channels),
            forum_channels=frozenset(settings.forum_channels),
            agents_channel=settings.agents_channel,
            threads=settings.threads,
            agent_users=frozenset(settings.agent_users),
            agent_role=settings.agent_role,
        )
        self._warned_no_content = False
        self._agent_handler: AgentReplyHandler | None = None
        self._cards: dict[int, ConversationKey] = {}
        # One turn at a time per conversation, in arrival order: a quick edit or a second
        # message waits for the answer to the first instead of racing it.
        self._turns: weakref.WeakValueDictionary[ConversationKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._relay_task: asyncio.Task[None] | None = None
        # Answers messages and sends replies that this or a dead process left (`bot.outbox`).
        self._sweep_task: asyncio.Task[None] | None = None
        # Catching up after a lost gateway session (`_catch_up`): when the connection went,
        # the channels with recent conversations, and the running catch-up.
        self._disconnected_at: datetime | None = None
        self._ready_before = False
        self._recent_channels: OrderedDict[int, None] = OrderedDict()
        self._catch_up_task: asyncio.Task[None] | None = None
        self._clock = clock
        # Bursts become one turn; made when first needed (on the event loop), closed in `close`.
        self._debouncer: Debouncer | None = None
        # Where each pending turn's answer goes: its person's latest message, per conversation.
        self._questions: dict[
            tuple[ConversationKey, str], tuple[discord.Message, MessageFacts]
        ] = {}
        # The inbox key of each accepted message until its turn ran.
        self._accepted = AcceptedMessages(self.engine.store, PLATFORM)
        self._join_relay()

    def _join_relay(self) -> None:
        """Serve Discord's customers (and the agents' desk, when it is Discord's) for the relay
        that the engine hands conversations to, if it does."""
        relay = self.engine.handoff_sink
        if not isinstance(relay, Relay):
            return
        relay.register_channel(PLATFORM, DiscordCustomerChannel(self))
        if relay.config.desk != PLATFORM or self.routing.agents_channel is None:
            return
        relay.register_desk(PLATFORM, DiscordDesk(self))

        async def to_relay(reply: AgentReply) -> None:
            await asyncio.to_thread(
                relay.agent_said, reply.card_ref, reply.user, reply.text, reply.message_id
            )

        self.on_agent_reply(to_relay)

    async def close(self) -> None:
        """Answer the turns still waiting, stop the relay's delivery loop, then disconnect."""
        if self._catch_up_task is not None:
            self._catch_up_task.cancel()
            await asyncio.gather(self._catch_up_task, return_exceptions=True)
        await self._close_debouncer()
        if self._relay_task is not None:
            self._relay_task.cancel()
            await asyncio.gather(self._relay_task, return_exceptions=True)
            self._relay_task = None
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            await asyncio.gather(self._sweep_task, return_exceptions=True)
            self._sweep_task = None
        await super().close()

    def debouncer(self) -> Debouncer:
        """The client's turn-taking debouncer (made on first use, for this client only)."""
        if self._debouncer is None:
            self._debouncer = self.engine.debouncer(
                self._deliver, clock=self._clock, finished=self._accepted.finish
            )
        return self._debouncer

    async def _close_debouncer(self) -> None:
        """At close: answer the turns still waiting now, within `CLOSE_GRACE_S`."""
        debouncer, self._debouncer = self._debouncer, None
        if debouncer is None:
            return
        if not await debouncer.shut_down(CLOSE_GRACE_S):
            logger.warning("Discord: closing; turns still running were dropped")
        self._questions.clear()

    # Lifecycle ---------------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        """After login, before the gateway: find a fake's gateway, register the buttons."""
        if self.settings.api_url is not None and self.settings.gateway_url is None:
            _, url, _ = await self.http.get_bot_gateway()
            # Scoped by `discord_endpoints`, which restores the default on exit.
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.add_view(FeedbackView(persistent_buttons(), self._on_button))
        self.add_dynamic_items(_ReasonButton)
        relay = self.engine.handoff_sink
        if isinstance(relay, Relay) and self._relay_task is None:
            self._relay_task = asyncio.create_task(relay.run((PLATFORM,)), name="discord-relay")
        if self._sweep_task is None:
            sweeper = Sweeper(self.engine.store, hold_s=self.engine.outbox_hold_s)
            sweeper.add_sender(DiscordReplySender(self))
            sweeper.add_inbox(DiscordInbox(self))
            self._sweep_task = asyncio.create_task(self._sweep(sweeper), name="discord-outbox")

    async def _sweep(self, sweeper: Sweeper) -> None:
        """Sweep once the gateway is ready: answering a message again reads the guild's
        channels and roles, which Discord sends only then."""
        await self.wait_until_ready()
        await sweeper.run()

    async def on_disconnect(self) -> None:
        if self._disconnected_at is None:
            self._disconnected_at = discord.utils.utcnow()

    async def on_resumed(self) -> None:
        # Discord replays what was missed on RESUME (repeats are answered once: the engine
        # de-duplicates by message id).
        self._disconnected_at = None

    async def on_ready(self) -> None:
        if self._ready_before:
            # A new session: Discord replays nothing from the one that ended, so the messages
            # written meanwhile are read over REST.
            since = self._disconnected_at or discord.utils.utcnow()
            self._disconnected_at = None
            if self._catch_up_task is None or self._catch_up_task.done():
                self._catch_up_task = asyncio.create_task(
                    self._catch_up(since - timedelta(seconds=CATCH_UP_MARGIN_S)),
                    name="discord-catch-up",
                )
        self._ready_before = True
        user = self.user
        logger.info(
            "Discord: connected as %s (id %s) in %d server(s)",
            user,
            user.id if user else "?",
            len(self.guilds),
        )
        self._check_channels()

    async def _catch_up(self, since: datetime) -> None:
        """Handle the messages written since ``since`` in the support channels and the
        channels of recent conversations, as if the gateway had delivered them.

        They take the gateway's path, through the inbox (`_accept`): a message handled before,
        by this process or by a sweeper answering for a dead one, has the same inbox key and is
        not answered again (nor by the engine, which de-duplicates by message id as well).
        """
        channels = list(dict.fromkeys([*self.routing.support_channels, *self._recent_channels]))
        after = discord.Object(id=discord.utils.time_snowflake(since))
        found = 0
        for channel_id in channels:
            try:
                channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
                history = channel.history(  # type: ignore[union-attr]
                    limit=CATCH_UP_LIMIT, after=after, oldest_first=True
                )
                async for message in history:
                    found += 1
                    self.dispatch("message", message)
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as e:
                logger.warning(
                    "Discord: cannot read channel %s to catch up after a lost session: %s",
                    channel_id,
                    e,
                )
        logger.info(
            "Discord: new session; %d message(s) since %s re-read in %d channel(s)",
            found,
            since.isoformat(),
            len(channels),
        )

    def _remember_channel(self, channel_id: int) -> None:
        self._recent_channels[channel_id] = None
        self._recent_channels.move_to_end(channel_id)
        while len(self._recent_channels) > RECENT_CHANNELS:
            self._recent_channels.popitem(last=False)

    def _check_channels(self) -> None:
        """Warn at start-up about configured channels the bot cannot see or cannot use."""
        for channel_id in self.routing.support_channels:
            channel = self.get_channel(channel_id)
            if channel is None:
                logger.warning(
                    "support channel %s is not visible to the bot: invite the bot to its server "
                    "and %s",
                    channel_id,
                    PERMISSION_HELP,
                )
        for channel_id in self.routing.forum_channels:
            channel = self.get_channel(channel_id)
            if channel is None:
                logger.warning("forum channel %s is not visible to the bot", channel_id)
            elif not isinstance(channel, discord.ForumChannel):
                logger.warning(
                    "channel %s is configured as a forum but is a %s: list it in "
                    "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS instead",
                    channel_id,
                    getattr(channel, "type", "channel"),
                )
        agents = self.routing.agents_channel
        if agents is not None and not isinstance(self.get_channel(agents), discord.TextChannel):
            logger.warning(
                "agents' channel %s is not a text channel the bot can see: handoff cards "
                "cannot be posted",
                agents,
            )

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """Drop traffic from this bot and other bots here, once, before any handler sees it."""
        if self._from_bots(event, args):
            logger.debug("ignored %s from a bot", event)
            return
        super().dispatch(event, *args, **kwargs)

    def _from_bots(self, event: str, args: tuple[Any, ...]) -> bool:
        me = self.user.id if self.user is not None else None
        first = args[0] if args else None
        if isinstance(first, discord.RawMessageUpdateEvent):
            first = first.message
        if event in ("message", "raw_message_edit") and isinstance(first, discord.Message):
            author = first.author
            is_bot = author.bot or author.system or first.webhook_id is not None
            return from_bot(author.id, is_bot, me)
        if isinstance(first, discord.RawReactionActionEvent):
            member = first.member
            return from_bot(first.user_id, bool(member is not None and member.bot), me)
        return False

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """A failing handler is logged with its event; the client keeps running."""
        logger.exception("Discord: handling %s failed", event_method)

    # Messages ----------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        await self._handle_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        message = payload.message
        if message.edited_at is None:
            return  # an embed unfolding, a pin: not an edit of the text
        await self._handle_message(message, revision=message.edited_at.isoformat())

    def _my_role_id(self, guild: discord.Guild | None) -> int | None:
        if guild is None or guild.me is None:
            return None
        role = guild.self_role
        return role.id if role is not None else None

    async def _resolve_channel(self, message: discord.Message) -> object:
        """The message's channel; one discord.py had not cached is fetched once."""
        channel = message.channel
        if isinstance(channel, discord.PartialMessageable) and message.guild is not None:
            cached = self.get_channel(channel.id)
            if cached is not None:
                return cached
            try:
                return await self.fetch_channel(channel.id)
            except discord.HTTPException as e:
                logger.debug("cannot fetch channel %s: %s", channel.id, e)
        return channel

    async def _handle_message(self, message: discord.Message, revision: str = "") -> None:
        me = self.user
        if me is None:
            return
        channel = await self._resolve_channel(message)
        facts = message_facts(
            message, me_id=me.id, my_role_id=self._my_role_id(message.guild), channel=channel
        )
        if is_agents_traffic(facts, self.routing):
            if facts.place is Place.THREAD and not revision:
                await self._relay_agent_reply(facts, channel)
            return
        key = conversation_key(facts)
        if facts.place in (Place.DM, Place.THREAD):
            self._remember_channel(facts.channel_id)
        if is_agent(facts, self.routing) and await self._agent_wrote(facts, key, revision):
            return
        async with self._turn_lock(key):
            if (
                not revision
                and facts.guild_id is not None
                and self._another_person_wrote(key, str(facts.author_id))
            ):
                # A person answering someone else is recorded (after the turn it cancelled, so
                # the conversation keeps its customer), not answered by the bot.
                await self.debouncer().wait_idle()
                inbound = to_inbound(facts, Why.THREAD)
                await asyncio.to_thread(self.engine.record, [inbound])
                return
            await self._answer(message, facts, revision)

    async def _agent_wrote(self, facts: MessageFacts, key: ConversationKey, revision: str) -> bool:
        """A human agent wrote in a thread: in a customer's conversation the bot's pending
        answer is cancelled and the agent takes over (or gives it back with ``!release`` /
        ``!resolve``; see `Engine.agent_wrote`).

        Returns:
            Whether the message was the agent's in someone else's conversation (handled here);
            False when it is a question like anyone's (their own thread, or none of the bot's).
        """
        agent = str(facts.author_id)
        if revision:
            # An agent correcting a reply to a customer: not a question for the bot.
            conversation = await asyncio.to_thread(self.engine.store.find_conversation, key)
            return conversation is not None and conversation.customer != agent
        if self.engine.human_replied(key, agent):
            logger.info(
                "Discord: agent %s answered in %s; the bot's answer is cancelled", agent, key
            )
            await self.debouncer().wait_idle()  # the cancelled question is recorded first
        text = strip_mentions(facts.content, facts.me_id, facts.my_role_id)
        action = await asyncio.to_thread(
            self.engine.agent_wrote, key, agent, text, str(facts.message_id)
        )
        logger.info("Discord: agent %s in %s: %s", agent, key, action)
        return action not in (AgentAction.CUSTOMER, AgentAction.IGNORED)

    def _another_person_wrote(self, key: ConversationKey, user: str) -> bool:
        """Head start: a person wrote in a shared channel's conversation, so the bot's pending
        answer to someone else there is cancelled (when the channel has a head start).

        Returns:
            Whether a pending answer was cancelled.
        """
        if self.engine.timing_for(key).head_start_s <= 0:
            return False
        if not self.engine.human_replied(key, user):
            return False
        logger.info("Discord: %s answered first in %s; the bot stays quiet", user, key)
        return True

    def _turn_lock(self, key: ConversationKey) -> asyncio.Lock:
        lock = self._turns.get(key)
        if lock is None:
            lock = self._turns[key] = asyncio.Lock()
        return lock

    async def _answer(self, message: discord.Message, facts: MessageFacts, revision: str) -> None:
        takes_part = False
        if facts.place is Place.THREAD:
            key = conversation_key(facts)
            takes_part = bool(self.debouncer().pending(key, str(facts.author_id))) or (
                await asyncio.to_thread(self.engine.takes_part_in, key)
            )
        why = why_answer(facts, self.routing, takes_part)
        if why is None:
            return
        if content_missing(facts):
            self._warn_no_content(facts)
            return
        inbound = to_inbound(facts, why, revision=revision)
        if not await self._accept(inbound, placement(facts, self.routing)):
            return
        # One turn per burst: the debouncer runs it once the customer pauses (`_deliver`).
        self._questions[(inbound.conversation, inbound.user)] = (message, facts)
        self.debouncer().submit(inbound)

    async def _accept(
        self, inbound: InboundMessage, where: Placement, *, reply_to: int | None = None
    ) -> bool:
        """Record a message (or a click, `_button_turn`) the bot will answer in the inbox before
        its turn, de-duplicated by its id (`recovery.inbox_key`): a process that dies before the
        turn ran leaves it to a sweeper (`recovery.DiscordInbox`), and a message delivered again
        is not answered again. `reply_to`: the message a click's answer replies to.

        With the database away the message is answered all the same (the engine's own
        de-duplication still holds): Discord will not deliver it again, so refusing it would
        lose it for sure, where answering loses it only if this process dies mid-turn.

        Returns:
            False when the message was accepted before (drop it), else True.
        """
        key = inbox_key(inbound)
        try:
            accepted = await asyncio.to_thread(
                self.engine.store.accept_inbound,
                PLATFORM,
                key,
                inbox_payload(inbound, where, reply_to=reply_to),
                hold_s=self.engine.outbox_hold_s,
            )
        except StorageError as e:
            logger.warning(
                "Discord: cannot record message %s in the inbox, answering it anyway: %s",
                inbound.message_id,
                e,
            )
            return True
        if not accepted:
            logger.info("Discord message %s already accepted: not answered again", key)
            return False
        crash_point("after_accept")
        self._accepted.remember(inbound, key)
        return True

    async def answer_again(
        self, inbound: InboundMessage, where: Placement, *, reply_to: int | None = None
    ) -> None:
        """Answer a message (or click) that a process accepted and died before answering
        (`recovery.DiscordInbox`): its turn runs again as a redelivery, so a message the dead
        process had answered gets nothing new (a reply it stored unsent goes out through the
        outbox), and the replies are posted as the live path posts them. `reply_to`: the
        message a click's answer replies to (`inbox_payload`).

        Raises:
            discord.HTTPException: its channel cannot be read.
            StorageError: the turn could not run.
        """
        async with self._turn_lock(inbound.conversation):
            replies = await asyncio.to_thread(self.engine.handle_burst, [inbound], redelivered=True)
            if replies:
                target = await self._redelivery_target(inbound, where, reply_to)
                await self._post(target, replies)

    async def _redelivery_target(
        self, inbound: InboundMessage, where: Placement, reply_to: int | None = None
    ) -> _Target:
        """Where the live path would have posted the answer to `inbound`; a thread the dead
        process had started from the question is used, not started twice."""
        channel_of = self._channel_by_id
        if where is Placement.SAME_CHANNEL:
            return _Target(await channel_of(inbound.thread or inbound.channel))
        channel = await channel_of(inbound.channel)
        if where is Placement.REPLY:
            # A message's answer replies to it; a click's, to the bot's message that carried
            # the button (`reply_to`: a click's own id, ``interaction:…``, names no message).
            # A click with nothing to reply to was answered in its channel.
            if reply_to is None and inbound.message_id.isdigit():
                reply_to = int(inbound.message_id)
            if reply_to is None:
                return _Target(channel)
            return _Target(channel, discord.PartialMessage(channel=channel, id=reply_to))
        try:
            return _Target(await channel_of(inbound.message_id))  # the thread has its id
        except discord.NotFound:
            pass
        try:
            question = await channel.fetch_message(int(inbound.message_id))
        except discord.NotFound:
            return _Target(channel)  # the question is gone: answer in its channel
        return await self._target_at(question, where, inbound.text)

    async def _deliver(self, inbound: InboundMessage, replies: list[Reply]) -> None:
        """Post a turn's replies where the answer to its last message goes."""
        slot = (inbound.conversation, inbound.user)
        question = self._questions.get(slot)
        if self._debouncer is None or not self._debouncer.pending(*slot):
            self._questions.pop(slot, None)
        if not replies or question is None:
            return
        message, facts = question
        target = await self._target_for(message, facts, inbound.text)
        await self._post(target, replies)

    def _warn_no_content(self, facts: MessageFacts) -> None:
        if self._warned_no_content:
            logger.debug("message %s arrived without text", facts.message_id)
            return
        self._warned_no_content = True
        logger.warning(NO_CONTENT_WARNING, facts.message_id, facts.channel_id)

    async def _target_for(
        self, message: discord.Message, facts: MessageFacts, question: str
    ) -> _Target:
        return await self._target_at(message, placement(facts, self.routing), question)

    async def _target_at(
        self, message: discord.Message, where: Placement, question: str
    ) -> _Target:
        if where is Placement.NEW_THREAD:
            try:
                thread = await message.create_thread(name=thread_name(question))
            except (discord.HTTPException, ValueError) as e:
                logger.warning(
                    "cannot start a thread on message %s in channel %s (%s): answering with a "
                    "reply instead; %s",
                    message.id,
                    message.channel.id,
                    e,
                    PERMISSION_HELP,
                )
                return _Target(message.channel, message)
            return _Target(thread)
        if where is Placement.REPLY:
            return _Target(message.channel, message)
        return _Target(message.channel)

    async def _post(self, target: _Target, replies: Sequence[Reply]) -> None:
        """Send replies in order; each reply's last message carries its buttons and is
        remembered as the reply's platform reference (reactions and clicks find it there)."""
        for reply in replies:
            try:
                last = await self._send_reply(target, reply)
            except discord.HTTPException as e:
                logger.warning(
                    "cannot post reply %s in channel %s (%s): %s",
                    reply.id,
                    getattr(target.channel, "id", "?"),
                    e,
                    PERMISSION_HELP,
                )
                return
            except SendGaveUp as e:
                logger.error(
                    "reply %s not posted in channel %s after %d tries: %r",
                    reply.id,
                    getattr(target.channel, "id", "?"),
                    SEND_ATTEMPTS,
                    e.__cause__,
                )
                return
            target = _Target(target.channel)  # only the first message replies to the question
            if last is not None and reply.id:
                ref = reply_ref(last.channel.id, last.id)
                await asyncio.to_thread(self.engine.attach_platform_ref, reply.id, ref)

    async def _send_reply(self, target: _Target, reply: Reply) -> discord.Message | None:
        """Post one reply's messages in order, each with its nonce (`message_nonce`); the
        first replies to `target.reference` when there is one. Returns the last message.

        Raises:
            discord.HTTPException: Discord refused a message.
            SendGaveUp: every try of a message failed.
        """
        reference = target.reference
        last: discord.Message | None = None
        for index, chunk in enumerate(render_reply(reply)):
            extra: dict[str, Any] = {"nonce": message_nonce(reply.id, index)}
            if chunk.buttons:
                extra["view"] = _display_view(chunk.buttons)
            if reference is not None:
                # A question deleted meanwhile must not make the answer fail.
                extra["reference"] = reference.to_reference(fail_if_not_exists=False)
            last = await self._send_once(target.channel, chunk.content, reply.id, extra)
            reference = None
        return last

    async def resend_reply(self, reply: Reply, destination: Destination) -> str:
        """Post a stored reply that was never recorded as posted; its platform reference.

        Each message carries the nonce the first try carried (`message_nonce`, with
        ``enforce_nonce``), so within Discord's nonce window (a few minutes) a message the dead
        process had posted comes back instead of a second copy. The reply goes into the
        conversation's thread when it exists, else into its channel as a reply to the question.

        Raises:
            discord.HTTPException: Discord refused the message or knows no such channel.
            SendGaveUp: every try failed.
        """
        target = await self._resend_target(destination)
        last = await self._send_reply(target, reply)
        if last is None:
            raise SendGaveUp(reply.id)
        return reply_ref(last.channel.id, last.id)

    async def _channel_by_id(self, raw: str) -> Any:
        """A channel or thread by its id: cached, else fetched.

        Raises:
            discord.HTTPException: Discord knows no such channel or refuses it.
        """
        found = self.get_channel(int(raw))
        return found if found is not None else await self.fetch_channel(int(raw))

    async def _resend_target(self, destination: Destination) -> _Target:
        channel_of = self._channel_by_id
        if destination.thread:
            try:
                return _Target(await channel_of(destination.thread))
            except (discord.NotFound, discord.Forbidden, ValueError):
                pass  # no thread was started: answer in the channel
        channel = await channel_of(destination.channel)
        reference = None
        if destination.message_id.isdigit() and destination.thread:
            reference = discord.PartialMessage(channel=channel, id=int(destination.message_id))
        return _Target(channel, reference)

    async def _send_once(
        self, channel: Any, content: str, reply_id: str, extra: dict[str, Any]
    ) -> discord.Message:
        """Send one message, retrying what discord.py's own retries leave over.

        discord.py waits out 429s and retries 500/502/504 itself, up to five tries; a 503, a
        dropped connection or a rate limit that outlasts those is retried here with backoff.
        Every try carries the same ``nonce`` with ``enforce_nonce`` (discord.py sets it), so
        Discord returns the message a lost answer had already created instead of posting it
        again.

        Raises:
            discord.HTTPException: Discord refused the message (4xx other than 429).
            SendGaveUp: every try failed with a server error, a rate limit or no answer.
        """
        error: Exception | None = None
        for attempt in range(SEND_ATTEMPTS):
            wait: float
            try:
                sent: discord.Message = await channel.send(content, **extra)
                return sent
            except discord.RateLimited as e:
                wait, error = min(e.retry_after, SEND_MAX_WAIT_S), e
            except discord.HTTPException as e:
                if e.status != 429 and e.status < 500:
                    raise
                wait, error = min(SEND_BACKOFF_S * 2**attempt, SEND_MAX_WAIT_S), e
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                wait, error = min(SEND_BACKOFF_S * 2**attempt, SEND_MAX_WAIT_S), e
            logger.warning(
                "posting reply %s: %r (try %d of %d); trying again in %.1fs",
                reply_id or "-",
                error,
                attempt + 1,
                SEND_ATTEMPTS,
                wait,
            )
            if attempt + 1 < SEND_ATTEMPTS:
                await asyncio.sleep(wait)
        raise SendGaveUp(reply_id) from error

    # Feedback ----------------------------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self._on_reaction(payload)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self._on_reaction(payload)

    async def on_raw_typing(self, payload: discord.RawTypingEvent) -> None:
        """A person typing keeps their pending turn open one more burst window."""
        me = self.user
        if me is not None and payload.user_id == me.id:
            return
        key = self._typing_key(payload.channel_id, payload.guild_id)
        if key is not None and self._debouncer is not None:
            self._debouncer.extend(key, str(payload.user_id))

    def _typing_key(self, channel_id: int, guild_id: int | None) -> ConversationKey | None:
        """The conversation of a DM or a thread (a channel's questions are each their own)."""
        if guild_id is None:
            return ConversationKey(PLATFORM, DM_WORKSPACE, str(channel_id))
        channel = self.get_channel(channel_id)
        if isinstance(channel, discord.Thread) and channel.parent_id is not None:
            return ConversationKey(PLATFORM, str(guild_id), str(channel.parent_id), str(channel_id))
        return None

    async def _on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        facts = reaction_facts(payload)
        if facts.added and facts.emoji_id is None and facts.emoji_name in RESOLVE_EMOJI:
            await self._resolve(facts)
            return
        value = feedback_value(
            facts.emoji_id, facts.emoji_name, self.settings.up_emoji, self.settings.down_emoji
        )
        if value is None:
            return
        me = self.user
        author = facts.message_author_id
        if author is not None and me is not None and author != me.id:
            return  # not on one of the bot's messages: no need to ask the database
        ref = reply_ref(facts.channel_id, facts.message_id)
        info = await asyncio.to_thread(self.engine.reply_posted_as, ref)
        if info is None:
            return
        event = reaction_feedback(facts, info.id, value, nonce=uuid.uuid4().hex)
        outcome = await asyncio.to_thread(self.engine.respond_to_feedback, event)
        logger.info(
            "feedback reply=%s value=%s via reaction changed=%s",
            info.id,
            event.value,
            outcome.recorded,
        )
        reasons = next((r for r in outcome.replies if buttons_for(r)), None)
        if reasons is not None:
            await self._offer_reasons(facts, reasons)

    async def _offer_reasons(self, facts: ReactionFacts, reasons: Reply) -> None:
        """After a 👎 reaction: the quick reasons, as a reply to the rated message that names
        the person who reacted. A reaction has no interaction to answer privately, as a button
        click has; only that person's mention is allowed to ping."""
        channel = self.get_channel(facts.channel_id) or self.get_partial_messageable(
            facts.channel_id
        )
        if not isinstance(channel, discord.abc.Messageable):
            return
        rated = discord.PartialMessage(channel=channel, id=facts.message_id)
        try:
            await channel.send(
                f"<@{facts.user_id}> {THANKS_DOWN}\n{reasons.text}",
                view=_display_view(buttons_for(reasons)),
                reference=rated.to_reference(fail_if_not_exists=False),
                allowed_mentions=discord.AllowedMentions(
                    everyone=False,
                    roles=False,
                    replied_user=False,
                    users=[discord.Object(facts.user_id)],
                ),
            )
        except discord.HTTPException as e:
            logger.warning("cannot offer feedback reasons in channel %s: %s", facts.channel_id, e)

    async def _resolve(self, facts: ReactionFacts) -> None:
        """A ✅ by the customer on a message of their conversation marks it resolved: one of
        the bot's answers, or a message in a DM or thread the bot takes part in."""
        info = await asyncio.to_thread(
            self.engine.reply_posted_as, reply_ref(facts.channel_id, facts.message_id)
        )
        conversation = None
        if info is not None:
            conversation = await asyncio.to_thread(
                self.engine.store.get_conversation, info.conversation_id
            )
        else:
            key = self._typing_key(facts.channel_id, facts.guild_id)
            if key is None and facts.guild_id is not None:
                # A question in a channel is its own conversation, keyed by its id.
                key = ConversationKey(
                    PLATFORM, str(facts.guild_id), str(facts.channel_id), str(facts.message_id)
                )
            if key is not None:
                conversation = await asyncio.to_thread(self.engine.store.find_conversation, key)
        if conversation is None or conversation.customer != str(facts.user_id):
            return
        # A turn still waiting there is answered first; the ✅ then closes the conversation.
        if self._debouncer is not None:
            await self._debouncer.wait_done()
        if await asyncio.to_thread(self.engine.mark_resolved, conversation.key):
            logger.info("Discord: conversation %s marked resolved by a reaction", conversation.key)

    async def _on_button(self, custom_id: str, interaction: discord.Interaction[Any]) -> None:
        """A click on one of the persistent buttons.

        Discord wants an acknowledgement within 3 seconds, so the interaction is deferred first
        (no visible change) and the database work follows.
        """
        await interaction.response.defer()
        message = interaction.message
        if message is None:
            return
        ref = reply_ref(message.channel.id, message.id)
        info = await asyncio.to_thread(self.engine.reply_posted_as, ref)
        if info is None:
            await interaction.followup.send(REPLY_GONE, ephemeral=True)
            return
        user_id = interaction.user.id
        if custom_id in (UP_ID, DOWN_ID):
            event = button_feedback(custom_id == UP_ID, info.id, user_id, interaction.id)
            outcome = await asyncio.to_thread(self.engine.respond_to_feedback, event)
            logger.info(
                "feedback reply=%s value=%s via button changed=%s",
                info.id,
                event.value,
                outcome.recorded,
            )
            thanks = THANKS_UP if custom_id == UP_ID else THANKS_DOWN
            reasons = next((r for r in outcome.replies if buttons_for(r)), None)
            if reasons is None:
                await interaction.followup.send(thanks, ephemeral=True)
            else:
                # The quick reasons, to the clicker only; their ids name the rated reply.
                await interaction.followup.send(
                    f"{thanks}\n{reasons.text}",
                    view=_display_view(buttons_for(reasons)),
                    ephemeral=True,
                )
            return
        if custom_id == HANDOFF_ID:
            # Handoff to a person comes with a later issue; until then the click asks for one in
            # the user's name and the engine answers as it would to those words.
            text = HANDOFF_TEXT
        elif custom_id.startswith(CHOOSE_PREFIX):
            index = int(custom_id.removeprefix(CHOOSE_PREFIX))
            if index >= len(info.sources):
                return
            chosen = info.sources[index]
            text = chosen.title or chosen.id
        else:
            return
        conversation = await asyncio.to_thread(
            self.engine.store.get_conversation, info.conversation_id
        )
        if conversation is None:
            return
        inbound = button_message(conversation.key, user_id, interaction.id, text)
        channel = message.channel
        in_place = isinstance(channel, discord.Thread | discord.DMChannel)
        await self._button_turn(inbound, _Target(channel, None if in_place else message))

    async def _on_reason(
        self, reason: str, reply_id: str, interaction: discord.Interaction[Any]
    ) -> None:
        """A click on one of the quick reasons after a 👎: stored with the rating; "talk to a
        person" then asks for one, as the "Talk to a person" button does."""
        await interaction.response.defer()
        if reason not in set(FeedbackReason):
            return
        user_id = interaction.user.id
        event = FeedbackEvent(
            platform=PLATFORM,
            reply_id=reply_id,
            user=str(user_id),
            value=FeedbackValue.DOWN,
            event_id=f"reason:{interaction.id}",
            reason=reason,
        )
        try:
            changed = await asyncio.to_thread(self.engine.record_feedback, event)
        except StorageError:
            await interaction.followup.send(REPLY_GONE, ephemeral=True)
            return
        logger.info("feedback reason reply=%s reason=%s changed=%s", reply_id, reason, changed)
        if reason != FeedbackReason.TALK_TO_PERSON:
            await interaction.followup.send(THANKS_REASON, ephemeral=True)
            return
        info = await asyncio.to_thread(self.engine.store.get_reply, reply_id)
        conversation = None
        if info is not None:
            conversation = await asyncio.to_thread(
                self.engine.store.get_conversation, info.conversation_id
            )
        channel = interaction.channel
        if info is None or conversation is None or not isinstance(channel, discord.abc.Messageable):
            return
        reference: discord.Message | None = None
        in_place = isinstance(channel, discord.Thread | discord.DMChannel)
        if not in_place and info.platform_ref:
            try:
                reference = await channel.fetch_message(int(info.platform_ref.split(":")[-1]))
            except (discord.HTTPException, ValueError):
                reference = None
        inbound = button_message(conversation.key, user_id, interaction.id, HANDOFF_TEXT)
        await self._button_turn(inbound, _Target(channel, reference))

    async def _button_turn(self, inbound: InboundMessage, target: _Target) -> None:
        """Run the turn of a click that speaks for the customer and post its replies at
        `target`: in place (a thread or DM, no reference) or as a reply to the bot's message.

        Discord does not deliver an interaction again, so the click goes through the inbox as a
        gateway message does (`_accept`, keyed ``interaction:{id}``): a process that dies
        mid-turn leaves it to a sweeper, which answers at the same place (`_redelivery_target`,
        with the message replied to kept as ``reply_to``), and a click dispatched twice runs
        one turn.
        """
        in_place = isinstance(target.channel, discord.Thread | discord.DMChannel)
        where = Placement.SAME_CHANNEL if in_place else Placement.REPLY
        reply_to = target.reference.id if target.reference is not None else None
        if not await self._accept(inbound, where, reply_to=reply_to):
            return
        async with self._turn_lock(inbound.conversation):
            replies = await asyncio.to_thread(self.engine.handle, inbound)
            await self._post(target, replies)
        await self._accepted.finish([inbound])

    # Agents' side ------------------------------------------------------------------------------

    def on_agent_reply(self, handler: AgentReplyHandler | None) -> None:
        """Register the callback that receives agents' messages in handoff card threads."""
        self._agent_handler = handler

    async def post_handoff_card(self, card: HandoffCard) -> str:
        """Post a handoff card in the agents' channel and start its thread.

        Returns:
            The card's reference, ``"{agents channel}:{card message}"``; agents' replies name it
            as `AgentReply.card_ref`. The card's message id is also its thread's id.

        Raises:
            ConfigError: no agents' channel is configured, or it is not a text channel.
            discord.HTTPException: Discord refused the message.
        """
        agents = self.routing.agents_channel
        if agents is None:
            raise ConfigError(
                "no agents' channel: set SUPPORTBOT_DISCORD_AGENTS_CHANNEL to a staff channel id"
            )
        channel = self.get_channel(agents) or await self.fetch_channel(agents)
        if not isinstance(channel, discord.TextChannel):
            raise ConfigError(f"the agents' channel {agents} is not a text channel")
        message = await channel.send(embed=discord.Embed.from_dict(dict(handoff_embed(card))))
        thread = await message.create_thread(name=thread_name(f"{card.customer}: {card.question}"))
        self._cards[thread.id] = card.conversation
        logger.info("handoff card %s posted for %s", message.id, card.conversation)
        return reply_ref(channel.id, message.id)

    async def _card_conversation(self, facts: MessageFacts) -> ConversationKey | None:
        """The conversation a card's thread is about: remembered, or read off the card."""
        known = self._cards.get(facts.channel_id)
        if known is not None or facts.parent_id is None:
            return known
        try:
            parent = self.get_channel(facts.parent_id) or await self.fetch_channel(facts.parent_id)
            if not isinstance(parent, discord.TextChannel):
                return None
            card = await parent.fetch_message(facts.channel_id)
        except discord.HTTPException:
            return None
        for embed in card.embeds:
            if embed.footer.text:
                key = conversation_from_footer(embed.footer.text)
                if key is not None:
                    self._cards[facts.channel_id] = key
                    return key
        return None

    async def _relay_agent_reply(self, facts: MessageFacts, channel: object) -> None:
        if self._agent_handler is None:
            logger.info(
                "agent message %s in card %s: no relay registered", facts.message_id, channel
            )
            return
        conversation = await self._card_conversation(facts)
        if conversation is None:
            return  # a thread in the agents' channel that is not a handoff card
        await self._agent_handler(to_agent_reply(facts, conversation))


class ShardedSupportBotClient(SupportBotClient, discord.AutoShardedClient):
    """The same bot on several gateway connections (`SUPPORTBOT_DISCORD_SHARDED=1`)."""


def build_client(settings: DiscordSettings, engine: Engine, **options: Any) -> SupportBotClient:
    """The client the settings ask for: sharded or not."""
    cls = ShardedSupportBotClient if settings.sharded else SupportBotClient
    return cls(settings, engine, **options)


async def serve(
    settings: DiscordSettings,
    engine: Engine,
    *,
    client: SupportBotClient | None = None,
) -> None:
    """Run the bot until the connection closes or the task is cancelled.

    Raises:
        ConfigError: Discord refused the token or the privileged intent.
    """
    bot = client or build_client(settings, engine)
    with discord_endpoints(settings.api_url, settings.gateway_url):
        try:
            async with bot:
                await bot.start(settings.token.get_secret_value())
        except discord.LoginFailure as e:
            raise ConfigError(f"Discord refused DISCORD_TOKEN ({e}); {PORTAL}") from e
        except discord.PrivilegedIntentsRequired as e:
            raise ConfigError(
                "Discord refused the Message Content intent: "
                + INTENT_HELP
                + " (or set SUPPORTBOT_DISCORD_MESSAGE_CONTENT=false to answer DMs and "
                "mentions only)"
            ) from e
