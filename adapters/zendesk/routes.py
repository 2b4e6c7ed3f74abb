"""The transport shell: ``POST /zendesk/webhook`` in the bot's FastAPI app (mounted by
`adapters.zendesk.plugin`).

Request path::

    body read (413 past MAX_BODY_BYTES) → signature and timestamp checked (401, nothing stored)
    → JSON parsed into a `TicketComment` (400 when malformed; 200 "ignored" for other events)
    → `ZendeskAdapter.handle` → 200 with what was done

The work is done before answering: one engine turn and one or two API calls fit well within
Zendesk's webhook timeout, and Zendesk sees a failure as it happens in the logs of the webhook.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from adapters.zendesk import convert
from adapters.zendesk.adapter import ZendeskAdapter
from adapters.zendesk.signature import SignatureError, verify_headers

__all__ = ["MAX_BODY_BYTES", "WEBHOOK_PATH", "webhook_router"]

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/zendesk/webhook"
#: Event payloads are a few kilobytes; anything far bigger is refused unread.
MAX_BODY_BYTES = 1_000_000


def webhook_router(adapter: ZendeskAdapter) -> APIRouter:
    """The webhook route, bound to `adapter`."""
    router = APIRouter()
    max_age = timedelta(seconds=adapter.settings.signature_max_age_s)

    @router.post(WEBHOOK_PATH, include_in_schema=False)
    async def zendesk_webhook(request: Request) -> JSONResponse:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": "body too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"detail": "body too large"}, status_code=413)
        try:
            verify_headers(
                adapter.webhook_secret,
                body,
                request.headers,
                now=datetime.now(UTC),
                max_age=max_age,
            )
        except SignatureError as e:
            logger.warning("Zendesk webhook refused: %s", e.reason)
            return JSONResponse({"detail": "invalid signature"}, status_code=401)
        try:
            comment = convert.parse_event(json.loads(body))
        except (ValueError, UnicodeDecodeError) as e:
            # json.JSONDecodeError and convert.MalformedEvent are both ValueErrors.
            logger.warning("Zendesk webhook with a malformed body: %s", e)
            return JSONResponse({"detail": f"malformed event: {e}"}, status_code=400)
        except RecursionError:
            # Nesting deeper than the JSON parser's recursion limit: hostile, not an event.
            logger.warning("Zendesk webhook with a body nested too deeply")
            return JSONResponse({"detail": "malformed event: nested too deeply"}, status_code=400)
        if comment is None:
            return JSONResponse({"status": "ignored", "route": "other event"})
        outcome = await adapter.handle(comment)
        return JSONResponse(
            {"status": outcome.status, "route": outcome.route.value, "replies": outcome.replies}
        )

    return router
