"""The web application: the local chat, health, and (as adapters add them) platform webhooks."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from adapters.web.routes import chat_router
from bot.errors import StorageError
from bot.service import Services

logger = logging.getLogger(__name__)


def create_app(services: Services) -> FastAPI:
    """Build the ASGI app around already assembled services."""
    app = FastAPI(title="supportbot", version="0.1.0", docs_url="/api/docs", redoc_url=None)
    app.state.services = services
    app.include_router(chat_router(services.engine))

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
