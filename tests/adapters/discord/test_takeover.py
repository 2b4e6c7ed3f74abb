"""Native agent takeover and an escalation, through the fake Discord gateway.

A human agent (by user id, or by the agents' role) writing in a customer's thread takes the
conversation over: the owner change is recorded with who and when, the bot stays silent until the
agent types ``!release``, then answers again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from adapters.discord.settings import load_discord_settings
from bot.engine import Engine
from bot.errors import ConfigError
from bot.model import ConversationKey, Owner, Role
from bot.storage.tables import Handoff
from tests.adapters.discord.conftest import WAIT, running, short_policies
from tests.adapters.discord.fake_discord import FakeDiscord, member, user

QUESTION = "How do I reset my password?"
#: Long enough for a reply the bot would post (burst window 0.05 s, the answer itself) to arrive.
QUIET_S = 0.6


def _handoffs(engine: Engine, key: ConversationKey) -> list[Handoff]:
    conversation = engine.store.find_conversation(key)
    assert conversation is not None
    with Session(engine.store.engine) as session:
        query = (
            select(Handoff)
            .where(Handoff.conversation_id == conversation.id)
            .order_by(col(Handoff.id))
        )
        return list(session.exec(query).all())


def _history(engine: Engine, key: ConversationKey) -> list[tuple[Role, str]]:
    conversation = engine.store.find_conversation(key)
    assert conversation is not None
    return [(t.role, t.text) for t in engine.store.history(conversation.id, 50)]


async def _post_as(
    fake: FakeDiscord, channel: int, text: str, author: int, roles: tuple[int, ...]
) -> int:
    """A message by a server member with these roles."""
    payload = fake.message_payload(channel, text, author_id=author, extra={"member": member(roles)})
    fake.messages[int(payload["id"])] = payload
    await fake.dispatch("MESSAGE_CREATE", payload)
    return int(payload["id"])


@pytest.fixture
def agent_role(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> int:
    """A "Support" role in the fake server, for agents."""
    role = fake.snowflake()
    built = fake.guild_payload

    def with_role() -> Any:
        guild = built()
        guild["roles"].append(
            {
                "id": str(role),
                "name": "Support",
                "permissions": "0",
                "position": 2,
                "color": 0,
                "hoist": False,
                "managed": False,
                "mentionable": True,
            }
        )
        return guild

    monkeypatch.setattr(fake, "guild_payload", with_role)
    return role


async def test_an_agent_by_role_takes_a_forum_post_over_until_release(
    fake: FakeDiscord, bot: Callable[..., Any], engine: Engine, agent_role: int
) -> None:
    agent = fake.snowflake()
    fake.users[agent] = user(agent, "ana")
    async with bot(agent_role=agent_role):
        thread = await fake.post_forum_post("Password", QUESTION)
        key = ConversationKey("discord", str(fake.guild_id), str(fake.forum_channel), str(thread))
        await fake.wait_for(lambda: fake.bot_messages(thread), WAIT, "the bot's answer")
        before = datetime.now(UTC)

        await _post_as(
            fake, thread, "Hi, Ana from support: did the email arrive?", agent, (agent_role,)
        )
        await fake.wait_for(lambda: engine.owner_of(key) is Owner.HUMAN, WAIT, "the takeover")
        took = _handoffs(engine, key)[-1]
        assert (took.from_owner, took.to_owner, took.actor, took.reason) == (
            "bot",
            "human",
            str(agent),
            "agent replied",
        )
        stamp = took.created_at if took.created_at.tzinfo else took.created_at.replace(tzinfo=UTC)
        assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)

        # The customer's next message gets no reply from the bot while the agent owns it.
        await fake.post_message(thread, "No, and how do I export a note as a PDF?")
        await fake.wait_for(
            lambda: _history(engine, key)[-1][1] == "No, and how do I export a note as a PDF?",
            WAIT,
            "the customer's message recorded",
        )
        await asyncio.sleep(QUIET_S)
        assert len(fake.bot_messages(thread)) == 1
        assert (Role.AGENT, "Hi, Ana from support: did the email arrive?") in _history(engine, key)

        await _post_as(fake, thread, "!release", agent, (agent_role,))
        await fake.wait_for(lambda: engine.owner_of(key) is Owner.BOT, WAIT, "the release")
        back = _handoffs(engine, key)[-1]
        assert (back.to_owner, back.actor, back.reason) == ("bot", str(agent), "released")

        await fake.post_message(thread, "How do I export a note as a PDF?")
        await fake.wait_for(lambda: len(fake.bot_messages(thread)) == 2, WAIT, "the bot again")


async def test_an_agent_by_id_cancels_the_pending_answer_and_others_are_not_agents(
    fake: FakeDiscord, engine: Engine
) -> None:
    agent, mate = fake.snowflake(), fake.snowflake()
    fake.users[agent] = user(agent, "sam")
    fake.users[mate] = user(mate, "mate")
    slow = Engine(engine.store, engine.responder, policies=short_policies(burst_window_seconds=1.0))
    async with running(fake, slow, agent_users=(agent,)) as client:
        thread = await fake.post_forum_post("Export", "Can I export my notes to PDF?")
        key = ConversationKey("discord", str(fake.guild_id), str(fake.forum_channel), str(thread))
        customer = str(fake.customer_id)
        await fake.wait_for(lambda: client.debouncer().pending(key, customer), WAIT, "pending")
        # Someone who is not an agent does not cancel anything (no head start configured).
        await fake.post_message(thread, "me too", author_id=mate)
        await fake.post_message(thread, "Yes: File > Export > PDF.", author_id=agent)
        await fake.wait_for(lambda: engine.owner_of(key) is Owner.HUMAN, WAIT, "the takeover")
        await asyncio.sleep(1.3)  # past the burst window: the cancelled answer never comes
        assert fake.bot_messages(thread) == []
    assert _history(engine, key)[0] == (Role.USER, "Can I export my notes to PDF?")
    assert (Role.AGENT, "Yes: File > Export > PDF.") in _history(engine, key)
    assert [h.actor for h in _handoffs(engine, key)] == [str(agent)]


async def test_a_billing_dispute_in_a_dm_hands_over_and_the_bot_falls_silent(
    fake: FakeDiscord, bot: Callable[..., Any], engine: Engine
) -> None:
    key = ConversationKey("discord", "@me", str(fake.dm_channel))
    async with bot():
        await fake.post_message(fake.dm_channel, "I was charged twice for Plus this month")
        (handoff,) = await fake.wait_for(
            lambda: fake.bot_messages(fake.dm_channel), WAIT, "the handoff message"
        )
        assert engine.owner_of(key) is Owner.HUMAN
        (row,) = _handoffs(engine, key)
        assert (row.actor, row.reason) == ("bot", "topic:billing_dispute")
        # The adapter records the message's id just after Discord answers the send.
        ref = f"{fake.dm_channel}:{handoff['id']}"
        reply = await fake.wait_for(
            lambda: engine.store.find_reply_by_platform_ref(ref), WAIT, "the recorded message id"
        )
        assert reply.kind.value == "handoff"

        await fake.post_message(fake.dm_channel, "hello?")
        await fake.wait_for(
            lambda: _history(engine, key)[-1] == (Role.USER, "hello?"), WAIT, "recorded"
        )
        await asyncio.sleep(QUIET_S)
        assert len(fake.bot_messages(fake.dm_channel)) == 1


def test_agent_settings_from_the_environment_and_their_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SUPPORTBOT_DISCORD_AGENT_ROLE", "SUPPORTBOT_DISCORD_AGENT_USERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def.ghi")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_AGENT_USERS", "1234567890123, 2345678901234")
    monkeypatch.setenv("DISCORD_AGENT_ROLE", "3456789012345")
    settings = load_discord_settings()
    assert settings.agent_users == (1234567890123, 2345678901234)
    assert settings.agent_role == 3456789012345

    with pytest.raises(ConfigError, match=r"SUPPORTBOT_DISCORD_AGENT_USERS.*Copy User ID"):
        load_discord_settings(agent_users="0")
