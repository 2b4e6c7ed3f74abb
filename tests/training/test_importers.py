"""Importers: each export shape becomes conversations with the right roles, threads and signals."""

from __future__ import annotations

import json
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.model import ConversationKey, FeedbackEvent, FeedbackValue, Owner, Reply, Role
from bot.storage.store import Store
from training.errors import TrainingDataError
from training.importers import FORMATS, ImportOptions, ImportResult, load_source
from training.importers.database import load_store
from training.model import Conversation, Speaker

from .conftest import DATA


def by_id(result: ImportResult) -> dict[str, Conversation]:
    return {c.id: c for c in result.conversations}


def roles(conversation: Conversation) -> list[str]:
    return [t.role.value for t in conversation.turns]


def test_the_registry_names_every_format() -> None:
    assert set(FORMATS) == {"slack", "discord", "zendesk", "csv", "jsonl", "db"}
    with pytest.raises(TrainingDataError, match="unknown format 'teams'"):
        load_source("teams", DATA)


# Slack -------------------------------------------------------------------------------------------


def test_slack_threads_are_rebuilt_from_thread_ts() -> None:
    result = load_source("slack", DATA / "slack_export")
    conversations = by_id(result)
    sync = conversations["slack:C01SUPPORT:1709280100.000200"]
    assert roles(sync) == ["customer", "bot", "customer", "agent"]
    assert [t.author for t in sync.turns] == ["U01CUST01", "B99LUMEN", "U01CUST01", "U10AGENT1"]
    assert sync.turns[0].time == datetime.fromtimestamp(1709280100.0002, UTC)
    assert sync.signals.resolved is True
    assert sync.signals.thumbs_up == 1 and sync.signals.thumbs_down == 1
    assert sync.signals.handed_off is True
    assert sync.turns[1].meta["feedback"] == "down"
    assert sync.turns[3].meta["feedback"] == "up"
    # The billing channel's folder is read too.
    assert "slack:C02BILLING:1709460000.000100" in conversations
    assert all(c.platform == "slack" for c in result.conversations)


def test_slack_system_subtypes_are_dropped_and_counted() -> None:
    result = load_source("slack", DATA / "slack_export")
    assert result.dropped["slack:channel_join"] == 1
    assert result.dropped["slack:channel_topic"] == 1
    texts = [t.text for c in result.conversations for t in c.turns]
    assert not any("has joined the channel" in text for text in texts)


def test_slack_user_directory_feeds_names_but_not_bots() -> None:
    result = load_source("slack", DATA / "slack_export")
    assert "Maria Lopez" in result.people.names["U01CUST01"]
    assert "U99LUMEN" not in result.people.names


def test_slack_zip_export_reads_like_the_folder(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in (DATA / "slack_export").rglob("*.json"):
            # Exports zipped by hand often sit in one top folder.
            zf.write(file, f"Acme Slack export/{file.relative_to(DATA / 'slack_export')}")
    from_zip = load_source("slack", archive)
    from_folder = load_source("slack", DATA / "slack_export")
    assert [c.to_json()["turns"] for c in from_zip.conversations] == [
        c.to_json()["turns"] for c in from_folder.conversations
    ]


def test_slack_agents_option_overrides_the_starter_rule(tmp_path: Path) -> None:
    result = load_source(
        "slack", DATA / "slack_export", ImportOptions(agents=frozenset({"dkowalski"}))
    )
    pdf = by_id(result)["slack:C01SUPPORT:1709283600.000600"]
    assert pdf.turns[0].role is Speaker.AGENT


def test_slack_export_without_channels_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="not a folder or a zip"):
        load_source("slack", _write(tmp_path / "x.json", "[]"))


# Discord -----------------------------------------------------------------------------------------


