"""A local Slack: the Web API methods the adapter calls, and a Socket Mode WebSocket.

It answers like Slack (shapes from Slack's method reference), remembers the messages posted so
``conversations.replies`` finds them, and records every call and every Socket Mode
acknowledgement so tests can assert on them. Faults are scripted per method: a 429 with
``Retry-After``, or a response delayed past the client's timeout (after the call took effect, as
when a network drops the answer). A `Storm` answers a run of calls with errors: 429
``ratelimited`` (Slack's shape: ``Retry-After`` header, ``{"ok": false, "error": "ratelimited"}``)
and 500/502/503, for a number of calls or a time window.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from aiohttp import WSMsgType, web

TEAM = "T0TEST"
BOT_USER = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0TEST"


@dataclass
class Call:
    """One Web API call as the emulator received it."""

    method: str
    params: dict[str, Any]
    token: str | None


@dataclass
class Fault:
    """What to do instead of (or on top of) answering a call normally."""

    #: "ratelimit": 429 with Retry-After; "slow": take effect, answer after ``seconds``;
    #: "lost": answer after ``seconds`` without taking effect (the request died on the way).
    kind: str
    seconds: float = 1.0


#: What Slack answers with each error status during a storm (JSON, as the Web API does; a 502
#: comes from Slack's load balancers as an HTML page).
STORM_BODIES: dict[int, tuple[str, str]] = {
    429: ("application/json", '{"ok": false, "error": "ratelimited"}'),
    500: ("application/json", '{"ok": false, "error": "fatal_error"}'),
    502: ("text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    503: ("application/json", '{"ok": false, "error": "service_unavailable"}'),
}


@dataclass
class Storm:
    """A run of error answers to some methods: ``statuses`` in turn, one per call.

    It lasts ``calls`` calls or ``seconds`` seconds from `SlackEmulator.storm`, whichever comes
    first. A 429 and a 502/503 never take effect; a 500 takes effect first when
    ``applied_500`` (the message was posted, the answer lost), as Slack's own 500s may.
    """

    statuses: tuple[int, ...] = (429, 500, 502, 503)
    calls: int = 10**9
    seconds: float = 10**9
    retry_after: int = 1
    methods: frozenset[str] = frozenset({"chat.postMessage"})
    applied_500: bool = True
    started: float = field(default_factory=time.monotonic)
    answered: int = 0

    def next_status(self, method: str) -> int | None:
        """The error status for this call of ``method``, or None once the storm is over."""
        if method not in self.methods:
            return None
        if self.answered >= self.calls or time.monotonic() - self.started >= self.seconds:
            return None
        status = self.statuses[self.answered % len(self.statuses)]
        self.answered += 1
        return status


@dataclass
class Identity:
    """What ``auth.test`` says about a token."""

    team: str = TEAM
    user_id: str = BOT_USER
    bot_id: str = BOT_ID


@dataclass
class SlackEmulator:
    """Run with `start`, stop with `stop`; ``api_url`` is the Web API base URL."""

    calls: list[Call] = field(default_factory=list)
    call_times: list[float] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    ws_connections: int = 0
    identities: dict[str, Identity] = field(default_factory=dict)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    #: Channel members that ``conversations.members`` lists, by channel id.
    members: dict[str, list[str]] = field(default_factory=dict)
    #: The workspaces (``{"id", "name"}``) each org-wide token covers, for ``auth.teams.list``.
    org_teams: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    #: The most workspaces one ``auth.teams.list`` page holds, whatever ``limit`` asks for
    #: (Slack may return fewer than asked), so that tests can make callers follow ``next_cursor``.
    teams_page_max: int = 1000
    _faults: dict[str, list[Fault]] = field(default_factory=lambda: defaultdict(list))
    #: The storm in force, if any (see `storm`).
    current_storm: Storm | None = None
    #: Every error status a storm answered, in order.
    storm_answers: list[int] = field(default_factory=list)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    # Lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._websocket)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # Scripting and inspection ------------------------------------------------------------------

    def fail_next(self, method: str, fault: Fault) -> None:
        """Apply ``fault`` to the next call of ``method``."""
        self._faults[method].append(fault)

    def storm(self, storm: Storm | None = None, **options: Any) -> Storm:
        """Start a storm (``Storm(**options)`` unless given) from now; returns it."""
        self.current_storm = storm or Storm(**options)
        self.current_storm.started = time.monotonic()
        return self.current_storm

    def calm(self) -> None:
        """End the storm."""
        self.current_storm = None

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def posts(self) -> list[dict[str, Any]]:
        """Parameters of every chat.postMessage received (faulty ones included)."""
        return [call.params for call in self.calls_to("chat.postMessage")]

    async def wait_for(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        """Wait until ``condition()`` holds, re-checking after every call or ack."""
        async with asyncio.timeout(within):
            while not condition():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

    def _notify(self) -> None:
        self._changed.set()

    def next_ts(self) -> str:
        return f"1700000{next(self._ts):03d}.000100"

    # Web API -----------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                params.update(dict(await request.post()))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        token = token or params.get("token")
        self.calls.append(Call(method, params, token))
        self.call_times.append(time.monotonic())
        self._notify()
        storm = self.current_storm
        status = storm.next_status(method) if storm is not None else None
        if storm is not None and status is not None:
            self.storm_answers.append(status)
            if status == 500 and storm.applied_500:
                handler = getattr(self, "_" + method.replace(".", "_"), None)
                if handler is not None:
                    handler(params, token)
            content_type, text = STORM_BODIES.get(status, STORM_BODIES[500])
            headers = {"Retry-After": str(storm.retry_after)} if status in (429, 503) else {}
            return web.Response(
                text=text, status=status, content_type=content_type, headers=headers
            )
        fault = self._faults[method].pop(0) if self._faults[method] else None
        if fault is not None and fault.kind == "ratelimit":
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(int(fault.seconds))},
            )
        if fault is not None and fault.kind == "lost":
            await asyncio.sleep(fault.seconds)
            return web.json_response({"ok": False, "error": "request_timeout"})
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        body = handler(params, token) if handler else {"ok": False, "error": "unknown_method"}
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.seconds)
        return web.json_response(body)

    def _auth_test(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        who = self.identities.get(token or "", Identity())
        return {
            "ok": True,
            "url": "https://test.slack.com/",
            "team": "Test",
            "user": "supportbot",
            "team_id": who.team,
            "user_id": who.user_id,
            "bot_id": who.bot_id,
            "is_enterprise_install": False,
        }

    def _auth_teams_list(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """The workspaces a token can reach: an org-wide token's (`org_teams`), a workspace
        token's own (`identities`). Pages of at most ``limit`` (1 to 1000, 100 unless given)
        and `teams_page_max`; a token Slack does not know is refused, as Slack does."""
        if not token:
            return {"ok": False, "error": "not_authed"}
        if token in self.org_teams:
            teams = self.org_teams[token]
        elif token in self.identities:
            team = self.identities[token].team
            teams = [{"id": team, "name": f"Workspace {team}"}]
        else:
            return {"ok": False, "error": "invalid_auth"}
        cursor, limit = str(params.get("cursor") or "0"), str(params.get("limit") or "100")
        if not limit.isdigit():
            return {"ok": False, "error": "invalid_arguments"}
        if not cursor.isdigit() or int(cursor) > len(teams):
            return {"ok": False, "error": "invalid_cursor"}
        start = int(cursor)
        size = max(1, min(int(limit), 1000, self.teams_page_max))
        page = teams[start : start + size]
        following = str(start + size) if start + size < len(teams) else ""
        return {"ok": True, "teams": page, "response_metadata": {"next_cursor": following}}

    def _chat_postMessage(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        ts = self.next_ts()
        who = self.identities.get(token or "", Identity())
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "text": params.get("text", ""),
            "ts": ts,
            "bot_id": who.bot_id,
            "user": who.user_id,
        }
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        for key in ("blocks", "metadata"):  # JSON text when sent as a form
            if params.get(key):
                value = params[key]
                message[key] = json.loads(value) if isinstance(value, str) else value
        self.messages[channel].append(message)
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        for message in self.messages[params["channel"]]:
            if message["ts"] == params["ts"]:
                message["text"] = params.get("text", message["text"])
        return {"ok": True, "channel": params["channel"], "ts": params["ts"]}

    def _reactions_add(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        return {"ok": True}

    def _users_info(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        user = params["user"]
        return {
            "ok": True,
            "user": {
                "id": user,
                "team_id": TEAM,
                "name": user.lower(),
                "real_name": f"User {user}",
                "is_bot": False,
                "profile": {"display_name": f"user-{user.lower()}", "real_name": f"User {user}"},
            },
        }

    def _visible(self, message: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        shown = dict(message)
        if str(params.get("include_all_metadata", "")).lower() not in ("1", "true"):
            shown.pop("metadata", None)
        return shown

    def _conversations_replies(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        ts = params["ts"]
        thread = [
            self._visible(m, params)
            for m in self.messages[params["channel"]]
            if m["ts"] == ts or m.get("thread_ts") == ts
        ]
        return {"ok": True, "messages": thread, "has_more": False}

    def _conversations_members(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Pages of two members, so that callers must follow ``next_cursor``."""
        members = self.members.get(str(params.get("channel", "")))
        if members is None:
            return {"ok": False, "error": "channel_not_found"}
        start = int(params.get("cursor") or 0)
        page = members[start : start + 2]
        following = str(start + 2) if start + 2 < len(members) else ""
        return {"ok": True, "members": page, "response_metadata": {"next_cursor": following}}

    def _conversations_history(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        top = [
            self._visible(m, params)
            for m in reversed(self.messages[params["channel"]])
            if "thread_ts" not in m or m["thread_ts"] == m["ts"]
        ]
        return {"ok": True, "messages": top, "has_more": False}

    def _oauth_v2_access(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        team = "T0OAUTH"
        bot_token = f"xoxb-{team}-{params.get('code', 'code')}"
        self.identities[bot_token] = Identity(team=team, user_id="U0BOT2", bot_id="B0BOT2")
        return {
            "ok": True,
            "app_id": APP_ID,
            "authed_user": {"id": "U0INSTALLER"},
            "scope": "app_mentions:read,chat:write,im:history",
            "token_type": "bot",
            "access_token": bot_token,
            "bot_user_id": "U0BOT2",
            "team": {"id": team, "name": "OAuth Team"},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid4().hex}"}

    # Socket Mode -------------------------------------------------------------------------------

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.ws_connections += 1
        self._sockets.append(ws)
        self._notify()
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": 1,
                "debug_info": {"host": "applink-emulator", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self.acks.append(json.loads(frame.data))
                    self._notify()
        finally:
            self._sockets.remove(ws)
            self._notify()
        return ws

    @property
    def open_sockets(self) -> int:
        return len(self._sockets)

    async def send_envelope(self, payload: dict[str, Any], kind: str = "events_api") -> str:
        """Deliver an Events API payload over the open Socket Mode connection."""
        envelope_id = str(uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        assert self._sockets, "no Socket Mode connection is open"
        await self._sockets[-1].send_json(envelope)
        return envelope_id


def dm_event(
    *, team: str, channel: str, user: str, ts: str, text: str, event_id: str
) -> dict[str, Any]:
    """A customer's direct message to the bot as the Events API delivers it (message.im)."""
    return {
        "token": "x",
        "team_id": team,
        "api_app_id": "A0TEST",
        "event": {
            "client_msg_id": str(uuid4()),
            "type": "message",
            "text": text,
            "user": user,
            "ts": ts,
            "team": team,
            "channel": channel,
            "event_ts": ts,
            "channel_type": "im",
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {"team_id": team, "user_id": "U0BOT", "is_bot": True, "enterprise_id": None}
        ],
    }


def signature_headers(body: bytes, secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack signs a request to the app with: ``v0=`` HMAC-SHA256 of
    ``v0:{timestamp}:{body}`` under the app's signing secret."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": "v0=" + digest.hexdigest()}
