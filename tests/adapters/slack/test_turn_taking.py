"""Turn-taking on Slack, end to end: bursts are one turn, people in shared channels get a head
start, and a ✅ from the customer resolves the conversation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import SlackSettings
from bot.model import ConversationKey
from bot.service import Services
from knowledge.base import KnowledgeBase
from policies.config import PolicyConfig
from tests.adapters.slack.conftest import (
    AUTO_CHANNEL,
    TEST_BURST_WINDOW_S,
    Harness,
    build_test_services,
    payload,
    serve,
    short_policies,
)
from tests.adapters.slack.emulator import TEAM, SlackEmulator

DM = "D0DM"
DM_KEY = ConversationKey("slack", TEAM, DM, "")


def _dm(text: str, ts: str, *, user: str = "U0CUST") -> dict[str, Any]:
    body = payload("message_im")
    body["event"].update(text=text, ts=ts, event_ts=ts, user=user)
    body["event"].pop("client_msg_id", None)
    body["event_id"] = f"Ev{ts.replace('.', '')}"
    return body


def _channel(text: str, ts: str, *, user: str, thread_ts: str | None = None) -> dict[str, Any]:
    body = payload("message_channel")
    body["event"].update(text=text, ts=ts, event_ts=ts, user=user)
    if thread_ts is not None:
        body["event"]["thread_ts"] = thread_ts
    body["event_id"] = f"Ev{ts.replace('.', '')}"
    return body


def _check(ts: str, *, channel: str = DM, user: str = "U0CUST") -> dict[str, Any]:
    body = payload("reaction_added")
    body["event"].update(reaction="white_check_mark", user=user)
    body["event"]["item"].update(channel=channel, ts=ts)
    body["event_id"] = f"EvCHECK{ts.replace('.', '')}{user}"
    return body


@pytest.fixture
async def harness_with(
    tmp_path: Path, slack_kb: KnowledgeBase, slack_settings: SlackSettings, emulator: SlackEmulator
) -> AsyncIterator[Any]:
    """`async with harness_with(policies) as slack:` serves Slack with these policies."""
    made: list[Services] = []

    def start(policies: PolicyConfig) -> Any:
        built = build_test_services(
            f"sqlite:///{tmp_path / f'turns{len(made)}.db'}", tmp_path, slack_kb, policies=policies
        )
        made.append(built)
        return serve(built, slack_settings, emulator)

    yield start
    for built in made:
        built.store.close()


async def test_a_burst_of_three_messages_gets_one_answer(harness_with: Any) -> None:
    async with harness_with(short_policies(burst_window_seconds=1.0)) as slack:
        for i, text in enumerate(
            ["hi", "I can't get into my account", "how do I reset my password?"]
        ):
            response = await slack.send(_dm(text, f"1700000200.00030{i}"))
            assert response.status_code == 200
        await slack.settle()

        posts = slack.emulator.calls_to("chat.postMessage")
        assert len(posts) == 1
        assert posts[0].params["channel"] == DM
        assert "thread_ts" not in posts[0].params  # a DM is answered at the top level
        conversation = slack.services.store.find_conversation(DM_KEY)
        assert conversation is not None
        texts = [turn.text for turn in slack.services.store.history(conversation.id)]
        assert texts[:3] == ["hi", "I can't get into my account", "how do I reset my password?"]
        assert len(texts) == 4  # three messages, one reply


async def test_messages_further_apart_than_the_window_are_separate_turns(slack: Harness) -> None:
    assert slack.services.engine.timing_for(DM_KEY).burst_window_s == TEST_BURST_WINDOW_S
    await slack.send(_dm("How do I reset my password?", "1700000200.000300"))
    await slack.settle()
    await slack.send(_dm("Can I export my notes to PDF?", "1700000201.000300"))
    await slack.settle()
    assert len(slack.emulator.calls_to("chat.postMessage")) == 2


def _head_start(seconds: float) -> PolicyConfig:
    return PolicyConfig.from_mapping(
        {
            "turn_taking": {"burst_window_seconds": TEST_BURST_WINDOW_S},
            "channels": {f"slack:{AUTO_CHANNEL}": {"turn_taking": {"head_start_seconds": seconds}}},
        },
        "tests",
    )


async def test_another_person_answering_within_the_head_start_keeps_the_bot_quiet(
    harness_with: Any,
) -> None:
    question = "1700000300.000500"
    async with harness_with(_head_start(10.0)) as slack:
        await slack.send(_channel("Can I export my notes to PDF?", question, user="U0CUST"))
        await slack.send(
            _channel("Yes, File > Export.", "1700000301.000100", user="U0MATE", thread_ts=question)
        )
        await slack.settle()

        assert slack.emulator.calls_to("chat.postMessage") == []
        # The customer's question is still recorded, unanswered.
        key = ConversationKey("slack", TEAM, AUTO_CHANNEL, question)
        conversation = slack.services.store.find_conversation(key)
        assert conversation is not None
        assert conversation.customer == "U0CUST"
        texts = [turn.text for turn in slack.services.store.history(conversation.id)]
        assert texts == ["Can I export my notes to PDF?", "Yes, File > Export."]


async def test_with_a_head_start_and_nobody_answering_the_bot_answers_in_the_thread(
    harness_with: Any,
) -> None:
    question = "1700000300.000500"
    async with harness_with(_head_start(0.3)) as slack:
        await slack.send(_channel("Can I export my notes to PDF?", question, user="U0CUST"))
        # The customer's own follow-up in the thread does not cancel their turn.
        await slack.send(
            _channel("as a PDF file", "1700000300.000600", user="U0CUST", thread_ts=question)
        )
        await slack.settle()
        [post] = slack.emulator.calls_to("chat.postMessage")
        assert post.params["channel"] == AUTO_CHANNEL
        assert post.params["thread_ts"] == question


async def _answered_dm(slack: Harness) -> str:
    await slack.send(_dm("How do I reset my password?", "1700000200.000300"))
    await slack.settle()
    assert len(slack.emulator.calls_to("chat.postMessage")) == 1
    return str(slack.emulator.messages[DM][-1]["ts"])


async def test_a_check_mark_from_the_customer_resolves_and_thanks_gets_no_answer(
    slack: Harness,
) -> None:
    answer_ts = await _answered_dm(slack)
    await slack.send(_check(answer_ts))
    await slack.settle()
    conversation = slack.services.store.find_conversation(DM_KEY)
    assert conversation is not None and conversation.status == "closed"

    await slack.send(_dm("thanks", "1700000210.000100"))
    await slack.settle()
    assert len(slack.emulator.calls_to("chat.postMessage")) == 1  # still only the answer

    # A new question reopens the conversation and is answered.
    await slack.send(_dm("Can I export my notes to PDF?", "1700000220.000100"))
    await slack.settle()
    assert len(slack.emulator.calls_to("chat.postMessage")) == 2


async def test_a_check_mark_from_someone_else_or_on_another_message_resolves_nothing(
    slack: Harness,
) -> None:
    answer_ts = await _answered_dm(slack)
    await slack.send(_check(answer_ts, user="U0MATE"))
    # A message the bot knows nothing of (a channel message outside its conversations).
    await slack.send(_check("1600000000.000100", channel="C0GENERAL"))
    await slack.settle()
    conversation = slack.services.store.find_conversation(DM_KEY)
    assert conversation is not None and conversation.status == "open"


async def test_a_check_mark_on_the_customers_own_question_resolves_the_thread(
    slack: Harness,
) -> None:
    question = "1700000300.000500"
    await slack.send(_channel("Can I export my notes to PDF?", question, user="U0CUST"))
    await slack.settle()
    await slack.send(_check(question, channel=AUTO_CHANNEL))
    await slack.settle()
    key = ConversationKey("slack", TEAM, AUTO_CHANNEL, question)
    conversation = slack.services.store.find_conversation(key)
    assert conversation is not None and conversation.status == "closed"
