"""`prepare`, `supportbot data prepare` and `supportbot kb proposals`: files, reports, exits."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.model import ConversationKey, Owner, Role
from bot.storage.store import Store
from training.errors import TrainingDataError
from training.export import validate_openai
from training.importers import ImportOptions
from training.prepare import PrepareConfig, prepare

from .conftest import DATA, ZENDESK_BOT

SOURCES = [
    ("slack", str(DATA / "slack_export")),
    ("discord", str(DATA / "discord")),
    ("zendesk", str(DATA / "zendesk" / "tickets.json")),
    ("csv", str(DATA / "chat_log.csv")),
    ("jsonl", str(DATA / "chat_log.jsonl")),
]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_writes_every_file_without_leaks(tmp_path: Path, planted: dict[str, Any]) -> None:
    out = tmp_path / "out"
    config = PrepareConfig(options=ImportOptions(bots=frozenset({ZENDESK_BOT})), test_fraction=0.2)
    result = prepare(SOURCES, out, config=config)

    names = {p.name for p in out.iterdir()}
    assert names == {
        "conversations.jsonl",
        "pairs.train.jsonl",
        "pairs.test.jsonl",
        "openai.jsonl",
        "openai.test.jsonl",
        "st-pairs.jsonl",
        "st-pairs.test.jsonl",
        "report.json",
    }
    train = read_jsonl(out / "pairs.train.jsonl")
    test = read_jsonl(out / "pairs.test.jsonl")
    assert test, "some conversations go to test"
    assert {p["conversation_id"] for p in train}.isdisjoint({p["conversation_id"] for p in test})
    assert max(p["time"] for p in train) < min(p["time"] for p in test)
    assert validate_openai(read_jsonl(out / "openai.jsonl")) == len(train) >= 10
    rows = read_jsonl(out / "st-pairs.jsonl")
    assert all(set(r) <= {"anchor", "positive", "negative"} and r["anchor"] for r in rows)
    assert any("negative" in r for r in rows)  # the 👎 answers
    everything = "\n".join(p.read_text(encoding="utf-8") for p in out.iterdir()).lower()
    assert [v for v in planted["must_not_survive"] if v.lower() in everything] == []
    report = json.loads((out / "report.json").read_text())
    assert report["cleaning"]["redaction"]["by_kind"]["EMAIL"] >= 4
    assert report["balance"]["train_pairs"] == len(train)
    assert report["files"]["pairs.test.jsonl"] == len(test)
    assert result.report == report


def test_prepare_with_nothing_usable_says_why(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text("conversation_id,role,text\n1,user,hello?\n2,user,anyone?\n")
    with pytest.raises(TrainingDataError, match="no question → answer pairs"):
        prepare([("csv", str(log))], tmp_path / "out")


# The CLI -----------------------------------------------------------------------------------------


def cli_env(data_dir: Path) -> dict[str, str | None]:
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SUPPORTBOT_")}
    env["DATABASE_URL"] = None
    env["SUPPORTBOT_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "500"
    return env


@pytest.mark.model
def test_data_prepare_cli_prints_the_reports(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["data", "prepare", str(DATA / "slack_export"), "--format", "slack", "--out", str(out)],
        env=cli_env(data_dir),
    )
    assert result.exit_code == 0, result.output
    for title in ("Redacted", "Dropped", "Topics", "Platforms", "Written to"):
        assert title in result.stdout
    assert "EMAIL" in result.stdout and "slack" in result.stdout
    # Five Slack pairs are too few for OpenAI: written, with a warning, not an error.
    assert "fine-tuning needs at least 10" in result.output
    rows = read_jsonl(out / "st-pairs.jsonl")
    # The configured knowledge base (the sample) adds its example questions and near misses.
    assert len(rows) > 100 and sum("negative" in r for r in rows) > 100


def test_data_prepare_cli_rejects_bad_input_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    env = cli_env(tmp_path)
    bad_format = runner.invoke(
        app, ["data", "prepare", "x", "--format", "teams", "--out", str(tmp_path)], env=env
    )
    assert bad_format.exit_code == 2 and "--format must be one of" in bad_format.output
    bad_column = runner.invoke(
        app,
        [
            "data",
            "prepare",
            "x",
            "-f",
            "csv",
            "--out",
            str(tmp_path),
            "--column",
            "oops",
            "--no-kb",
        ],
        env=env,
    )
    assert bad_column.exit_code == 2 and "FIELD=COLUMN" in bad_column.output


def test_kb_proposals_list_and_reject_through_the_cli(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{(tmp_path / 'supportbot.db').resolve()}")
    conversation = store.get_or_create_conversation(ConversationKey("web", "", "1"), "c")
    store.add_message(conversation.id, Role.USER, "c", "Kindle?")
    store.set_owner(conversation.id, Owner.HUMAN, actor="c")
    first = store.add_proposal(question="Kindle?", answer="Send the PDF.", fingerprint="f1")
    assert first is not None
    assert store.add_proposal(question="Kindle?", answer="Send the PDF.", fingerprint="f1") is None
    store.close()
    runner = CliRunner()
    env = cli_env(tmp_path)

    listed = runner.invoke(app, ["kb", "proposals", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["id"] == first.id and row["status"] == "proposed"

    rejected = runner.invoke(
        app, ["kb", "proposals", "reject", str(first.id), "--note", "too vague"], env=env
    )
    assert rejected.exit_code == 0, rejected.output
    assert runner.invoke(app, ["kb", "proposals", "list", "--json"], env=env).stdout == ""
    table = runner.invoke(app, ["kb", "proposals", "list", "--status", "rejected"], env=env)
    assert "Kindle?" in table.stdout

    missing = runner.invoke(app, ["kb", "proposals", "reject", "999"], env=env)
    assert missing.exit_code != 0
    assert "no knowledge-base proposal 999" in str(missing.exception)
