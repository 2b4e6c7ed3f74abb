"""The Rasa action server over HTTP: rasa-sdk's real app, the real engine and sample KB."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select

from adapters.rasa.convert import REPLY_ID_SLOT, REPLY_KIND_SLOT
from bot.engine import ERROR_TEXT
from bot.model import ConversationKey, Owner, utcnow
from bot.storage.tables import ReplyRecord
from tests.adapters.rasa.conftest import ActionServer, action_call

pytestmark = pytest.mark.model


def call(server: ActionServer, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/webhook", json=body, timeout=60)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


def slots(result: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in result["events"] if e["event"] == "slot"}


def sender() -> str:
    return f"rasa-user-{uuid.uuid4().hex[:8]}"


def test_health_and_the_action_list(action_server: ActionServer) -> None:
    assert httpx.get(f"{action_server.url}/health").json() == {"status": "ok"}
    names = {a["name"] for a in httpx.get(f"{action_server.url}/actions").json()}
    assert names == {"action_answer_from_kb", "action_handoff_to_human", "action_record_feedback"}


def test_answer_from_kb_answers_with_sources_and_sets_the_reply_slots(
    action_server: ActionServer,
) -> None:
    who = sender()
    body = action_call("action_answer_from_kb", who, "How do I reset my password?")
    result = call(action_server, body)
    (message,) = result["responses"]
    entry = action_server.services.kb.entry("reset-password")
    assert entry is not None and message["text"].startswith(entry.answer)
    supportbot = message["custom"]["supportbot"]
    assert supportbot["kind"] == "answer"
    assert supportbot["sources"][0]["id"] == "reset-password"
    payloads = [b["payload"] for b in message["buttons"]]
    assert '/feedback{"supportbot_feedback": "up"}' in payloads
    assert "/request_human" in payloads
    values = slots(result)
    assert values[REPLY_KIND_SLOT] == "answer"
    stored = action_server.services.store.get_reply(values[REPLY_ID_SLOT])
    assert stored is not None and stored.text == entry.answer
    conversation = action_server.services.store.get_conversation(stored.conversation_id)
    assert conversation is not None
    assert (conversation.key.platform, conversation.key.workspace) == ("rasa", "rest")
    assert conversation.key.channel == who

    # Rasa retries the same call: the message is not answered twice.
    again = call(action_server, body)
    assert again["responses"] == []
    assert slots(again) == {REPLY_KIND_SLOT: "silent"}


def test_no_text_gets_a_prompt(action_server: ActionServer) -> None:
    result = call(action_server, action_call("action_answer_from_kb", sender(), None))
    assert [m["text"] for m in result["responses"]] == ["I'm here. What would you like to know?"]
    assert result["events"] == []


def test_handoff_to_human_hands_over_and_pauses_the_conversation(
    action_server: ActionServer,
) -> None:
    who = sender()
    call(action_server, action_call("action_answer_from_kb", who, "How do I export a PDF?"))
    before = len(action_server.sink.requests)
    result = call(action_server, action_call("action_handoff_to_human", who, "/request_human"))
    (message,) = result["responses"]
    assert message["custom"]["supportbot"]["kind"] == "handoff"
    assert {"event": "pause", "timestamp": None} in result["events"]
    assert slots(result)[REPLY_KIND_SLOT] == "handoff"
    (request,) = action_server.sink.requests[before:]
    assert request.platform == "rasa" and request.customer == who
    conversation = action_server.services.store.get_conversation(request.conversation_id)
    assert conversation is not None and conversation.owner is Owner.HUMAN


def test_record_feedback_rates_the_last_answer(action_server: ActionServer) -> None:
    who = sender()
    answered = call(action_server, action_call("action_answer_from_kb", who, "How much is Plus?"))
    reply_id = slots(answered)[REPLY_ID_SLOT]
    body = action_call(
        "action_record_feedback",
        who,
        '/feedback{"supportbot_feedback": "up"}',
        intent="feedback",
        entities=({"entity": "supportbot_feedback", "value": "up"},),
        slots={REPLY_ID_SLOT: reply_id, "supportbot_feedback": "up"},
    )
    result = call(action_server, body)
    assert [m["text"] for m in result["responses"]] == ["Thanks for your feedback!"]
    assert slots(result) == {"supportbot_feedback": None, "supportbot_feedback_reason": None}
    assert action_server.services.store.feedback_for(reply_id) == {"up": 1, "down": 0}
    # The same delivery again changes nothing.
    assert call(action_server, body)["responses"] == []


def thumbs_down(action_server: ActionServer, who: str, reply_id: str) -> dict[str, Any]:
    """Rate the reply 👎 through `action_record_feedback`; the action's response."""
    return call(
        action_server,
        action_call(
            "action_record_feedback",
            who,
            "not helpful",
            intent="feedback_down",
            slots={REPLY_ID_SLOT: reply_id},
        ),
    )


