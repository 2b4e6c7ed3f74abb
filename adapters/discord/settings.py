"""Settings of the Discord process, from the environment; validated once at start-up.

Every variable has the prefix ``SUPPORTBOT_DISCORD_`` except the token (``DISCORD_TOKEN``) and the
test overrides (``DISCORD_API_URL``, ``DISCORD_GATEWAY_URL``), which accept both spellings.
Lists are comma-separated: ``SUPPORTBOT_DISCORD_SUPPORT_CHANNELS=1234,5678``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["DEFAULT_DOWN_EMOJI", "DEFAULT_UP_EMOJI", "DiscordSettings", "load_discord_settings"]

DEFAULT_UP_EMOJI: tuple[str, ...] = ("👍",)
DEFAULT_DOWN_EMOJI: tuple[str, ...] = ("👎",)

PORTAL = "https://discord.com/developers/applications"
TOKEN_HELP = (
    f"set DISCORD_TOKEN to your bot's token: {PORTAL} → your application → Bot → Reset Token"
)

_CUSTOM_EMOJI = re.compile(r"^<?a?:?(?P<name>[\w~]+):(?P<id>\d{15,25})>?$")

ChannelIds = Annotated[tuple[int, ...], NoDecode]
EmojiList = Annotated[tuple[str, ...], NoDecode]


def _split(value: Any) -> Any:
    """Comma-separated environment values become tuples; lists and tuples pass through."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, int):
        return (value,)
    return value


def normalize_emoji(value: str) -> str:
    """The form reactions are matched in: a custom emoji's id, or the unicode emoji itself.

    Accepts ``👍``, ``<:name:123…>``, ``<a:name:123…>``, ``name:123…`` and a bare id.
    """
    value = value.strip()
    if value.isdigit():
        return value
    match = _CUSTOM_EMOJI.match(value)
    if match:
        return match.group("id")
    return value


