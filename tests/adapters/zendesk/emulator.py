"""A local Zendesk: the Support and Help Center API endpoints the adapter calls.

It answers like Zendesk (shapes from the Tickets, Ticket Comments, Ticket Audits, Satisfaction
Ratings and Help Center Articles references), keeps tickets, their comments and their audits
(with the custom metadata a create or update carried, as ``metadata.custom``) so later calls see
earlier ones, checks API token authentication, and records every call. It runs uvicorn in a
thread on a free port of 127.0.0.1, so both async (the adapter) and blocking (the CLI import)
clients can use it.

Pagination is forced small (`page_cap` items per page) so listings take several pages; audits are
paged with cursors, articles with cursors by default or with ``next_page`` offsets
(``offset_pages``). A fault can be scripted per path: the next call answers 429 with
``Retry-After: 0``. A `Storm` answers ticket writes with 429 (Zendesk's shape: ``Retry-After``
and a plain-text body), 500 (applied first when ``applied_500``), 502 and 503 for a number of
calls or a time window.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

EMAIL = "bot@acme.example"
TOKEN = "zd-api-token-for-tests"
BOT_USER_ID = 9000
AGENT_ID = 7001
CUSTOMER_ID = 5001


#: The 429 body Zendesk sends with ``Retry-After`` (text/html, per Zendesk's rate-limit guide).
RATE_LIMIT_TEXT = (
    "Rate limit for ticket updates exceeded, please wait before updating this ticket again"
)


@dataclass
class Storm:
    """A run of error answers to ticket writes (PUT/POST under /api/v2/tickets): ``statuses``
    in turn, for ``calls`` calls or ``seconds`` seconds, whichever ends first."""

    statuses: tuple[int, ...] = (429, 500, 502, 503)
    calls: int = 10**9
    seconds: float = 10**9
    retry_after: int = 1
    applied_500: bool = True
    started: float = field(default_factory=time.monotonic)
    answered: int = 0

    def next_status(self) -> int | None:
        if self.answered >= self.calls or time.monotonic() - self.started >= self.seconds:
            return None
        status = self.statuses[self.answered % len(self.statuses)]
        self.answered += 1
        return status


def storm_response(status: int, retry_after: int) -> Response:
    """What Zendesk answers with ``status`` in a storm."""
    if status == 429:
        return PlainTextResponse(
            RATE_LIMIT_TEXT, status_code=429, headers={"Retry-After": str(retry_after)}
        )
    if status == 503:
        return JSONResponse(
            {"error": "ServiceUnavailable", "description": "Zendesk is under maintenance"},
            status_code=503,
            headers={"Retry-After": str(retry_after)},
        )
    if status == 502:
        return PlainTextResponse("502 Bad Gateway", status_code=502)
    return JSONResponse({"error": "InternalError"}, status_code=status)


@dataclass
class Call:
    """One API call as the emulator received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool


