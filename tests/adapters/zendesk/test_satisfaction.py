"""Satisfaction ratings (polled from /api/v2/satisfaction_ratings) become feedback rows."""

from __future__ import annotations

import time
from typing import Any

from adapters.zendesk import ZendeskSettings
from bot.service import Services
from tests.adapters.zendesk.conftest import (
    CUSTOMER_ID,
    SUBDOMAIN,
    TICKET,
    Harness,
    make_settings,
    payload,
    serve,
)
from tests.adapters.zendesk.emulator import ZendeskEmulator


def _rating(
    rating_id: int, ticket_id: int, score: str, updated: str = "2026-01-09T09:00:00Z"
) -> dict[str, Any]:
    return {
        "id": rating_id,
        "url": f"https://{SUBDOMAIN}.zendesk.com/api/v2/satisfaction_ratings/{rating_id}.json",
        "assignee_id": None,
        "group_id": None,
        "requester_id": CUSTOMER_ID,
        "ticket_id": ticket_id,
        "score": score,
        "comment": "Quick and clear" if score == "good" else None,
        "reason": None,
        "created_at": "2026-01-08T12:00:00Z",
        "updated_at": updated,
        "created_unix": int(time.time()) - 3600,
    }


def _answered_reply_id(zendesk: Harness) -> str:
    zendesk.send(payload("comment_added_customer"))
    comment_id = zendesk.emulator.bot_comments(TICKET)[0]["id"]
    reply = zendesk.services.engine.reply_posted_as(f"{SUBDOMAIN}:{TICKET}:{comment_id}")
    assert reply is not None
    return reply.id


def test_ratings_on_answered_tickets_become_feedback(zendesk: Harness) -> None:
    reply_id = _answered_reply_id(zendesk)
    zendesk.emulator.ratings = [
        _rating(1, 9991, "good"),  # a ticket the bot never saw
        _rating(2, TICKET, "offered"),  # no answer to the survey yet
        _rating(3, 9992, "bad"),
        _rating(4, TICKET, "good"),
    ]

    recorded = zendesk.run(zendesk.adapter.sync_satisfaction)

    assert recorded == 1
    assert zendesk.services.store.feedback_for(reply_id) == {"up": 1, "down": 0}
    pages = [c for c in zendesk.emulator.calls if c.path == "/api/v2/satisfaction_ratings.json"]
    assert len(pages) == 2  # three received ratings, two per page: every page was read
    assert pages[0].query["score"] == "received"
    assert "start_time" in pages[0].query


def test_polling_again_changes_nothing_and_a_changed_rating_counts(zendesk: Harness) -> None:
    reply_id = _answered_reply_id(zendesk)
    zendesk.emulator.ratings = [_rating(4, TICKET, "good")]
    assert zendesk.run(zendesk.adapter.sync_satisfaction) == 1
    assert zendesk.run(zendesk.adapter.sync_satisfaction) == 0

    zendesk.emulator.ratings = [_rating(4, TICKET, "bad", updated="2026-01-10T09:00:00Z")]
    assert zendesk.run(zendesk.adapter.sync_satisfaction) == 1
    assert zendesk.services.store.feedback_for(reply_id) == {"up": 0, "down": 1}


def test_rate_limited_pages_are_retried(zendesk: Harness) -> None:
    reply_id = _answered_reply_id(zendesk)
    zendesk.emulator.ratings = [_rating(4, TICKET, "bad")]
    zendesk.emulator.fail_next("/api/v2/satisfaction_ratings.json")

    assert zendesk.run(zendesk.adapter.sync_satisfaction) == 1
    assert zendesk.services.store.feedback_for(reply_id) == {"up": 0, "down": 1}


def test_the_app_polls_while_it_runs(services: Services, emulator: ZendeskEmulator) -> None:
    settings: ZendeskSettings = make_settings(emulator, satisfaction_poll_s=0.05)
    emulator.add_ticket(TICKET)
    harness = serve(services, settings, emulator)
    try:
        reply_id = _answered_reply_id(harness)
        emulator.ratings = [_rating(4, TICKET, "good")]
        deadline = time.monotonic() + 10
        while services.store.feedback_for(reply_id)["up"] == 0:
            assert time.monotonic() < deadline, "the poll did not record the rating"
            time.sleep(0.05)
    finally:
        harness.http.__exit__(None, None, None)
