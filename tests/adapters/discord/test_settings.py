"""Discord settings from the environment, validated at start-up with messages saying what to do."""

from __future__ import annotations

import pytest

from adapters.discord.settings import load_discord_settings
from bot.errors import ConfigError

ENV = (
    "DISCORD_TOKEN",
    "DISCORD_API_URL",
    "DISCORD_GATEWAY_URL",
    "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS",
    "SUPPORTBOT_DISCORD_FORUM_CHANNELS",
    "SUPPORTBOT_DISCORD_AGENTS_CHANNEL",
    "SUPPORTBOT_DISCORD_UP_EMOJI",
    "SUPPORTBOT_DISCORD_DOWN_EMOJI",
    "SUPPORTBOT_DISCORD_SHARDED",
    "SUPPORTBOT_DISCORD_MESSAGE_CONTENT",
    "SUPPORTBOT_DISCORD_THREADS",
    "SUPPORTBOT_DISCORD_TOKEN",
    "SUPPORTBOT_DISCORD_API_URL",
    "SUPPORTBOT_DISCORD_GATEWAY_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "  abc.def.ghi ")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_SUPPORT_CHANNELS", "111, 222")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_FORUM_CHANNELS", "333")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_AGENTS_CHANNEL", "444")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_UP_EMOJI", "👍,<:yes:123456789012345678>")
    monkeypatch.setenv("SUPPORTBOT_DISCORD_SHARDED", "1")
    monkeypatch.setenv("DISCORD_API_URL", "http://127.0.0.1:9/api/v10/")
    settings = load_discord_settings()
    assert settings.token.get_secret_value() == "abc.def.ghi"
    assert "abc" not in repr(settings)  # the token never shows in logs
    assert settings.support_channels == (111, 222)
    assert settings.forum_channels == (333,)
    assert settings.agents_channel == 444
    assert settings.up_emoji == ("👍", "123456789012345678")
    assert settings.down_emoji == ("👎",)
    assert settings.sharded and settings.message_content and settings.threads
    assert settings.api_url == "http://127.0.0.1:9/api/v10"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set DISCORD_TOKEN to your bot's token"),
        ({"DISCORD_TOKEN": "Bot abc"}, "without the 'Bot ' prefix"),
        (
            {"DISCORD_TOKEN": "t", "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS": "1,general"},
            "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS item 2",
        ),
        (
            {
                "DISCORD_TOKEN": "t",
                "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS": "5",
                "SUPPORTBOT_DISCORD_FORUM_CHANNELS": "5",
            },
            "both support and forum",
        ),
        (
            {
                "DISCORD_TOKEN": "t",
                "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS": "5",
                "SUPPORTBOT_DISCORD_AGENTS_CHANNEL": "5",
            },
            "would answer its own handoff cards",
        ),
        ({"DISCORD_TOKEN": "t", "SUPPORTBOT_DISCORD_DOWN_EMOJI": "👍"}, "rate both up and down"),
        ({"DISCORD_TOKEN": "t", "DISCORD_API_URL": "127.0.0.1:9"}, "DISCORD_API_URL"),
        ({"DISCORD_TOKEN": "t", "DISCORD_GATEWAY_URL": "http://x"}, "ws:// or wss://"),
    ],
)
def test_invalid_settings_say_how_to_fix_them(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="invalid Discord settings") as error:
        load_discord_settings()
    assert message in str(error.value)
