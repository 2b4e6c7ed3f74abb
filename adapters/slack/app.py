"""The transport shell: a slack-bolt `AsyncApp` in the bot's FastAPI app, or on Socket Mode.

Request path (HTTP)::

    POST /slack/events → signature and timestamp checked (401) → body parsed (400)
    → bolt: verification again, authorization, self events dropped, url_verification
    → central filter: bot and non-person messages dropped
    → a listener decides whether the event applies (pure, `convert`), acknowledges at once and
      leaves the work to a tracked background task → 200

    background task: de-duplicate the event id (database) → `Engine.handle` in a worker thread
    → `render.reply_message` → `outbound.post_once` in the question's thread
    → `Engine.attach_platform_ref` so reactions and buttons find the reply

Listeners run with ``process_before_response=True`` so the acknowledgement is sent only after the
background task is registered: nothing is lost between the ack and the work, and shutdown waits
for work in flight (`TaskTracker.close`). Socket Mode dispatches the same listeners; with several
replicas, a lease in the database (`LeaseKeeper`) lets one process at a time hold the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.adapter.starlette.async_handler import (
    AsyncSlackRequestHandler,
    to_starlette_response,
)
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import convert, render
from adapters.slack.agents import AgentDirectory, AgentReplyCallback
from adapters.slack.convert import PLATFORM, Route
from adapters.slack.installation import (
    DatabaseInstallationStore,
    DatabaseOAuthStateStore,
    WorkspaceClients,
)
from adapters.slack.lease import LeaseKeeper, holder_id
from adapters.slack.outbound import PostError, make_client, post_once
from adapters.slack.payloads import (
    AppMentionEvent,
    BlockActionsPayload,
    ButtonAction,
    MessageChangedEvent,
    MessageEvent,
    ReactionEvent,
)
from adapters.slack.recovery import SlackInbox, SlackReplySender, inbox_payload
from adapters.slack.relay import SlackCustomerChannel, SlackDesk
from adapters.slack.settings import SlackMode, SlackSettings
from bot.debounce import Clock, Debouncer
from bot.engine import AgentAction
from bot.errors import ConfigError, StorageError
from bot.faults import crash_point
from bot.model import ActionKind, ConversationKey, FeedbackEvent, InboundMessage, Reply
from bot.outbox import AcceptedMessages
from bot.service import Services

__all__ = ["EVENTS_PATH", "MAX_BODY_BYTES", "SlackAdapter", "TaskTracker"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
#: Slack's payloads are far smaller; anything bigger is refused before it is read further.
MAX_BODY_BYTES = 1_000_000
#: Requests signed longer ago than this are refused as replays (Slack's own rule).
SIGNATURE_MAX_AGE_S = 5 * 60
#: The reactions by which a customer marks a conversation resolved (skin tones ignored).
RESOLVE_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "ballot_box_with_check"})


class TaskTracker:
    """Background work started after an acknowledgement, kept so shutdown can wait for it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in the background; failures are logged by the work itself."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, limit_s: float | None = None) -> None:
        """Wait until no work is left, including work started meanwhile.

        Raises:
            TimeoutError: work was still running after ``limit_s`` seconds.
        """
        async with asyncio.timeout(limit_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def close(self, grace: float) -> None:
        """Give running work ``grace`` seconds, then cancel what is left."""
        try:
            await self.drain(grace)
        except TimeoutError:
            left = set(self._tasks)
            logger.warning("shutting down: cancelling %d unfinished Slack task(s)", len(left))
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)


class _DropBotTraffic(AsyncMiddleware):
    """Drops the bot's own messages, other bots' and non-person subtypes, once for every
    listener (bolt's IgnoringSelfEvents runs before and drops the bot's own events by id)."""

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Any,
    ) -> BoltResponse | None:
        body = req.body
        event = body.get("event") if body.get("type") == "event_callback" else None
        if isinstance(event, Mapping) and convert.is_bot_traffic(event, req.context.bot_user_id):
            logger.debug("dropped bot or system message event %s", body.get("event_id"))
            return BoltResponse(status=200, body="")
        return cast(BoltResponse, await next())


