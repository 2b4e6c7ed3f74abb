"""Zendesk after a crash: a retried webhook, and replies stored but never posted (`bot.outbox`).

The database is left as a worker that died would leave it; the real app and the local Zendesk
do the rest.
"""

from __future__ import annotations

from adapters.zendesk import convert
from adapters.zendesk.adapter import ZendeskReplySender
from bot.model import Reply, Role
from bot.outbox import Destination, Sweeper
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


def test_a_stored_reply_is_posted_once_and_not_again_after_the_crash(zendesk: Harness) -> None:
    sweeper = Sweeper(zendesk.services.store, hold_s=30)
    sweeper.add_sender(ZendeskReplySender(zendesk.adapter))

    unsent = _stored_reply(zendesk, "Open Settings, then Reset password.")
    counts = zendesk.run(sweeper.sweep)
    assert counts.resent == 1
    (posted,) = zendesk.emulator.bot_comments(TICKET)
    info = zendesk.services.store.get_reply(unsent)
    assert info is not None and info.platform_ref == f"{SUBDOMAIN}:{TICKET}:{posted['id']}"

    # Posted by the dead worker, never recorded: found on the ticket, not added again.
    posted_before = _stored_reply(zendesk, "Use the link in the e-mail we sent.")
    zendesk.run(
        zendesk.adapter.add_reply_comment,
        TICKET,
        Reply.answer("Use the link in the e-mail we sent.", ()),
    )
    assert len(zendesk.emulator.bot_comments(TICKET)) == 2
    counts = zendesk.run(sweeper.sweep)
    assert counts.resent == 1
    assert len(zendesk.emulator.bot_comments(TICKET)) == 2
    assert zendesk.services.store.reply_delivery(posted_before) == ("sent", 1)
    assert not zendesk.run(sweeper.sweep)
