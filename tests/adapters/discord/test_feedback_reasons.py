"""After a 👎 on Discord the bot offers quick reasons (to the clicker only after the button, as a
reply naming the person after a reaction); the choice is stored, and "talk to a person" asks
for one in the conversation."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from adapters.discord.client import THANKS_DOWN, THANKS_REASON
from adapters.discord.convert import HANDOFF_TEXT
from adapters.discord.render import DOWN_ID, reason_id
from bot.engine import Engine
from bot.model import ConversationKey, FeedbackReason, Role, Turn
from bot.storage.tables import Feedback
from tests.adapters.discord.conftest import WAIT
from tests.adapters.discord.fake_discord import FakeDiscord
from tests.adapters.discord.test_client import _answer_in_thread, answered


def _reason_of(engine: Engine, reply_id: str) -> str | None:
    with Session(engine.store.engine) as session:
        row = session.exec(select(Feedback).where(Feedback.reply_id == reply_id)).first()
        return None if row is None else row.reason


def _as_shown(fake: FakeDiscord, channel_id: int, followup: Any) -> int:
    """The ephemeral follow-up as the clicker's client has it (with its buttons): the fake keeps
    no follow-ups, so the test files it where Discord shows it, in the answer's channel."""
    payload = fake.message_payload(channel_id, followup.json["content"], author_id=fake.bot_id)
    payload["components"] = followup.json["components"]
    payload["flags"] = followup.json["flags"]
    fake.messages[int(payload["id"])] = payload
    return int(payload["id"])


def _custom_ids(body: dict[str, Any]) -> list[str]:
    return [c["custom_id"] for row in body.get("components", []) for c in row["components"]]


async def test_a_thumbs_down_button_offers_reasons_and_the_choice_is_stored(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        _, answer, reply_id = await _answer_in_thread(fake, engine)
        await fake.click(int(answer["id"]), DOWN_ID)
        [followup] = await fake.wait_for(
            lambda: fake.find("POST", rf"/webhooks/{fake.app_id}/[^/]+"), WAIT, "reasons"
        )
        assert followup.json["content"].startswith(THANKS_DOWN)
        assert followup.json["flags"] & 64  # only the clicker sees them
        assert _custom_ids(followup.json) == [
            reason_id(reason.value, reply_id) for reason in FeedbackReason
        ]

        # The buttons' ids name the reply: the click comes from the follow-up, not the answer.
        shown = _as_shown(fake, int(answer["channel_id"]), followup)
        await fake.click(shown, reason_id("outdated", reply_id))
        await fake.wait_for(lambda: _reason_of(engine, reply_id) == "outdated", WAIT, "reason")
        thanks = await fake.wait_for(
            lambda: [
                c
                for c in fake.find("POST", rf"/webhooks/{fake.app_id}/[^/]+")
                if c.json["content"] == THANKS_REASON
            ],
            WAIT,
            "thanks",
        )
        assert thanks
    assert engine.store.feedback_for(reply_id) == {"up": 0, "down": 1}


async def test_the_reason_talk_to_a_person_asks_for_one(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    async with bot():
        question, answer, reply_id = await _answer_in_thread(fake, engine)
        await fake.click(int(answer["id"]), DOWN_ID)
        [followup] = await fake.wait_for(
            lambda: fake.find("POST", rf"/webhooks/{fake.app_id}/[^/]+"), WAIT, "reasons"
        )
        shown = _as_shown(fake, int(answer["channel_id"]), followup)
        await fake.click(shown, reason_id("talk_to_person", reply_id))
        key = ConversationKey(
            "discord", str(fake.guild_id), str(fake.general_channel), str(question)
        )
        conversation = engine.store.find_conversation(key)
        assert conversation is not None
        asked = Turn(Role.USER, HANDOFF_TEXT)
        await fake.wait_for(
            lambda: asked in engine.store.history(conversation.id), WAIT, "the request"
        )
        # The bot answers the request in the conversation's thread.
        await answered(fake, question, 3)  # the answer, the reasons as shown, the reply
    assert _reason_of(engine, reply_id) == "talk_to_person"


async def test_a_thumbs_down_reaction_offers_reasons_to_whoever_reacted(
    fake: FakeDiscord, bot: Any, engine: Engine
) -> None:
    """A reaction has no interaction to answer privately: the reasons come as a reply to the
    rated answer, naming (and only allowed to ping) the person who reacted."""
    async with bot():
        _, answer, reply_id = await _answer_in_thread(fake, engine)
        channel = int(answer["channel_id"])
        await fake.react(int(answer["id"]), "👍")
        await fake.wait_for(lambda: engine.store.feedback_for(reply_id)["up"] == 1, WAIT, "up")
        await fake.react(int(answer["id"]), "👎")

        def offered() -> list[Any]:
            return [m for m in fake.bot_messages(channel) if _custom_ids(m) and m is not answer]

        [offer] = await fake.wait_for(offered, WAIT, "reasons")
        assert offer["content"].startswith(f"<@{fake.customer_id}> {THANKS_DOWN}")
        assert _custom_ids(offer) == [
            reason_id(reason.value, reply_id) for reason in FeedbackReason
        ]
        assert offer["message_reference"]["message_id"] == answer["id"]
        [post] = [
            c
            for c in fake.find("POST", rf"/channels/{channel}/messages")
            if c.json.get("content", "").startswith(f"<@{fake.customer_id}>")
        ]
        assert [int(u) for u in post.json["allowed_mentions"]["users"]] == [fake.customer_id]
        assert post.json["allowed_mentions"]["parse"] == []

        await fake.click(int(offer["id"]), reason_id("wrong_answer", reply_id))
        await fake.wait_for(lambda: _reason_of(engine, reply_id) == "wrong_answer", WAIT, "reason")
    assert engine.store.feedback_for(reply_id) == {"up": 0, "down": 1}
    assert len(offered()) == 1, "the 👍 offered nothing"
