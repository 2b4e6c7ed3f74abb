"""POST /zendesk/webhook end to end: the real app, a local Zendesk, recorded event payloads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from adapters.zendesk.convert import conversation_key
from bot.model import Owner
from tests.adapters.zendesk.conftest import (
    AGENT_ID,
    BOT_USER_ID,
    SUBDOMAIN,
    TICKET,
    Harness,
    comment_event,
    payload,
    signed_headers,
)

# Verification ---------------------------------------------------------------------------------


def _stamp(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("case", "kwargs"),
    [
        ("wrong secret", {"secret": "not-the-signing-secret"}),
        ("stale by six minutes", {"timestamp": timedelta(minutes=-6)}),
        ("from the future", {"timestamp": timedelta(minutes=6)}),
        ("unsigned", {"signed": False}),
        ("unreadable timestamp", {"timestamp": "yesterday"}),
    ],
)
def test_unverified_requests_get_401_and_store_nothing(
    zendesk: Harness, case: str, kwargs: dict[str, object]
) -> None:
    if isinstance(kwargs.get("timestamp"), timedelta):  # relative to now, not to collection
        kwargs = {**kwargs, "timestamp": _stamp(kwargs["timestamp"])}  # type: ignore[arg-type]
    before = zendesk.counts()
    response = zendesk.send(payload("comment_added_customer"), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 401, case
    assert zendesk.counts() == before
    assert zendesk.emulator.writes() == []


def test_a_signature_for_another_body_is_refused(zendesk: Harness) -> None:
    before = zendesk.counts()
    other = json.dumps(payload("comment_added_agent")).encode()
    response = zendesk.send(
        payload("comment_added_customer"), signed=False, headers=signed_headers(other)
    )
    assert response.status_code == 401
    assert zendesk.counts() == before


def test_a_fresh_signature_within_five_minutes_passes(zendesk: Harness) -> None:
    response = zendesk.send(
        payload("ticket_status_changed"), timestamp=_stamp(timedelta(minutes=-4))
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2, 3]",
        b"",
        b"{}",
        b'"text"',
        b"\xff\xfe\x00garbage",
        json.dumps({"type": "zen:event-type:ticket.comment_added", "id": "x"}).encode(),
        json.dumps(
            {"type": "zen:event-type:ticket.comment_added", "id": "x", "detail": {"id": "1"}}
        ).encode(),
        json.dumps(
            {
                "type": "zen:event-type:ticket.comment_added",
                "id": "x",
                "detail": {"id": "not a number"},
                "event": {"comment": {"id": 1, "body": "hi", "author": {"id": 2}}},
            }
        ).encode(),
        json.dumps(
            {"type": "zen:event-type:ticket.created", "id": "y", "detail": {"id": 5}}
        ).encode(),
    ],
)
def test_malformed_bodies_get_400_and_store_nothing(zendesk: Harness, body: bytes) -> None:
    before = zendesk.counts()
    response = zendesk.send(body)
    assert response.status_code == 400
    assert zendesk.counts() == before
    assert zendesk.emulator.writes() == []


def test_other_events_are_acknowledged_and_ignored(zendesk: Harness) -> None:
    before = zendesk.counts()
    response = zendesk.send(payload("ticket_status_changed"))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert zendesk.counts() == before


# Answering ------------------------------------------------------------------------------------


def test_a_new_ticket_gets_one_public_answer_with_source_links(zendesk: Harness) -> None:
    response = zendesk.send(payload("comment_added_customer"))

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "done", "route": "answer", "replies": 1}
    writes = zendesk.emulator.writes()
    assert [(c.method, c.path) for c in writes] == [("PUT", f"/api/v2/tickets/{TICKET}.json")]
    comment = writes[0].body["ticket"]["comment"]
    assert comment["public"] is True
    assert comment["author_id"] == BOT_USER_ID
    assert "Forgot password?" in comment["html_body"]
    assert (
        '<a href="https://help.lumen-notes.example/articles/reset-password">'
        in comment["html_body"]
    )
    # The posted comment is remembered, so feedback and later turns find it.
    posted = zendesk.emulator.bot_comments(TICKET, public=True)
    assert len(posted) == 1
    reply = zendesk.services.engine.reply_posted_as(f"{SUBDOMAIN}:{TICKET}:{posted[0]['id']}")
    assert reply is not None and reply.sources[0].id == "reset-password"


def test_the_same_event_delivered_twice_is_answered_once(zendesk: Harness) -> None:
    first = zendesk.send(payload("comment_added_customer"))
    again = zendesk.send(payload("comment_added_customer"))

    assert first.json()["status"] == "done"
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert len(zendesk.emulator.bot_comments(TICKET)) == 1


def test_ticket_created_and_its_first_comment_are_answered_once(zendesk: Harness) -> None:
    created = zendesk.send(payload("ticket_created"))
    commented = zendesk.send(payload("comment_added_customer"))

    assert created.json() == {"status": "done", "route": "answer", "replies": 1}
    assert commented.json()["status"] == "duplicate"
    assert len(zendesk.emulator.bot_comments(TICKET)) == 1


def test_the_bots_own_comment_coming_back_does_nothing(zendesk: Harness) -> None:
    zendesk.send(payload("comment_added_customer"))
    posted = zendesk.emulator.bot_comments(TICKET)[0]
    before = zendesk.counts()
    calls = len(zendesk.emulator.calls)

    echo = comment_event(
        comment_id=posted["id"], body=posted["html_body"], author_id=BOT_USER_ID, is_staff=True
    )
    response = zendesk.send(echo)
    recorded_echo = zendesk.send(payload("comment_added_bot"))

    assert response.json()["status"] == "ignored"
    assert recorded_echo.json()["status"] == "ignored"
    assert zendesk.counts() == before
    assert len(zendesk.emulator.calls) == calls


def test_internal_notes_are_not_answered(zendesk: Harness) -> None:
    before = zendesk.counts()
    response = zendesk.send(payload("comment_added_private"))
    assert response.json()["status"] == "ignored"
    assert zendesk.counts() == before
    assert zendesk.emulator.writes() == []


def test_a_follow_up_comment_is_answered_in_the_same_conversation(zendesk: Harness) -> None:
    zendesk.send(payload("comment_added_customer"))
    response = zendesk.send(
        comment_event(comment_id=30010, body="What does the Plus plan cost per month?")
    )

    assert response.json()["status"] == "done"
    assert len(zendesk.emulator.bot_comments(TICKET, public=True)) == 2
    conversation = zendesk.services.store.find_conversation(conversation_key(SUBDOMAIN, TICKET))
    assert conversation is not None and conversation.owner is Owner.BOT


# Agents -----------------------------------------------------------------------------------------


def test_an_agents_public_comment_silences_the_bot(zendesk: Harness) -> None:
    zendesk.send(payload("comment_added_customer"))
    agent = zendesk.send(payload("comment_added_agent"))
    later = zendesk.send(comment_event(comment_id=30020, body="How do I export a note as a PDF?"))

    assert agent.json() == {"status": "done", "route": "agent", "replies": 0}
    assert later.json() == {"status": "done", "route": "answer", "replies": 0}
    assert len(zendesk.emulator.bot_comments(TICKET)) == 1  # only the first answer
    store = zendesk.services.store
    conversation = store.find_conversation(conversation_key(SUBDOMAIN, TICKET))
    assert conversation is not None and conversation.owner is Owner.HUMAN
    history = [turn.text for turn in store.history(conversation.id, limit=10)]
    assert history[-2:] == [
        "Hi Casey, I've reset the login for you; try again now.",
        "How do I export a note as a PDF?",
    ]


def test_an_agent_replying_first_keeps_the_bot_out_of_the_ticket(zendesk: Harness) -> None:
    zendesk.send(
        comment_event(comment_id=30030, body="We're on it.", author_id=AGENT_ID, is_staff=True)
    )
    response = zendesk.send(comment_event(comment_id=30031, body="How do I reset my password?"))

    assert response.json()["replies"] == 0
    assert zendesk.emulator.bot_comments(TICKET) == []


def test_a_ticket_an_agent_opened_for_a_customer_is_left_to_ticket_comment_added(
    zendesk: Harness,
) -> None:
    created = payload("ticket_created")
    created["detail"]["submitter_id"] = str(AGENT_ID)
    response = zendesk.send(created)
    assert response.json()["status"] == "ignored"
    assert zendesk.emulator.writes() == []
