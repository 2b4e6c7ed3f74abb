"""Zendesk after a crash: a retried webhook, and replies stored but never posted (`bot.outbox`).

The database is left as a worker that died would leave it; the real app and the local Zendesk
do the rest. A re-sent reply is looked for by its id on the ticket's audits (the emulator pages
them two at a time), so a comment the dead worker added is found however far back it is, and a
reply that says what the one before it said is still posted.
"""

from __future__ import annotations

from adapters.zendesk import convert
from adapters.zendesk.adapter import ZendeskReplySender
from adapters.zendesk.client import REPLY_ID_KEY
from bot.model import Reply, Role
from bot.outbox import Destination, Sweeper, reply_from_stored
from tests.adapters.zendesk.conftest import SUBDOMAIN, TICKET, Harness, payload


def _comment() -> convert.TicketComment:
    comment = convert.parse_event(payload("comment_added_customer"))
    assert comment is not None
    return comment


def test_a_webhook_retried_after_a_worker_died_mid_turn_is_answered_once(
    zendesk: Harness,
) -> None:
    comment = _comment()
    store = zendesk.services.store
    # The dead worker claimed the comment and the engine claimed the message, then it died.
    assert store.claim_event("zendesk", f"comment:{SUBDOMAIN}:{comment.message_id}")
    assert store.claim_event("zendesk", f"message:{SUBDOMAIN}:{comment.message_id}")

    retried = zendesk.send(payload("comment_added_customer"))

    assert retried.json() == {"status": "done", "route": "answer", "replies": 1}
    assert len(zendesk.emulator.bot_comments(TICKET)) == 1
    again = zendesk.send(payload("comment_added_customer"))
    assert again.json()["status"] == "duplicate"
    assert len(zendesk.emulator.bot_comments(TICKET)) == 1
    assert zendesk.counts()["reply"] == 1


def _stored_reply(zendesk: Harness, text: str) -> str:
    """A reply on the ticket stored by a worker that died before posting it."""
    store = zendesk.services.store
    key = convert.conversation_key(SUBDOMAIN, TICKET)
    conversation = store.get_or_create_conversation(key, "5001")
    row = store.add_message(conversation.id, Role.USER, "5001", "How do I reset it?", "q")
    reply = Reply.answer(text, ())
    destination = Destination("zendesk", key.workspace, key.channel, key.thread, "q")
    return store.add_reply(
        conversation.id, row, reply, destination=destination.to_json(), hold_s=-1
    )


def _sweeper(zendesk: Harness) -> Sweeper:
    sweeper = Sweeper(zendesk.services.store, hold_s=30)
    sweeper.add_sender(ZendeskReplySender(zendesk.adapter))
    return sweeper


def _ref_of(zendesk: Harness, reply_id: str) -> str | None:
    info = zendesk.services.store.get_reply(reply_id)
    assert info is not None
    return info.platform_ref


def test_a_stored_reply_is_posted_once_and_not_again_after_the_crash(zendesk: Harness) -> None:
    sweeper = _sweeper(zendesk)
    emulator = zendesk.emulator

    unsent = _stored_reply(zendesk, "Open Settings, then Reset password.")
    counts = zendesk.run(sweeper.sweep)
    assert counts.resent == 1
    (posted,) = emulator.bot_comments(TICKET)
    assert _ref_of(zendesk, unsent) == f"{SUBDOMAIN}:{TICKET}:{posted['id']}"

    # Posted by the dead worker, never recorded, on a ticket agents write on (before and after),
    # so its audit is pages in: found by the reply's id, not added again.
    posted_before = _stored_reply(zendesk, "Use the link in the e-mail we sent.")
    info = zendesk.services.store.get_reply(posted_before)
    assert info is not None
    for n in range(4):
        emulator.add_comment(TICKET, f"agent {n}")
    zendesk.run(zendesk.adapter.add_reply_comment, TICKET, reply_from_stored(info))
    for n in range(2):
        emulator.add_comment(TICKET, f"agent, later {n}")
    (_, dead_workers) = emulator.bot_comments(TICKET)
    reads_before = len(emulator.audit_reads())
    counts = zendesk.run(sweeper.sweep)
    assert counts.resent == 1
    assert len(emulator.bot_comments(TICKET)) == 2
    assert _ref_of(zendesk, posted_before) == f"{SUBDOMAIN}:{TICKET}:{dead_workers['id']}"
    assert len(emulator.audit_reads()) - reads_before > 2  # the audits took several pages
    assert zendesk.services.store.reply_delivery(posted_before) == ("sent", 1)
    assert not zendesk.run(sweeper.sweep)


def test_a_stored_reply_that_says_what_the_last_one_said_is_posted(zendesk: Harness) -> None:
    """Two replies with the same text in a row (the same fallback twice): the second, left
    unsent by a dead worker, is not taken for the first one's comment."""
    sweeper = _sweeper(zendesk)
    emulator = zendesk.emulator
    text = "I could not find that. Talk to a person?"
    first = _stored_reply(zendesk, text)
    assert zendesk.run(sweeper.sweep).resent == 1
    second = _stored_reply(zendesk, text)
    assert zendesk.run(sweeper.sweep).resent == 1

    comments = emulator.bot_comments(TICKET)
    assert [c["html_body"] for c in comments] == [comments[0]["html_body"]] * 2
    for reply_id, comment in zip((first, second), comments, strict=True):
        assert _ref_of(zendesk, reply_id) == f"{SUBDOMAIN}:{TICKET}:{comment['id']}"
        custom = emulator.audit_of(TICKET, comment)["metadata"]["custom"]
        assert custom == {REPLY_ID_KEY: reply_id}
