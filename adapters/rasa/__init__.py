"""Rasa: the bot's knowledge, handoff and feedback as custom actions of a Rasa assistant.

``supportbot rasa-actions [--port 5055]`` serves rasa-sdk's own action server app
(``rasa_sdk.endpoint.create_app``, Sanic) with `RasaActions` registered on its
``ActionExecutor``, so Rasa calls it at ``POST /webhook`` like any action server. The
assistant's ``endpoints.yml`` and domain entries are in docs/rasa.md.

- `convert`: pure conversions between the tracker and the shared model.
- `actions`: the three actions, backed by the engine.
- `payloads`: the request and response shapes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from adapters.rasa.actions import ACTION_NAMES, RasaActions

if TYPE_CHECKING:
    from bot.engine import Engine

__all__ = ["ACTION_NAMES", "RasaActions", "build_app", "guarded_app", "serve"]

APP_NAME = "rasa_sdk"

logger = logging.getLogger(__name__)


def build_app(engine: Engine) -> Any:
    """rasa-sdk's action server app (Sanic) with the actions registered.

    One process holds one such app: a second call replaces the first (Sanic keeps a registry of
    app names).
    """
    from rasa_sdk.endpoint import create_app
    from rasa_sdk.executor import ActionExecutor
    from sanic import Sanic

    executor = ActionExecutor()
    for name, function in RasaActions(engine).functions().items():
        executor.register_function(name, function)
    previous = Sanic._app_registry.get(APP_NAME)
    if previous is not None:
        Sanic.unregister_app(previous)
    return create_app(executor, cors_origins=None)


def serve(
    engine: Engine, *, host: str = "127.0.0.1", port: int = 5055, token: str | None = None
) -> None:
    """Serve the action server until interrupted (the app runs as ASGI under uvicorn).

    uvicorn instead of Sanic's own runner: rasa-sdk's ``run`` starts worker processes that
    would each need their own engine, knowledge base and model.

    Args:
        token: ``SUPPORTBOT_RASA_TOKEN``: every call but ``/health`` must carry it
            (`adapters.rasa.auth.TokenGuard`); None: no check (keep the server on 127.0.0.1).
    """
    import uvicorn

    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            "Rasa action server on %s without SUPPORTBOT_RASA_TOKEN: anyone who reaches it can "
            "run turns; set the token (and action_endpoint.token in endpoints.yml)",
            host,
        )
    uvicorn.run(guarded_app(engine, token=token), host=host, port=port, log_level="info")


def guarded_app(engine: Engine, *, token: str | None = None) -> Any:
    """`build_app`, behind the shared-token check (`adapters.rasa.auth.TokenGuard`) when a
    token is given."""
    from adapters.rasa.auth import TokenGuard

    app = build_app(engine)
    return TokenGuard(app, token) if token else app
