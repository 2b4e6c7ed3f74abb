"""Webhook signature verification as Zendesk documents it: base64(HMAC-SHA256(ts + body))."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from adapters.zendesk.signature import SignatureError, parse_timestamp, sign, verify, verify_headers

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
BODY = b'{"type":"zen:event-type:ticket.comment_added"}'
STAMP = "2021-03-25T05:09:27Z"
NOW = datetime(2021, 3, 25, 5, 10, 0, tzinfo=UTC)


def test_sign_is_base64_hmac_of_timestamp_then_body() -> None:
    digest = hmac.new(SECRET.encode(), (STAMP + BODY.decode()).encode(), hashlib.sha256).digest()
    assert sign(SECRET, STAMP, BODY) == base64.b64encode(digest).decode()


def test_a_good_signature_passes() -> None:
    verify(SECRET, BODY, sign(SECRET, STAMP, BODY), STAMP, now=NOW)


@pytest.mark.parametrize(
    ("signature", "timestamp", "now", "reason"),
    [
        (None, STAMP, NOW, "unsigned"),
        (sign(SECRET, STAMP, BODY), None, NOW, "unsigned"),
        ("", STAMP, NOW, "unsigned"),
        (sign("another secret", STAMP, BODY), STAMP, NOW, "mismatch"),
        (sign(SECRET, STAMP, BODY + b" "), STAMP, NOW, "mismatch"),
        (sign(SECRET, STAMP, BODY), STAMP, NOW + timedelta(minutes=6), "stale"),
        (sign(SECRET, STAMP, BODY), STAMP, NOW - timedelta(minutes=6), "stale"),
        (sign(SECRET, "soon", BODY), "soon", NOW, "unreadable"),
    ],
)
def test_bad_requests_are_refused(
    signature: str | None, timestamp: str | None, now: datetime, reason: str
) -> None:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, BODY, signature, timestamp, now=now)
    assert reason in caught.value.reason


def test_the_signed_timestamp_cannot_be_swapped_for_a_fresh_one() -> None:
    old = "2021-03-25T04:00:00Z"
    with pytest.raises(SignatureError, match="mismatch"):
        verify(SECRET, BODY, sign(SECRET, old, BODY), STAMP, now=NOW)


def test_headers_are_read_case_insensitively_by_the_caller_mapping() -> None:
    headers = {
        "X-Zendesk-Webhook-Signature": sign(SECRET, STAMP, BODY),
        "X-Zendesk-Webhook-Signature-Timestamp": STAMP,
    }
    verify_headers(SECRET, BODY, headers, now=NOW)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-03-25T05:09:27Z", datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)),
        ("2021-03-25T05:09:27+00:00", datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)),
        ("2021-03-25T05:09:27", datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)),
        ("1616648967", datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC)),
    ],
)
def test_timestamps(value: str, expected: datetime) -> None:
    assert parse_timestamp(value) == expected