class DiscordSettings(BaseSettings):
    """What `supportbot discord` needs.

    Attributes:
        token: the bot token (``DISCORD_TOKEN``).
        support_channels: text channels where every new message is answered.
        forum_channels: forum channels where every new post is answered.
        agents_channel: the channel where handoff cards for human agents are posted.
        agent_users: user ids of human agents (``SUPPORTBOT_DISCORD_AGENT_USERS``): one of them
            writing in a customer's thread takes the conversation over.
        agent_role: a role whose members are human agents too (``SUPPORTBOT_DISCORD_AGENT_ROLE``,
            or ``DISCORD_AGENT_ROLE``).
        up_emoji: reactions that rate an answer up (unicode, or custom as ``name:id``).
        down_emoji: reactions that rate an answer down.
        sharded: run an `AutoShardedClient` (large bots, 2,500+ servers).
        message_content: ask for the privileged Message Content intent. Off, the bot still sees
            DMs and mentions, but not the text of other messages.
        threads: answer in a thread started from the question where the channel allows it
            (otherwise as a reply to it).
        api_url: the REST base URL, only for tests against a local fake
            (e.g. ``http://127.0.0.1:8765/api/v10``).
        gateway_url: the gateway URL, only for tests; by default it is asked from the API at
            ``api_url`` when that is set.
    """

    model_config = SettingsConfigDict(env_prefix="SUPPORTBOT_DISCORD_", extra="ignore")

    token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("DISCORD_TOKEN", "SUPPORTBOT_DISCORD_TOKEN", "token"),
    )
    support_channels: ChannelIds = ()
    forum_channels: ChannelIds = ()
    agents_channel: int | None = None
    agent_users: ChannelIds = ()
    agent_role: int | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SUPPORTBOT_DISCORD_AGENT_ROLE", "DISCORD_AGENT_ROLE", "agent_role"
        ),
    )
    up_emoji: EmojiList = DEFAULT_UP_EMOJI
    down_emoji: EmojiList = DEFAULT_DOWN_EMOJI
    sharded: bool = False
    message_content: bool = True
    threads: bool = True
    api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DISCORD_API_URL", "SUPPORTBOT_DISCORD_API_URL", "api_url"),
    )
    gateway_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "DISCORD_GATEWAY_URL", "SUPPORTBOT_DISCORD_GATEWAY_URL", "gateway_url"
        ),
    )

    @field_validator(
        "support_channels", "forum_channels", "agent_users", "up_emoji", "down_emoji", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("support_channels", "forum_channels")
    @classmethod
    def _snowflakes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for channel in value:
            if channel <= 0:
                raise ValueError(
                    f"{channel} is not a channel id: in Discord, turn on Developer Mode "
                    "(User Settings → Advanced), right-click the channel → Copy Channel ID"
                )
        return value

    @field_validator("agent_users")
    @classmethod
    def _user_ids(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for user_id in value:
            if user_id <= 0:
                raise ValueError(
                    f"{user_id} is not a user id: in Discord, turn on Developer Mode "
                    "(User Settings → Advanced), right-click the agent → Copy User ID"
                )
        return value

    @field_validator("agents_channel", "agent_role", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("up_emoji", "down_emoji")
    @classmethod
    def _emoji(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one emoji, e.g. 👍")
        return tuple(normalize_emoji(item) for item in value)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError(TOKEN_HELP)
        if token.lower().startswith("bot "):
            raise ValueError("DISCORD_TOKEN must be the bare token, without the 'Bot ' prefix")
        if any(ch.isspace() for ch in token):
            raise ValueError("DISCORD_TOKEN contains whitespace: copy it again from the portal")
        return SecretStr(token)

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"DISCORD_API_URL must be an http(s) URL like http://127.0.0.1:8765/api/v10, "
                f"not {value!r}"
            )
        return value.rstrip("/")

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("ws://", "wss://")):
            raise ValueError(f"DISCORD_GATEWAY_URL must be a ws:// or wss:// URL, not {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DiscordSettings:
        both = set(self.support_channels) & set(self.forum_channels)
        if both:
            raise ValueError(
                f"channel(s) {sorted(both)} are listed as both support and forum channels: "
                "a forum channel's posts are answered already, keep each id in one list"
            )
        if self.agents_channel is not None and self.agents_channel in (
            *self.support_channels,
            *self.forum_channels,
        ):
            raise ValueError(
                f"the agents' channel {self.agents_channel} is also a support or forum channel: "
                "the bot would answer its own handoff cards; use a private staff channel"
            )
        clash = set(self.up_emoji) & set(self.down_emoji)
        if clash:
            raise ValueError(f"emoji {sorted(clash)} rate both up and down: pick one")
        return self


def load_discord_settings(**overrides: Any) -> DiscordSettings:
    """Settings from the environment, with explicit overrides on top.

    Raises:
        ConfigError: a setting is missing or invalid; the message says how to fix it.
    """
    try:
        return DiscordSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(_describe(error) for error in e.errors())
        raise ConfigError(f"invalid Discord settings: {problems}") from e


_ENV_NAMES = {
    "token": "DISCORD_TOKEN",
    "DISCORD_TOKEN": "DISCORD_TOKEN",
    "api_url": "DISCORD_API_URL",
    "DISCORD_API_URL": "DISCORD_API_URL",
    "gateway_url": "DISCORD_GATEWAY_URL",
    "DISCORD_GATEWAY_URL": "DISCORD_GATEWAY_URL",
    "agent_role": "SUPPORTBOT_DISCORD_AGENT_ROLE",
    "DISCORD_AGENT_ROLE": "DISCORD_AGENT_ROLE",
}


def _describe(error: Any) -> str:
    """One validation error, named by its environment variable."""
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return str(error["msg"]).removeprefix("Value error, ")
    field = loc[0]
    name = _ENV_NAMES.get(field, f"SUPPORTBOT_DISCORD_{field.upper()}")
    where = f"{name} item {int(loc[1]) + 1}" if len(loc) > 1 and loc[1].isdigit() else name
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] != "value_error" and name != "DISCORD_TOKEN":
        message += f" (got {error.get('input')!r})"
    return f"{where}: {message}"
