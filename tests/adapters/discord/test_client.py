"""The real discord.py client against a local fake Discord, with the real engine and database.

Each test starts the bot (REST login, gateway HELLO/IDENTIFY/READY/GUILD_CREATE), drives gateway
events and checks the REST calls the bot made and what the database holds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord import HandoffCard, serve
from adapters.discord.client import NO_CONTENT_WARNING, THANKS_UP
from adapters.discord.convert import HANDOFF_TEXT, AgentReply, reply_ref
from adapters.discord.render import DOWN_ID, HANDOFF_ID, MESSAGE_LIMIT, UP_ID
from bot.engine import Engine, EngineConfig, Trace
from bot.errors import ConfigError
from bot.model import ConversationKey, Reply, Role, Source, Turn
from bot.storage.store import Store
from tests.adapters.discord.conftest import WAIT, discord_settings, running, short_policies
from tests.adapters.discord.fake_discord import FakeDiscord

QUESTION = "How do I reset my password?"
ANSWER_SNIPPET = "Forgot password?"


async def answered(fake: FakeDiscord, channel_id: int, count: int = 1) -> list[Any]:
    """Wait until the bot has posted `count` messages in a channel; returns them."""
    return await fake.wait_for(  # type: ignore[no-any-return]
        lambda: len(fake.bot_messages(channel_id)) >= count and fake.bot_messages(channel_id),
        WAIT,
        f"{count} answer(s) in channel {channel_id}",
    )


async def quiet(fake: FakeDiscord) -> None:
    """Let in-flight events finish: a DM answered proves the gateway got this far."""
    before = len(fake.bot_messages(fake.dm_channel))
    await fake.post_message(fake.dm_channel, "hello")
    await answered(fake, fake.dm_channel, before + 1)
    await asyncio.sleep(0.2)


def components(message: Any) -> list[str]:
    return [c["custom_id"] for row in message["components"] for c in row["components"]]


# What it answers, and where --------------------------------------------------------------------


async def test_mention_is_answered_in_a_thread_started_from_the_question(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        question = await fake.post_message(fake.general_channel, QUESTION, mention_bot=True)
        (answer,) = await answered(fake, question)  # the thread's id is the question's
        await quiet(fake)

    expected = discord.Intents(
        guilds=True,
        guild_messages=True,
        dm_messages=True,
        guild_reactions=True,
        dm_reactions=True,
        guild_typing=True,
        dm_typing=True,
        message_content=True,
    )
    assert fake.intents == expected.value
    (start,) = fake.find("POST", rf"/channels/{fake.general_channel}/messages/{question}/threads")
    assert start.json["name"] == QUESTION
    assert ANSWER_SNIPPET in answer["content"]
    assert "[Reset your password](<https://help.lumen-notes.example/" in answer["content"]
    assert components(answer) == [UP_ID, DOWN_ID, HANDOFF_ID]
    # Exactly one answer, although Discord echoed the bot's own message back on the gateway.
    assert len(fake.posts(question)) == 1
    assert fake.posts(fake.general_channel) == []
    key = ConversationKey("discord", str(fake.guild_id), str(fake.general_channel), str(question))
    assert engine.takes_part_in(key)
    info = engine.reply_posted_as(reply_ref(question, int(answer["id"])))
    assert info is not None and ANSWER_SNIPPET in info.text


async def test_follow_up_in_the_bots_thread_is_answered_without_mention(
    fake: FakeDiscord, bot: Any
) -> None:
    async with bot():
        question = await fake.post_message(fake.general_channel, QUESTION, mention_bot=True)
        await answered(fake, question)
        await fake.post_message(question, "thanks!")  # in the thread, no mention
        await answered(fake, question, 2)
        await quiet(fake)
    assert len(fake.bot_messages(question)) == 2


async def test_dm_is_answered_in_the_dm(fake: FakeDiscord, bot: Any, engine: Engine) -> None:
    async with bot():
        question = await fake.post_message(fake.dm_channel, QUESTION)
        (answer,) = await answered(fake, fake.dm_channel)
    assert ANSWER_SNIPPET in answer["content"]
    assert "message_reference" not in answer
    assert fake.find("POST", r"/channels/\d+/messages/\d+/threads") == []
    key = ConversationKey("discord", "@me", str(fake.dm_channel))
    history = engine.store.history(engine.store.find_conversation(key).id)  # type: ignore[union-attr]
    assert history[0] == Turn(Role.USER, QUESTION)
    assert engine.store.answered_message(
        history and engine.store.find_conversation(key).id, str(question)
    )  # type: ignore[union-attr]


async def test_every_new_forum_post_is_answered_inside_the_post(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        post = await fake.post_forum_post("Password trouble", QUESTION)
        (answer,) = await answered(fake, post)
        await quiet(fake)
    assert ANSWER_SNIPPET in answer["content"]
    assert fake.find("POST", r"/channels/\d+/messages/\d+/threads") == []
    key = ConversationKey("discord", str(fake.guild_id), str(fake.forum_channel), str(post))
    assert engine.takes_part_in(key)


async def test_every_message_in_a_support_channel_is_answered(fake: FakeDiscord, bot: Any) -> None:
    async with bot():
        question = await fake.post_message(fake.support_channel, QUESTION)  # no mention
        (answer,) = await answered(fake, question)
    assert ANSWER_SNIPPET in answer["content"]


async def test_unaddressed_messages_and_bots_are_ignored(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        await fake.post_message(fake.general_channel, QUESTION)  # not addressed
        await fake.post_message(fake.support_channel, QUESTION, author_id=fake.other_bot_id)
        await fake.post_message(
            fake.general_channel, QUESTION, author_id=fake.other_bot_id, mention_bot=True
        )
        await fake.post_message(fake.dm_channel, QUESTION, author_id=fake.bot_id)  # itself
        await quiet(fake)
    # Only the DM sent by `quiet` was answered.
    assert len(fake.posts()) == 1
    assert fake.find("POST", r"/channels/\d+/messages/\d+/threads") == []
    assert engine.store.counts()["conversation"] == 1


async def test_without_thread_permission_the_answer_is_a_reply(fake: FakeDiscord, bot: Any) -> None:
    fake.refuse_threads = True
    async with bot():
        question = await fake.post_message(fake.general_channel, QUESTION, mention_bot=True)
        (answer,) = await answered(fake, fake.general_channel)
    assert answer["message_reference"]["message_id"] == str(question)
    assert ANSWER_SNIPPET in answer["content"]


async def test_an_edit_that_adds_a_mention_is_answered_once(fake: FakeDiscord, bot: Any) -> None:
    async with bot():
        question = await fake.post_message(fake.general_channel, "password help")
        await fake.edit_message(question, QUESTION, mention_bot=True)
        await answered(fake, question)
        await fake.edit_message(question, f"{QUESTION} (edited)", mention_bot=True)
        await quiet(fake)
    assert len(fake.bot_messages(question)) == 1


# Long answers ------------------------------------------------------------------------------------


@dataclass
class LongResponder:
    """Answers everything with a long text holding a code block: the engine's decision stubbed."""

    config: EngineConfig = field(default_factory=EngineConfig)

    def prefetch(self, text: str) -> None:
        """Nothing to embed ahead."""

    def respond(self, text: str, history: Any = ()) -> tuple[Reply, Trace]:
        prose = " ".join(f"Step {i}: open the settings and check option {i}." for i in range(40))
        code = "\n".join(f"lumen sync --folder notes/{i} --verbose" for i in range(60))
        body = f"{prose}\n\n```bash\n{code}\n```\n\nThat's all."
        source = Source("long", 0.9, "Sync from the command line", "https://help.example/sync")
        return Reply.answer(body, (source,), 0.9), Trace(text, False, None, None)


