"""A local Discord for tests: the REST API and the gateway on 127.0.0.1, recording every call.

The real discord.py client connects to it (`discord_endpoints(fake.api_url)`): it logs in over
REST, asks `GET /gateway/bot` for the gateway, opens the websocket, gets HELLO, IDENTIFYs, gets
READY and GUILD_CREATE. Tests then drive events (`post_message`, `react`, `click`, ...) and read
`calls` to see what the bot did. Like Discord, the fake echoes the bot's own messages back as
MESSAGE_CREATE, sends THREAD_CREATE for threads it starts, answers RECONNECT (op 7) with a
reconnect to `resume_gateway_url` and RESUME (op 6) with the missed events and RESUMED, and
blanks the text of guild messages that do not mention the bot when the client did not ask for
the Message Content intent. Frames are sent as uncompressed text, which discord.py accepts even
though it asks for zlib-stream.

Faults: a `Storm` answers message posts with 429 (Discord's shape: ``{"message", "retry_after",
"global"}`` with ``Retry-After``, ``X-RateLimit-*`` and ``Via`` headers) and 500/502/503 for a
number of requests or a time window; a 500 may take effect first. Like Discord, a post with
``enforce_nonce`` and a ``nonce`` already used by the same author in the last few minutes returns
the earlier message instead of creating another. `drop` closes the gateway connection (abruptly,
or with a close code such as 4000 or 4009); events dispatched while the client is away are
replayed on RESUME.

Payload shapes follow https://discord.com/developers/docs (types in adapters/discord/payloads.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from adapters.discord.payloads import (
    GUILD_FORUM,
    GUILD_TEXT,
    OP_DISPATCH,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_RECONNECT,
    OP_RESUME,
    PUBLIC_THREAD,
    ApplicationPayload,
    ChannelPayload,
    GatewayFrame,
    GuildCreatePayload,
    InteractionPayload,
    MemberPayload,
    MessagePayload,
    ReactionEventPayload,
    ReadyPayload,
    UserPayload,
)

TOKEN = "fake-bot-token"
MESSAGE_CONTENT_INTENT = 1 << 15
DM = 1

_EPOCH_MS = 1420070400000


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only when the content type is exactly "application/json".
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


#: How long Discord remembers a message's nonce for ``enforce_nonce`` ("the past few minutes").
NONCE_WINDOW_S = 300.0


@dataclass
class Storm:
    """A run of error answers to message posts: ``statuses`` in turn, one per request.

    It lasts ``requests`` requests or ``seconds`` seconds, whichever ends first. A 429, 502 and
    503 never take effect; a 500 creates the message first when ``applied_500`` (the answer was
    lost on the way back).
    """

    statuses: tuple[int, ...] = (429, 500, 502, 503)
    requests: int = 10**9
    seconds: float = 10**9
    retry_after: float = 0.5
    global_limit: bool = False
    applied_500: bool = True
    started: float = 0.0
    answered: int = 0

    def next_status(self, now: float) -> int | None:
        """The error status for the next post, or None once the storm is over."""
        if self.answered >= self.requests or now - self.started >= self.seconds:
            return None
        status = self.statuses[self.answered % len(self.statuses)]
        self.answered += 1
        return status

    def response(self, status: int) -> web.Response:
        """What Discord answers with ``status``."""
        if status == 429:
            body = {
                "message": "You are being rate limited.",
                "retry_after": self.retry_after,
                "global": self.global_limit,
            }
            headers = {
                "Content-Type": "application/json",
                "Retry-After": str(max(1, round(self.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{datetime.now(UTC).timestamp() + self.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{self.retry_after:.3f}",
                "X-RateLimit-Bucket": "fake-messages-bucket",
                "X-RateLimit-Scope": "global" if self.global_limit else "user",
                "Via": "1.1 google",
            }
            if self.global_limit:
                headers["X-RateLimit-Global"] = "true"
            return web.Response(body=json.dumps(body).encode(), status=429, headers=headers)
        if status == 502:
            return web.Response(
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                status=502,
                content_type="text/html",
            )
        message = {500: "500: Internal Server Error", 503: "503: Service Unavailable"}
        return _json({"message": message.get(status, f"{status}: Server Error"), "code": 0}, status)


@dataclass
class Call:
    """One REST request the fake received."""

    method: str
    path: str
    json: Any = None
    query: dict[str, str] = field(default_factory=dict)


def user(user_id: int, name: str, *, bot: bool = False) -> UserPayload:
    payload: UserPayload = {
        "id": str(user_id),
        "username": name,
        "discriminator": "0",
        "avatar": None,
        "global_name": name.title(),
    }
    if bot:
        payload["bot"] = True
    return payload


def member(roles: tuple[int, ...] = ()) -> MemberPayload:
    return {
        "roles": [str(r) for r in roles],
        "joined_at": "2024-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
    }


class FakeDiscord:
    """One guild with a support channel, a general channel, a forum, an agents' channel, plus DMs.

    Attributes:
        calls: every REST request, in order.
        messages: every message by id (the users' and the bot's).
        channels: every channel and thread by id.
        identifies, resumes: how often the client identified and resumed.
        intents: the intents of the last IDENTIFY.
        duplicate_on_resume: message ids to deliver again after the next RESUME, as Discord may
            (at-least-once delivery).
    """

    def __init__(self, *, allow_privileged: bool = True) -> None:
        self._ids = itertools.count(1)
        self.bot_id = self.snowflake()
        self.app_id = self.bot_id
        self.guild_id = self.snowflake()
        self.role_id = self.snowflake()  # the bot's managed role
        self.support_channel = self.snowflake()
        self.general_channel = self.snowflake()
        self.forum_channel = self.snowflake()
        self.agents_channel = self.snowflake()
        self.customer_id = self.snowflake()
        self.other_bot_id = self.snowflake()
        self.dm_channel = self.snowflake()
        self.allow_privileged = allow_privileged

        self.bot_user = user(self.bot_id, "supportbot", bot=True)
        self.users: dict[int, UserPayload] = {
            self.bot_id: self.bot_user,
            self.customer_id: user(self.customer_id, "customer"),
            self.other_bot_id: user(self.other_bot_id, "otherbot", bot=True),
        }
        self.channels: dict[int, ChannelPayload] = {}
        for position, (channel_id, name, kind) in enumerate(
            (
                (self.support_channel, "support", GUILD_TEXT),
                (self.general_channel, "general", GUILD_TEXT),
                (self.forum_channel, "help-forum", GUILD_FORUM),
                (self.agents_channel, "agents", GUILD_TEXT),
            )
        ):
            self.channels[channel_id] = {
                "id": str(channel_id),
                "type": kind,
                "guild_id": str(self.guild_id),
                "name": name,
                "position": position,
                "parent_id": None,
                "permission_overwrites": [],
            }
        self.channels[self.dm_channel] = {
            "id": str(self.dm_channel),
            "type": DM,
            "recipients": [self.users[self.customer_id]],
            "last_message_id": None,
        }
        self.messages: dict[int, MessagePayload] = {}
        self.calls: list[Call] = []
        self.identifies = 0
        self.resumes = 0
        self.intents = 0
        self.duplicate_on_resume: list[int] = []
        self.refuse_threads = False
        self.session_id = "fake-session-1"
        #: The storm in force (see `storm`), and every error status storms answered.
        self.current_storm: Storm | None = None
        self.storm_answers: list[int] = []
        #: Messages the bot created, by channel id (a cheap count for load tests).
        self.bot_posts: dict[int, int] = {}
        #: Messages created with ``enforce_nonce``: (author, nonce) → (message id, when).
        self._nonces: dict[tuple[str, str], tuple[int, float]] = {}
        self._paused: web.WebSocketResponse | None = None

        self._seq = 0
        self._history: list[GatewayFrame] = []
        self._ws: web.WebSocketResponse | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._requests: dict[web.WebSocketResponse, web.Request] = {}
        self._sessions = itertools.count(2)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.connected = asyncio.Event()
        #: Cleared, new gateway connections wait before HELLO (a client kept away meanwhile).
        self.accepting = asyncio.Event()
        self.accepting.set()

    # Server --------------------------------------------------------------------------------------

    def snowflake(self) -> int:
        """A fresh id shaped like Discord's (a timestamp in the high bits)."""
        now_ms = int(datetime.now(UTC).timestamp() * 1000) - _EPOCH_MS
        return (now_ms << 22) | (next(self._ids) & 0x3FFFFF)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume-gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Gateway -----------------------------------------------------------------------------------

    async def _send(self, ws: web.WebSocketResponse, frame: GatewayFrame) -> None:
        if not ws.closed:
            await ws.send_str(json.dumps(frame))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        self._requests[ws] = request
        await self.accepting.wait()
        await self._send(
            ws, {"op": OP_HELLO, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}
        )
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == OP_HEARTBEAT:
                    await self._send(ws, {"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None})
                elif op == OP_IDENTIFY:
                    await self._identify(ws, frame["d"])
                elif op == OP_RESUME:
                    await self._resume(ws, frame["d"])
        finally:
            self._sockets.discard(ws)
            self._requests.pop(ws, None)
            if self._ws is ws:
                self._ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != TOKEN:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        self.intents = int(data.get("intents", 0))
        if self.intents & MESSAGE_CONTENT_INTENT and not self.allow_privileged:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.identifies += 1
        self._ws = ws
        ready: ReadyPayload = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": self.session_id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume-gateway",
            "application": {"id": str(self.app_id), "flags": 0},
        }
        if "shard" in data:
            ready["shard"] = list(data["shard"])
        await self.dispatch("READY", ready)
        await self.dispatch("GUILD_CREATE", self.guild_payload())
        self.connected.set()

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("session_id") != self.session_id or data.get("token") != TOKEN:
            await self._send(ws, {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        self.resumes += 1
        self._ws = ws
        seen = data.get("seq") or 0
        for frame in [f for f in self._history if (f["s"] or 0) > seen]:
            await self._send(ws, frame)
        for message_id in self.duplicate_on_resume:
            # At-least-once delivery: the same message again, under a new sequence number.
            await self.dispatch("MESSAGE_CREATE", self.messages[message_id])
        self.duplicate_on_resume = []
        await self.dispatch("RESUMED", {"_trace": ["fake-discord"]})
        self.connected.set()

    async def dispatch(self, event: str, data: Any) -> None:
        """Send a DISPATCH frame; kept for replay if the client is not connected."""
        self._seq += 1
        frame: GatewayFrame = {"op": OP_DISPATCH, "d": data, "s": self._seq, "t": event}
        self._history.append(frame)
        if self._ws is not None:
            await self._send(self._ws, frame)

    def storm(self, storm: Storm | None = None, **options: Any) -> Storm:
        """Start a storm on message posts (``Storm(**options)`` unless given) from now."""
        self.current_storm = storm or Storm(**options)
        self.current_storm.started = asyncio.get_running_loop().time()
        return self.current_storm

    def calm(self) -> None:
        """End the storm."""
        self.current_storm = None

    def pause(self) -> None:
        """Stop delivering events (they are lost in transit) until the client resumes."""
        self._paused, self._ws = self._ws, None

    async def reconnect(self) -> None:
        """Ask the client to reconnect (op 7): it resumes on `resume_gateway_url`."""
        self.connected.clear()
        ws = self._ws or self._paused
        self._paused = None
        if ws is not None:
            await self._send(ws, {"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    async def drop(self, code: int | None = None, *, invalidate: bool = False) -> None:
        """Drop the gateway connection mid-run.

        Args:
            code: the close code to send (e.g. 4000 "unknown error", 4009 "session timed out");
                None cuts the TCP connection without a close frame (the client sees 1006).
            invalidate: the session ends too (as with 4009): a RESUME is then answered with
                INVALID_SESSION and the events missed meanwhile are never replayed.
        """
        self.connected.clear()
        ws, self._ws = self._ws or self._paused, None
        self._paused = None
        if invalidate or code == 4009:
            self._new_session()
        if ws is None:
            return
        if code is None:
            request = self._requests.get(ws)
            if request is not None and request.transport is not None:
                request.transport.abort()
        else:
            await ws.close(code=code, message=b"fake-discord drop")

    async def invalidate_session(self) -> None:
        """Send INVALID_SESSION (op 9, not resumable) on the live connection: the client must
        IDENTIFY again; events missed before are not replayed."""
        self.connected.clear()
        ws, self._ws = self._ws, None
        self._new_session()
        if ws is not None:
            await self._send(ws, {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None})

    def _new_session(self) -> None:
        self.session_id = f"fake-session-{next(self._sessions)}"
        # A new session's events are numbered afresh; nothing before it is replayed.
        self._history = []
        self._seq = 0

    def guild_payload(self) -> GuildCreatePayload:
        guild_channels = [
            c for c in self.channels.values() if c.get("guild_id") and c["type"] != PUBLIC_THREAD
        ]
        threads = [c for c in self.channels.values() if c["type"] == PUBLIC_THREAD]
        bot_member = member((self.role_id,))
        bot_member["user"] = self.bot_user
        return {
            "id": str(self.guild_id),
            "name": "Lumen Community",
            "unavailable": False,
            "member_count": 3,
            "owner_id": str(self.customer_id),
            "channels": guild_channels,
            "threads": threads,
            "members": [bot_member],
            "roles": [
                {
                    "id": str(self.guild_id),
                    "name": "@everyone",
                    "permissions": "1024",
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                },
                {
                    "id": str(self.role_id),
                    "name": "supportbot",
                    "permissions": "0",
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": True,
                    "mentionable": False,
                    "tags": {"bot_id": str(self.bot_id)},
                },
            ],
            "features": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
        }

    # Building traffic ------------------------------------------------------------------------

    def add_customer(self, name: str) -> tuple[int, int]:
        """Another customer with a DM channel to the bot; returns (user id, DM channel id)."""
        user_id, channel_id = self.snowflake(), self.snowflake()
        self.users[user_id] = user(user_id, name)
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": DM,
            "recipients": [self.users[user_id]],
            "last_message_id": None,
        }
        return user_id, channel_id

    def message_payload(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int | None = None,
        message_id: int | None = None,
        mentions: tuple[int, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> MessagePayload:
        author = self.users[author_id or self.customer_id]
        channel = self.channels[channel_id]
        payload: MessagePayload = {
            "id": str(message_id or self.snowflake()),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [self.users[m] for m in mentions],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
            "components": [],
        }
        if "guild_id" in channel:
            payload["guild_id"] = channel["guild_id"]
            payload["member"] = member()
        if extra:
            payload.update(extra)  # type: ignore[typeddict-item]
        return payload

    def _as_delivered(self, payload: MessagePayload) -> MessagePayload:
        """What the client receives: no text without the Message Content intent (guilds)."""
        if self.intents & MESSAGE_CONTENT_INTENT or "guild_id" not in payload:
            return payload
        if any(m["id"] == str(self.bot_id) for m in payload["mentions"]):
            return payload
        if payload["author"]["id"] == str(self.bot_id):
            return payload
        blanked = dict(payload)
        blanked.update({"content": "", "embeds": [], "attachments": [], "components": []})
        return blanked  # type: ignore[return-value]

    async def post_message(
        self,
        channel_id: int,
        content: str,
        *,
        author_id: int | None = None,
        mention_bot: bool = False,
        message_id: int | None = None,
    ) -> int:
        """A user's (or another bot's) message: stored and dispatched as MESSAGE_CREATE."""
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
        payload = self.message_payload(
            channel_id,
            content,
            author_id=author_id,
            message_id=message_id,
            mentions=(self.bot_id,) if mention_bot else (),
        )
        self.messages[int(payload["id"])] = payload
        await self.dispatch("MESSAGE_CREATE", self._as_delivered(payload))
        return int(payload["id"])

    async def edit_message(
        self, message_id: int, content: str, *, mention_bot: bool = False
    ) -> None:
        """A user edits a message: MESSAGE_UPDATE with `edited_timestamp` set."""
        payload = dict(self.messages[message_id])
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
            payload["mentions"] = [self.bot_user]
        payload.update({"content": content, "edited_timestamp": _now()})
        self.messages[message_id] = payload  # type: ignore[assignment]
        await self.dispatch("MESSAGE_UPDATE", self._as_delivered(payload))  # type: ignore[arg-type]

    def _thread(self, thread_id: int, parent_id: int, name: str, owner_id: int) -> ChannelPayload:
        return {
            "id": str(thread_id),
            "type": PUBLIC_THREAD,
            "guild_id": str(self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(owner_id),
            "name": name,
            "message_count": 0,
            "member_count": 1,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now(),
                "locked": False,
                "create_timestamp": _now(),
            },
        }

    async def post_forum_post(self, title: str, content: str) -> int:
        """A new forum post: THREAD_CREATE, then its opening message (same id as the thread)."""
        thread_id = self.snowflake()
        thread = self._thread(thread_id, self.forum_channel, title, self.customer_id)
        self.channels[thread_id] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        await self.post_message(thread_id, content, message_id=thread_id)
        return thread_id

    async def react(
        self, message_id: int, emoji: str, *, add: bool = True, user_id: int | None = None
    ) -> None:
        """MESSAGE_REACTION_ADD / _REMOVE by the customer (or `user_id`) on a message."""
        message = self.messages[message_id]
        event: ReactionEventPayload = {
            "user_id": str(user_id or self.customer_id),
            "channel_id": message["channel_id"],
            "message_id": str(message_id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if "guild_id" in message:
            event["guild_id"] = message["guild_id"]
            if add:
                reactor = member()
                reactor["user"] = self.users[user_id or self.customer_id]
                event["member"] = reactor
        if add:
            event["message_author_id"] = message["author"]["id"]
        await self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", event)

    async def click(self, message_id: int, custom_id: str) -> int:
        """The customer clicks a button on a message: INTERACTION_CREATE (type 3)."""
        message = self.messages[message_id]
        channel = self.channels[int(message["channel_id"])]
        interaction_id = self.snowflake()
        interaction: InteractionPayload = {
            "id": str(interaction_id),
            "application_id": str(self.app_id),
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "token": f"interaction-token-{interaction_id}",
            "version": 1,
            "channel_id": message["channel_id"],
            "channel": channel,
            "message": message,
            "app_permissions": "0",
            "locale": "en-US",
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "attachment_size_limit": 10485760,
        }
        if "guild_id" in message:
            clicker = member()
            clicker["user"] = self.users[self.customer_id]
            interaction["guild_id"] = message["guild_id"]
            interaction["member"] = clicker
            interaction["context"] = 0
        else:
            interaction["user"] = self.users[self.customer_id]
            interaction["context"] = 1
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction_id

    # Reading what the bot did ----------------------------------------------------------------

    def posts(self, channel_id: int | None = None) -> list[Call]:
        """The bot's `POST /channels/{id}/messages` calls (in `channel_id` if given)."""
        pattern = re.compile(r"^/channels/(\d+)/messages$")
        found = []
        for call in self.calls:
            match = pattern.match(call.path)
            if (
                call.method == "POST"
                and match
                and (channel_id is None or int(match.group(1)) == channel_id)
            ):
                found.append(call)
        return found

    def bot_messages(self, channel_id: int) -> list[MessagePayload]:
        """The messages the bot posted in a channel, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == str(channel_id) and m["author"]["id"] == str(self.bot_id)
        ]

    def find(self, method: str, pattern: str) -> list[Call]:
        regex = re.compile(pattern)
        return [c for c in self.calls if c.method == method and regex.fullmatch(c.path)]

    async def wait_for(
        self, predicate: Callable[[], Any], seconds: float = 5.0, what: str = "condition"
    ) -> Any:
        """Poll until `predicate()` is truthy, for at most `seconds`; returns its value."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not (value := predicate()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {seconds}s waiting for {what}")
            await asyncio.sleep(0.01)
        return value

    # REST --------------------------------------------------------------------------------------

    def _application(self) -> ApplicationPayload:
        return {
            "id": str(self.app_id),
            "name": "supportbot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "owner": self.users[self.customer_id],
        }

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        body = None
        if request.can_read_body:
            text = await request.text()
            body = json.loads(text) if text else None
        self.calls.append(Call(request.method, path, body, dict(request.query)))
        is_interaction = path.startswith(("/interactions/", "/webhooks/"))
        if not is_interaction and request.headers.get("Authorization") != f"Bot {TOKEN}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return await self._route(request.method, path, body, dict(request.query))

    def _history_page(self, channel_id: int, query: dict[str, str]) -> list[MessagePayload]:
        """``GET /channels/{id}/messages?after=&limit=``: the `limit` messages right after
        `after`, newest first, as Discord answers (without `after`: the newest ones)."""
        limit = max(1, min(int(query.get("limit", "50")), 100))
        in_channel = sorted(
            (m for m in self.messages.values() if m["channel_id"] == str(channel_id)),
            key=lambda m: int(m["id"]),
        )
        if "after" in query:
            after = int(query["after"])
            chosen = [m for m in in_channel if int(m["id"]) > after][:limit]
        else:
            chosen = in_channel[-limit:]
        return [self._as_delivered(m) for m in reversed(chosen)]

    async def _route(
        self, method: str, path: str, body: Any, query: dict[str, str] | None = None
    ) -> web.Response:
        query = query or {}
        if method == "GET" and path == "/users/@me":
            return _json(self.bot_user)
        if method == "GET" and path in ("/oauth2/applications/@me", "/applications/@me"):
            return _json(self._application())
        if method == "GET" and path == "/gateway":
            return _json({"url": self.gateway_url})
        if method == "GET" and path == "/gateway/bot":
            limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
            return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})
        if match := re.fullmatch(r"/channels/(\d+)", path):
            channel = self.channels.get(int(match.group(1)))
            return _json(channel) if channel else _json({"message": "Unknown Channel"}, 404)
        if (match := re.fullmatch(r"/channels/(\d+)/messages", path)) and method == "GET":
            return _json(self._history_page(int(match.group(1)), query))
        if (match := re.fullmatch(r"/channels/(\d+)/messages", path)) and method == "POST":
            storm = self.current_storm
            now = asyncio.get_running_loop().time()
            status = storm.next_status(now) if storm is not None else None
            if storm is not None and status is not None:
                self.storm_answers.append(status)
                if status == 500 and storm.applied_500:
                    await self._create_message(int(match.group(1)), body)
                return storm.response(status)
            return _json(await self._create_message(int(match.group(1)), body))
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path):
            message = self.messages.get(int(match.group(2)))
            if message is None:
                return _json({"message": "Unknown Message", "code": 10008}, 404)
            if method == "PATCH":
                message.update(body)
            return _json(message)
        if match := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", path):
            if self.refuse_threads:
                return _json({"message": "Missing Permissions", "code": 50013}, 403)
            return _json(await self._start_thread(int(match.group(1)), int(match.group(2)), body))
        if match := re.fullmatch(r"/channels/(\d+)/typing", path):
            return web.Response(status=204)
        if match := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path):
            return _json(
                {
                    "interaction": {
                        "id": match.group(1),
                        "type": 3,
                        "response_message_loading": body.get("type") == 5,
                        "response_message_ephemeral": False,
                    },
                    "resource": {"type": body.get("type")},
                }
            )
        if match := re.fullmatch(r"/webhooks/(\d+)/([^/]+)", path):
            followup = self.message_payload(
                self.support_channel, (body or {}).get("content", ""), author_id=self.bot_id
            )
            followup["flags"] = (body or {}).get("flags", 0)
            return _json(followup)
        return _json({"message": f"404: Not Found ({method} {path})", "code": 0}, 404)

    async def _create_message(self, channel_id: int, body: dict[str, Any]) -> MessagePayload:
        nonce = body.get("nonce")
        now = asyncio.get_running_loop().time()
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((str(self.bot_id), str(nonce)))
            if earlier is not None and now - earlier[1] < NONCE_WINDOW_S:
                return self.messages[earlier[0]]
        payload = self.message_payload(channel_id, body.get("content", ""), author_id=self.bot_id)
        if nonce is not None:
            payload["nonce"] = str(nonce)
            if body.get("enforce_nonce"):
                self._nonces[(str(self.bot_id), str(nonce))] = (int(payload["id"]), now)
        payload["components"] = body.get("components", [])
        payload["embeds"] = body.get("embeds", [])
        if "message_reference" in body:
            reference = body["message_reference"]
            payload["message_reference"] = {
                k: str(v) for k, v in reference.items() if v is not None
            }
            payload["type"] = 19
        self.messages[int(payload["id"])] = payload
        self.bot_posts[channel_id] = self.bot_posts.get(channel_id, 0) + 1
        # Discord echoes the bot's own message on the gateway (the bot must ignore it).
        self._later(self.dispatch("MESSAGE_CREATE", payload))
        return payload

    async def _start_thread(
        self, channel_id: int, message_id: int, body: dict[str, Any]
    ) -> ChannelPayload:
        # A thread started from a message has the message's id.
        thread = self._thread(message_id, channel_id, body["name"], self.bot_id)
        self.channels[message_id] = thread
        self._later(self.dispatch("THREAD_CREATE", {**thread, "newly_created": True}))
        return thread