@dataclass
class ZendeskEmulator:
    """`start` it, use ``api_url``, `stop` it."""

    page_cap: int = 2
    offset_pages: bool = False
    calls: list[Call] = field(default_factory=list)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Each ticket's audits, oldest first (one per create or update that changed it).
    audits: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    ratings: list[dict[str, Any]] = field(default_factory=list)
    articles: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    #: The storm in force (see `storm`), and every error status storms answered.
    current_storm: Storm | None = None
    storm_answers: list[int] = field(default_factory=list)
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(100_001))
    _ticket_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(501))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    # Lifecycle --------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/v2/"

    def start(self) -> None:
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="zendesk-emulator")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Zendesk emulator did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    # Test helpers -----------------------------------------------------------------------------

    def add_ticket(
        self, ticket_id: int, *, requester_id: int = CUSTOMER_ID, description: str = ""
    ) -> dict[str, Any]:
        """A ticket that exists before the test (as a customer's new ticket would)."""
        ticket: dict[str, Any] = {
            "id": ticket_id,
            "subject": description[:40],
            "status": "new",
            "group_id": None,
            "tags": [],
            "external_id": None,
            "requester_id": requester_id,
            "comments": [],
        }
        if description:
            first = self._comment(description, True, requester_id)
            ticket["comments"].append(first)
            self._audit(ticket_id, [first], None, requester_id)
        self.tickets[ticket_id] = ticket
        return ticket

    def add_comment(
        self, ticket_id: int, html: str, *, author_id: int = AGENT_ID, public: bool = True
    ) -> dict[str, Any]:
        """A comment someone else adds to the ticket (an agent in Zendesk), with its audit."""
        with self._lock:
            comment = self._comment(html, public, author_id)
            self.tickets[ticket_id]["comments"].append(comment)
            self._audit(ticket_id, [comment], None, author_id)
        return comment

    def audit_of(self, ticket_id: int, comment: dict[str, Any]) -> dict[str, Any]:
        """The audit of the change that added `comment`."""
        [audit] = [a for a in self.audits.get(ticket_id, []) if comment in a["events"]]
        return audit

    def audit_reads(self) -> list[str]:
        """The paths of the audit listings read, one per page."""
        return [c.path for c in self.calls if c.method == "GET" and c.path.endswith("/audits.json")]

    def writes(self, path_prefix: str = "/api/v2/tickets") -> list[Call]:
        """The authorized PUT/POST calls under `path_prefix`."""
        return [
            c
            for c in self.calls
            if c.method in ("PUT", "POST") and c.path.startswith(path_prefix) and c.authorized
        ]

    def bot_comments(self, ticket_id: int, *, public: bool | None = None) -> list[dict[str, Any]]:
        return [
            c
            for c in self.tickets.get(ticket_id, {}).get("comments", [])
            if c["author_id"] == BOT_USER_ID and (public is None or c["public"] is public)
        ]

    def storm(self, storm: Storm | None = None, **options: Any) -> Storm:
        """Start a storm on ticket writes (``Storm(**options)`` unless given) from now."""
        with self._lock:
            self.current_storm = storm or Storm(**options)
            self.current_storm.started = time.monotonic()
            return self.current_storm

    def calm(self) -> None:
        """End the storm."""
        with self._lock:
            self.current_storm = None

    def fail_next(self, path: str, times: int = 1) -> None:
        """The next `times` calls to `path` answer 429 with ``Retry-After: 0``."""
        self.faults[path] = times

    # The app ----------------------------------------------------------------------------------

    def _comment(self, html: str, public: bool, author_id: int) -> dict[str, Any]:
        return {
            "id": next(self._ids),
            "type": "Comment",
            "html_body": html,
            "body": html,
            "public": public,
            "author_id": author_id,
            "created_at": "2026-01-01T00:00:00Z",
        }

    def _audit(
        self, ticket_id: int, events: list[dict[str, Any]], custom: Any, author_id: int
    ) -> dict[str, Any]:
        """Record the audit of a change; Zendesk keeps the change's custom metadata on it, and
        keeps no audit (nor metadata) for an update that changed nothing."""
        audit = {
            "id": next(self._ids),
            "ticket_id": ticket_id,
            "created_at": "2026-01-01T00:00:00Z",
            "author_id": author_id,
            "metadata": {
                "custom": dict(custom) if isinstance(custom, dict) else {},
                "system": {"client": "supportbot-tests", "ip_address": "127.0.0.1"},
            },
            "via": {"channel": "api"},
            "events": events,
        }
        if events:
            self.audits.setdefault(ticket_id, []).append(audit)
        return audit

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        expected = base64.b64encode(f"{EMAIL}/token:{TOKEN}".encode()).decode()
        return header == f"Basic {expected}"

    def _app(self) -> FastAPI:
        app = FastAPI()
        emulator = self

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Any:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            authorized = emulator._authorized(request)
            with emulator._lock:
                emulator.calls.append(
                    Call(
                        request.method,
                        request.url.path,
                        dict(request.query_params),
                        body,
                        authorized,
                    )
                )
                remaining = emulator.faults.get(request.url.path, 0)
                if remaining:
                    emulator.faults[request.url.path] = remaining - 1
                storm = emulator.current_storm
                status = None
                is_write = authorized and request.method in ("PUT", "POST")
                if (
                    storm is not None
                    and is_write
                    and request.url.path.startswith("/api/v2/tickets")
                ):
                    status = storm.next_status()
                    if status is not None:
                        emulator.storm_answers.append(status)
            if storm is not None and status is not None:
                if status == 500 and storm.applied_500:
                    await call_next(request)  # applied; the answer is lost
                return storm_response(status, storm.retry_after)
            if remaining:
                return JSONResponse(
                    {"error": "APIRateLimitExceeded"}, status_code=429, headers={"Retry-After": "0"}
                )
            public_hc = request.url.path.startswith("/api/v2/help_center/")
            if not authorized and not (public_hc and "authorization" not in request.headers):
                return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)
            return await call_next(request)

        @app.put("/api/v2/tickets/{ticket_id}.json")
        async def update_ticket(ticket_id: int, request: Request) -> JSONResponse:
            body = await request.json()
            data = body.get("ticket") if isinstance(body, dict) else None
            if not isinstance(data, dict):
                return JSONResponse({"error": "InvalidEndpoint"}, status_code=400)
            with emulator._lock:
                ticket = emulator.tickets.get(ticket_id)
                if ticket is None:
                    return JSONResponse({"error": "RecordNotFound"}, status_code=404)
                events: list[dict[str, Any]] = []
                author_id = BOT_USER_ID
                comment = data.get("comment")
                if isinstance(comment, dict):
                    author_id = int(comment.get("author_id") or BOT_USER_ID)
                    added = emulator._comment(
                        comment.get("html_body") or comment.get("body") or "",
                        bool(comment.get("public", True)),
                        author_id,
                    )
                    ticket["comments"].append(added)
                    events.append(added)
                for name in ("status", "group_id"):
                    if name in data:
                        ticket[name] = data[name]
                        events.append({"id": next(emulator._ids), "type": "Change"})
                for tag in data.get("additional_tags") or []:
                    if tag not in ticket["tags"]:
                        ticket["tags"].append(tag)
                audit = emulator._audit(ticket_id, events, data.get("metadata"), author_id)
                shown = {k: v for k, v in ticket.items() if k != "comments"}
            return JSONResponse({"ticket": shown, "audit": audit})

        @app.post("/api/v2/tickets.json")
        async def create_ticket(request: Request) -> JSONResponse:
            body = await request.json()
            data = body.get("ticket") if isinstance(body, dict) else None
            if not isinstance(data, dict) or not isinstance(data.get("comment"), dict):
                return JSONResponse(
                    {"error": "RecordInvalid", "details": {"description": "is required"}},
                    status_code=422,
                )
            with emulator._lock:
                ticket_id = next(emulator._ticket_ids)
                comment = data["comment"]
                first = emulator._comment(
                    comment.get("html_body") or comment.get("body") or "",
                    bool(comment.get("public", True)),
                    int(comment.get("author_id") or BOT_USER_ID),
                )
                ticket = {
                    "id": ticket_id,
                    "subject": data.get("subject", ""),
                    "status": data.get("status", "new"),
                    "group_id": data.get("group_id"),
                    "tags": list(data.get("tags") or []),
                    "external_id": data.get("external_id"),
                    "requester_id": data.get("requester_id", BOT_USER_ID),
                    "comments": [first],
                }
                emulator.tickets[ticket_id] = ticket
                shown = {k: v for k, v in ticket.items() if k != "comments"}
                custom = data.get("metadata")
                audit = emulator._audit(ticket_id, [first], custom, first["author_id"])
            return JSONResponse({"ticket": shown, "audit": audit}, status_code=201)

        @app.get("/api/v2/tickets/{ticket_id}/audits.json")
        async def audits(ticket_id: int, request: Request) -> JSONResponse:
            if ticket_id not in emulator.tickets:
                return JSONResponse({"error": "RecordNotFound"}, status_code=404)
            with emulator._lock:
                chosen = list(emulator.audits.get(ticket_id, []))
            return emulator._cursor_page(
                request, "audits", chosen, f"/api/v2/tickets/{ticket_id}/audits.json"
            )

        @app.get("/api/v2/satisfaction_ratings.json")
        async def satisfaction_ratings(request: Request) -> JSONResponse:
            query = request.query_params
            score = query.get("score", "received")
            start = int(query.get("start_time", "0"))
            chosen = [
                r
                for r in emulator.ratings
                if (score != "received" or r["score"] in ("good", "bad"))
                and int(r.get("created_unix", 0)) >= start
            ]
            return emulator._cursor_page(
                request, "satisfaction_ratings", chosen, "/api/v2/satisfaction_ratings.json"
            )

        @app.get("/api/v2/help_center/articles.json")
        async def articles(request: Request) -> JSONResponse:
            return emulator._articles_page(request, "/api/v2/help_center/articles.json")

        @app.get("/api/v2/help_center/{locale}/articles.json")
        async def articles_in(locale: str, request: Request) -> JSONResponse:
            chosen = [a for a in emulator.articles if a.get("locale", "en-us") == locale]
            return emulator._articles_page(
                request, f"/api/v2/help_center/{locale}/articles.json", chosen
            )

        return app

    def _cursor_page(
        self, request: Request, name: str, items: list[dict[str, Any]], path: str
    ) -> JSONResponse:
        query = request.query_params
        size = min(int(query.get("page[size]", "100")), self.page_cap)
        start = int(query.get("page[after]", "0"))
        chunk = items[start : start + size]
        more = start + size < len(items)
        following = f"{self.base}{path}?page%5Bsize%5D={size}&page%5Bafter%5D={start + size}"
        rows = [{k: v for k, v in item.items() if k != "created_unix"} for item in chunk]
        return JSONResponse(
            {
                name: rows,
                "meta": {
                    "has_more": more,
                    "after_cursor": str(start + size) if more else None,
                    "before_cursor": str(start) if start else None,
                },
                "links": {"next": following if more else None, "prev": None},
            }
        )

    def _articles_page(
        self, request: Request, path: str, chosen: list[dict[str, Any]] | None = None
    ) -> JSONResponse:
        items = self.articles if chosen is None else chosen
        if not self.offset_pages:
            return self._cursor_page(request, "articles", items, path)
        page = int(request.query_params.get("page", "1"))
        size = self.page_cap
        chunk = items[(page - 1) * size : page * size]
        page_count = max(1, -(-len(items) // size))
        following = f"{self.base}{path}?page={page + 1}" if page < page_count else None
        return JSONResponse(
            {
                "articles": chunk,
                "page": page,
                "per_page": size,
                "page_count": page_count,
                "count": len(items),
                "next_page": following,
                "previous_page": None,
            }
        )
