"""Zendesk as the agents' desk for customers on other platforms: tickets with the transcript,
and agents' public comments reported to the relay instead of answered by the engine."""

from __future__ import annotations

from adapters.zendesk import AgentComment
from adapters.zendesk.convert import conversation_key
from bot.model import ConversationKey, Owner, Role, Turn
from tests.adapters.zendesk.conftest import (
    AGENT_ID,
    BOT_USER_ID,
    SUBDOMAIN,
    Harness,
    comment_event,
)

ORIGIN = ConversationKey("slack", "T0TEST", "D0CUSTOMER", "1700000000.000100")
TRANSCRIPT = (
    Turn(Role.USER, "My sync keeps failing on Android"),
    Turn(Role.BOT, "Try signing out and in again."),
    Turn(Role.USER, "Still broken <script>alert(1)</script>, I need a person"),
)


def test_create_ticket_for_opens_a_ticket_with_the_transcript(zendesk: Harness) -> None:
    ticket_id = zendesk.run(
        zendesk.adapter.create_ticket_for, TRANSCRIPT, "U0CUSTOMER", "slack", origin=ORIGIN
    )

    created = [c for c in zendesk.emulator.writes() if c.method == "POST"]
    assert len(created) == 1 and created[0].path == "/api/v2/tickets.json"
    ticket = created[0].body["ticket"]
    assert ticket["requester_id"] == BOT_USER_ID  # no placeholder requester configured
    assert ticket["external_id"] == f"supportbot:{ORIGIN}"
    assert ticket["tags"] == ["supportbot_relay", "supportbot_slack"]
    assert "U0CUSTOMER" in ticket["subject"] and "slack" in ticket["subject"]
    comment = ticket["comment"]
    assert comment["public"] is False and comment["author_id"] == BOT_USER_ID
    assert "My sync keeps failing on Android" in comment["html_body"]
    assert "Try signing out and in again." in comment["html_body"]
    assert "<script>" not in comment["html_body"]
    assert zendesk.emulator.tickets[ticket_id]["external_id"] == f"supportbot:{ORIGIN}"
    conversation = zendesk.services.store.find_conversation(conversation_key(SUBDOMAIN, ticket_id))
    assert conversation is not None and conversation.owner is Owner.HUMAN


def test_agents_comments_on_relay_tickets_go_to_the_callback(zendesk: Harness) -> None:
    received: list[AgentComment] = []

    async def relay(comment: AgentComment) -> None:
        received.append(comment)

    zendesk.adapter.on_agent_comment(relay)
    ticket_id = zendesk.run(
        zendesk.adapter.create_ticket_for, TRANSCRIPT, "U0CUSTOMER", "slack", origin=ORIGIN
    )
    external = f"supportbot:{ORIGIN}"
    before = zendesk.counts()
    agent = zendesk.send(
        comment_event(
            ticket_id=ticket_id,
            comment_id=40001,
            body="Hi! Please update the app to 4.2, that fixes it.",
            author_id=AGENT_ID,
            is_staff=True,
            external_id=external,
        )
    )
    repeated = zendesk.send(
        comment_event(
            ticket_id=ticket_id,
            comment_id=40001,
            body="Hi! Please update the app to 4.2, that fixes it.",
            author_id=AGENT_ID,
            is_staff=True,
            external_id=external,
        )
    )
    note = zendesk.send(
        comment_event(
            ticket_id=ticket_id,
            comment_id=40002,
            body="internal only",
            author_id=AGENT_ID,
            is_staff=True,
            public=False,
            external_id=external,
        )
    )
    bot_echo = zendesk.send(
        comment_event(
            ticket_id=ticket_id,
            comment_id=40003,
            body="transcript",
            author_id=BOT_USER_ID,
            is_staff=True,
            external_id=external,
        )
    )

    assert agent.json() == {"status": "done", "route": "relay", "replies": 0}
    assert repeated.json()["status"] == "duplicate"
    assert note.json()["status"] == "ignored"
    assert bot_echo.json()["status"] == "ignored"
    assert len(received) == 1
    got = received[0]
    assert got.ticket_id == ticket_id
    assert got.comment_id == 40001
    assert got.origin == ORIGIN
    assert got.author_id == str(AGENT_ID)
    assert got.text == "Hi! Please update the app to 4.2, that fixes it."
    # The engine did not answer: no bot comment beyond the transcript, no reply stored.
    assert len(zendesk.emulator.bot_comments(ticket_id)) == 1
    after = zendesk.counts()
    assert after["reply"] == before["reply"]
    assert after["message"] == before["message"]


def test_a_failing_callback_does_not_break_the_webhook(zendesk: Harness) -> None:
    async def broken(comment: AgentComment) -> None:
        raise RuntimeError("relay down")

    zendesk.adapter.on_agent_comment(broken)
    response = zendesk.send(
        comment_event(
            ticket_id=777,
            comment_id=40010,
            body="Hello from the agent",
            author_id=AGENT_ID,
            is_staff=True,
            external_id=f"supportbot:{ORIGIN}",
        )
    )
    assert response.status_code == 200
    assert response.json()["route"] == "relay"


def test_the_configured_placeholder_requester_is_used(zendesk: Harness) -> None:
    settings = zendesk.adapter.settings.model_copy(update={"relay_requester_id": 6006})
    zendesk.adapter.settings = settings
    zendesk.run(zendesk.adapter.create_ticket_for, TRANSCRIPT[:1], "alice", "web")

    ticket = next(c for c in zendesk.emulator.writes() if c.method == "POST").body["ticket"]
    assert ticket["requester_id"] == 6006
    assert "external_id" not in ticket
    assert ticket["tags"] == ["supportbot_relay", "supportbot_web"]