def test_discord_reply_chains_and_bursts_make_conversations() -> None:
    result = load_source("discord", DATA / "discord" / "lumen-community-help.json")
    conversations = result.conversations
    assert len(conversations) == 4
    share, offline, thumbs, language = conversations
    assert roles(share) == ["customer", "agent"]
    assert share.signals.resolved is True and share.signals.thumbs_up == 1
    # A follow-up by the same customer two minutes later continues the conversation.
    assert roles(offline) == ["customer", "bot", "customer", "agent"]
    assert offline.signals.thumbs_up == 2
    assert roles(thumbs) == ["customer"]
    assert roles(language) == ["customer", "agent"]
    assert result.dropped == {"discord:GuildMemberJoin": 1, "discord:ChannelPinnedMessage": 1}
    assert "Aisha Bello" in result.people.names["330000000000000002"]


def test_discord_agent_roles_make_agents_even_when_they_start(tmp_path: Path) -> None:
    data = json.loads((DATA / "discord" / "lumen-community-help.json").read_text())
    data["messages"] = [m for m in data["messages"] if m["author"]["name"] == "lena_staff"][:1]
    data["messages"][0]["type"] = "Default"
    file = _write(tmp_path / "one.json", json.dumps(data))
    only = load_source("discord", file, ImportOptions(agent_roles=frozenset({"Support"})))
    assert roles(only.conversations[0]) == ["agent"]


def test_discord_other_json_is_rejected_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="--format Json"):
        load_source("discord", _write(tmp_path / "x.json", '{"channel_id": "1"}'))


# Zendesk -----------------------------------------------------------------------------------------


def test_zendesk_tickets_roles_notes_and_ratings() -> None:
    result = load_source(
        "zendesk", DATA / "zendesk" / "tickets.json", ImportOptions(bots=frozenset({"7002"}))
    )
    tickets = by_id(result)
    cancel = tickets["zendesk:5101"]
    assert roles(cancel) == ["customer", "agent"]  # the internal note is gone
    assert result.dropped["zendesk:internal_note"] == 1
    assert cancel.signals.resolved is True and cancel.signals.thumbs_up == 1
    upload = tickets["zendesk:5102"]
    assert roles(upload) == ["customer", "bot", "customer", "agent"]
    assert upload.signals.resolved is False and upload.signals.handed_off is True
    assert tickets["zendesk:5103"].signals.thumbs_down == 1
    assert "Lumen Assistant" not in [n for names in result.people.names.values() for n in names]


def test_zendesk_jsonl_with_users_beside_it(tmp_path: Path) -> None:
    data = json.loads((DATA / "zendesk" / "tickets.json").read_text())
    folder = tmp_path / "zd"
    folder.mkdir()
    (folder / "tickets.jsonl").write_text("\n".join(json.dumps(t) for t in data["tickets"]))
    (folder / "users.json").write_text(json.dumps({"users": data["users"]}))
    result = load_source("zendesk", folder)
    assert len(result.conversations) == 3
    assert "Hannah Schmidt" in result.people.names["9001"]


# CSV / JSONL -------------------------------------------------------------------------------------


def test_csv_rows_group_into_conversations() -> None:
    result = load_source("csv", DATA / "chat_log.csv", ImportOptions(platform="web"))
    conversations = by_id(result)
    first = conversations["chat_log:web-1"]
    assert roles(first) == ["customer", "bot", "customer"]
    assert first.signals.resolved is True and first.signals.thumbs_up == 1
    assert first.platform == "web"
    evernote = conversations["chat_log:web-2"]
    assert roles(evernote) == ["customer", "bot", "agent"]  # the system row is dropped
    assert evernote.turns[1].meta["feedback"] == "down"
    assert result.dropped == {"system": 1}
    assert "Liam O'Brien" in result.people.names["Liam O'Brien"]


