"""Secrets come from the environment or from files (``<NAME>_FILE``), and never reach a log."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from fastapi.testclient import TestClient

from adapters.slack import SlackSettings
from adapters.zendesk import ZendeskSettings
from bot.app import create_app
from bot.errors import ConfigError
from bot.service import build_services
from bot.settings import load_settings, resolve_secret_files
from tests.adapters.slack.emulator import SlackEmulator
from tests.adapters.zendesk.emulator import BOT_USER_ID, EMAIL, ZendeskEmulator
from tests.fuzz.conftest import slack_headers, zendesk_headers

SECRETS = {
    "SLACK_SIGNING_SECRET": "s1gning-secret-for-the-log-test-77f1",
    "SLACK_BOT_TOKEN": "xoxb-log-test-token-5b9e2c",
    "ZENDESK_API_TOKEN": "zendesk-api-token-log-test-a41d",
    "ZENDESK_WEBHOOK_SECRET": "zendesk-webhook-secret-log-test-c3f0",
    "SUPPORTBOT_DASHBOARD_TOKEN": "dashboard-token-log-test-9e7a",
    "SUPPORTBOT_RASA_TOKEN": "rasa-token-log-test-1d2c",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No bot setting from the caller's shell; the whole environment restored afterwards
    (`load_settings` writes the values it reads from files into it, as it should)."""
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("SLACK_", "SUPPORTBOT_", "ZENDESK_", "DISCORD_")):
            monkeypatch.delenv(name)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_a_file_variable_fills_the_setting(tmp_path: Path) -> None:
    secret = tmp_path / "signing"
    secret.write_text("from-a-file\n")
    env = {"SLACK_SIGNING_SECRET_FILE": str(secret), "PATH_FILE": "/nonexistent"}

    assert resolve_secret_files(env) == ["SLACK_SIGNING_SECRET"]
    assert env["SLACK_SIGNING_SECRET"] == "from-a-file"  # trailing newline dropped
    assert "PATH" not in env  # not one of the bot's settings: left alone


def test_both_a_value_and_a_file_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("x")
    env = {"ZENDESK_API_TOKEN": "y", "ZENDESK_API_TOKEN_FILE": str(secret)}
    with pytest.raises(ConfigError, match="keep only one"):
        resolve_secret_files(env)


def test_an_unreadable_file_says_which_and_what_to_do(tmp_path: Path) -> None:
    env = {"SUPPORTBOT_DASHBOARD_TOKEN_FILE": str(tmp_path / "missing")}
    with pytest.raises(
        ConfigError, match=r"SUPPORTBOT_DASHBOARD_TOKEN_FILE .*missing.*fix the path"
    ):
        resolve_secret_files(env)


