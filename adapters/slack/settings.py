"""Slack settings, from the environment, validated once at start-up.

Slack's own variables keep the names Slack's documentation and SDKs use (``SLACK_BOT_TOKEN``,
``SLACK_SIGNING_SECRET``, ``SLACK_CLIENT_ID``, ``SLACK_CLIENT_SECRET``, ``SLACK_APP_TOKEN``,
``SLACK_API_URL``); the bot's own behaviour is under ``SUPPORTBOT_SLACK_`` (auto-answer channels,
the agents' channel, Socket Mode, reactions, timings). Every ``SLACK_*`` name is also accepted
with the ``SUPPORTBOT_`` prefix.

Three ways to run, chosen by what is set:

* one workspace over HTTP: ``SLACK_BOT_TOKEN`` + ``SLACK_SIGNING_SECRET``;
* many workspaces over HTTP, installed with OAuth: ``SLACK_CLIENT_ID`` + ``SLACK_CLIENT_SECRET`` +
  ``SLACK_SIGNING_SECRET``;
* one workspace over Socket Mode (no public URL): ``SLACK_BOT_TOKEN`` + ``SLACK_APP_TOKEN`` +
  ``SUPPORTBOT_SLACK_SOCKET_MODE=1``.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["DEFAULT_SCOPES", "SlackMode", "SlackSettings"]

#: Bot scopes the app asks for when installed through OAuth; the manifest lists the same.
DEFAULT_SCOPES: tuple[str, ...] = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "groups:history",
    "im:history",
    "reactions:read",
    "users:read",
)


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, f"SUPPORTBOT_{name}")


def _split(value: Any) -> Any:
    """Comma-separated text from the environment into a list; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SlackMode(enum.StrEnum):
    """How the adapter talks to Slack."""

    OFF = "off"
    SINGLE = "single"
    OAUTH = "oauth"
    SOCKET = "socket"


CommaList = Annotated[list[str], NoDecode]