async def test_an_answer_over_2000_characters_is_split_without_breaking_code(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'long.db'}")
    engine = Engine(store, LongResponder(), policies=short_policies())  # type: ignore[arg-type]
    try:
        async with running(fake, engine):
            await fake.post_message(fake.dm_channel, "how do I sync?")
            await answered(fake, fake.dm_channel, 3)
            await asyncio.sleep(0.3)
            messages = fake.bot_messages(fake.dm_channel)
            reply_id = engine.reply_posted_as(reply_ref(fake.dm_channel, int(messages[-1]["id"])))
    finally:
        store.close()
    assert len(messages) >= 3
    assert all(len(m["content"]) <= MESSAGE_LIMIT for m in messages)
    assert all(m["content"].count("```") % 2 == 0 for m in messages)
    assert "lumen sync --folder notes/59 --verbose" in "".join(m["content"] for m in messages)
    assert [bool(m["components"]) for m in messages] == [False] * (len(messages) - 1) + [True]
    assert messages[-1]["content"].endswith("(<https://help.example/sync>)")
    assert reply_id is not None  # the last chunk (with the buttons) is the reply's reference


# Intent off ------------------------------------------------------------------------------------


async def test_empty_content_without_the_intent_logs_one_warning(
    fake: FakeDiscord, bot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adapters.discord")
    async with bot(message_content=False):
        assert not fake.intents & (1 << 15)
        await fake.post_message(fake.support_channel, QUESTION)
        await fake.post_message(fake.support_channel, "another question")
        await quiet(fake)  # DMs still carry their text: the bot keeps working
    warnings = [r for r in caplog.records if r.msg == NO_CONTENT_WARNING]
    assert len(warnings) == 1
    assert "Message Content Intent" in warnings[0].getMessage()
    assert fake.posts(fake.support_channel) == []


# Feedback --------------------------------------------------------------------------------------


async def _answer_in_thread(fake: FakeDiscord, engine: Engine) -> tuple[int, Any, str]:
    question = await fake.post_message(fake.general_channel, QUESTION, mention_bot=True)
    (answer,) = await answered(fake, question)
    ref = reply_ref(question, int(answer["id"]))
    info = await fake.wait_for(lambda: engine.reply_posted_as(ref), WAIT, "reply reference")
    return question, answer, info.id


async def test_reactions_rate_the_answer_and_removing_withdraws(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        _, answer, reply_id = await _answer_in_thread(fake, engine)
        await fake.react(int(answer["id"]), "👍🏽")  # a skin tone still means 👍
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["up"] == 1, WAIT, "up")
        await fake.react(int(answer["id"]), "👍🏽", add=False)
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["up"] == 0, WAIT, "gone")
        await fake.react(int(answer["id"]), "👎")
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["down"] == 1, WAIT, "dn")
        await fake.react(int(answer["id"]), "🎉")  # not a rating
        await quiet(fake)
    assert engine.store.feedback_for(reply_id) == {"up": 0, "down": 1}


