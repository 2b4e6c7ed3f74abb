"""Pure conversions: webhook events → comments, routing, the shared model, ratings → feedback."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.zendesk import convert
from adapters.zendesk.convert import MalformedEvent, Route
from adapters.zendesk.settings import DEFAULT_HANDOFF_KEYWORDS
from bot.model import ConversationKey, FeedbackValue
from tests.adapters.zendesk.conftest import BOT_USER_ID, comment_event, payload

PAYLOAD_NAMES = [
    "comment_added_customer",
    "comment_added_agent",
    "comment_added_bot",
    "comment_added_private",
    "ticket_created",
]


def _route(body: dict[str, Any]) -> Route:
    comment = convert.parse_event(body)
    assert comment is not None
    return convert.route(
        comment, bot_user_id=BOT_USER_ID, handoff_keywords=DEFAULT_HANDOFF_KEYWORDS
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("comment_added_customer", Route.ANSWER),
        ("comment_added_agent", Route.AGENT),
        ("comment_added_bot", Route.IGNORE),
        ("comment_added_private", Route.IGNORE),
        ("ticket_created", Route.ANSWER),
    ],
)
def test_recorded_payloads_route(name: str, expected: Route) -> None:
    assert _route(payload(name)) is expected


def test_the_first_comment_has_the_same_id_from_both_events() -> None:
    created = convert.parse_event(payload("ticket_created"))
    commented = convert.parse_event(payload("comment_added_customer"))
    assert created is not None and commented is not None
    assert created.message_id == commented.message_id == "ticket:4242:first"
    later = convert.parse_event(comment_event(comment_id=31, body="another question"))
    assert later is not None and later.message_id == "comment:31"


def test_a_later_comment_repeating_the_description_is_not_the_first() -> None:
    body = comment_event(comment_id=32, body=payload("ticket_created")["detail"]["description"])
    comment = convert.parse_event(body)
    assert comment is not None and comment.message_id == "comment:32"


def test_ids_as_numbers_or_strings() -> None:
    body = comment_event(comment_id=33, body="hi")
    body["event"]["comment"]["id"] = "33"
    body["event"]["comment"]["author"]["id"] = "5001"
    body["detail"]["id"] = 4242
    comment = convert.parse_event(body)
    assert comment is not None
    assert (comment.ticket_id, comment.comment_id, comment.author_id) == (4242, 33, "5001")


def test_nanosecond_times_are_read() -> None:
    comment = convert.parse_event(payload("comment_added_customer"))
    assert comment is not None
    assert comment.sent_at.isoformat() == "2026-01-08T10:12:07.672717+00:00"


def test_other_event_types_are_not_comments() -> None:
    assert convert.parse_event(payload("ticket_status_changed")) is None


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"type": 3},
        {"type": "zen:event-type:ticket.comment_added", "detail": {"id": "1"}},
        {"type": "zen:event-type:ticket.comment_added", "id": "e", "detail": {"id": True}},
        {"type": "zen:event-type:ticket.comment_added", "id": "e", "detail": {"id": "1"}},
        {
            "type": "zen:event-type:ticket.comment_added",
            "id": "e",
            "detail": {"id": "1"},
            "event": {"comment": {"id": 1, "body": "x"}},
        },
        {
            "type": "zen:event-type:ticket.comment_added",
            "id": "e",
            "detail": {"id": "1"},
            "event": {"comment": {"id": 1, "body": None, "author": {"id": 2}}},
        },
        {"type": "zen:event-type:ticket.created", "id": "e", "detail": {"id": "1"}},
        {
            "type": "zen:event-type:ticket.created",
            "id": "e",
            "detail": {"id": "1", "description": "hi"},
        },
    ],
)
def test_malformed_events(body: Any) -> None:
    with pytest.raises(MalformedEvent):
        convert.parse_event(body)


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("Can I talk to a human?", True),
        ("I want an AGENT now", True),
        ("please let me talk to someone", True),
        ("Talk   to  someone", True),
        ("I need a real person", True),
        ("How do I change my user-agent string?", True),  # a known false positive of the check
        ("humane treatment of my data?", False),
        ("How do I add a person to my team?", False),
        ("reset my password", False),
        ("", False),
    ],
)
def test_asks_for_person(text: str, asks: bool) -> None:
    assert convert.asks_for_person(text, DEFAULT_HANDOFF_KEYWORDS) is asks


def test_a_customer_asking_for_a_human_routes_to_handoff() -> None:
    assert _route(comment_event(comment_id=34, body="human please")) is Route.HANDOFF


def test_unknown_authors_and_empty_comments_are_ignored() -> None:
    created = payload("ticket_created")
    created["detail"]["submitter_id"] = "7001"  # an agent opened it for the customer
    assert _route(created) is Route.IGNORE
    assert _route(comment_event(comment_id=35, body="   ")) is Route.IGNORE


def test_relay_tickets() -> None:
    origin = ConversationKey("discord", "G1", "C1", "T1")
    external = convert.relay_external_id(origin)
    agent = comment_event(
        comment_id=36, body="hi", author_id=7001, is_staff=True, external_id=external
    )
    customer = comment_event(comment_id=37, body="human!", external_id=external)
    assert _route(agent) is Route.RELAY
    assert _route(customer) is Route.IGNORE
    comment = convert.parse_event(agent)
    assert comment is not None
    assert convert.to_agent_comment(comment).origin == origin
    assert convert.relay_origin("supportbot:broken") is None
    assert convert.relay_origin(None) is None
    assert convert.relay_origin("crm-123") is None


def test_to_inbound() -> None:
    comment = convert.parse_event(payload("comment_added_customer"))
    assert comment is not None
    message = convert.to_inbound(comment, "acme")
    assert message.conversation == ConversationKey("zendesk", "acme", "tickets", "4242")
    assert message.user == "5001"
    assert message.message_id == "ticket:4242:first"
    assert message.text.startswith("Hi, I forgot my password")
    assert message.raw["type"] == "zen:event-type:ticket.comment_added"


@pytest.mark.parametrize(
    ("score", "value"), [("good", FeedbackValue.UP), ("bad", FeedbackValue.DOWN)]
)
def test_ratings_become_feedback(score: str, value: FeedbackValue) -> None:
    rating = {
        "id": 7,
        "ticket_id": 4242,
        "requester_id": 5001,
        "score": score,
        "comment": "thanks",
        "updated_at": "2026-01-09T09:00:00Z",
    }
    event = convert.feedback_from_rating(rating, "reply-1", "acme")  # type: ignore[arg-type]
    assert event is not None
    assert (event.reply_id, event.user, event.value, event.reason) == (
        "reply-1",
        "5001",
        value,
        "thanks",
    )
    assert event.event_id == f"satisfaction:acme:7:{value.value}:2026-01-09T09:00:00Z"


@pytest.mark.parametrize(
    "rating", [{"id": 7, "score": "offered", "requester_id": 1}, {"score": "good"}]
)
def test_ratings_without_a_score_are_skipped(rating: dict[str, Any]) -> None:
    assert convert.feedback_from_rating(rating, "reply-1", "acme") is None  # type: ignore[arg-type]
