"""Requests not signed by Slack are refused before anything is parsed or stored; malformed
bodies get a 4xx, never a 5xx."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.adapters.slack.conftest import Harness, payload, signature_headers


@pytest.mark.parametrize(
    ("case", "skew", "kwargs"),
    [
        ("wrong secret", 0, {"secret": "not-the-signing-secret"}),
        ("stale by six minutes", -6 * 60, {}),
        ("six minutes in the future", 6 * 60, {}),
        ("unsigned", 0, {"signed": False}),
    ],
)
async def test_unverified_requests_get_401_and_store_nothing(
    slack: Harness, case: str, skew: int, kwargs: dict[str, Any]
) -> None:
    before = slack.counts()
    timestamp = int(time.time()) + skew  # now, not when the tests were collected
    response = await slack.send(payload("app_mention"), timestamp=timestamp, **kwargs)
    await slack.settle()
    assert response.status_code == 401, case
    assert slack.counts() == before
    assert slack.emulator.calls == []


async def test_a_signature_for_another_body_is_refused(slack: Harness) -> None:
    before = slack.counts()
    signed_for = json.dumps(payload("message_im")).encode()
    response = await slack.send(
        payload("app_mention"), signed=False, headers=signature_headers(signed_for)
    )
    assert response.status_code == 401
    assert slack.counts() == before


async def test_a_timestamp_that_is_not_a_number_is_refused(slack: Harness) -> None:
    response = await slack.send(
        payload("app_mention"),
        signed=False,
        headers={"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b"", "application/json"),
        (b"{}", "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        (b"payload=%5B%5D", "application/x-www-form-urlencoded"),
        (b"hello=world", "application/x-www-form-urlencoded"),
    ],
)
async def test_malformed_bodies_get_400(slack: Harness, body: bytes, content_type: str) -> None:
    before = slack.counts()
    response = await slack.send(body, content_type=content_type)
    assert response.status_code == 400
    assert slack.counts() == before


@pytest.mark.parametrize(
    "body",
    [
        {"type": "something_new"},
        {"type": "event_callback", "team_id": "T0TEST", "event_id": "Ev1"},
        {"type": "event_callback", "team_id": "T0TEST", "event": {"type": "message"}},
        {"type": "block_actions", "actions": "not a list"},
        # Shapes the listeners cannot use (no channel): acknowledged, logged, not answered.
        {"type": "event_callback", "team_id": "T0TEST", "event": {"type": "message", "user": "U1"}},
        {
            "type": "event_callback",
            "team_id": "T0TEST",
            "event": {"type": "app_mention", "user": "U1"},
        },
        {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "handoff"}]},
    ],
)
async def test_well_formed_but_unexpected_payloads_never_get_a_5xx(
    slack: Harness, body: dict[str, object]
) -> None:
    response = await slack.send(body)
    await slack.settle()
    assert response.status_code < 500
    assert slack.emulator.posts() == []


async def test_oversized_bodies_are_refused(slack: Harness) -> None:
    response = await slack.send(b"{" + b" " * 1_100_000 + b"}")
    assert response.status_code == 413
