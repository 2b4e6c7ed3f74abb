"""Zendesk answering 429 and 5xx storms: customers keep writing, every comment is answered once.

The emulator answers ticket writes with 429 (``Retry-After``, Zendesk's text body), 500 (the
comment added first, so the bot is told it failed though it exists), 502 and 503 in turn for a
few seconds, while customers on several tickets keep commenting. Afterwards every customer comment
has exactly one reply in the database and exactly one public comment of the bot after it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.adapters.zendesk.conftest import BOT_USER_ID, CUSTOMER_ID, Harness, comment_event
from tests.exactly_once import distinct_questions, replies_per_message, unanswered_or_twice

TICKETS = (7001, 7002, 7003)
COMMENTS_EACH = 2


def _customer(zendesk: Harness, ticket: int, questions: list[str]) -> list[str]:
    """Comment on ``ticket`` one question after another (each webhook answered first)."""
    sent = []
    for text in questions:
        with zendesk.emulator._lock:  # the comment exists on the ticket before its webhook
            comment = zendesk.emulator._comment(text, True, CUSTOMER_ID)
            zendesk.emulator.tickets[ticket]["comments"].append(comment)
        comment_id = comment["id"]
        response = zendesk.send(comment_event(ticket_id=ticket, comment_id=comment_id, body=text))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "done", response.json()
        sent.append(f"comment:{comment_id}")
    return sent


def test_every_comment_is_answered_once_through_a_storm(zendesk: Harness) -> None:
    emulator = zendesk.emulator
    for ticket in TICKETS:
        emulator.add_ticket(ticket)
    # Counted in calls, not seconds, so the storm is met however slow the machine.
    emulator.storm(statuses=(429, 500, 502, 503), calls=8, seconds=60.0, retry_after=1)
    questions = distinct_questions(len(TICKETS) * COMMENTS_EACH)
    with ThreadPoolExecutor(len(TICKETS)) as pool:
        sent_lists = list(
            pool.map(
                lambda i: _customer(
                    zendesk, TICKETS[i], questions[i * COMMENTS_EACH : (i + 1) * COMMENTS_EACH]
                ),
                range(len(TICKETS)),
            )
        )
    emulator.calm()

    assert set(emulator.storm_answers) == {429, 500, 502, 503}, emulator.storm_answers
    sent = [m for sent_list in sent_lists for m in sent_list]
    counts = replies_per_message(zendesk.services.store.engine, "zendesk")
    assert unanswered_or_twice(counts, sent) == {}
    for ticket in TICKETS:
        # Customer, bot, customer, bot: one public answer after each question, none twice.
        authors = [c["author_id"] for c in emulator.tickets[ticket]["comments"]]
        assert authors == [CUSTOMER_ID, BOT_USER_ID] * COMMENTS_EACH, authors
    # Every reply is remembered where it was posted.
    for ticket in TICKETS:
        for comment in emulator.bot_comments(ticket):
            ref = f"acme:{ticket}:{comment['id']}"
            assert zendesk.services.engine.reply_posted_as(ref) is not None, ref
