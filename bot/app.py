"""The web application: the local chat, health, and (as adapters add them) platform webhooks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.metadata import entry_points
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.web.relay import web_relay
from adapters.web.routes import chat_router
from bot.errors import StorageError
from bot.service import Services

logger = logging.getLogger(__name__)


#: A platform adapter's hook: mounts its routes when it is configured, and may return an async
#: context manager that runs for the app's lifetime (a Socket Mode connection, a poller).
AdapterMount = Callable[[FastAPI, Services], AbstractAsyncContextManager[None] | None]
ADAPTER_GROUP = "supportbot.adapters"


def adapter_mounts() -> dict[str, AdapterMount]:
    """Adapters registered under the `supportbot.adapters` entry-point group, by name.

    The web app finds platform adapters this way, so `bot/` never imports a platform SDK.
    """
    return {ep.name: ep.load() for ep in entry_points(group=ADAPTER_GROUP)}


class BodyTooLarge(HTTPException):
    """A request body past the cap; raised while it is read, answered 413 by FastAPI."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"request body too large: at most {limit} bytes; send a shorter message",
        )


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before a route parses it.

    A declared ``Content-Length`` over the cap is refused unread (an unreadable one gets 400);
    a body streamed without one is counted as it arrives, and reading past the cap raises
    `BodyTooLarge`, which FastAPI answers with 413 (webhook routes read their body themselves, so
    the same holds for Slack and Zendesk). ``SUPPORTBOT_MAX_BODY_BYTES`` sets the cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            digits = declared.strip()
            if not digits.isdigit():
                await self._refuse(scope, send, 400, "unreadable Content-Length header")
                return
            # Length first: int() refuses strings of thousands of digits (and they are huge).
            if len(digits) > 18 or int(digits) > self.max_bytes:
                await self._refuse(scope, send, 413, BodyTooLarge(self.max_bytes).detail)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as e:
            # Only when no handler inside turned it into a response already.
            if started:
                raise
            await self._refuse(scope, send, 413, e.detail)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, _no_receive, send)


async def _no_receive() -> Message:  # a JSONResponse never reads the request
    return {"type": "http.disconnect"}


#: Set by `supportbot run --workers N` for its worker processes: "text" or "json" log lines, and
#: the log level name.
LOG_FORMAT_ENV = "SUPPORTBOT_LOG_FORMAT"
LOG_LEVEL_ENV = "SUPPORTBOT_LOG_LEVEL"


def create_app_from_env() -> FastAPI:
    """The app of one worker process, built from the environment alone.

    `supportbot run --workers N` hands this factory to uvicorn
    (``uvicorn.run("bot.app:create_app_from_env", factory=True, workers=N)``), which calls it in
    each of its N processes. Every worker builds its own services: its own database pool and its
    own copy of the model and the index (so N workers hold N copies in memory). All the state
    they share lives in the database: inbound events are claimed once (`Store.claim_event`), a
    conversation runs one turn at a time (`Store.conversation_lock`), relay deliveries are
    claimed (`Store.claim_relay_delivery`) and Slack's Socket Mode runs under a lease.

    The database must already be migrated and the knowledge base built: the parent process
    does both before it starts the workers, so they never race to do it.
    """
    import os

    from bot.service import build_services
    from bot.settings import load_settings
    from monitoring.telemetry import configure_logging

    log_format = os.environ.get(LOG_FORMAT_ENV, "text")
    configure_logging(
        "json" if log_format == "json" else "text",
        level=logging.getLevelNamesMapping().get(os.environ.get(LOG_LEVEL_ENV, ""), logging.INFO),
    )
    services = build_services(load_settings())
    app = create_app(services)
    services.ready()
    logger.info(
        "worker %d ready: %d entries, database %s",
        os.getpid(),
        len(services.kb.entries),
        services.store.engine.url.render_as_string(hide_password=True),
    )
    return app


def create_app(services: Services, *, adapters: dict[str, AdapterMount] | None = None) -> FastAPI:
    """Build the ASGI app around already assembled services.

    Args:
        services: the engine and what it needs.
        adapters: platform adapters to mount; by default every registered one (each mounts
            itself only when its settings are present).
    """
    lifetimes: list[AbstractAsyncContextManager[None]] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for lifetime in lifetimes:
                await stack.enter_async_context(lifetime)
            yield

    app = FastAPI(
        title="supportbot",
        version="0.1.0",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    # Before any route reads a body: oversized requests get 413 (docs/security.md).
    app.add_middleware(BodySizeLimit, max_bytes=services.settings.max_body_bytes)
    app.include_router(chat_router(services.engine))
    # The monitoring dashboard (/dashboard); disabled with a 503 page without a token.
    from monitoring.dashboard import dashboard_router

    app.include_router(dashboard_router(services))
    # Prometheus metrics of this process (/metrics): the engine reports every reply, handoff and
    # rating to them.
    from monitoring.telemetry import PrometheusTelemetry

    telemetry = PrometheusTelemetry()
    services.engine.listeners.append(telemetry)
    app.state.telemetry = telemetry

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        body, content_type = telemetry.exposition()
        return Response(body, media_type=content_type)

    if services.relay is not None:
        # Web chat customers get agents' replies through the relay (the page polls for them).
        lifetimes.append(web_relay(services.relay))
    for name, mount in (adapter_mounts() if adapters is None else adapters).items():
        lifetime = mount(app, services)
        if lifetime is not None:
            lifetimes.append(lifetime)
        logger.debug("adapter %s mounted", name)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok",
            "entries": len(services.kb.entries),
            "threshold": services.engine.responder.confidence.threshold,
        }
        try:
            services.store.ping()
            body["database"] = "ok"
        except StorageError as e:
            logger.warning("health check: database unreachable: %s", e)
            body.update(status="degraded", database="unreachable")
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Say what is wrong without echoing the (possibly huge) input back.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    return app
