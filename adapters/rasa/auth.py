"""A shared-token check in front of the action server (``SUPPORTBOT_RASA_TOKEN``).

rasa-sdk's action server has no authentication of its own. Rasa sends the ``token`` of the
assistant's ``action_endpoint`` (``endpoints.yml``) as a ``?token=`` query parameter on every call,
so with a token set, `TokenGuard` answers 401 to any request without it (or without
``Authorization: Bearer <token>``), before the Sanic app reads the body. ``GET /health`` stays
open for load balancers.
"""

from __future__ import annotations

import hmac
import json
from typing import Any
from urllib.parse import parse_qs

__all__ = ["PUBLIC_PATHS", "TokenGuard"]

#: Paths anyone may call: the health check.
PUBLIC_PATHS = frozenset({"/health"})

Scope = dict[str, Any]
Receive = Any
Send = Any


class TokenGuard:
    """ASGI middleware: every request but `PUBLIC_PATHS` must carry the shared token.

    Args:
        app: the action server's ASGI app.
        token: the shared token; compared in constant time.
    """

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ValueError("the Rasa action server token must not be empty")
        self.app = app
        self._token = token.encode()

    def _allowed(self, scope: Scope) -> bool:
        if scope.get("path") in PUBLIC_PATHS:
            return True
        query = parse_qs(bytes(scope.get("query_string") or b"").decode("latin-1"))
        for given in query.get("token", []):
            if hmac.compare_digest(given.encode(), self._token):
                return True
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": "unauthorized: send the action server token as ?token= "
                "(action_endpoint.token in endpoints.yml) or as a Bearer token"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
