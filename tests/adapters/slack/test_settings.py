"""Settings from the environment, validated at start-up with messages that say how to fix them;
the adapter mounts itself only when configured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from adapters.slack import SlackMode, SlackSettings, mount
from bot.app import create_app
from bot.errors import ConfigError
from bot.service import Services


async def _status(app: FastAPI, method: str, path: str) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return (await client.request(method, path)).status_code


async def test_nothing_set_means_off_and_nothing_mounted(services: Services) -> None:
    assert SlackSettings().mode is SlackMode.OFF
    app = FastAPI()
    assert mount(app, services) is None
    assert await _status(app, "POST", "/slack/events") == 404


def test_the_environment_selects_single_workspace_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("SUPPORTBOT_SLACK_AUTO_ANSWER_CHANNELS", "C1, C2,")
    monkeypatch.setenv("SUPPORTBOT_SLACK_UP_REACTIONS", ":heart:,+1")
    settings = SlackSettings.from_env()
    assert settings.check() is SlackMode.SINGLE
    assert settings.auto_answer_channels == ["C1", "C2"]
    assert settings.up_reactions == ["heart", "+1"]
    assert settings.api_url == "http://127.0.0.1:9/api/"


def test_the_supportbot_prefix_works_for_slacks_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SUPPORTBOT_SLACK_SIGNING_SECRET", "s")
    assert SlackSettings.from_env().check() is SlackMode.SINGLE


def test_oauth_and_socket_modes() -> None:
    oauth = SlackSettings(client_id="1.2", client_secret="c", signing_secret="s")
    assert oauth.check() is SlackMode.OAUTH
    socket = SlackSettings(socket_mode=True, bot_token="xoxb-1", app_token="xapp-1-A1-2-x")
    assert socket.check() is SlackMode.SOCKET


@pytest.mark.parametrize(
    ("values", "hint"),
    [
        ({"bot_token": "xoxb-1"}, "SLACK_SIGNING_SECRET"),
        ({"signing_secret": "s"}, "set SLACK_BOT_TOKEN for one workspace"),
        ({"bot_token": "xoxp-1", "signing_secret": "s"}, "starting with xoxb-"),
        (
            {"client_id": "1.2", "signing_secret": "s"},
            "both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET",
        ),
        (
            {"client_id": "1", "client_secret": "c", "bot_token": "xoxb-1", "signing_secret": "s"},
            "not both",
        ),
        ({"socket_mode": True, "bot_token": "xoxb-1"}, "connections:write"),
        ({"socket_mode": True, "bot_token": "xoxb-1", "app_token": "xoxb-2"}, "xapp-"),
        ({"socket_mode": True, "app_token": "xapp-1"}, "Socket Mode needs SLACK_BOT_TOKEN"),
        (
            {"socket_mode": True, "bot_token": "xoxb-1", "app_token": "xapp-1", "lease_renew": 20},
            "SUPPORTBOT_SLACK_LEASE_RENEW",
        ),
        (
            {
                "bot_token": "xoxb-1",
                "signing_secret": "s",
                "agents_channel": "C1",
                "auto_answer_channels": ["C1"],
            },
            "cannot also be an auto-answer channel",
        ),
        (
            {"bot_token": "xoxb-1", "signing_secret": "s", "down_reactions": ["+1"]},
            "both up and down",
        ),
    ],
)
def test_settings_that_cannot_work_say_how_to_fix_them(values: dict[str, Any], hint: str) -> None:
    with pytest.raises(ConfigError, match="Slack settings cannot work") as caught:
        SlackSettings(**values).check()
    assert hint in str(caught.value)


def test_unparsable_values_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_SLACK_HTTP_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="http_timeout"):
        SlackSettings.from_env()
    monkeypatch.setenv("SUPPORTBOT_SLACK_HTTP_TIMEOUT", "5")
    monkeypatch.setenv("SLACK_API_URL", "slack.com/api")
    with pytest.raises(ConfigError, match="http"):
        SlackSettings.from_env()


async def test_create_app_mounts_slack_from_the_environment(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    app = create_app(services)
    assert await _status(app, "POST", "/slack/events") == 401  # there, and unsigned
    assert await _status(app, "GET", "/slack/install") == 404  # no OAuth in this mode


def test_create_app_refuses_half_configured_slack(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        create_app(services)


async def test_oauth_mode_mounts_the_install_routes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_CLIENT_ID", "1.2")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "c")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    app = create_app(services)
    assert await _status(app, "POST", "/slack/events") == 401
    assert await _status(app, "GET", "/slack/install") == 200
    assert await _status(app, "GET", "/slack/oauth_redirect") == 400  # no code, no state


def test_run_has_a_socket_mode_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import bot.cli

    seen: dict[str, Any] = {}

    def fake_build_services(settings: Any, progress: bool = False) -> Any:
        import os

        seen["socket_mode"] = os.environ.get("SUPPORTBOT_SLACK_SOCKET_MODE")
        raise ConfigError("stop here")

    monkeypatch.setattr("bot.service.build_services", fake_build_services)
    # Registered with monkeypatch so the variable the command sets is removed afterwards.
    monkeypatch.setenv("SUPPORTBOT_SLACK_SOCKET_MODE", "0")
    result = CliRunner().invoke(bot.cli.app, ["run", "--slack-socket-mode"])
    assert seen == {"socket_mode": "1"}
    assert isinstance(result.exception, ConfigError)


def test_the_manifest_asks_for_what_the_adapter_uses() -> None:
    import yaml

    from adapters.slack.settings import DEFAULT_SCOPES

    manifest = yaml.safe_load((Path(__file__).parents[3] / "manifest.yml").read_text("utf-8"))
    settings = manifest["settings"]
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(DEFAULT_SCOPES)
    assert set(settings["event_subscriptions"]["bot_events"]) == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "reaction_added",
        "reaction_removed",
    }
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["interactivity"]["request_url"].endswith("/slack/events")
    assert "socket_mode_enabled" in settings
