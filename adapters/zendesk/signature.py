"""Webhook signature verification (pure): is this request from Zendesk, and recent?

Zendesk signs each webhook request with the webhook's signing secret::

    X-Zendesk-Webhook-Signature = base64(HMAC-SHA256(secret, timestamp + body))
    X-Zendesk-Webhook-Signature-Timestamp = 2021-03-25T05:09:27Z

The timestamp is part of what is signed, so checking its age refuses replays of old requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "sign",
    "verify",
    "verify_headers",
]

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
DEFAULT_MAX_AGE = timedelta(minutes=5)


class SignatureError(Exception):
    """The request is not verifiably from Zendesk; `reason` says why (for logs, not callers)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature Zendesk sends for `body` signed at `timestamp`."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_timestamp(value: str) -> datetime:
    """The signing time: ISO 8601 as Zendesk sends it, or Unix seconds.

    Raises:
        SignatureError: neither.
    """
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise SignatureError(f"unreadable timestamp {text[:40]!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def verify(
    secret: str | bytes,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> None:
    """Check a request's signature and its age.

    Args:
        secret: the webhook's signing secret.
        body: the raw request body, exactly as received.
        signature: the ``X-Zendesk-Webhook-Signature`` header.
        timestamp: the ``X-Zendesk-Webhook-Signature-Timestamp`` header.
        now: the current time (aware).
        max_age: how far the timestamp may be from `now`, either way (clock skew included).

    Raises:
        SignatureError: a header is missing, the timestamp is unreadable or too far from
            `now`, or the signature does not match.
    """
    if not signature or not timestamp:
        raise SignatureError("unsigned request")
    signed_at = parse_timestamp(timestamp)
    if abs(now - signed_at) > max_age:
        raise SignatureError(f"stale request signed at {signed_at.isoformat()}")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise SignatureError("signature mismatch")


def verify_headers(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> None:
    """`verify` with the headers of the request (a case-insensitive mapping, as Starlette's).

    Raises:
        SignatureError: see `verify`.
    """
    verify(
        secret,
        body,
        headers.get(SIGNATURE_HEADER),
        headers.get(TIMESTAMP_HEADER),
        now=now,
        max_age=max_age,
    )