async def test_buttons_are_acknowledged_then_recorded(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        _, answer, reply_id = await _answer_in_thread(fake, engine)
        interaction = await fake.click(int(answer["id"]), UP_ID)
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["up"] == 1, WAIT, "up")
        followup = await fake.wait_for(
            lambda: fake.find("POST", rf"/webhooks/{fake.app_id}/[^/]+"), WAIT, "followup"
        )
        await fake.click(int(answer["id"]), DOWN_ID)
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["down"] == 1, WAIT, "dn")
    (callback,) = fake.find("POST", rf"/interactions/{interaction}/[^/]+/callback")
    assert callback.json["type"] == 6  # deferred: acknowledged at once, no visible change
    assert fake.calls.index(callback) < fake.calls.index(followup[0])
    assert followup[0].json["content"] == THANKS_UP
    assert followup[0].json["flags"] & 64  # ephemeral: only the clicker sees it
    assert engine.store.feedback_for(reply_id) == {"up": 0, "down": 1}


async def test_buttons_keep_working_after_a_restart(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        _, answer, reply_id = await _answer_in_thread(fake, engine)
    fake.connected.clear()
    async with bot():  # a new process: only the persistent view registered at start-up
        await fake.click(int(answer["id"]), UP_ID)
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["up"] == 1, WAIT, "up")


