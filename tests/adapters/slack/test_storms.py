"""Slack answering 429 and 5xx storms: customers keep writing, every message is answered once.

The emulator answers ``chat.postMessage`` with 429 ``ratelimited`` (``Retry-After``), 500 (taking
effect first, so the message exists though the bot was told it failed), 502 and 503 in turn for a
few seconds. Afterwards every customer message has exactly one reply in the database and exactly
one message on the emulator carrying that reply's id.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections import Counter
from typing import Any

from adapters.slack import convert
from bot.model import ConversationKey
from tests.adapters.slack.conftest import Harness, payload
from tests.adapters.slack.emulator import TEAM
from tests.exactly_once import (
    distinct_questions,
    replies_per_message,
    unanswered_or_twice,
    wait_until,
)

CUSTOMERS = 4
MESSAGES_EACH = 3


def _dm(customer: int, number: int, text: str) -> dict[str, Any]:
    body = copy.deepcopy(payload("message_im"))
    ts = f"17000{customer:02d}{number:03d}.000100"
    event = body["event"]
    event.update(
        {
            "text": text,
            "user": f"U0STORM{customer}",
            "channel": f"D0STORM{customer}",
            "ts": ts,
            "event_ts": ts,
            "client_msg_id": f"storm-{customer}-{number}",
        }
    )
    body["event_id"] = f"Ev0STORM{customer}x{number}"
    return body


async def _customer(slack: Harness, customer: int, questions: list[str]) -> list[str]:
    """Send one message after another, each once the previous one's answer is recorded."""
    sent = []
    key = ConversationKey("slack", TEAM, f"D0STORM{customer}", "")
    for number, text in enumerate(questions):
        body = _dm(customer, number, text)
        response = await slack.send(body)
        assert response.status_code == 200
        message_id = convert.message_id(f"D0STORM{customer}", body["event"]["ts"])
        sent.append(message_id)
        await wait_until(
            functools.partial(slack.services.store.reply_for_message, key, message_id),
            60,
            f"a reply to {message_id}",
        )
    return sent


async def test_every_message_is_answered_once_through_a_storm(slack: Harness) -> None:
    emulator = slack.emulator
    # Counted in calls, not seconds, so the storm is met however slow the machine: six errors
    # (429, 500, 502, 503, 429, 500), which even a single post meeting all of them outlasts.
    storm = emulator.storm(statuses=(429, 500, 502, 503), calls=6, seconds=60.0, retry_after=1)
    questions = distinct_questions(CUSTOMERS * MESSAGES_EACH)
    sent_lists = await asyncio.gather(
        *(
            _customer(slack, c, questions[c * MESSAGES_EACH : (c + 1) * MESSAGES_EACH])
            for c in range(CUSTOMERS)
        )
    )
    await slack.adapter.drain(90)
    emulator.calm()

    # The storm was real: every kind of error was answered, to posts that then succeeded.
    assert set(emulator.storm_answers) == {429, 500, 502, 503}, emulator.storm_answers
    assert storm.answered == 6  # every error was met: posts succeed only after the storm

    sent = [ts for sent_list in sent_lists for ts in sent_list]
    counts = replies_per_message(slack.services.store.engine, "slack")
    assert unanswered_or_twice(counts, sent) == {}

    # On Slack: one message per reply, each reply posted exactly once and remembered where.
    carried = Counter(
        message["metadata"]["event_payload"]["reply_id"]
        for channel, messages in emulator.messages.items()
        if channel.startswith("D0STORM")
        for message in messages
        if message.get("metadata")
    )
    assert len(carried) == len(sent)
    assert set(carried.values()) == {1}, carried
    for reply_id in carried:
        info = slack.services.store.get_reply(reply_id)
        assert info is not None and info.platform_ref, reply_id
