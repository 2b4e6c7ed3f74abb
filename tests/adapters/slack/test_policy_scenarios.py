"""Whole conversations through the Slack emulator: the conversation policies as a customer meets
them on Slack, and a human agent taking a conversation over by replying in the customer's thread.

Every message is a signed Events API request (or an interactivity payload) to the real web app;
the replies are read off what the emulator received. Bursts, head start and resolved threads are
in `test_turn_taking.py`; the relay between the agents' channel and the customer in
`test_relay.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from adapters.slack import SlackSettings
from bot.engine import Engine, Responder
from bot.model import ConversationKey, Owner, ReplyKind, Role
from bot.relay import Relay, RelayConfig
from bot.service import Services, confidence_model
from bot.settings import Settings
from bot.storage.store import Store
from bot.storage.tables import Handoff
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from policies.config import PolicyConfig
from tests.adapters.slack.conftest import (
    AGENTS_CHANNEL,
    AUTO_CHANNEL,
    TEST_BURST_WINDOW_S,
    Harness,
    make_settings,
    payload,
    serve,
)
from tests.adapters.slack.emulator import TEAM, SlackEmulator

DM = "D0DM"
CUSTOMER = "U0CUST"
AGENT = "U0AGENT"
_ids = count(1)


def _stamp() -> str:
    return f"1700100{next(_ids):03d}.000100"


@dataclass
class Said:
    """One message the bot posted in the conversation."""

    text: str
    kind: ReplyKind | None  # None: not a reply of the engine (e.g. the relay's notice)
    sources: tuple[str, ...]
    buttons: tuple[str, ...]
    ts: str


@dataclass
class Customer:
    """One customer talking to the bot through the emulator: in the DM, or in a thread of the
    auto-answer channel (opened by their first message)."""

    slack: Harness
    channel: str = DM
    user: str = CUSTOMER
    thread: str | None = None
    seen: int = 0
    said: list[Said] = field(default_factory=list)

    @property
    def key(self) -> ConversationKey:
        return ConversationKey("slack", TEAM, self.channel, self.thread or "")

    def event(self, text: str, user: str, ts: str) -> dict[str, Any]:
        if self.channel == DM:
            body = payload("message_im")
            body["event"].pop("client_msg_id", None)
        else:
            body = payload("message_channel")
            body["event"]["channel"] = self.channel
            if self.thread is not None:
                body["event"]["thread_ts"] = self.thread
        body["event"].update(text=text, ts=ts, event_ts=ts, user=user)
        body["event_id"] = f"Ev{ts.replace('.', '')}"
        return body

    async def send(self, text: str, *, user: str | None = None) -> list[Said]:
        """Post a message in the conversation (as the customer, or as `user`); returns what the
        bot posted there in answer."""
        ts = _stamp()
        if self.channel != DM and self.thread is None:
            self.thread = ts
        response = await self.slack.send(self.event(text, user or self.user, ts))
        assert response.status_code == 200
        await self.slack.settle()
        return self.new_posts()

    async def say(self, text: str) -> Said:
        """Ask and expect exactly one reply."""
        posts = await self.send(text)
        assert len(posts) == 1, f"expected one reply to {text!r}, got {posts}"
        return posts[0]

    def new_posts(self) -> list[Said]:
        """What the bot posted in this conversation since last asked."""
        store = self.slack.services.store
        mine = [
            m
            for m in self.slack.emulator.messages[self.channel]
            if self.channel == DM or m.get("thread_ts") == self.thread
        ]
        fresh = mine[self.seen :]
        self.seen = len(mine)
        out: list[Said] = []
        for message in fresh:
            reply_id = (message.get("metadata") or {}).get("event_payload", {}).get("reply_id")
            reply = store.get_reply(reply_id) if reply_id else None
            buttons = tuple(
                element["action_id"]
                for block in message.get("blocks") or ()
                if block.get("type") == "actions"
                for element in block.get("elements", ())
            )
            out.append(
                Said(
                    text=message["text"],
                    kind=reply.kind if reply else None,
                    sources=tuple(s.id for s in reply.sources) if reply else (),
                    buttons=buttons,
                    ts=str(message["ts"]),
                )
            )
        self.said.extend(out)
        return out

    def owner(self) -> Owner | None:
        return self.slack.services.engine.owner_of(self.key)

    def handoffs(self) -> list[Handoff]:
        conversation = self.slack.services.store.find_conversation(self.key)
        assert conversation is not None
        with Session(self.slack.services.store.engine) as session:
            query = (
                select(Handoff)
                .where(Handoff.conversation_id == conversation.id)
                .order_by(col(Handoff.id))
            )
            return list(session.exec(query).all())

    def history(self) -> list[tuple[Role, str]]:
        conversation = self.slack.services.store.find_conversation(self.key)
        assert conversation is not None
        return [(t.role, t.text) for t in self.slack.services.store.history(conversation.id, 50)]


def _policies(**sections: Any) -> PolicyConfig:
    data: dict[str, Any] = {"turn_taking": {"burst_window_seconds": TEST_BURST_WINDOW_S}}
    data.update(sections)
    return PolicyConfig.from_mapping(data, "tests")


Serve = Callable[..., AbstractAsyncContextManager[Harness]]


@pytest.fixture
async def harness_with(
    tmp_path: Path, slack_kb: KnowledgeBase, emulator: SlackEmulator
) -> AsyncIterator[Serve]:
    """`async with harness_with(policies=..., relay_timeout=..., **settings) as slack:`."""
    stores: list[Store] = []

    def start(
        *,
        policies: PolicyConfig | None = None,
        relay_timeout: float | None = None,
        **overrides: Any,
    ) -> AbstractAsyncContextManager[Harness]:
        store = Store.from_url(f"sqlite:///{tmp_path / f'scenario{len(stores)}.db'}")
        stores.append(store)
        relay = None
        if relay_timeout is not None:
            relay = Relay(store, RelayConfig(desk="slack", timeout_s=relay_timeout, poll_s=0.05))
        retriever = Retriever(slack_kb)
        engine = Engine(
            store,
            Responder(retriever, confidence_model(slack_kb)),
            policies=policies or _policies(),
            handoff_sink=relay,
        )
        services = Services(Settings(data_dir=tmp_path), store, slack_kb, retriever, engine, relay)
        settings = make_settings(emulator, **{"agent_users": [AGENT], **overrides})
        return serve(services, settings, emulator)

    yield start
    for store in stores:
        store.close()


@pytest.fixture
async def slack(harness_with: Serve) -> AsyncIterator[Harness]:
    async with harness_with() as harness:
        yield harness


def _assert_handed_over(customer: Customer, said: Said, reason: str) -> None:
    assert said.kind is ReplyKind.HANDOFF, said
    assert customer.owner() is Owner.HUMAN
    last = customer.handoffs()[-1]
    assert (last.to_owner, last.actor) == ("human", "bot")
    assert last.reason is not None and last.reason.startswith(reason), last.reason


async def _assert_silent(customer: Customer) -> None:
    assert await customer.send("hello? anyone there?") == []
    assert customer.history()[-1] == (Role.USER, "hello? anyone there?")


# Repeated questions and abuse ------------------------------------------------------------------


async def test_the_same_question_twice_never_gets_the_same_answer(slack: Harness) -> None:
    customer = Customer(slack)
    first = await customer.say("How do I reset my password?")
    second = await customer.say("How do I reset my password?")

    assert first.kind is ReplyKind.ANSWER and first.sources == ("reset-password",)
    assert second.kind in (ReplyKind.CLARIFY, ReplyKind.FALLBACK)
    assert second.text != first.text
    assert "reset-password" not in second.sources
    assert "handoff" in second.buttons  # a person is offered, as a button on Slack
    assert customer.owner() is Owner.BOT


async def test_abuse_gets_a_calm_reply_then_a_person(slack: Harness) -> None:
    customer = Customer(slack)
    calm = await customer.say("you stupid bot")
    assert calm.kind is ReplyKind.SMALLTALK
    assert "sorry" not in calm.text.lower()
    assert "handoff" in calm.buttons
    assert customer.owner() is Owner.BOT

    handed = await customer.say("how do I sync my notes, idiot")
    _assert_handed_over(customer, handed, "abuse:2")
    await _assert_silent(customer)


# Each escalation trigger -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["I'd like to talk to a person", "can I speak to a human?"])
async def test_asking_for_a_person_hands_over(slack: Harness, text: str) -> None:
    customer = Customer(slack, channel=AUTO_CHANNEL)
    await customer.say("My invoices show the wrong company name")
    handed = await customer.say(text)
    _assert_handed_over(customer, handed, "customer_request")
    await _assert_silent(customer)


async def test_the_talk_to_a_person_button_hands_over(slack: Harness) -> None:
    customer = Customer(slack)
    miss = await customer.say("What's the weather in Paris tomorrow?")
    assert miss.kind is ReplyKind.FALLBACK and "handoff" in miss.buttons

    click = payload("block_actions")
    click["container"].update(channel_id=DM, message_ts=miss.ts)
    click["container"].pop("thread_ts")
    click["channel"] = {"id": DM, "name": "directmessage"}
    click["message"].update(ts=miss.ts, text=miss.text)
    click["message"].pop("thread_ts")
    click["actions"][0].update(action_id="handoff", value="", action_ts="1700100900.000100")
    response = await slack.click(click)
    await slack.settle()

    assert response.status_code == 200
    [handed] = customer.new_posts()
    _assert_handed_over(customer, handed, "customer_request")
    await _assert_silent(customer)


async def test_repeated_misses_hand_over_where_configured(harness_with: Serve) -> None:
    policies = _policies(fallback={"misses_before_offer": 2, "handoff_on_misses": "perform"})
    async with harness_with(policies=policies) as slack:
        customer = Customer(slack)
        first = await customer.say("What's the weather in Paris tomorrow?")
        assert first.kind is ReplyKind.FALLBACK
        handed = await customer.say("Give me a lasagna recipe")
        _assert_handed_over(customer, handed, "repeated_misses:2")
        await _assert_silent(customer)


async def test_a_thumbs_down_reaction_then_the_same_question_hands_over(slack: Harness) -> None:
    customer = Customer(slack)
    answer = await customer.say("How do I export a note as a PDF?")
    assert answer.kind is ReplyKind.ANSWER

    reaction = payload("reaction_added")
    reaction["event"].update(reaction="-1", user=CUSTOMER)
    reaction["event"]["item"].update(channel=DM, ts=answer.ts)
    reaction["event_id"] = "Ev0SCENARIODOWN"
    await slack.send(reaction)
    await slack.settle()
    customer.new_posts()  # whatever the 👎 itself is acknowledged with

    handed = await customer.say("How do I export a note as a PDF?")
    _assert_handed_over(customer, handed, "thumbs_down_repeat")


async def test_negative_sentiment_without_an_answer_hands_over(slack: Harness) -> None:
    customer = Customer(slack)
    handed = await customer.say(
        "This is useless, I am so angry, nothing works and I lost everything!!!"
    )
    _assert_handed_over(customer, handed, "negative_sentiment")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I was charged twice for Plus this month", "topic:billing_dispute"),
        ("I want to terminate my contract with you", "topic:cancellation"),
        ("My lawyer will be in touch about my data", "topic:legal"),
        ("There was a data breach on my account", "keyword:data breach"),
    ],
)
async def test_configured_topics_and_keywords_hand_over(
    harness_with: Serve, text: str, reason: str
) -> None:
    policies = _policies(escalation={"keywords": ["data breach"]})
    async with harness_with(policies=policies) as slack:
        customer = Customer(slack, channel=AUTO_CHANNEL)
        handed = await customer.say(text)
        _assert_handed_over(customer, handed, reason)
        assert customer.handoffs()[-1].reason == reason


# Native agent takeover -------------------------------------------------------------------------


async def test_an_agent_replying_in_the_thread_takes_over_until_release(slack: Harness) -> None:
    customer = Customer(slack, channel=AUTO_CHANNEL)
    first = await customer.say("How do I reset my password?")
    assert first.kind is ReplyKind.ANSWER
    before = datetime.now(UTC)

    assert await customer.send("Hi, Ana from support here. Let me check.", user=AGENT) == []

    assert customer.owner() is Owner.HUMAN
    took = customer.handoffs()[-1]
    assert (took.from_owner, took.to_owner, took.actor, took.reason) == (
        "bot",
        "human",
        AGENT,
        "agent replied",
    )
    stamp = took.created_at if took.created_at.tzinfo else took.created_at.replace(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert customer.history()[-1] == (Role.AGENT, "Hi, Ana from support here. Let me check.")

    # While the agent owns it the bot says nothing, whatever the customer writes.
    assert await customer.send("Thanks! Also, how do I export a note as a PDF?") == []
    assert await customer.send("I want to talk to a person") == []

    assert await customer.send("!release", user=AGENT) == []
    assert customer.owner() is Owner.BOT
    back = customer.handoffs()[-1]
    assert (back.to_owner, back.actor, back.reason) == ("bot", AGENT, "released")

    answer = await customer.say("How do I export a note as a PDF?")
    assert answer.kind is ReplyKind.ANSWER and answer.sources == ("export-pdf",)


async def test_an_agent_cancels_the_pending_answer_and_resolve_closes(
    harness_with: Serve,
) -> None:
    async with harness_with(policies=_policies(turn_taking={"burst_window_seconds": 1.0})) as slack:
        customer = Customer(slack, channel=AUTO_CHANNEL)
        # The question waits for the burst window; the agent answers within it.
        question = customer.event("Can I export my notes to PDF?", CUSTOMER, _stamp())
        customer.thread = question["event"]["ts"]
        await slack.send(question)
        assert await customer.send("Yes: File > Export > PDF.", user=AGENT) == []
        assert slack.emulator.posts() == []
        assert customer.owner() is Owner.HUMAN
        assert customer.history() == [
            (Role.USER, "Can I export my notes to PDF?"),
            (Role.AGENT, "Yes: File > Export > PDF."),
        ]

        assert await customer.send("!resolve", user=AGENT) == []
        conversation = slack.services.store.find_conversation(customer.key)
        assert conversation is not None
        assert (conversation.owner, conversation.status) == (Owner.BOT, "closed")
        assert await customer.send("thanks!") == []  # a resolved thread stays quiet


async def test_agent_message_retried_and_colleagues_and_edits_change_nothing(
    slack: Harness,
) -> None:
    customer = Customer(slack, channel=AUTO_CHANNEL)
    await customer.say("How do I reset my password?")
    ts = _stamp()
    reply = customer.event("On it.", AGENT, ts)
    await slack.send(reply)
    await slack.send(reply, headers={"X-Slack-Retry-Num": "1"})
    await slack.send(dict(reply, event_id="Ev0OTHERDELIVERY"))
    await slack.settle()
    assert [h.actor for h in customer.handoffs()] == [AGENT]
    assert customer.history().count((Role.AGENT, "On it.")) == 1

    # The agent corrects the reply: not a question for the bot.
    edit = payload("message_changed")
    edit["event"]["channel"] = AUTO_CHANNEL
    edit["event"]["message"].update(
        user=AGENT,
        ts=ts,
        thread_ts=customer.thread,
        text="On it!",
        edited={"user": AGENT, "ts": _stamp()},
    )
    edit["event"]["previous_message"].update(user=AGENT, ts=ts, text="On it.")
    edit["event_id"] = "Ev0AGENTEDIT"
    await slack.send(edit)
    await slack.settle()
    assert customer.new_posts() == []
    assert customer.history()[-1] == (Role.AGENT, "On it.")


async def test_someone_not_an_agent_is_not_a_takeover_and_agents_ask_like_anyone(
    slack: Harness,
) -> None:
    customer = Customer(slack, channel=AUTO_CHANNEL)
    await customer.say("How do I reset my password?")
    await customer.send("same problem here", user="U0MATE")
    assert customer.owner() is Owner.BOT
    assert customer.handoffs() == []

    # An agent asking their own question in the auto-answer channel is a customer there.
    own = Customer(slack, channel=AUTO_CHANNEL, user=AGENT)
    answer = await own.say("How do I reset my password?")
    assert answer.kind is ReplyKind.ANSWER
    follow = await own.say("Can I export my notes to PDF?")
    assert follow.kind is not None
    assert own.owner() is Owner.BOT


async def test_members_of_the_agents_channel_are_agents(
    harness_with: Serve, emulator: SlackEmulator
) -> None:
    emulator.members[AGENTS_CHANNEL] = ["U0LEAD", "U0BOT", "U0SAM"]  # two pages
    async with harness_with(agent_users=[], agents_from_channel=True) as slack:
        await emulator.wait_for(lambda: slack.adapter.agents.is_agent("U0SAM"))
        assert not slack.adapter.agents.is_agent(CUSTOMER)
        customer = Customer(slack, channel=AUTO_CHANNEL)
        await customer.say("How do I reset my password?")
        assert await customer.send("Sam here, I'll take this one.", user="U0SAM") == []
        assert customer.owner() is Owner.HUMAN
        assert customer.handoffs()[-1].actor == "U0SAM"
    assert [c.params.get("cursor") or "" for c in emulator.calls_to("conversations.members")][
        :2
    ] == ["", "2"]


async def test_an_agent_answering_a_handed_over_thread_claims_the_relay(
    harness_with: Serve,
) -> None:
    async with harness_with(relay_timeout=0.5) as slack:
        relay = slack.services.relay
        assert relay is not None
        customer = Customer(slack, channel=AUTO_CHANNEL)
        handed = await customer.say("I want to talk to a person")
        _assert_handed_over(customer, handed, "customer_request")
        store = slack.services.store
        conversation = store.find_conversation(customer.key)
        assert conversation is not None
        await slack.emulator.wait_for(
            lambda: (
                (link := store.relay_link(conversation.id)) is not None
                and bool(link.card_ref)
                and not link.card_ref.startswith("opening:")
            )
        )

        assert await customer.send("Hi, Ana here: what do you need?", user=AGENT) == []
        link = store.relay_link(conversation.id)
        assert link is not None and (link.state, link.claimed_by) == ("claimed", AGENT)
        took = customer.handoffs()[-1]
        assert (took.from_owner, took.to_owner, took.actor) == ("human", "human", AGENT)
        assert took.reason == "agent replied"
        card_ts = link.card_ref.split(":", 1)[1] if link.card_ref else ""
        await slack.emulator.wait_for(
            lambda: any(
                m.get("thread_ts") == card_ts and AGENT in m["text"]
                for m in slack.emulator.messages[AGENTS_CHANNEL]
            )
        )

        # Past the relay's timeout: a claimed conversation is not given back.
        await asyncio.sleep(0.8)
        assert relay.check_timeouts() == 0
        assert customer.owner() is Owner.HUMAN

        await customer.send("!release", user=AGENT)

        def told_released() -> bool:
            customer.new_posts()
            return any(s.text == relay.config.released_text for s in customer.said)

        await slack.emulator.wait_for(told_released)
        assert customer.owner() is Owner.BOT
        link = store.relay_link(conversation.id)
        assert link is not None and link.state == "released"


# Agent settings --------------------------------------------------------------------------------


def test_agent_settings_from_the_environment_and_their_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "secret")
    monkeypatch.setenv("SLACK_AGENT_USERS", "U0ANA, W0SAM")
    settings = SlackSettings.from_env()
    assert settings.agent_users == ["U0ANA", "W0SAM"]
    assert settings.problems() == []

    wrong = SlackSettings(
        bot_token="xoxb-1", signing_secret="s", agent_users=["ana"], agents_from_channel=True
    )
    problems = " ".join(wrong.problems())
    assert "not ['ana']" in problems and "Copy member ID" in problems
    assert "SUPPORTBOT_SLACK_AGENTS_FROM_CHANNEL needs SUPPORTBOT_SLACK_AGENTS_CHANNEL" in problems