def test_a_thumbs_down_asks_why_and_talk_to_a_person_hands_over(
    action_server: ActionServer,
) -> None:
    who = sender()
    answered = call(
        action_server, action_call("action_answer_from_kb", who, "How do I delete my account?")
    )
    reply_id = slots(answered)[REPLY_ID_SLOT]
    down = thumbs_down(action_server, who, reply_id)
    (reasons,) = down["responses"]
    payloads = [b["payload"] for b in reasons["buttons"]]
    talk = next(p for p in payloads if "talk_to_person" in p)
    assert action_server.services.store.feedback_for(reply_id)["down"] == 1

    before = len(action_server.sink.requests)
    handed = call(
        action_server,
        action_call(
            "action_record_feedback",
            who,
            talk,
            intent="feedback",
            entities=(
                {"entity": "supportbot_feedback", "value": "down"},
                {"entity": "supportbot_feedback_reason", "value": "talk_to_person"},
            ),
            slots={REPLY_ID_SLOT: reply_id},
        ),
    )
    assert handed["responses"][0]["custom"]["supportbot"]["kind"] == "handoff"
    assert {"event": "pause", "timestamp": None} in handed["events"]
    assert len(action_server.sink.requests) == before + 1


def test_feedback_without_an_answer_or_a_value_says_what_to_do(
    action_server: ActionServer,
) -> None:
    no_reply = call(action_server, action_call("action_record_feedback", sender(), "👍"))
    assert "which answer" in no_reply["responses"][0]["text"]
    unclear = call(
        action_server,
        action_call("action_record_feedback", sender(), "hmm", slots={REPLY_ID_SLOT: "x"}),
    )
    assert "👍 or 👎" in unclear["responses"][0]["text"]


def test_a_rating_of_an_unknown_reply_is_an_apology_not_a_crash(
    action_server: ActionServer,
) -> None:
    result = call(
        action_server,
        action_call(
            "action_record_feedback",
            sender(),
            "👍",
            entities=({"entity": "supportbot_feedback", "value": "up"},),
            slots={REPLY_ID_SLOT: "no-such-reply"},
        ),
    )
    assert [m["text"] for m in result["responses"]] == [ERROR_TEXT]


def test_an_unknown_action_is_a_404(action_server: ActionServer) -> None:
    call(action_server, action_call("action_nope", sender(), "hi"), status=404)


def test_replies_handed_to_rasa_are_recorded_as_sent(action_server: ActionServer) -> None:
    """The action's response is the delivery: no reply is left "pending" for a sweeper."""
    store = action_server.services.store
    who = sender()
    answered = call(action_server, action_call("action_answer_from_kb", who, "How much is Plus?"))
    reply_id = slots(answered)[REPLY_ID_SLOT]
    down = thumbs_down(action_server, who, reply_id)
    assert down["responses"]  # the quick reasons
    handed = call(action_server, action_call("action_handoff_to_human", who, "/request_human"))
    assert slots(handed)[REPLY_KIND_SLOT] == "handoff"

    conversation = store.find_conversation(ConversationKey("rasa", "rest", who))
    assert conversation is not None
    with Session(store.engine) as session:
        rows = list(
            session.exec(select(ReplyRecord).where(ReplyRecord.conversation_id == conversation.id))
        )
    assert len(rows) >= 2 and reply_id in {r.id for r in rows}
    for row in rows:
        assert store.reply_delivery(row.id) == ("sent", 0), row.kind
        assert row.platform_ref == f"rasa:reply:{row.id}"
    # Even with every hold over, a sweeper finds nothing of this conversation to send.
    with Session(store.engine) as session:
        session.exec(  # type: ignore[call-overload]
            update(ReplyRecord)
            .where(col(ReplyRecord.conversation_id) == conversation.id)
            .values(claimed_until=utcnow() - timedelta(minutes=5))
        )
        session.commit()
    claimed = store.claim_replies(("rasa",), hold_s=30, limit=1000)
    assert {c.reply.id for c in claimed} & {r.id for r in rows} == set()
