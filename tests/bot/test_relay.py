"""The handoff relay with in-memory desks and customer channels, on a real (SQLite) store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.handoff import (
    Attempt,
    CustomerListener,
    DeskCoverage,
    HandoffRequest,
    HandoffSink,
    NoDeskHandoffSink,
)
from bot.model import ConversationKey, Owner, Reply, ReplyKind, Role, Source, Turn
from bot.relay import (
    RELAY_AUTHOR,
    AuthoredCustomerChannel,
    CustomerChannel,
    Desk,
    Relay,
    RelayConfig,
    RelayOutcome,
    request_from_json,
    request_to_json,
)
from bot.storage.store import Store

KEY = ConversationKey("slack", "T1", "D1", "")
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeDesk:
    def __init__(self) -> None:
        self.cards: list[HandoffRequest] = []
        self.posts: list[tuple[str, str]] = []
        self.fail = False

    async def open_card(self, request: HandoffRequest) -> str:
        if self.fail:
            raise RuntimeError("desk down")
        self.cards.append(request)
        return f"C9:card{len(self.cards)}"

    async def post(self, card_ref: str, text: str) -> str | None:
        if self.fail:
            raise RuntimeError("desk down")
        self.posts.append((card_ref, text))
        return f"desk-post-{len(self.posts)}"


class FakeChannel:
    def __init__(self) -> None:
        self.posts: list[tuple[ConversationKey, str]] = []

    async def post(self, key: ConversationKey, text: str) -> str | None:
        self.posts.append((key, text))
        return f"customer-post-{len(self.posts)}"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.from_url(f"sqlite:///{tmp_path / 'relay.db'}")
    yield opened
    opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def desk() -> FakeDesk:
    return FakeDesk()


@pytest.fixture
def channel() -> FakeChannel:
    return FakeChannel()


@pytest.fixture
def relay(store: Store, clock: Clock, desk: FakeDesk, channel: FakeChannel) -> Relay:
    made = Relay(store, RelayConfig(desk="slack", timeout_s=300), clock=clock)
    made.register_desk("slack", desk)
    made.register_channel("slack", channel)
    return made


def _handoff(store: Store, relay: Relay, key: ConversationKey = KEY) -> str:
    """A conversation handed over as the engine does it: owner → human, then the sink."""
    conversation = store.get_or_create_conversation(key, "U1")
    store.add_message(conversation.id, Role.USER, "U1", "I want a refund", "m0")
    store.set_owner(conversation.id, Owner.HUMAN, actor="bot", reason="customer_request:human")
    relay.request(
        HandoffRequest(
            conversation_id=conversation.id,
            key=key,
            customer="U1",
            platform=key.platform,
            question="I want a refund",
            reason="customer_request:human",
            attempts=(Attempt("Try this", ReplyKind.ANSWER, (Source("kb1", 0.5, "T", "u"),)),),
            transcript=(Turn(Role.USER, "I want a refund"), Turn(Role.BOT, "A person will reply")),
        )
    )
    return conversation.id


def test_relay_is_a_handoff_sink_and_hears_customers(relay: Relay) -> None:
    assert isinstance(relay, HandoffSink)
    assert isinstance(relay, CustomerListener)
    assert isinstance(FakeDesk(), Desk)
    assert isinstance(FakeChannel(), CustomerChannel)


def test_request_round_trips_through_json() -> None:
    request = HandoffRequest(
        conversation_id="c1",
        key=KEY,
        customer="U1",
        platform="slack",
        question="q",
        reason="topic:legal",
        attempts=(Attempt("a", ReplyKind.FALLBACK, (Source("s", 0.1, None, None),)),),
        sentiment=-0.5,
        transcript=(Turn(Role.USER, "q"),),
        reply_id="r1",
        requested_at=NOW,
    )
    assert request_from_json(request_to_json(request)) == request


async def test_handoff_opens_one_card_on_the_desk(
    relay: Relay, store: Store, desk: FakeDesk
) -> None:
    conversation_id = _handoff(store, relay)
    link = store.relay_link(conversation_id)
    assert link is not None and link.state == "waiting" and link.card_ref is None
    assert link.deadline == NOW + timedelta(seconds=300)

    assert await relay.deliver_pending("slack") == 1
    assert await relay.deliver_pending("slack") == 0
    assert [card.question for card in desk.cards] == ["I want a refund"]
    assert desk.cards[0].attempts[0].sources[0].id == "kb1"
    link = store.relay_link(conversation_id)
    assert link is not None and link.card_ref == "C9:card1"


async def test_a_failing_desk_is_retried(relay: Relay, store: Store, desk: FakeDesk) -> None:
    _handoff(store, relay)
    desk.fail = True
    assert await relay.deliver_pending("slack") == 0
    desk.fail = False
    assert await relay.deliver_pending("slack") == 1
    assert len(desk.cards) == 1


async def test_customer_messages_reach_the_card_once(
    relay: Relay, store: Store, desk: FakeDesk
) -> None:
    _handoff(store, relay)
    # Before the card is open: queued, posted once it is.
    assert relay.customer_said(KEY, "are you there?", "m1")
    await relay.deliver_pending("slack")
    assert desk.posts == [("C9:card1", "are you there?")]
    assert relay.customer_said(KEY, "hello?", "m2")
    assert not relay.customer_said(KEY, "hello?", "m2")  # the same message again
    await relay.deliver_pending("slack")
    await relay.deliver_pending("slack")
    assert desk.posts[1:] == [("C9:card1", "hello?")]


async def test_bot_owned_conversations_are_not_relayed(relay: Relay, store: Store) -> None:
    store.get_or_create_conversation(KEY, "U1")
    assert not relay.customer_said(KEY, "hi", "m1")
    assert not relay.customer_said(ConversationKey("slack", "T1", "D404", ""), "hi", "m2")


async def test_first_agent_reply_claims_and_reaches_the_customer(
    relay: Relay, store: Store, desk: FakeDesk, channel: FakeChannel
) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    outcome = relay.agent_said("C9:card1", "A1", "Hi, I'm Ann. Let me check.", "a1")
    assert outcome is RelayOutcome.CLAIMED
    assert relay.agent_said("C9:card1", "A1", "Hi, I'm Ann. Let me check.", "a1") is (
        RelayOutcome.DUPLICATE
    )
    assert relay.agent_said("C9:card1", "A1", "Found it.", "a2") is RelayOutcome.RELAYED
    await relay.deliver_pending("slack")
    await relay.deliver_pending("slack")
    assert [text for _, text in channel.posts] == [
        relay.config.claimed_text,
        "Hi, I'm Ann. Let me check.",
        "Found it.",
    ]
    assert all(key == KEY for key, _ in channel.posts)
    link = store.relay_link(conversation_id)
    assert link is not None
    assert (link.state, link.claimed_by, link.claimed_at) == ("claimed", "A1", NOW)
    assert desk.posts == [("C9:card1", "Claimed by A1.")]
    history = store.history(conversation_id, 20)
    assert Turn(Role.AGENT, "Found it.") in [Turn(t.role, t.text) for t in history]
    conversation = store.get_conversation(conversation_id)
    assert conversation is not None and conversation.owner is Owner.HUMAN


async def test_own_posts_are_never_relayed_back(
    relay: Relay, store: Store, desk: FakeDesk, channel: FakeChannel
) -> None:
    _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.customer_said(KEY, "hello", "m1")
    await relay.deliver_pending("slack")
    # The desk echoes the relay's own post back as an agent message: ignored.
    assert relay.agent_said("C9:card1", "bot", "hello", "desk-post-1") is RelayOutcome.IGNORED
    relay.agent_said("C9:card1", "A1", "hi", "a1")
    await relay.deliver_pending("slack")
    # The customer channel echoes the relay's post: not relayed to the card again.
    assert not relay.customer_said(KEY, "hi", "customer-post-2")
    assert relay.agent_said("C404:x", "A1", "hi", "a9") is RelayOutcome.IGNORED


async def test_claim_command(relay: Relay, store: Store, channel: FakeChannel) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    assert relay.agent_said("C9:card1", "A2", "!claim", "a1") is RelayOutcome.CLAIMED
    assert relay.agent_said("C9:card1", "A3", "me too", "a2") is RelayOutcome.RELAYED
    link = store.relay_link(conversation_id)
    assert link is not None and link.claimed_by == "A2"
    await relay.deliver_pending("slack")
    assert [text for _, text in channel.posts] == [relay.config.claimed_text, "me too"]


async def test_release_gives_the_conversation_back(
    relay: Relay, store: Store, channel: FakeChannel, desk: FakeDesk
) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.agent_said("C9:card1", "A1", "hello", "a1")
    assert relay.agent_said("C9:card1", "A1", "!release", "a2") is RelayOutcome.RELEASED
    conversation = store.get_conversation(conversation_id)
    assert conversation is not None and conversation.owner is Owner.BOT
    assert not relay.customer_said(KEY, "thanks", "m5")
    assert relay.agent_said("C9:card1", "A1", "one more thing", "a3") is RelayOutcome.IGNORED
    await relay.deliver_pending("slack")
    assert channel.posts[-1][1] == relay.config.released_text
    assert "one more thing" not in [text for _, text in channel.posts]
    assert desk.posts[-1][1].startswith("This conversation is no longer handed over")


async def test_resolve_closes_the_conversation(
    relay: Relay, store: Store, channel: FakeChannel
) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    assert relay.agent_said("C9:card1", "A1", "!resolve", "a1") is RelayOutcome.RESOLVED
    conversation = store.get_conversation(conversation_id)
    assert conversation is not None
    assert (conversation.status, conversation.owner) == ("closed", Owner.BOT)
    await relay.deliver_pending("slack")
    assert channel.posts[-1][1] == relay.config.resolved_text


async def test_unclaimed_handoffs_time_out(
    relay: Relay, store: Store, clock: Clock, channel: FakeChannel, desk: FakeDesk
) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    assert relay.check_timeouts(NOW + timedelta(seconds=299)) == 0
    assert relay.check_timeouts(NOW + timedelta(seconds=300)) == 1
    assert relay.check_timeouts(NOW + timedelta(seconds=900)) == 0
    await relay.deliver_pending("slack")
    expected = relay.config.timeout_text.format(contact=relay.config.contact)
    assert [text for _, text in channel.posts] == [expected]
    assert desk.posts == [("C9:card1", relay.config.timeout_note)]
    conversation = store.get_conversation(conversation_id)
    assert conversation is not None and conversation.owner is Owner.BOT


async def test_claimed_handoffs_do_not_time_out(relay: Relay, store: Store) -> None:
    _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.agent_said("C9:card1", "A1", "!claim", "a1")
    assert relay.check_timeouts(NOW + timedelta(days=1)) == 0


async def test_two_processes_share_the_outbox(store: Store, clock: Clock) -> None:
    """The web process serves the Slack desk; a Discord process serves Discord customers."""
    web, discord = (
        Relay(store, RelayConfig(desk="slack"), clock=clock),
        Relay(store, RelayConfig(desk="slack"), clock=clock),
    )
    desk, channel = FakeDesk(), FakeChannel()
    web.register_desk("slack", desk)
    discord.register_channel("discord", channel)
    key = ConversationKey("discord", "G1", "D7", "")
    _handoff(store, discord, key)
    assert await discord.deliver_pending("slack") == 0  # not served there
    assert await web.deliver_pending("slack") == 1
    discord.customer_said(key, "hi agents", "m1")
    web.agent_said("C9:card1", "A1", "hi customer", "a1")
    assert await web.deliver_pending("discord") == 0
    assert await discord.deliver_pending("discord") == 2
    assert await web.deliver_pending("slack") == 2
    assert [text for _, text in channel.posts] == [web.config.claimed_text, "hi customer"]
    assert [text for _, text in desk.posts] == ["hi agents", "Claimed by A1."]


async def test_a_handoff_after_release_opens_a_new_card(
    relay: Relay, store: Store, desk: FakeDesk
) -> None:
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.agent_said("C9:card1", "A1", "!release", "a1")
    _handoff(store, relay)
    await relay.deliver_pending("slack")
    link = store.relay_link(conversation_id)
    assert link is not None and (link.card_ref, link.state) == ("C9:card2", "waiting")


@pytest.mark.model
def test_build_services_makes_the_relay_the_engines_sink_and_it_hears_the_customer(
    data_dir: Path,
) -> None:
    from bot.model import InboundMessage
    from bot.service import build_services
    from bot.settings import Settings

    plain = build_services(Settings(data_dir=data_dir))
    assert plain.relay is None
    plain.store.close()

    services = build_services(
        Settings(data_dir=data_dir, handoff_desk="discord", handoff_timeout_s=42)
    )
    try:
        relay = services.relay
        assert relay is not None and services.engine.handoff_sink is relay
        assert (relay.config.desk, relay.config.timeout_s) == ("discord", 42)
        key = ConversationKey("web", "site", "s1", "")

        def say(text: str, n: int, user: str = "visitor") -> list[str]:
            message = InboundMessage(
                platform="web",
                workspace="site",
                channel="s1",
                thread="",
                user=user,
                text=text,
                message_id=f"w{n}",
                addressed=True,
            )
            return [reply.text for reply in services.engine.handle(message)]

        assert say("I want to talk to a person", 1)
        conversation = services.store.find_conversation(key)
        assert conversation is not None and conversation.owner is Owner.HUMAN
        link = services.store.relay_link(conversation.id)
        assert link is not None and (link.desk, link.state) == ("discord", "waiting")

        assert say("my invoice is wrong", 2) == []
        assert say("my invoice is wrong", 2) == []  # a repeated delivery
        assert say("I'm a colleague", 3, user="someone-else") == []
        queued = services.store.relay_outbox(conversation.id)
        assert [(item.direction, item.target_platform, item.text) for item in queued] == [
            ("to_agent", "discord", "my invoice is wrong")
        ]
    finally:
        services.store.close()


# A card opening that a dead process left behind ------------------------------------------------


async def test_a_dead_processs_opening_is_taken_again_after_the_grace(
    relay: Relay, store: Store, clock: Clock, desk: FakeDesk
) -> None:
    conversation_id = _handoff(store, relay)
    # A process took the opening at NOW and died before recording the card.
    assert store.set_relay_card(conversation_id, "opening:dead", expect=None, opening_at=NOW)
    clock.now = NOW + timedelta(seconds=relay.config.opening_grace_s - 1)
    assert await relay.deliver_pending("slack") == 0
    assert desk.cards == []
    relay.customer_said(KEY, "hello?", "m1")  # queued meanwhile: reaches the new card

    clock.now = NOW + timedelta(seconds=relay.config.opening_grace_s)
    assert await relay.deliver_pending("slack") == 2  # the card, then the queued message
    assert await relay.deliver_pending("slack") == 0
    assert len(desk.cards) == 1
    assert desk.posts == [("C9:card1", "hello?")]
    link = store.relay_link(conversation_id)
    assert link is not None and (link.card_ref, link.opening_at) == ("C9:card1", None)


async def test_a_process_too_slow_to_record_its_card_marks_it_a_duplicate(
    store: Store, clock: Clock
) -> None:
    """Process A takes the opening and hangs past the grace; B re-takes it and opens the card."""
    config = RelayConfig(desk="slack", opening_grace_s=60)
    slow, fast = Relay(store, config, clock=clock), Relay(store, config, clock=clock)
    fast_desk = FakeDesk()
    fast.register_desk("slack", fast_desk)
    conversation_id = _handoff(store, fast)

    class SlowDesk(FakeDesk):
        async def open_card(self, request: HandoffRequest) -> str:
            clock.now = NOW + timedelta(seconds=61)
            assert await fast.deliver_pending("slack") == 1  # B, meanwhile
            await super().open_card(request)
            return "C9:slow"

    slow_desk = SlowDesk()
    slow.register_desk("slack", slow_desk)
    assert await slow.deliver_pending("slack") == 0
    link = store.relay_link(conversation_id)
    assert link is not None and link.card_ref == "C9:card1"  # B's card is the card
    assert slow_desk.posts == [("C9:slow", config.duplicate_note)]
    assert store.relay_link_by_card("C9:slow") is None


# The card waits for the customer's handoff message ------------------------------------------


def _handoff_with_reply(store: Store, relay: Relay) -> tuple[str, str]:
    conversation = store.get_or_create_conversation(KEY, "U1")
    store.set_owner(conversation.id, Owner.HUMAN, actor="bot", reason="customer_request:human")
    reply_id = store.add_reply(conversation.id, None, Reply.handoff("A person will reply here."))
    relay.request(
        HandoffRequest(
            conversation_id=conversation.id,
            key=KEY,
            customer="U1",
            platform="slack",
            question="refund",
            reason="customer_request:human",
            reply_id=reply_id,
        )
    )
    return conversation.id, reply_id


async def test_the_card_opens_once_the_handoff_message_is_posted(
    store: Store, desk: FakeDesk
) -> None:
    relay = Relay(store, RelayConfig(desk="slack", reply_wait_s=30))  # the real clock
    relay.register_desk("slack", desk)
    conversation_id, reply_id = _handoff_with_reply(store, relay)
    assert await relay.deliver_pending("slack") == 0  # the customer has not seen it yet
    assert desk.cards == []
    store.set_reply_platform_ref(reply_id, "D1:1700000000.000100")  # the adapter posted it
    assert await relay.deliver_pending("slack") == 1
    assert [card.reply_id for card in desk.cards] == [reply_id]
    link = store.relay_link(conversation_id)
    assert link is not None and link.card_ref == "C9:card1"


async def test_an_unposted_handoff_message_delays_the_card_only_so_long(
    store: Store, desk: FakeDesk
) -> None:
    relay = Relay(store, RelayConfig(desk="slack", reply_wait_s=0.2))
    relay.register_desk("slack", desk)
    _handoff_with_reply(store, relay)  # the post failed: no platform reference, ever
    assert await relay.deliver_pending("slack") == 0
    await asyncio.sleep(0.25)
    assert await relay.deliver_pending("slack") == 1
    assert len(desk.cards) == 1


# Customer channels that show who wrote ---------------------------------------------------------


class AuthoredChannel(FakeChannel):
    def __init__(self) -> None:
        super().__init__()
        self.authored: list[tuple[str, str]] = []

    async def post_as(self, key: ConversationKey, text: str, author: str) -> str | None:
        self.authored.append((author, text))
        return await self.post(key, text)


async def test_an_authored_channel_gets_the_agents_name(relay: Relay, store: Store) -> None:
    channel = AuthoredChannel()
    assert isinstance(channel, AuthoredCustomerChannel)
    assert not isinstance(FakeChannel(), AuthoredCustomerChannel)
    relay.register_channel("slack", channel)
    _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.agent_said("C9:card1", "Ana", "Hi, I'm Ana.", "a1")
    await relay.deliver_pending("slack")
    assert channel.authored == [
        (RELAY_AUTHOR, relay.config.claimed_text),
        ("Ana", "Hi, I'm Ana."),
    ]


# No desk configured ------------------------------------------------------------------------------


def test_the_no_desk_sink_gives_the_contact_except_where_a_desk_is_native() -> None:
    sink = NoDeskHandoffSink("email help@example.com {not a field}")
    assert isinstance(sink, DeskCoverage) and isinstance(sink, HandoffSink)
    text = sink.no_desk_reply(KEY)
    assert text is not None
    assert "email help@example.com {not a field}" in text
    assert "will reply" not in text
    assert sink.no_desk_reply(ConversationKey("zendesk", "acme", "42", "")) is None
    assert not isinstance(Relay, DeskCoverage)  # a desk is configured: hand over as usual
    sink.request(HandoffRequest("c1", KEY, "U1", "slack", "q", "customer_request:human"))


class FlakyChannel(FakeChannel):
    """Fails every post until the clock reaches `up_at`."""

    def __init__(self, clock: Clock, up_at: datetime) -> None:
        super().__init__()
        self.clock = clock
        self.up_at = up_at
        self.tries = 0

    async def post(self, key: ConversationKey, text: str) -> str | None:
        self.tries += 1
        if self.clock() < self.up_at:
            raise RuntimeError("channel_not_found")
        return await super().post(key, text)


def _relay_with(store: Store, clock: Clock, channel: FakeChannel) -> Relay:
    made = Relay(store, RelayConfig(desk="slack", poll_s=1.0, retry_max_s=4.0), clock=clock)
    made.register_desk("slack", FakeDesk())
    made.register_channel("slack", channel)
    return made


async def test_a_failing_post_is_retried_with_backoff_and_logged_in_full_once(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    channel = FlakyChannel(clock, up_at=NOW + timedelta(seconds=7))
    relay = _relay_with(store, clock, channel)
    _handoff(store, relay)
    await relay.deliver_pending("slack")  # the card opens
    relay.agent_said("C9:card1", "A1", "Hello, Ann here.", "a1")  # queues two customer posts
    caplog.set_level(logging.WARNING, logger="bot.relay")
    tries_at = []
    for second in range(12):
        clock.now = NOW + timedelta(seconds=second)
        before = channel.tries
        await relay.deliver_pending("slack")
        if channel.tries > before:
            tries_at.append(second)
    # Down until 7 s: tried at 0, then after 1, 2 and 4 (the cap) seconds, when both go out.
    assert tries_at == [0, 1, 3, 7]
    assert [text for _, text in channel.posts] == [relay.config.claimed_text, "Hello, Ann here."]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 2  # each message's first failure only; then one line per try
    assert any("try 3, next in 4 s" in r.getMessage() for r in caplog.records)


async def test_a_post_failing_past_the_give_up_age_is_marked_failed(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    channel = FlakyChannel(clock, up_at=datetime.max.replace(tzinfo=UTC))
    relay = _relay_with(store, clock, channel)
    conversation_id = _handoff(store, relay)
    await relay.deliver_pending("slack")
    relay.agent_said("C9:card1", "A1", "Hello, Ann here.", "a1")
    queued = [i for i in store.relay_outbox(conversation_id) if i.direction == "to_customer"]
    assert queued
    caplog.set_level(logging.ERROR, logger="bot.relay")
    clock.now = max(i.created_at for i in queued) + timedelta(
        seconds=relay.config.give_up_after_s + 1
    )
    await relay.deliver_pending("slack")
    statuses = {
        i.status for i in store.relay_outbox(conversation_id) if i.direction == "to_customer"
    }
    assert statuses == {"failed"}
    assert "given up" in caplog.text
    tries = channel.tries
    clock.now += timedelta(hours=1)
    await relay.deliver_pending("slack")
    assert channel.tries == tries  # never tried again
