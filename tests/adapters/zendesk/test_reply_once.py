"""The bot's replies are added to a ticket once, found by their id on their update's audit.

Every reply comment's ticket update carries the reply's id as custom metadata (`REPLY_ID_KEY`);
after a try that may have reached Zendesk (a 500) the ticket's audits are read for it before the
next try. The ticket has earlier comments, and the emulator pages audits two at a time, so the
audit looked for is a few pages in. Replies are posted through the running app's adapter.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from adapters.zendesk.client import REPLY_ID_KEY, ZendeskError
from bot.model import Reply
from tests.adapters.zendesk.conftest import SUBDOMAIN, TICKET, Harness
from tests.adapters.zendesk.emulator import ZendeskEmulator

TEXT = "Open Settings, then Reset password."


def _reply(reply_id: str, text: str = TEXT) -> Reply:
    return replace(Reply.answer(text, ()), id=reply_id)


def _custom(emulator: ZendeskEmulator, comment: dict[str, Any]) -> Any:
    """The custom metadata on the audit that added `comment`."""
    return emulator.audit_of(TICKET, comment)["metadata"]["custom"]


def _reply_writes(emulator: ZendeskEmulator) -> int:
    return sum(
        1
        for c in emulator.writes(f"/api/v2/tickets/{TICKET}.json")
        if c.body["ticket"].get("metadata", {}).get(REPLY_ID_KEY)
    )


def test_a_reply_zendesk_applied_but_answered_500_to_is_added_once(zendesk: Harness) -> None:
    emulator = zendesk.emulator
    for n in range(4):
        emulator.add_comment(TICKET, f"earlier {n}")
    # Zendesk adds the comment and loses the answer.
    emulator.storm(statuses=(500,), calls=1, applied_500=True)

    comment_id, ref = zendesk.run(zendesk.adapter.add_reply_comment, TICKET, _reply("r-1"))

    assert emulator.storm_answers == [500]
    [posted] = emulator.bot_comments(TICKET)
    assert comment_id == posted["id"]
    assert ref == f"{SUBDOMAIN}:{TICKET}:{posted['id']}"
    assert _custom(emulator, posted) == {REPLY_ID_KEY: "r-1"}
    assert _reply_writes(emulator) == 1  # found, not sent again
    assert len(emulator.audit_reads()) > 1  # found a few pages in


def test_the_same_text_twice_in_a_row_is_two_comments(zendesk: Harness) -> None:
    """A second reply saying what the first said, whose first try is refused with a 500 before
    anything changed, is added: the first reply's comment is not taken for it."""
    emulator = zendesk.emulator
    first_id, _ = zendesk.run(zendesk.adapter.add_reply_comment, TICKET, _reply("r-1"))
    emulator.storm(statuses=(500,), calls=1, applied_500=False)

    second_id, ref = zendesk.run(zendesk.adapter.add_reply_comment, TICKET, _reply("r-2"))

    assert emulator.storm_answers == [500]
    first, second = emulator.bot_comments(TICKET)
    assert (first["id"], second["id"]) == (first_id, second_id)
    assert first["html_body"] == second["html_body"]
    assert ref == f"{SUBDOMAIN}:{TICKET}:{second_id}"
    assert _custom(emulator, second) == {REPLY_ID_KEY: "r-2"}
    assert emulator.audit_reads()  # looked for the second reply's audit, found none


def test_a_reply_without_an_id_is_retried_only_through_rate_limits(zendesk: Harness) -> None:
    """Nothing on Zendesk can tell whether such a reply's failed try arrived: it carries no
    metadata, a rate limit (nothing changed) is retried, a 500 is not."""
    emulator = zendesk.emulator
    emulator.storm(statuses=(429,), calls=3, retry_after=0)  # outlasts the client's 2 retries
    comment_id, _ = zendesk.run(zendesk.adapter.add_reply_comment, TICKET, _reply(""))
    [posted] = emulator.bot_comments(TICKET)
    assert comment_id == posted["id"]
    assert _custom(emulator, posted) == {}

    emulator.storm(statuses=(500,), calls=1, applied_500=True)
    with pytest.raises(ZendeskError) as caught:
        zendesk.run(zendesk.adapter.add_reply_comment, TICKET, _reply("", "Anything else?"))
    assert caught.value.status == 500
    assert len(emulator.bot_comments(TICKET)) == 2  # applied once, not sent again
    assert emulator.storm_answers == [429, 429, 429, 500]
    assert not emulator.audit_reads()
