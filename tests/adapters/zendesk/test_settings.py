"""Settings: validated at start, with messages that say how to fix them; mounting only when set."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from adapters.zendesk import ZendeskSettings, mount
from bot.app import adapter_mounts, create_app
from bot.errors import ConfigError
from bot.service import Services


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("ZENDESK_"):
            monkeypatch.delenv(name)
    yield monkeypatch


def complete(**overrides: object) -> ZendeskSettings:
    values: dict[str, object] = {
        "subdomain": "acme",
        "email": "bot@acme.example",
        "api_token": "t",
        "webhook_secret": "s",
        "bot_user_id": 9000,
    }
    values.update(overrides)
    return ZendeskSettings(**values)  # type: ignore[arg-type]


def test_complete_settings_pass() -> None:
    settings = complete()
    settings.check()
    assert settings.base_url == "https://acme.zendesk.com/api/v2/"
    assert settings.workspace == "acme"
    assert settings.handoff_status == "open"
    assert settings.handoff_tags == ("bot_handoff",)


def test_environment_names(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ZENDESK_SUBDOMAIN", "acme")
    clean_env.setenv("ZENDESK_EMAIL", "bot@acme.example")
    clean_env.setenv("ZENDESK_API_TOKEN", "t")
    clean_env.setenv("ZENDESK_WEBHOOK_SECRET", "s")
    clean_env.setenv("ZENDESK_BOT_USER_ID", "9000")
    clean_env.setenv("ZENDESK_HANDOFF_STATUS", "Pending")
    clean_env.setenv("ZENDESK_HANDOFF_GROUP_ID", "360001")
    clean_env.setenv("ZENDESK_HANDOFF_TAGS", "bot_handoff, needs_human")
    clean_env.setenv("ZENDESK_API_URL", "http://127.0.0.1:9/api/v2")
    settings = ZendeskSettings.from_env()
    settings.check()
    assert settings.bot_user_id == 9000
    assert settings.handoff_status == "pending"
    assert settings.handoff_group_id == 360001
    assert settings.handoff_tags == ("bot_handoff", "needs_human")
    assert settings.base_url == "http://127.0.0.1:9/api/v2/"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subdomain": None}, "set ZENDESK_SUBDOMAIN"),
        ({"subdomain": "acme.zendesk.com"}, "'acme' for acme.zendesk.com"),
        ({"subdomain": "https://Acme.zendesk.com"}, "the subdomain alone"),
        ({"email": None}, "set ZENDESK_EMAIL"),
        ({"api_token": None}, "Zendesk API → Settings"),
        ({"webhook_secret": None}, "Signing secret → Reveal secret"),
        ({"bot_user_id": None}, "…/agent/users/<id>"),
        ({"handoff_status": "closed"}, "ZENDESK_HANDOFF_STATUS must be one of"),
        ({"handoff_keywords": ""}, "ZENDESK_HANDOFF_KEYWORDS is empty"),
    ],
)
def test_problems_say_how_to_fix_them(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="Zendesk settings cannot work") as caught:
        complete(**overrides).check()
    assert message in str(caught.value)


def test_unparsable_values_are_config_errors(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ZENDESK_BOT_USER_ID", "the bot")
    with pytest.raises(ConfigError, match="invalid Zendesk settings"):
        ZendeskSettings.from_env()
    clean_env.setenv("ZENDESK_BOT_USER_ID", "1")
    clean_env.setenv("ZENDESK_API_URL", "acme.zendesk.com")
    with pytest.raises(ConfigError, match="must be an http"):
        ZendeskSettings.from_env()


def test_help_center_needs_only_the_account() -> None:
    ZendeskSettings(subdomain="acme").check_help_center()
    with pytest.raises(ConfigError, match="both ZENDESK_EMAIL and ZENDESK_API_TOKEN"):
        ZendeskSettings(subdomain="acme", email="a@b.c").check_help_center()
    assert not ZendeskSettings(subdomain="acme").configured


def test_the_entry_point_is_registered() -> None:
    assert adapter_mounts()["zendesk"] is mount


def test_not_configured_means_not_mounted(
    clean_env: pytest.MonkeyPatch, services: Services
) -> None:
    clean_env.setenv("ZENDESK_SUBDOMAIN", "acme")  # alone: only for the Help Center import
    app = create_app(services, adapters={"zendesk": mount})
    with TestClient(app) as client:
        assert client.post("/zendesk/webhook", content=b"{}").status_code == 404
    assert not hasattr(app.state, "zendesk")


def test_incomplete_settings_stop_the_start(
    clean_env: pytest.MonkeyPatch, services: Services
) -> None:
    clean_env.setenv("ZENDESK_API_TOKEN", "t")
    with pytest.raises(ConfigError, match="set ZENDESK_WEBHOOK_SECRET"):
        create_app(services, adapters={"zendesk": mount})