def test_load_settings_reads_files_for_the_bot_and_its_adapters(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    for name in ("SUPPORTBOT_DASHBOARD_TOKEN", "SLACK_SIGNING_SECRET", "ZENDESK_WEBHOOK_SECRET"):
        (tmp_path / name).write_text(SECRETS[name] + "\n")
        clean_env.setenv(f"{name}_FILE", str(tmp_path / name))

    settings = load_settings(data_dir=tmp_path)

    assert settings.dashboard_token is not None
    assert settings.dashboard_token.get_secret_value() == SECRETS["SUPPORTBOT_DASHBOARD_TOKEN"]
    slack = SlackSettings.from_env()
    assert slack.signing_secret is not None
    assert slack.signing_secret.get_secret_value() == SECRETS["SLACK_SIGNING_SECRET"]
    zendesk = ZendeskSettings.from_env()
    assert zendesk.webhook_secret is not None
    assert zendesk.webhook_secret.get_secret_value() == SECRETS["ZENDESK_WEBHOOK_SECRET"]
    # Secret settings do not show in a settings object's repr (tracebacks, debug dumps).
    for text in (repr(settings), repr(slack), repr(zendesk)):
        assert not [v for v in SECRETS.values() if v in text]


@pytest.fixture
def emulators() -> Iterator[tuple[SlackEmulator, ZendeskEmulator]]:
    zendesk = ZendeskEmulator()
    zendesk.start()
    slack = SlackEmulator()
    with start_blocking_portal() as loop:
        loop.call(slack.start)
        try:
            yield slack, zendesk
        finally:
            loop.call(slack.stop)
            zendesk.stop()


def _texts(record: logging.LogRecord) -> list[str]:
    texts = [record.getMessage(), repr(record.args)]
    if record.exc_info:
        texts.append(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        texts.append(record.stack_info)
    texts.append(repr(getattr(record, "__dict__", {})))
    return texts


@pytest.mark.model
def test_no_secret_reaches_any_log_record_at_debug(
    tmp_path: Path,
    sample_kb_dir: Path,
    embedder: Any,
    clean_env: pytest.MonkeyPatch,
    emulators: tuple[SlackEmulator, ZendeskEmulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack, zendesk = emulators
    # Half the secrets from the environment, half from files.
    for n, (name, value) in enumerate(SECRETS.items()):
        if n % 2:
            (tmp_path / name).write_text(value)
            clean_env.setenv(f"{name}_FILE", str(tmp_path / name))
        else:
            clean_env.setenv(name, value)
    clean_env.setenv("SLACK_API_URL", slack.api_url)
    clean_env.setenv("SUPPORTBOT_SLACK_AUTO_ANSWER_CHANNELS", "C0AUTO")
    clean_env.setenv("ZENDESK_SUBDOMAIN", "acme")
    clean_env.setenv("ZENDESK_EMAIL", EMAIL)
    clean_env.setenv("ZENDESK_BOT_USER_ID", str(BOT_USER_ID))
    clean_env.setenv("ZENDESK_API_URL", zendesk.api_url)
    clean_env.setenv("ZENDESK_SATISFACTION_POLL_S", "0")
    clean_env.setenv("SUPPORTBOT_RATE_LIMIT", "100/minute")
    shutil.copytree(sample_kb_dir, tmp_path / "data" / "index")
    caplog.set_level(logging.DEBUG)

    settings = load_settings(data_dir=tmp_path / "data")
    services = build_services(settings, embedder=embedder)
    app = create_app(services)  # the adapters mount themselves from the environment
    try:
        with TestClient(app) as http:
            chat = {"conversation_id": "c1", "user": "ann", "text": "How do I export my notes?"}
            assert http.post("/api/chat", json=chat).status_code == 200
            event = {
                "type": "event_callback",
                "team_id": "T0TEAM",
                "event_id": "Ev1",
                "event": {
                    "type": "message",
                    "channel": "D0DM",
                    "channel_type": "im",
                    "user": "U0ANN",
                    "text": "reset my password",
                    "ts": "1700000000.000100",
                },
            }
            raw = json.dumps(event).encode()
            sent = {"Content-Type": "application/json"}
            signed = slack_headers(raw, SECRETS["SLACK_SIGNING_SECRET"])
            assert http.post("/slack/events", content=raw, headers={**sent, **signed}).is_success
            assert http.post("/slack/events", content=raw, headers=sent).status_code == 401
            assert http.portal is not None
            http.portal.call(app.state.slack.drain, 15)
            comment = _zendesk_comment()
            raw = json.dumps(comment).encode()
            signed = zendesk_headers(raw, SECRETS["ZENDESK_WEBHOOK_SECRET"])
            assert http.post("/zendesk/webhook", content=raw, headers={**sent, **signed}).is_success
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            http.post("/dashboard/login", content=b"token=wrong", headers=form)
            token = SECRETS["SUPPORTBOT_DASHBOARD_TOKEN"]
            login = http.post(
                "/dashboard/login",
                content=f"token={token}".encode(),
                headers=form,
                follow_redirects=False,
            )
            assert login.status_code == 303
    finally:
        services.store.close()

    assert len(caplog.records) > 20  # DEBUG logging was on and the app did talk
    assert slack.calls_to("chat.postMessage"), "the Slack turn ran"
    leaks = [
        (record.name, record.levelname, secret_name)
        for record in caplog.records
        for text in _texts(record)
        for secret_name, value in SECRETS.items()
        if value in text
    ]
    assert leaks == []


def _zendesk_comment() -> dict[str, Any]:
    from tests.adapters.zendesk.conftest import payload

    return payload("comment_added_customer")
