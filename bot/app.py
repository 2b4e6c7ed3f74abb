"""The web application: the local chat, health, and (as adapters add them) platform webhooks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.metadata import entry_points
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
    app.include_router(chat_router(services.engine))
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