class SlackSettings(BaseSettings):
    """Everything the Slack adapter needs; see the module docstring for the modes.

    Attributes:
        bot_token: ``SLACK_BOT_TOKEN``, the bot token (``xoxb-…``) of a single workspace.
        signing_secret: ``SLACK_SIGNING_SECRET``, verifies that HTTP requests come from Slack.
        client_id: ``SLACK_CLIENT_ID``, for OAuth installs into many workspaces.
        client_secret: ``SLACK_CLIENT_SECRET``, for OAuth installs.
        app_token: ``SLACK_APP_TOKEN``, an app-level token (``xapp-…``) for Socket Mode.
        api_url: ``SLACK_API_URL``, the Web API base URL (tests point it at an emulator).
        scopes: ``SLACK_SCOPES``, bot scopes requested by OAuth installs.
        redirect_uri: ``SLACK_REDIRECT_URI``, the OAuth redirect URL, when Slack needs it spelt out.
        socket_mode: ``SUPPORTBOT_SLACK_SOCKET_MODE``, receive events over Socket Mode.
        auto_answer_channels: ``SUPPORTBOT_SLACK_AUTO_ANSWER_CHANNELS``, channel ids (comma
            separated) where every new top-level message is answered without a mention.
        agents_channel: ``SUPPORTBOT_SLACK_AGENTS_CHANNEL``, where handoff cards go.
        agent_users: ``SUPPORTBOT_SLACK_AGENT_USERS`` (or ``SLACK_AGENT_USERS``), user ids of
            human agents (comma separated): one of them replying in a customer's thread takes
            the conversation over.
        agents_from_channel: ``SUPPORTBOT_SLACK_AGENTS_FROM_CHANNEL``, also count every member
            of the agents' channel as an agent (read with ``conversations.members``, which needs
            the ``channels:read`` or ``groups:read`` scope).
        agents_refresh: seconds between reads of the agents' channel's members.
        up_reactions: ``SUPPORTBOT_SLACK_UP_REACTIONS``, reactions that rate an answer up.
        down_reactions: ``SUPPORTBOT_SLACK_DOWN_REACTIONS``, reactions that rate it down.
        handoff_text: what a click on "Talk to a person" says to the bot on the user's behalf.
        http_timeout: seconds before a Web API call times out.
        lease_ttl: seconds a Socket Mode lease lasts without renewal (replicas take over after).
        lease_renew: seconds between renewals; well below ``lease_ttl``.
        shutdown_grace: seconds shutdown waits for answers still being worked on.
    """

    model_config = SettingsConfigDict(
        env_prefix="SUPPORTBOT_SLACK_", extra="ignore", validate_by_name=True
    )

    bot_token: SecretStr | None = Field(default=None, validation_alias=_alias("SLACK_BOT_TOKEN"))
    signing_secret: SecretStr | None = Field(
        default=None, validation_alias=_alias("SLACK_SIGNING_SECRET")
    )
    client_id: str | None = Field(default=None, validation_alias=_alias("SLACK_CLIENT_ID"))
    client_secret: SecretStr | None = Field(
        default=None, validation_alias=_alias("SLACK_CLIENT_SECRET")
    )
    app_token: SecretStr | None = Field(default=None, validation_alias=_alias("SLACK_APP_TOKEN"))
    api_url: str = Field(default="https://slack.com/api/", validation_alias=_alias("SLACK_API_URL"))
    scopes: CommaList = Field(
        default_factory=lambda: list(DEFAULT_SCOPES), validation_alias=_alias("SLACK_SCOPES")
    )
    redirect_uri: str | None = Field(default=None, validation_alias=_alias("SLACK_REDIRECT_URI"))

    socket_mode: bool = False
    auto_answer_channels: CommaList = Field(default_factory=list)
    agents_channel: str | None = None
    agent_users: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices(
            "SUPPORTBOT_SLACK_AGENT_USERS", "SLACK_AGENT_USERS", "agent_users"
        ),
    )
    agents_from_channel: bool = False
    agents_refresh: float = Field(default=300.0, gt=0)
    up_reactions: CommaList = Field(default_factory=lambda: ["+1", "thumbsup"])
    down_reactions: CommaList = Field(default_factory=lambda: ["-1", "thumbsdown"])
    handoff_text: str = "I'd like to talk to a person"
    http_timeout: float = Field(default=30.0, gt=0)
    lease_ttl: float = Field(default=15.0, gt=0)
    lease_renew: float = Field(default=5.0, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)

    @field_validator(
        "scopes",
        "auto_answer_channels",
        "agent_users",
        "up_reactions",
        "down_reactions",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("up_reactions", "down_reactions")
    @classmethod
    def _bare_names(cls, value: list[str]) -> list[str]:
        # People write ":thumbsup:"; events carry "thumbsup".
        return [name.strip(":") for name in value]

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "SLACK_API_URL must be an http(s) URL such as https://slack.com/api/, "
                f"not {value!r}"
            )
        return value if value.endswith("/") else value + "/"

    @property
    def configured(self) -> bool:
        """Whether any Slack credential or switch is set (otherwise the adapter stays off)."""
        return self.socket_mode or any(
            value is not None
            for value in (
                self.bot_token,
                self.signing_secret,
                self.client_id,
                self.client_secret,
                self.app_token,
            )
        )

    @property
    def mode(self) -> SlackMode:
        """The mode these settings select (not validated: see `check`)."""
        if not self.configured:
            return SlackMode.OFF
        if self.socket_mode:
            return SlackMode.SOCKET
        if self.client_id is not None or self.client_secret is not None:
            return SlackMode.OAUTH
        return SlackMode.SINGLE

    def problems(self) -> list[str]:
        """What is wrong or missing, each with how to fix it; empty when the settings work."""
        mode = self.mode
        found: list[str] = []
        if mode is SlackMode.OFF:
            return found
        token = self.bot_token.get_secret_value() if self.bot_token else None
        if token is not None and not token.startswith("xoxb-"):
            found.append(
                "SLACK_BOT_TOKEN must be a bot token starting with xoxb- (OAuth & Permissions → "
                "Bot User OAuth Token)"
            )
        if mode is SlackMode.SOCKET:
            app_token = self.app_token.get_secret_value() if self.app_token else None
            if app_token is None:
                found.append(
                    "Socket Mode needs SLACK_APP_TOKEN: create an app-level token with the "
                    "connections:write scope (Basic Information → App-Level Tokens)"
                )
            elif not app_token.startswith("xapp-"):
                found.append("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
            if token is None:
                found.append(
                    "Socket Mode needs SLACK_BOT_TOKEN (OAuth & Permissions → Bot User OAuth "
                    "Token); OAuth installs into many workspaces need the HTTP mode"
                )
            if self.client_id is not None or self.client_secret is not None:
                found.append(
                    "Socket Mode runs one workspace: unset SLACK_CLIENT_ID and "
                    "SLACK_CLIENT_SECRET, or unset SUPPORTBOT_SLACK_SOCKET_MODE to use OAuth"
                )
            if self.lease_renew >= self.lease_ttl:
                found.append(
                    "SUPPORTBOT_SLACK_LEASE_RENEW must be well below SUPPORTBOT_SLACK_LEASE_TTL "
                    f"(now {self.lease_renew} s and {self.lease_ttl} s; e.g. 5 and 15)"
                )
        else:
            if self.signing_secret is None:
                found.append(
                    "set SLACK_SIGNING_SECRET (Basic Information → App Credentials → Signing "
                    "Secret) so requests from Slack can be verified, or use Socket Mode "
                    "(SUPPORTBOT_SLACK_SOCKET_MODE=1 with SLACK_APP_TOKEN)"
                )
            if mode is SlackMode.OAUTH:
                if self.client_id is None or self.client_secret is None:
                    found.append(
                        "OAuth installs need both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (Basic "
                        "Information → App Credentials)"
                    )
                if token is not None:
                    found.append(
                        "set either SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
                        "SLACK_CLIENT_SECRET (OAuth, many workspaces), not both"
                    )
            elif token is None:
                found.append(
                    "set SLACK_BOT_TOKEN for one workspace, or SLACK_CLIENT_ID and "
                    "SLACK_CLIENT_SECRET to install into many workspaces with OAuth"
                )
        if self.agents_channel and self.agents_channel in self.auto_answer_channels:
            found.append(
                f"the agents' channel {self.agents_channel} cannot also be an auto-answer channel: "
                "remove it from SUPPORTBOT_SLACK_AUTO_ANSWER_CHANNELS"
            )
        if self.agents_from_channel and not self.agents_channel:
            found.append(
                "SUPPORTBOT_SLACK_AGENTS_FROM_CHANNEL needs SUPPORTBOT_SLACK_AGENTS_CHANNEL (the "
                "channel whose members are agents), or list them in SUPPORTBOT_SLACK_AGENT_USERS"
            )
        if bad := [u for u in self.agent_users if u[:1] not in ("U", "W")]:
            found.append(
                f"SUPPORTBOT_SLACK_AGENT_USERS takes user ids such as U012ABCDEF, not {bad}: in "
                "Slack open the person's profile → ⋮ → Copy member ID"
            )
        if overlap := set(self.up_reactions) & set(self.down_reactions):
            found.append(
                f"reactions {sorted(overlap)} are both up and down: fix "
                "SUPPORTBOT_SLACK_UP_REACTIONS / SUPPORTBOT_SLACK_DOWN_REACTIONS"
            )
        return found

    def check(self) -> SlackMode:
        """Validate for start-up.

        Returns:
            The mode to run in.

        Raises:
            ConfigError: listing every problem and how to fix it.
        """
        found = self.problems()
        if found:
            raise ConfigError("Slack settings cannot work:\n  - " + "\n  - ".join(found))
        return self.mode

    @classmethod
    def from_env(cls) -> SlackSettings:
        """Read the environment.

        Raises:
            ConfigError: a value cannot be parsed (e.g. a non-numeric timeout).
        """
        try:
            return cls()
        except ValueError as e:
            raise ConfigError(f"invalid Slack settings: {e}") from e
