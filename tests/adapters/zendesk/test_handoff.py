"""Handoff to the agents: an internal note, status, group and tags, and a silent bot after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.zendesk import ZendeskSettings
from adapters.zendesk.convert import conversation_key
from bot.engine import Responder, Trace
from bot.model import Owner, Reply
from bot.service import Services, confidence_model
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from tests.adapters.zendesk.conftest import (
    BOT_USER_ID,
    GROUP_ID,
    SUBDOMAIN,
    TICKET,
    Harness,
    build_services,
    comment_event,
    payload,
    serve,
)
from tests.adapters.zendesk.emulator import ZendeskEmulator


def _handoff_writes(zendesk: Harness) -> list[dict[str, Any]]:
    return [
        c.body["ticket"]
        for c in zendesk.emulator.writes()
        if c.body["ticket"].get("comment", {}).get("public") is False
    ]


def test_asking_for_a_human_hands_the_ticket_over(zendesk: Harness) -> None:
    zendesk.send(payload("comment_added_customer"))
    response = zendesk.send(
        comment_event(
            comment_id=30040,
            body="This is useless and I'm really frustrated. Let me talk to a human please.",
        )
    )

    assert response.json() == {"status": "done", "route": "handoff", "replies": 0}
    notes = _handoff_writes(zendesk)
    assert len(notes) == 1
    update = notes[0]
    assert update["status"] == "open"
    assert update["group_id"] == GROUP_ID
    assert update["additional_tags"] == ["bot_handoff"]
    note = update["comment"]
    assert note["author_id"] == BOT_USER_ID
    html = note["html_body"]
    assert "the customer asked for a person" in html
    assert "I forgot my password" in html  # the question
    assert "Forgot password?" in html  # what the bot answered
    assert 'href="https://help.lumen-notes.example/articles/reset-password"' in html  # its source
    assert "Customer sentiment:</strong> negative" in html
    assert "frustrated" in html  # the most negative message
    ticket = zendesk.emulator.tickets[TICKET]
    assert ticket["status"] == "open" and ticket["group_id"] == GROUP_ID
    assert ticket["tags"] == ["bot_handoff"]
    # Only the first answer was public; the request for a person got no bot answer.
    assert len(zendesk.emulator.bot_comments(TICKET, public=True)) == 1

    store = zendesk.services.store
    conversation = store.find_conversation(conversation_key(SUBDOMAIN, TICKET))
    assert conversation is not None and conversation.owner is Owner.HUMAN
    history = store.history(conversation.id)
    assert history[-1].text.endswith("talk to a human please.")


def test_after_a_handoff_the_bot_stays_silent(zendesk: Harness) -> None:
    zendesk.send(comment_event(comment_id=30050, body="Can I speak to someone?"))
    later = zendesk.send(comment_event(comment_id=30051, body="How do I reset my password?"))
    again = zendesk.send(comment_event(comment_id=30052, body="Hello? I want an agent!"))

    assert later.json()["replies"] == 0
    assert again.json()["route"] == "handoff"
    assert zendesk.emulator.bot_comments(TICKET, public=True) == []
    assert len(_handoff_writes(zendesk)) == 1  # handed over once


def test_hand_off_called_directly(zendesk: Harness) -> None:
    zendesk.send(payload("comment_added_customer"))
    result = zendesk.run(zendesk.adapter.hand_off, TICKET, reason="escalated by a policy")

    assert result.note_comment_id is not None
    note = _handoff_writes(zendesk)[-1]["comment"]["html_body"]
    assert "escalated by a policy" in note
    assert "Customer sentiment:</strong>" in note
    conversation = zendesk.services.store.get_conversation(result.conversation_id)
    assert conversation is not None and conversation.owner is Owner.HUMAN


def test_a_refused_handoff_note_still_silences_the_bot(zendesk: Harness) -> None:
    zendesk.emulator.tickets.clear()  # Zendesk answers 404 for the ticket
    result = zendesk.run(zendesk.adapter.hand_off, 999, reason="test", customer="5001")

    assert result.note_comment_id is None
    conversation = zendesk.services.store.get_conversation(result.conversation_id)
    assert conversation is not None and conversation.owner is Owner.HUMAN


class _HandoffResponder(Responder):
    """Answers normally, but hands over on anything mentioning a refund."""

    def respond(self, text: str, history: Any = ()) -> tuple[Reply, Trace]:
        if "refund" in text.lower():
            return Reply.handoff("I'm bringing in a colleague who can help."), Trace(
                text, False, None, None
            )
        return super().respond(text, history)


@pytest.fixture
def handoff_services(tmp_path: Path, zendesk_kb: KnowledgeBase) -> Any:
    responder = _HandoffResponder(Retriever(zendesk_kb), confidence_model(zendesk_kb))
    built = build_services(tmp_path / "handoff.db", zendesk_kb, responder)
    yield built
    built.store.close()


def test_an_engine_handoff_reply_is_posted_then_handed_over(
    handoff_services: Services, zendesk_settings: ZendeskSettings, emulator: ZendeskEmulator
) -> None:
    emulator.add_ticket(TICKET)
    harness = serve(handoff_services, zendesk_settings, emulator)
    try:
        response = harness.send(comment_event(comment_id=30060, body="I want a refund"))
        later = harness.send(comment_event(comment_id=30061, body="How do I reset my password?"))
    finally:
        harness.http.__exit__(None, None, None)

    assert response.json() == {"status": "done", "route": "answer", "replies": 1}
    public = emulator.bot_comments(TICKET, public=True)
    assert [c["html_body"] for c in public] == ["<p>I'm bringing in a colleague who can help.</p>"]
    notes = emulator.bot_comments(TICKET, public=False)
    assert len(notes) == 1 and "the bot handed the conversation over" in notes[0]["html_body"]
    assert later.json()["replies"] == 0
