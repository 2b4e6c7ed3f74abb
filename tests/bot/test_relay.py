"""The handoff relay with in-memory desks and customer channels, on a real store: SQLite, and
PostgreSQL too where several processes share one database (each a `Relay` on its own `Store`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
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
from bot.storage.store import OutboxItem, Store
from knowledge.embeddings import Embedder
from tests.support import DATABASE_BACKENDS, shared_database

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

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        if self.fail:
            raise RuntimeError("desk down")
        self.posts.append((card_ref, text))
        return f"desk-post-{len(self.posts)}"


class FakeChannel:
    """A customer platform that, like Slack and Discord, can find what was posted with a
    `post_id` when asked to look (`retaken`)."""

    def __init__(self) -> None:
        self.posts: list[tuple[ConversationKey, str]] = []
        self.by_post_id: dict[str, str] = {}
        self.retaken: list[str] = []

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        if retaken:
            self.retaken.append(post_id)
            if post_id in self.by_post_id:
                return self.by_post_id[post_id]
        self.posts.append((key, text))
        self.by_post_id[post_id] = f"customer-post-{len(self.posts)}"
        return self.by_post_id[post_id]


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
    data_dir: Path, embedder: Embedder
) -> None:
    from bot.model import InboundMessage
    from bot.service import build_services
    from bot.settings import Settings

    plain = build_services(Settings(data_dir=data_dir), embedder=embedder)
    assert plain.relay is None
    plain.store.close()

    services = build_services(
        Settings(data_dir=data_dir, handoff_desk="discord", handoff_timeout_s=42),
        embedder=embedder,
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

    async def post_as(
        self, key: ConversationKey, text: str, author: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        self.authored.append((author, text))
        return await self.post(key, text, post_id=post_id, retaken=retaken)


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

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        self.tries += 1
        if self.clock() < self.up_at:
            raise RuntimeError("channel_not_found")
        return await super().post(key, text, post_id=post_id, retaken=retaken)


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


# The back-off lives on the message's row, shared by every process ------------------------------

NEVER = datetime.max.replace(tzinfo=UTC)


@pytest.fixture(params=DATABASE_BACKENDS)
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that several processes share: an SQLite file, or a fresh PostgreSQL one."""
    with shared_database(request.param, tmp_path, "supportbot_relay") as url:
        yield url


@pytest.fixture
def open_store(shared_url: str) -> Iterator[Callable[[], Store]]:
    """Opens the shared database as one more process would: its own engine and connections."""
    opened: list[Store] = []

    def open_one() -> Store:
        opened.append(Store.from_url(shared_url))
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


def _queue_for_customer(store: Store, origin: str = "agent:a1") -> OutboxItem:
    conversation = store.get_or_create_conversation(KEY, "U1")
    assert store.enqueue_relay(
        conversation.id,
        direction="to_customer",
        target_platform="slack",
        target_ref=str(KEY),
        text="Hello, Ann here.",
        author="A1",
        origin_key=origin,
    )
    return store.relay_outbox(conversation.id)[-1]


def _row(store: Store, item: OutboxItem) -> OutboxItem:
    """The message as the database has it now."""
    [row] = [i for i in store.relay_outbox(item.conversation_id) if i.id == item.id]
    return row


async def _tried(relay: Relay, channel: FlakyChannel, clock: Clock, at: datetime) -> bool:
    """Run one delivery round at `at`; whether it tried to post to the customer."""
    clock.now = at
    before = channel.tries
    await relay.deliver_pending("slack")
    return channel.tries > before