class _TokenInClientNote(logging.Filter):
    """Hides bolt's warning that the token is unused: bolt reads SLACK_BOT_TOKEN from the
    environment by itself, while the adapter hands it over inside the client on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


_BOLT_LOGGER = logging.getLogger("adapters.slack.bolt")
_BOLT_LOGGER.addFilter(_TokenInClientNote())


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def lease_name(app_token: str) -> str:
    """The lease for an app's Socket Mode connection: named after the app id in the token
    (``xapp-1-A0123-…``), or a hash of the token when it has another shape."""
    parts = app_token.split("-")
    if len(parts) > 3 and parts[0] == "xapp" and parts[2].startswith("A"):
        return f"slack-socket:{parts[2]}"
    return "slack-socket:" + hashlib.sha256(app_token.encode()).hexdigest()[:16]


class SlackAdapter:
    """Slack for the bot: customers ask in DMs, mentions, threads and auto-answer channels;
    agents answer handoff cards in the agents' channel.

    Args:
        services: the bot's services (engine and database).
        settings: Slack settings; validated here.
        holder: this process's id for the Socket Mode lease (default: host, pid, random).
        clock: the time source of the turn-taking debouncer (a `ManualClock` in tests).

    Raises:
        ConfigError: the settings cannot work, or Slack is not configured at all.
    """

    def __init__(
        self,
        services: Services,
        settings: SlackSettings,
        *,
        holder: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.mode = settings.check()
        if self.mode is SlackMode.OFF:
            raise ConfigError(
                "Slack is not configured: set SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
                "(see docs/slack.md)"
            )
        self.settings = settings
        self.services = services
        self.engine = services.engine
        self.store = services.store
        self.tasks = TaskTracker()
        self.holder = holder or holder_id()
        self._auto_answer = frozenset(settings.auto_answer_channels)
        self._up = frozenset(settings.up_reactions)
        self._down = frozenset(settings.down_reactions)
        self._agent_callbacks: list[AgentReplyCallback] = []
        # Human agents: replying in a customer's thread takes the conversation over.
        self.agents = AgentDirectory(
            settings.agent_users,
            settings.agents_channel if settings.agents_from_channel else None,
            refresh_s=settings.agents_refresh,
        )
        self._agents_task: asyncio.Task[None] | None = None
        token = _secret(settings.bot_token)
        secret = _secret(settings.signing_secret)
        self._secret = secret.encode() if secret else None
        self.client: AsyncWebClient = make_client(settings, token)
        self.installations: DatabaseInstallationStore | None = None
        # Per-workspace clients for work outside an event (sweeper, relay); None: one token.
        self.workspaces: WorkspaceClients | None = None
        if self.mode is SlackMode.OAUTH:
            self.installations = DatabaseInstallationStore(self.store, settings.client_id or "")
            self.workspaces = WorkspaceClients(
                self.installations, lambda bot_token: make_client(settings, bot_token)
            )
        self.bolt = self._build_bolt(secret)
        self._register()
        self._socket: AsyncSocketModeHandler | None = None
        self.lease: LeaseKeeper | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._clock = clock
        # Bursts become one turn; made when first needed (on the event loop), closed at shutdown.
        self._debouncer: Debouncer | None = None
        # The client that answers each conversation with a pending turn (per workspace in OAuth).
        self._turn_clients: dict[ConversationKey, AsyncWebClient] = {}
        # Turns on their way to the debouncer, per conversation: a head-start cancellation waits
        # for them, so it also reaches a question that arrived just before the other person.
        self._arriving: dict[ConversationKey, set[asyncio.Task[None]]] = {}
        # The inbox key of each accepted message until its turn ran.
        self._accepted = AcceptedMessages(self.store, PLATFORM)
        self._sweep_task: asyncio.Task[None] | None = None
        self._join_relay()

    # Set-up -------------------------------------------------------------------------------------

    def _build_bolt(self, secret: str | None) -> AsyncApp:
        oauth_settings = None
        if self.installations is not None:
            oauth_settings = AsyncOAuthSettings(
                client_id=self.installations.client_id,
                client_secret=_secret(self.settings.client_secret),
                scopes=self.settings.scopes,
                redirect_uri=self.settings.redirect_uri,
                install_path=INSTALL_PATH,
                redirect_uri_path=REDIRECT_PATH,
                installation_store=self.installations,
                state_store=DatabaseOAuthStateStore(self.store),
                logger=logger,
            )
        return AsyncApp(
            name="supportbot",
            logger=_BOLT_LOGGER,
            # Listeners only decide and hand work to a tracked task, so running them before the
            # response keeps the ack fast and guarantees the task exists once Slack has its ack.
            process_before_response=True,
            signing_secret=secret,
            # The token travels in the client (None with OAuth: bolt finds it per workspace).
            client=self.client,
            oauth_settings=oauth_settings,
            request_verification_enabled=secret is not None,
        )

    def _register(self) -> None:
        bolt = self.bolt
        bolt.error(self._on_error)
        bolt.use(_DropBotTraffic())
        bolt.event("app_mention")(self._on_mention)
        bolt.event("message")(self._on_message)
        bolt.event("reaction_added")(self._on_reaction)
        bolt.event("reaction_removed")(self._on_reaction)
        bolt.action(re.compile(r"^feedback_(up|down)$"))(self._on_feedback_button)
        bolt.action(re.compile(r"^feedback_reason_\w+$"))(self._on_feedback_button)
        bolt.action("handoff")(self._on_handoff_button)
        bolt.action(re.compile(r"^choose_\d+$"))(self._on_choose_button)
        # Anything else subscribed is acknowledged, so Slack does not retry it.
        bolt.event(re.compile(r".*"))(self._on_other_event)

    def _join_relay(self) -> None:
        """Serve Slack's customers (and the agents' desk, when it is Slack's) for the relay.

        Customers are reached in their own workspace (`client_for`), in OAuth mode too; the desk
        is one workspace's channel and needs the single-workspace bot token."""
        relay = self.services.relay
        if relay is None:
            return
        relay.register_channel(PLATFORM, SlackCustomerChannel(self.client_for))
        if relay.config.desk != PLATFORM or not self.settings.agents_channel:
            return
        if self.mode is SlackMode.OAUTH:
            # The desk is the company's own workspace: one bot token, which OAuth mode lacks.
            logger.warning(
                "Slack: the agents' desk needs a single-workspace bot token; not served in "
                "OAuth mode (choose another desk: SUPPORTBOT_HANDOFF_DESK)"
            )
            return
        relay.register_desk(PLATFORM, SlackDesk(self.client, self.settings.agents_channel))

        async def to_relay(reply: convert.AgentReply) -> None:
            await asyncio.to_thread(
                relay.agent_said, reply.card_ref, reply.user, reply.text, reply.ts
            )

        self.on_agent_reply(to_relay)

    def on_agent_reply(self, callback: AgentReplyCallback) -> None:
        """Call ``callback`` with every agent's reply in a handoff card's thread."""
        self._agent_callbacks.append(callback)

    def attach(self, app: FastAPI) -> AbstractAsyncContextManager[None]:
        """Mount the HTTP routes (not in Socket Mode) and return the adapter's lifetime."""
        if self.mode is not SlackMode.SOCKET:
            app.include_router(self.router())
        return self.lifetime()

    def router(self) -> APIRouter:
        """``POST /slack/events``; with OAuth also ``GET /slack/install`` and the redirect."""
        router = APIRouter(tags=["slack"])
        router.add_api_route(
            EVENTS_PATH, self.handle_http, methods=["POST"], include_in_schema=False
        )
        if self.mode is SlackMode.OAUTH:
            oauth = AsyncSlackRequestHandler(self.bolt)
            router.add_api_route(
                INSTALL_PATH, oauth.handle, methods=["GET"], include_in_schema=False
            )
            router.add_api_route(
                REDIRECT_PATH, oauth.handle, methods=["GET"], include_in_schema=False
            )
        return router

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        if self.mode is SlackMode.SOCKET:
            app_token = _secret(self.settings.app_token) or ""
            self.lease = LeaseKeeper(
                self.store,
                lease_name(app_token),
                self.holder,
                ttl=self.settings.lease_ttl,
                renew=self.settings.lease_renew,
                on_held=self._ensure_connected,
                on_lost=self._disconnect,
            )
            await self.lease.start()
        self.debouncer()
        if self.services.relay is not None:
            self._relay_task = asyncio.create_task(
                self.services.relay.run((PLATFORM,)), name="slack-relay"
            )
        if self.agents.channel is not None and self.mode is not SlackMode.OAUTH:
            self._agents_task = asyncio.create_task(self._read_agents(), name="slack-agents")
        self._sweep_task = self._start_sweeper()
        try:
            yield
        finally:
            for task in (self._sweep_task, self._relay_task, self._agents_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.lease is not None:
                await self.lease.stop()
            await self.tasks.close(self.settings.shutdown_grace)
            await self._close_debouncer()

    async def client_for(self, workspace: str) -> AsyncWebClient:
        """The Web API client of a workspace, for work outside an event: the adapter's client
        with a single bot token, the workspace's installation's token in OAuth mode.

        Raises:
            NotInstalledError: OAuth mode, and the workspace has no bot installation.
        """
        if self.workspaces is None:
            return self.client
        return await self.workspaces.client(workspace)

    def _start_sweeper(self) -> asyncio.Task[None]:
        """Sweep for Slack events and replies that a dead process left (`bot.outbox`)."""
        sweeper = self.services.sweeper()
        sweeper.add_sender(SlackReplySender(self.client_for))
        sweeper.add_inbox(SlackInbox(self.engine, self.client_for, self._post_reply))
        return asyncio.create_task(sweeper.run(), name="slack-outbox")

    async def _read_agents(self) -> None:
        """Keep the agents' channel's members fresh (`AgentDirectory.refresh`)."""
        while True:
            try:
                await self.agents.refresh(self.client)
            except Exception:
                logger.exception("reading the agents' channel's members failed")
            await asyncio.sleep(min(self.agents.refresh_s, 60.0))

    def debouncer(self) -> Debouncer:
        """The adapter's turn-taking debouncer (made on first use, for this adapter only)."""
        if self._debouncer is None:
            self._debouncer = self.engine.debouncer(
                self._deliver, clock=self._clock, finished=self._accepted.finish
            )
        return self._debouncer

    async def _close_debouncer(self) -> None:
        """At shutdown: answer the turns still waiting now, within the grace period."""
        debouncer, self._debouncer = self._debouncer, None
        if debouncer is None:
            return
        if not await debouncer.shut_down(self.settings.shutdown_grace):
            logger.warning("shutting down: Slack turns still running were dropped")
        self._turn_clients.clear()

    def lifetime(self) -> AbstractAsyncContextManager[None]:
        """Runs with the web app: Socket Mode (under the lease) and, at shutdown, waiting for
        answers still in flight."""
        return self._lifetime()

    # HTTP ---------------------------------------------------------------------------------------

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Slack's v0 signature over the raw bytes, and a timestamp within five minutes."""
        if self._secret is None:
            return False
        timestamp = headers.get("x-slack-request-timestamp", "")
        signature = headers.get("x-slack-signature", "")
        if not timestamp.isdigit() or not signature:
            return False
        if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_S:
            return False
        base = b"v0:" + timestamp.encode() + b":" + body
        expected = "v0=" + hmac.new(self._secret, base, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)

    async def handle_http(self, request: Request) -> Response:
        """Events and interactivity: verify, parse, then let bolt dispatch."""
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "request too large"}, status_code=413)
        headers = dict(request.headers)
        # Before anything is parsed or stored: only Slack knows the signing secret.
        if not self._signed(body, headers):
            logger.warning("Slack request with a bad, stale or missing signature refused")
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        if convert.parse_body(body, request.headers.get("content-type")) is None:
            return JSONResponse({"error": "malformed request body"}, status_code=400)
        retry = headers.get("x-slack-retry-num")
        if retry:
            logger.info(
                "Slack retry %s (%s) received", retry, headers.get("x-slack-retry-reason", "-")
            )
        bolt_headers: dict[str, str | Sequence[str]] = dict(headers)
        try:
            bolt_request = AsyncBoltRequest(
                body=body.decode("utf-8"), query=dict(request.query_params), headers=bolt_headers
            )
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            logger.warning("Slack request bolt cannot read: %r", e)
            return JSONResponse({"error": "malformed request body"}, status_code=400)
        try:
            response = await self.bolt.async_dispatch(bolt_request)
        except Exception:
            # bolt indexes payloads blindly while matching listeners and again in its error
            # handler, so a signed but oddly shaped payload can escape it. Acknowledge it (as
            # `_on_error` does): Slack retrying the same payload would fail the same way.
            logger.exception("Slack request bolt could not dispatch; acknowledged")
            return JSONResponse({"ok": False, "error": "unprocessable payload"}, status_code=200)
        return to_starlette_response(response)

    # Listeners: decide, acknowledge, hand the work over -------------------------------------

    def _team(self, body: Mapping[str, Any], context: AsyncBoltContext) -> str:
        return str(context.team_id or body.get("team_id") or "")

    async def _on_mention(
        self, body: dict[str, Any], event: AppMentionEvent, context: AsyncBoltContext
    ) -> None:
        if self.settings.agents_channel and event["channel"] == self.settings.agents_channel:
            return
        if self._agent_in_thread(event):
            return  # the message event for the same message handles it (`_agent_wrote`)
        message = convert.message_to_inbound(
            event, self._team(body, context), bot_user_id=context.bot_user_id
        )
        await self._accept_turn(body, message, context.client, Route.ANSWER)

    async def _on_message(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        team = self._team(body, context)
        routing: dict[str, Any] = {
            "bot_user_id": context.bot_user_id,
            "auto_answer": self._auto_answer,
            "agents_channel": self.settings.agents_channel,
        }
        if event.get("subtype") == "message_changed":
            edit = cast(MessageChangedEvent, event)
            if self._agent_in_thread({"channel": event["channel"], **edit["message"]}):
                return  # an agent correcting their reply to a customer: not a question
            route = convert.route_edit(edit, **routing)
            if route in (Route.ANSWER, Route.IF_IN_THREAD):
                message = convert.edit_to_inbound(edit, team, bot_user_id=context.bot_user_id)
                await self._accept_turn(body, message, context.client, route)
            return
        new = cast(MessageEvent, event)
        route = convert.route_message(new, **routing)
        if route in (Route.IF_IN_THREAD, Route.MENTION) and self._agent_in_thread(new):
            message = convert.message_to_inbound(new, team, bot_user_id=context.bot_user_id)
            self.tasks.spawn(
                self._agent_wrote(body, message, context.client, route),
                name=f"slack-agent-wrote:{message.message_id}",
            )
            return
        answered_first = None
        if route not in (Route.AGENT_REPLY, Route.MENTION):
            answered_first = self._another_person_wrote(new, team, context.bot_user_id)
        if route is Route.AGENT_REPLY:
            if self._agent_callbacks:
                reply = convert.agent_reply(new, team)
                self.tasks.spawn(self._agent_reply(body, reply), name=f"slack-agent:{reply.ts}")
        elif route in (Route.ANSWER, Route.IF_IN_THREAD):
            message = convert.message_to_inbound(new, team, bot_user_id=context.bot_user_id)
            if answered_first is not None:
                # A person answering someone else is recorded, not answered by the bot.
                self.tasks.spawn(
                    self._record(str(body.get("event_id") or ""), message, answered_first),
                    name=f"slack-record:{message.message_id}",
                )
            else:
                await self._accept_turn(body, message, context.client, route)

    def _agent_in_thread(self, event: Mapping[str, Any]) -> bool:
        """Whether a message is a human agent's reply in a thread of a customers' channel (a
        DM cannot have agents in it; the agents' channel has its own route)."""
        channel = str(event.get("channel", ""))
        ts, thread_ts = event.get("ts"), event.get("thread_ts")
        if not thread_ts or thread_ts == ts or convert.is_dm(channel, event.get("channel_type")):
            return False
        if self.settings.agents_channel and channel == self.settings.agents_channel:
            return False
        return self.agents.is_agent(str(event.get("user") or ""))

    def _another_person_wrote(
        self, event: MessageEvent, team: str, bot_user_id: str | None
    ) -> set[asyncio.Task[None]] | None:
        """Head start: a person wrote in a shared channel's conversation, so the bot's pending
        answer to someone else there is cancelled (when the channel has a head start).

        Returns:
            None when the message answers nobody's pending turn; otherwise the work to wait
            for before recording it (the cancellation, when a turn is still arriving).
        """
        if convert.is_dm(event["channel"], event.get("channel_type")):
            return None
        message = convert.message_to_inbound(event, team, bot_user_id=bot_user_id)
        key = message.conversation
        if self.engine.timing_for(key).head_start_s <= 0:
            return None
        arriving = set(self._arriving.get(key, ()))
        if not arriving:
            return set() if self._cancel_pending(key, message.user) else None

        async def after_arrivals() -> None:
            await asyncio.wait(arriving)
            self._cancel_pending(key, message.user)

        return {self.tasks.spawn(after_arrivals(), name=f"slack-head-start:{message.message_id}")}

    def _cancel_pending(self, key: ConversationKey, user: str) -> bool:
        if not self.engine.human_replied(key, user):
            return False
        logger.info("Slack: %s answered first in %s; the bot stays quiet", user, key)
        return True

    async def _on_reaction(
        self, body: dict[str, Any], event: ReactionEvent, context: AsyncBoltContext
    ) -> None:
        ref = convert.reaction_ref(event)
        if ref is None:
            return
        if event["type"] == "reaction_added" and convert.is_resolve_reaction(
            event["reaction"], RESOLVE_REACTIONS
        ):
            self.tasks.spawn(
                self._resolve(event, self._team(body, context)),
                name=f"slack-resolve:{body.get('event_id')}",
            )
            return
        if convert.reaction_value(event["reaction"], self._up, self._down) is None:
            return
        self.tasks.spawn(
            # The event's client carries its workspace's token (OAuth mode has no other).
            self._reaction(body, event, ref, self._team(body, context), context.client),
            name=f"slack-reaction:{body.get('event_id')}",
        )

    async def _on_feedback_button(
        self,
        ack: AsyncAck,
        body: BlockActionsPayload,
        action: ButtonAction,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        feedback = convert.button_feedback(body, action) or convert.reason_feedback(body, action)
        if feedback is not None:
            self.tasks.spawn(
                self._feedback(feedback, context.client), name=f"slack-feedback:{feedback.event_id}"
            )

    async def _on_handoff_button(
        self,
        ack: AsyncAck,
        body: BlockActionsPayload,
        action: ButtonAction,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        # Until the handoff policy exists, the click speaks for the user; the engine decides.
        message = convert.action_message(body, action, self.settings.handoff_text)
        if message is not None:
            self._spawn_turn(None, message, context.client, Route.ANSWER)

    async def _on_choose_button(
        self,
        ack: AsyncAck,
        body: BlockActionsPayload,
        action: ButtonAction,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        label = action.get("text", {}).get("text") or action.get("value", "")
        message = convert.action_message(body, action, label)
        if message is not None:
            self._spawn_turn(None, message, context.client, Route.ANSWER)

    async def _on_other_event(self, body: dict[str, Any]) -> None:
        logger.debug("Slack event %s not used", body.get("event", {}).get("type"))

    async def _on_error(self, error: Exception, body: dict[str, Any]) -> BoltResponse:
        # The adapter loop's boundary: log with context and acknowledge, so a payload that trips
        # a listener is neither a 5xx nor retried by Slack over and over.
        event = body.get("event")
        logger.error(
            "Slack request not handled: type=%s event=%s id=%s",
            body.get("type"),
            event.get("type") if isinstance(event, Mapping) else None,
            body.get("event_id"),
            exc_info=error,
        )
        if isinstance(error, StorageError):
            # Nothing was recorded (`_accept_turn`): Slack delivers the event again later.
            return BoltResponse(status=503, body="")
        return BoltResponse(status=200, body="")

    # Work after the ack -------------------------------------------------------------------------

    async def _accept_turn(
        self,
        body: Mapping[str, Any],
        message: InboundMessage,
        client: AsyncWebClient | None,
        route: Route,
    ) -> None:
        """Record the event in the inbox (de-duplicated by its event id), then start its turn;
        runs before the acknowledgement, so an acknowledged event is never lost with its process
        (`bot.outbox`). A database failure propagates: `_on_error` answers 503 and Slack
        delivers the event again later."""
        event_id = str(body.get("event_id") or "")
        if (
            route is Route.IF_IN_THREAD
            and not self.debouncer().pending(message.conversation, message.user)
            and not await asyncio.to_thread(self.engine.takes_part_in, message.conversation)
        ):
            return  # a thread the bot is not in: nothing to answer, nothing stored
        if event_id:
            key = f"event:{event_id}"
            accepted = await asyncio.to_thread(
                self.store.accept_inbound,
                PLATFORM,
                key,
                inbox_payload(message, route),
                hold_s=self.services.settings.outbox_hold_s,
            )
            if not accepted:
                logger.info("Slack event %s already handled", event_id)
                return
            crash_point("after_accept")
            self._accepted.remember(message, key)
        self._spawn_turn(body, message, client, route, accepted=bool(event_id))

    def _spawn_turn(
        self,
        body: Mapping[str, Any] | None,
        message: InboundMessage,
        client: AsyncWebClient | None,
        route: Route,
        *,
        accepted: bool = False,
    ) -> None:
        event_id = str(body.get("event_id") or "") if body is not None else ""
        task = self.tasks.spawn(
            self._turn(event_id, message, client or self.client, route, accepted=accepted),
            name=f"slack-turn:{message.message_id}",
        )
        key = message.conversation
        arriving = self._arriving.setdefault(key, set())
        arriving.add(task)

        def arrived(done: asyncio.Task[None]) -> None:
            arriving.discard(done)
            if not arriving and self._arriving.get(key) is arriving:
                del self._arriving[key]

        task.add_done_callback(arrived)

    async def _claim(self, event_id: str) -> bool:
        """De-duplicate Slack's event id (retries and repeated deliveries share it)."""
        if not event_id:
            return True
        return await asyncio.to_thread(self.store.claim_event, PLATFORM, f"event:{event_id}")

    async def _turn(
        self,
        event_id: str,
        message: InboundMessage,
        client: AsyncWebClient,
        route: Route,
        *,
        accepted: bool = False,
    ) -> None:
        """Hand a message to the debouncer; `accepted`: its event is in the inbox already."""
        try:
            debouncer = self.debouncer()
            if (
                route is Route.IF_IN_THREAD
                and not debouncer.pending(message.conversation, message.user)
                and not await asyncio.to_thread(self.engine.takes_part_in, message.conversation)
            ):
                await self._accepted.finish([message])
                return
            if not accepted and not await self._claim(event_id):
                logger.info("Slack event %s already handled", event_id)
                return
            # One turn per burst: the debouncer runs it once the customer pauses (`_deliver`).
            self._turn_clients[message.conversation] = client
            debouncer.submit(message)
        except Exception:
            logger.exception(
                "Slack turn failed: message %s in %s", message.message_id, message.conversation
            )

    async def _agent_wrote(
        self, body: Mapping[str, Any], message: InboundMessage, client: AsyncWebClient, route: Route
    ) -> None:
        """A human agent wrote in a customer's thread: the bot's pending answer there is
        cancelled and the agent takes the conversation over (or gives it back with ``!release``
        / ``!resolve``); see `Engine.agent_wrote`."""
        key = message.conversation
        try:
            if not await self._claim(str(body.get("event_id") or "")):
                return
            arriving = set(self._arriving.get(key, ()))
            if arriving:
                await asyncio.wait(arriving)  # a question on its way is cancelled too
            if self.engine.human_replied(key, message.user):
                logger.info(
                    "Slack: agent %s answered in %s; the bot's answer is cancelled",
                    message.user,
                    key,
                )
                await self.debouncer().wait_idle()  # the cancelled question is recorded first
            action = await asyncio.to_thread(
                self.engine.agent_wrote, key, message.user, message.text, message.message_id
            )
            logger.info("Slack: agent %s in %s: %s", message.user, key, action)
            if action is AgentAction.CUSTOMER or (
                action is AgentAction.IGNORED and route is Route.MENTION
            ):
                # Not a customer's conversation of theirs to take: an ordinary question.
                await self._turn(
                    "", message, client, Route.ANSWER if route is Route.MENTION else route
                )
        except Exception:
            logger.exception("Slack: agent message %s in %s not handled", message.message_id, key)

    async def _record(
        self, event_id: str, message: InboundMessage, after: set[asyncio.Task[None]]
    ) -> None:
        """Record a message unanswered (a person answering first), after the turn it cancelled
        is recorded, so the conversation keeps its customer."""
        try:
            if not await self._claim(event_id):
                return
            if after:
                await asyncio.wait(after)
            await self.debouncer().wait_idle()
            await asyncio.to_thread(self.engine.record, [message])
        except Exception:
            logger.exception("Slack message %s not recorded", message.message_id)

    async def _deliver(self, message: InboundMessage, replies: list[Reply]) -> None:
        """Post a turn's replies in the thread of its last message."""
        client = self._turn_clients.get(message.conversation, self.client)
        if self._debouncer is None or not self._debouncer.pending(
            message.conversation, message.user
        ):
            self._turn_clients.pop(message.conversation, None)
        for reply in replies:
            await self._post_reply(client, message, reply)

    async def _post_reply(
        self, client: AsyncWebClient, message: InboundMessage, reply: Reply
    ) -> None:
        thread_ts = message.thread or None
        try:
            ts = await post_once(
                client,
                channel=message.channel,
                thread_ts=thread_ts,
                message=render.reply_message(reply),
                reply_id=reply.id,
            )
        except PostError as e:
            logger.error("reply %s not posted to %s: %s", reply.id or "-", message.channel, e)
            return
        if reply.id:
            await asyncio.to_thread(
                self.engine.attach_platform_ref, reply.id, convert.platform_ref(message.channel, ts)
            )

    async def _reaction(
        self,
        body: Mapping[str, Any],
        event: ReactionEvent,
        ref: str,
        team: str,
        client: AsyncWebClient,
    ) -> None:
        try:
            reply = await asyncio.to_thread(self.engine.reply_posted_as, ref)
            if reply is None:
                return  # a reaction on something that is not one of the bot's answers
            feedback = convert.reaction_feedback(
                event,
                reply_id=reply.id,
                team=team,
                event_id=str(body.get("event_id") or event["event_ts"]),
                up=self._up,
                down=self._down,
            )
            if feedback is not None:
                await self._feedback(feedback, client)
        except Exception:
            logger.exception("Slack reaction on %s not recorded", ref)

    async def _resolve(self, event: ReactionEvent, team: str) -> None:
        """A ✅ by the customer on a message of their conversation marks it resolved."""
        try:
            key = await asyncio.to_thread(self._reacted_conversation, event, team)
            if key is None:
                return
            # A turn still waiting there is answered first; the ✅ then closes the thread.
            await self.debouncer().wait_done()
            if await asyncio.to_thread(self.engine.mark_resolved, key):
                logger.info("Slack: %s marked %s resolved with a reaction", event["user"], key)
        except Exception:
            logger.exception("Slack resolve reaction in %s not handled", event["item"])

    def _reacted_conversation(self, event: ReactionEvent, team: str) -> ConversationKey | None:
        """The conversation of the message reacted to, if the reacting person is its customer:
        one of the bot's replies, or a message of a thread (or DM) the bot takes part in."""
        item = event["item"]
        channel, ts = item.get("channel", ""), item.get("ts", "")
        reply = self.engine.reply_posted_as(convert.platform_ref(channel, ts))
        conversation = None
        if reply is not None:
            conversation = self.store.get_conversation(reply.conversation_id)
        else:
            dm = convert.is_dm(channel)
            # A top-level message in a channel is its own thread; a thread reply's thread is
            # unknown from the reaction, so only top-level messages and DMs are found.
            thread = "" if dm else ts
            key = ConversationKey(PLATFORM, team, channel, thread)
            conversation = self.store.find_conversation(key)
        if conversation is None or conversation.customer != event["user"]:
            return None
        return conversation.key

    async def _feedback(
        self, feedback: FeedbackEvent, client: AsyncWebClient | None = None
    ) -> None:
        try:
            outcome = await asyncio.to_thread(self.engine.respond_to_feedback, feedback)
        except StorageError as e:
            logger.warning("feedback on reply %s not recorded: %s", feedback.reply_id, e)
            return
        logger.info(
            "feedback %s on reply %s reason=%s: %s",
            feedback.value,
            feedback.reply_id,
            feedback.reason or "-",
            "recorded" if outcome.recorded else "no change",
        )
        if outcome.replies:
            await self._post_follow_up(feedback.reply_id, outcome.replies, client or self.client)

    async def _post_follow_up(
        self, reply_id: str, replies: Sequence[Reply], client: AsyncWebClient
    ) -> None:
        """Post what the bot says after a rating (the quick reasons after a 👎, a handoff) in
        the rated reply's conversation."""
        info = await asyncio.to_thread(self.store.get_reply, reply_id)
        conversation = None
        if info is not None:
            conversation = await asyncio.to_thread(
                self.store.get_conversation, info.conversation_id
            )
        if conversation is None:
            return
        key = conversation.key
        for reply in replies:
            if any(a.kind is ActionKind.FEEDBACK_REASON for a in reply.actions):
                # It carries the rated reply's id: posted once, never attached to that reply.
                try:
                    await post_once(
                        client,
                        channel=key.channel,
                        thread_ts=key.thread or None,
                        message=render.reply_message(reply),
                    )
                except PostError as e:
                    logger.error("feedback reasons not posted to %s: %s", key.channel, e)
                continue
            where = InboundMessage(
                PLATFORM, key.workspace, key.channel, conversation.customer, "", "", key.thread
            )
            await self._post_reply(client, where, reply)

    async def _agent_reply(self, body: Mapping[str, Any], reply: convert.AgentReply) -> None:
        try:
            if not await self._claim(str(body.get("event_id") or "")):
                return
            for callback in list(self._agent_callbacks):
                await callback(reply)
        except Exception:
            logger.exception("agent reply %s in %s not delivered", reply.ts, reply.card_ref)

    # Socket Mode --------------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        """Connect to Socket Mode unless connected (called after each lease renewal)."""
        if self._socket is not None and await self._socket.client.is_connected():
            return
        await self._disconnect()
        handler = AsyncSocketModeHandler(
            self.bolt, app_token=_secret(self.settings.app_token), web_client=self.client
        )
        self._socket = handler
        # Bounded, so the lease is renewed in time even while Slack cannot be reached.
        budget = max(self.settings.lease_ttl - self.settings.lease_renew, 1.0)
        try:
            # slack-bolt leaves these coroutines unannotated.
            await asyncio.wait_for(handler.connect_async(), timeout=budget)  # type: ignore[no-untyped-call]
        except TimeoutError:
            logger.warning("Socket Mode: no connection within %.1f s; retrying", budget)
            await self._disconnect()
            return
        logger.info("Socket Mode connected (holder %s)", self.holder)

    async def _disconnect(self) -> None:
        handler, self._socket = self._socket, None
        if handler is not None:
            await handler.close_async()  # type: ignore[no-untyped-call]
            logger.info("Socket Mode disconnected (holder %s)", self.holder)

    @property
    def socket_connected(self) -> bool:
        """Whether this process holds a Socket Mode connection now."""
        return self._socket is not None

    async def drain(self, limit_s: float | None = 10.0) -> None:
        """Wait for the work started by events received so far, including turns the debouncer
        still holds (tests, shutdown)."""
        async with asyncio.timeout(limit_s):
            while True:
                await self.tasks.drain()
                if self._debouncer is not None and self._debouncer.busy:
                    await self._debouncer.wait_done()
                    continue
                if not len(self.tasks):
                    return