async def test_talk_to_a_person_speaks_for_the_user(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        question, answer, _ = await _answer_in_thread(fake, engine)
        await fake.click(int(answer["id"]), HANDOFF_ID)
        await answered(fake, question, 2)
    key = ConversationKey("discord", str(fake.guild_id), str(fake.general_channel), str(question))
    conversation = engine.store.find_conversation(key)
    assert conversation is not None
    history = engine.store.history(conversation.id)
    assert Turn(Role.USER, HANDOFF_TEXT) in history


# Resilience ------------------------------------------------------------------------------------


async def test_a_resume_that_replays_a_message_does_not_answer_twice(
    fake: FakeDiscord, bot: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapters.discord")
    async with bot():
        first = await fake.post_message(fake.dm_channel, QUESTION)
        await answered(fake, fake.dm_channel)
        fake.pause()  # the next event is lost in transit
        missed = await fake.post_message(fake.support_channel, QUESTION)
        fake.duplicate_on_resume = [first]  # and Discord delivers `first` once more
        await fake.reconnect()
        await asyncio.wait_for(fake.connected.wait(), WAIT)
        await answered(fake, missed)
        # The inbox knows it (`SupportBotClient._accept`): no second turn.
        await fake.wait_for(
            lambda: f"gateway:{first} already accepted" in caplog.text, WAIT, "duplicate"
        )
        await quiet(fake)
    assert fake.identifies == 1 and fake.resumes == 1
    assert len(fake.posts(fake.dm_channel)) == 2  # the first answer and the `quiet` one
    assert len(fake.posts(missed)) == 1


# Agents' side ----------------------------------------------------------------------------------


async def test_handoff_card_and_agent_replies_in_its_thread(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    customer = ConversationKey("discord", "@me", str(fake.dm_channel))
    card = HandoffCard(
        conversation=customer,
        customer="customer",
        platform="discord",
        question=QUESTION,
        attempts=("On the sign-in page click Forgot password?",),
        sources=(Source("reset-password", 0.8, "Reset your password", "https://h.example/r"),),
        transcript=(Turn(Role.USER, QUESTION), Turn(Role.BOT, "On the sign-in page…")),
    )
    received: list[AgentReply] = []

    async def relay(reply: AgentReply) -> None:
        received.append(reply)

    async with bot() as client:
        client.on_agent_reply(relay)
        card_ref = await client.post_handoff_card(card)
        card_id = int(card_ref.split(":")[1])
        assert card_ref == f"{fake.agents_channel}:{card_id}"
        (post,) = fake.posts(fake.agents_channel)
        embed = post.json["embeds"][0]
        assert embed["footer"]["text"] == f"conversation {customer}"
        assert {f["name"] for f in embed["fields"]} >= {"Customer", "Platform", "Transcript"}
        assert fake.find("POST", rf"/channels/{fake.agents_channel}/messages/{card_id}/threads")
        await fake.post_message(card_id, "Hi, I'm Sam from support. Let me look.")
        await fake.wait_for(lambda: received, WAIT, "agent reply")
        client._cards.clear()  # as after a restart: the card itself says which conversation
        await fake.post_message(card_id, "Done: I reset it for you.")
        await fake.wait_for(lambda: len(received) == 2, WAIT, "second agent reply")
        await quiet(fake)
    assert [r.text for r in received] == [
        "Hi, I'm Sam from support. Let me look.",
        "Done: I reset it for you.",
    ]
    assert all(r.conversation == customer and r.card_ref == card_ref for r in received)
    assert fake.bot_messages(card_id) == []  # agents are never answered by the bot
    assert fake.find("GET", rf"/channels/{fake.agents_channel}/messages/{card_id}")


# Start-up --------------------------------------------------------------------------------------


async def test_sharded_client_answers_too(fake: FakeDiscord, bot: Any) -> None:
    async with bot(sharded=True) as client:
        assert isinstance(client, discord.AutoShardedClient)
        await fake.post_message(fake.dm_channel, QUESTION)
        await answered(fake, fake.dm_channel)
    assert fake.find("GET", "/gateway/bot")


async def test_a_refused_token_is_a_config_error(fake: FakeDiscord, engine: Engine) -> None:
    settings = discord_settings(fake, token="not-the-token")
    with pytest.raises(ConfigError, match="refused DISCORD_TOKEN"):
        await asyncio.wait_for(serve(settings, engine), WAIT)


async def test_a_refused_privileged_intent_says_how_to_enable_it(engine: Engine) -> None:
    strict = FakeDiscord(allow_privileged=False)
    await strict.start()
    try:
        settings = discord_settings(strict, gateway_url=strict.gateway_url)
        with pytest.raises(ConfigError, match="Message Content Intent"):
            await asyncio.wait_for(serve(settings, engine), WAIT)
    finally:
        await strict.close()