async def test_another_process_does_not_try_a_failing_message_before_its_time(
    open_store: Callable[[], Store], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes serve the customers' platform (two web workers, say): each waits for the
    back-off that the other's failure set, and the traceback is logged once in all."""
    stores = {"A": open_store(), "B": open_store()}
    channels = {name: FlakyChannel(clock, up_at=NEVER) for name in stores}
    relays = {name: _relay_with(stores[name], clock, channels[name]) for name in stores}
    item = _queue_for_customer(stores["A"])
    start = item.created_at
    caplog.set_level(logging.WARNING, logger="bot.relay")
    rounds = [(0, "A"), (0.5, "B"), (1, "B"), (2, "A"), (2.5, "B"), (3, "A"), (5, "B"), (7, "A")]
    tried: list[tuple[float, str]] = []
    for seconds, name in rounds:
        if await _tried(relays[name], channels[name], clock, start + timedelta(seconds=seconds)):
            tried.append((seconds, name))
    # poll_s 1, retry_max_s 4: due again 1, 2 and 4 (the cap) seconds after each failure.
    assert tried == [(0, "A"), (1, "B"), (3, "A"), (7, "A")]
    assert len([r for r in caplog.records if r.exc_info]) == 1  # B's first try was the 2nd
    assert "try 2, next in 2 s" in caplog.text
    row = _row(stores["B"], item)
    assert (row.status, row.attempts) == ("pending", 4)
    assert row.next_attempt_at == start + timedelta(seconds=11)


async def test_the_back_off_survives_a_restart(
    open_store: Callable[[], Store], clock: Clock
) -> None:
    store = open_store()
    item = _queue_for_customer(store)
    start = item.created_at
    channel = FlakyChannel(clock, up_at=NEVER)
    relay = _relay_with(store, clock, channel)
    assert await _tried(relay, channel, clock, start)
    assert await _tried(relay, channel, clock, start + timedelta(seconds=1))  # next: 2 s later
    store.close()  # the process ends; the next one starts with nothing in memory

    store = open_store()
    channel = FlakyChannel(clock, up_at=NEVER)
    restarted = _relay_with(store, clock, channel)
    assert not await _tried(restarted, channel, clock, start + timedelta(seconds=2))
    assert await _tried(restarted, channel, clock, start + timedelta(seconds=3))
    assert _row(store, item).attempts == 3


async def test_the_back_off_doubles_and_caps_whichever_process_tries(
    open_store: Callable[[], Store], clock: Clock
) -> None:
    store = open_store()
    item = _queue_for_customer(store)
    start = item.created_at
    channel = FlakyChannel(clock, up_at=NEVER)
    tried: list[int] = []
    waits: list[float] = []
    for second in range(16):
        relay = _relay_with(store, clock, channel)  # a process that never saw the failures
        if await _tried(relay, channel, clock, start + timedelta(seconds=second)):
            tried.append(second)
            row = _row(store, item)
            assert row.next_attempt_at is not None
            waits.append((row.next_attempt_at - clock.now).total_seconds())
    assert tried == [0, 1, 3, 7, 11, 15]
    assert waits == [1, 2, 4, 4, 4, 4]  # poll_s doubling, up to retry_max_s
    assert _row(store, item).attempts == 6


async def test_a_message_failing_in_several_processes_is_given_up_at_its_age(
    open_store: Callable[[], Store], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    stores = [open_store(), open_store()]
    channels = [FlakyChannel(clock, up_at=NEVER) for _ in stores]
    relays = [
        _relay_with(store, clock, channel) for store, channel in zip(stores, channels, strict=True)
    ]
    item = _queue_for_customer(stores[0])
    start = item.created_at
    caplog.set_level(logging.ERROR, logger="bot.relay")
    assert await _tried(relays[0], channels[0], clock, start)
    assert await _tried(relays[1], channels[1], clock, start + timedelta(seconds=1))
    # A second short of the give-up age: put off again, for the capped 4 s.
    almost = start + timedelta(seconds=relays[0].config.give_up_after_s - 1)
    assert await _tried(relays[0], channels[0], clock, almost)
    assert _row(stores[0], item).status == "pending"
    assert not await _tried(relays[1], channels[1], clock, almost + timedelta(seconds=3))
    assert await _tried(relays[1], channels[1], clock, almost + timedelta(seconds=4))
    row = _row(stores[0], item)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 4, None)
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert [message.split(" since ")[0] for message in given_up] == [
        f"relay: message {item.id} on slack given up after 4 tries"
    ]
    for relay, channel in zip(relays, channels, strict=True):
        assert not await _tried(relay, channel, clock, almost + timedelta(hours=1))


async def test_a_success_clears_the_back_off(open_store: Callable[[], Store], clock: Clock) -> None:
    stores = [open_store(), open_store()]
    item = _queue_for_customer(stores[0])
    start = item.created_at
    down, up = FlakyChannel(clock, up_at=NEVER), FlakyChannel(clock, up_at=start)
    assert await _tried(_relay_with(stores[0], clock, down), down, clock, start)
    row = _row(stores[0], item)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.next_attempt_at == start + timedelta(seconds=1)
    assert await _tried(_relay_with(stores[1], clock, up), up, clock, start + timedelta(seconds=1))
    assert [text for _, text in up.posts] == ["Hello, Ann here."]
    row = _row(stores[0], item)
    # Nothing left to wait for; the failed try stays on record.
    assert (row.status, row.attempts, row.next_attempt_at) == ("sent", 1, None)


def test_a_message_put_off_is_neither_listed_nor_claimed_before_its_time(
    open_store: Callable[[], Store],
) -> None:
    """A process that listed the message before another's failure put it off cannot claim it
    early, and messages put off never fill a listing's limit ahead of due ones."""
    store = open_store()
    first = _queue_for_customer(store, "agent:a1")
    second = _queue_for_customer(store, "agent:a2")
    start = first.created_at
    assert store.claim_relay_delivery(first.id, now=start) is False  # its first claim
    recorded = store.relay_delivery_failed(
        first.id, now=start, first_delay_s=1.0, max_delay_s=4.0, give_up_after_s=60.0
    )
    assert recorded == _row(store, first)
    assert (recorded.status, recorded.attempts) == ("pending", 1)
    early, due = start + timedelta(seconds=0.5), start + timedelta(seconds=1)
    assert [i.id for i in store.pending_relay("slack", limit=1, now=early)] == [second.id]
    assert store.claim_relay_delivery(first.id, now=early) is None
    assert [i.id for i in store.pending_relay("slack", now=due)] == [first.id, second.id]
    assert store.claim_relay_delivery(first.id, now=due) is True  # claimed before: it failed


# A claim whose process died is taken again, and the post is not doubled ------------------------


class Died(BaseException):
    """The process ends here (killed): nothing after it runs, no handler catches it."""


class DyingChannel(FakeChannel):
    """Posts on `platform`, then the process dies before the relay records the post."""

    def __init__(self, platform: FakeChannel) -> None:
        super().__init__()
        self.platform = platform

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        await self.platform.post(key, text, post_id=post_id, retaken=retaken)
        raise Died


async def test_a_claim_whose_process_died_before_posting_is_posted_once_after_the_timeout(
    open_store: Callable[[], Store], clock: Clock
) -> None:
    stores = [open_store(), open_store(), open_store()]
    item = _queue_for_customer(stores[0])
    start = item.created_at
    # Process A claimed the message and died before posting it.
    assert stores[0].claim_relay_delivery(item.id, now=start) is False
    row = _row(stores[0], item)
    assert (row.status, row.claimed_at, row.sent_at) == ("posting", start, None)
    platform = FakeChannel()
    relays = [_relay_with(store, clock, platform) for store in stores[1:]]
    timeout = relays[0].config.claim_timeout_s
    assert timeout == 120.0

    # A fresh claim is A's: nobody takes it before the timeout (A may still be posting).
    clock.now = start + timedelta(seconds=timeout - 1)
    assert stores[1].pending_relay("slack", now=clock.now) == []
    assert await relays[0].deliver_pending("slack") == 0
    assert platform.posts == []
    assert stores[0].relay_delivered(item.conversation_id) == []

    clock.now = start + timedelta(seconds=timeout)
    assert await relays[0].deliver_pending("slack") == 1
    assert await relays[1].deliver_pending("slack") == 0  # B's claim is fresh: C keeps off
    assert platform.posts == [(KEY, "Hello, Ann here.")]
    assert platform.retaken == [f"relay-{item.id}"]  # B was told to look for A's copy first
    row = _row(stores[2], item)
    assert (row.status, row.sent_at is not None) == ("sent", True)
    assert [i.id for i in stores[2].relay_delivered(item.conversation_id)] == [item.id]

    clock.now += timedelta(hours=1)
    for relay in relays:
        assert await relay.deliver_pending("slack") == 0
    assert len(platform.posts) == 1


async def test_a_post_that_reached_the_platform_before_its_process_died_is_not_repeated(
    open_store: Callable[[], Store], clock: Clock
) -> None:
    stores = [open_store(), open_store()]
    item = _queue_for_customer(stores[0])
    start = item.created_at
    platform = FakeChannel()
    clock.now = start
    with pytest.raises(Died):
        await _relay_with(stores[0], clock, DyingChannel(platform)).deliver_pending("slack")
    assert len(platform.posts) == 1
    assert _row(stores[1], item).status == "posting"  # never recorded as posted

    survivor = _relay_with(stores[1], clock, platform)
    clock.now = start + timedelta(seconds=survivor.config.claim_timeout_s + 1)
    assert await survivor.deliver_pending("slack") == 1
    assert platform.posts == [(KEY, "Hello, Ann here.")]  # the copy A posted is the message
    assert _row(stores[1], item).status == "sent"
    # The copy's reference is recorded, so it is never relayed back as the customer's message.
    assert stores[1].has_event("slack", "relay-post:customer-post-1")


async def test_a_message_that_failed_before_is_looked_for_before_it_is_posted_again(
    store: Store, clock: Clock
) -> None:
    """A failed post may still have reached the platform (a timeout): the next try looks."""
    item = _queue_for_customer(store)
    start = item.created_at
    down, up = FlakyChannel(clock, up_at=NEVER), FakeChannel()
    await _tried(_relay_with(store, clock, down), down, clock, start)
    clock.now = start + timedelta(seconds=1)
    assert await _relay_with(store, clock, up).deliver_pending("slack") == 1
    assert up.retaken == [f"relay-{item.id}"]