def test_jsonl_with_renamed_columns_and_unix_times(tmp_path: Path) -> None:
    lines = [
        {"ticket": "a", "who": "client", "msg": "Where is my invoice?", "at": 1710403200},
        {"ticket": "a", "who": "support", "msg": "Account > Billing > Invoices.", "at": 1710403260},
    ]
    file = _write(tmp_path / "log.jsonl", "\n".join(json.dumps(line) for line in lines))
    columns = {"conversation_id": "ticket", "role": "who", "text": "msg", "timestamp": "at"}
    result = load_source("jsonl", file, ImportOptions(columns=columns))
    (conversation,) = result.conversations
    assert roles(conversation) == ["customer", "agent"]
    assert conversation.turns[0].time == datetime(2024, 3, 14, 8, 0, tzinfo=UTC)


def test_csv_missing_columns_and_unknown_roles_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match=r"no column.*--column"):
        load_source("csv", _write(tmp_path / "a.csv", "id,who,msg\n1,user,hi\n"))
    with pytest.raises(TrainingDataError, match=r"line 2: unknown role 'robot'"):
        load_source("csv", _write(tmp_path / "b.csv", "conversation_id,role,text\n1,robot,hi\n"))
    with pytest.raises(TrainingDataError, match="line 2 is not JSON"):
        load_source(
            "jsonl",
            _write(
                tmp_path / "c.jsonl",
                '{"conversation_id": 1, "role": "user", "text": "hi"}\n{oops\n',
            ),
        )
    with pytest.raises(TrainingDataError, match="no such file"):
        load_source("csv", tmp_path / "missing.csv")


# The bot's own database --------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}")


def seed_handoff_conversation(store: Store) -> str:
    """A web conversation: a question, a 👎 bot answer, a handoff, an agent's answer, resolved."""
    conversation = store.get_or_create_conversation(ConversationKey("web", "", "s-1"), "cust-9")
    question = store.add_message(conversation.id, Role.USER, "cust-9", "Can I merge two notebooks?")
    reply = Reply.answer("Notebooks can be renamed from the sidebar.", sources=())
    reply_id = store.add_reply(conversation.id, question, reply)
    store.record_feedback(
        FeedbackEvent(
            reply_id=reply_id,
            platform="web",
            user="cust-9",
            value=FeedbackValue.DOWN,
            event_id="f1",
        )
    )
    store.add_message(
        conversation.id, Role.USER, "cust-9", "that is not what I asked, a person please"
    )
    store.set_owner(conversation.id, Owner.HUMAN, actor="cust-9", reason="asked for a person")
    store.add_message(
        conversation.id,
        Role.AGENT,
        "agent-rafael",
        "Select both notebooks, right-click and choose Merge; notes keep their tags and dates.",
    )
    store.set_owner(conversation.id, Owner.BOT, actor="agent-rafael", reason="resolved")
    store.set_status(conversation.id, "closed")
    return conversation.id


def test_database_conversations_carry_feedback_and_handoffs(store: Store) -> None:
    conversation_id = seed_handoff_conversation(store)
    store.get_or_create_conversation(ConversationKey("web", "", "empty"), "nobody")
    result = load_store(store)
    (conversation,) = result.conversations
    assert conversation.id == f"db:{conversation_id}"
    assert roles(conversation) == ["customer", "bot", "customer", "agent"]
    assert conversation.turns[1].meta["feedback"] == "down"
    assert conversation.turns[1].meta["kind"] == "answer"
    assert conversation.turns[3].meta["after_handoff"] is True
    assert conversation.signals.resolved is True
    assert conversation.signals.handed_off is True
    assert conversation.signals.thumbs_down == 1
    assert result.dropped == {"db:empty_conversation": 1}


def test_database_format_through_the_registry(store: Store, tmp_path: Path) -> None:
    seed_handoff_conversation(store)
    store.close()
    copy = tmp_path / "copy.db"
    shutil.copy(tmp_path / "bot.db", copy)
    assert len(load_source("db", str(copy)).conversations) == 1
    assert len(load_source("db", f"sqlite:///{copy}").conversations) == 1
    with pytest.raises(TrainingDataError, match="no such database file"):
        load_source("db", str(tmp_path / "nope.db"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
