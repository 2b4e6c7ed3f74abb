"""Zendesk settings, from the environment, validated once at start-up.

Every variable is named ``ZENDESK_*`` (Zendesk's own vocabulary: subdomain, API token, webhook
signing secret). What answering tickets needs:

* ``ZENDESK_SUBDOMAIN`` (``acme`` for ``acme.zendesk.com``),
* ``ZENDESK_EMAIL`` + ``ZENDESK_API_TOKEN`` (API token access of the bot's agent account),
* ``ZENDESK_BOT_USER_ID`` (that agent's user id: the bot's comments are posted as it, and its
  own comments coming back through the webhook are recognised by it),
* ``ZENDESK_WEBHOOK_SECRET`` (the webhook's signing secret).

The web app mounts the adapter when any of the answering credentials is set (``ZENDESK_EMAIL``,
``ZENDESK_API_TOKEN``, ``ZENDESK_WEBHOOK_SECRET``, ``ZENDESK_BOT_USER_ID``); then all of them must
be. ``ZENDESK_SUBDOMAIN`` alone (with or without credentials) is enough for
``supportbot kb ingest --zendesk-help-center``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

__all__ = ["DEFAULT_HANDOFF_KEYWORDS", "TICKET_STATUSES", "ZendeskSettings"]

#: Phrases by which a customer asks for a person (whole words, any case).
DEFAULT_HANDOFF_KEYWORDS: tuple[str, ...] = (
    "human",
    "agent",
    "real person",
    "talk to someone",
    "speak to someone",
    "talk to a person",
    "speak to a person",
    "representative",
)
#: Statuses an agent-facing ticket may be set to on handoff (Zendesk's own, lower case).
TICKET_STATUSES: frozenset[str] = frozenset({"new", "open", "pending", "hold", "solved"})

_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ADMIN = "Admin Center → Apps and integrations"

CommaList = Annotated[tuple[str, ...], NoDecode]


def _split(value: Any) -> Any:
    """Comma-separated text from the environment into a tuple; sequences pass through."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ZendeskSettings(BaseSettings):
    """Everything the Zendesk adapter and the Help Center import need.

    Attributes:
        subdomain: ``ZENDESK_SUBDOMAIN``, e.g. ``acme`` for ``https://acme.zendesk.com``.
        email: ``ZENDESK_EMAIL``, the bot agent's sign-in email (API token authentication).
        api_token: ``ZENDESK_API_TOKEN``, an API token (Admin Center → Apps and integrations →
            APIs → Zendesk API).
        webhook_secret: ``ZENDESK_WEBHOOK_SECRET``, the webhook's signing secret.
        bot_user_id: ``ZENDESK_BOT_USER_ID``, the bot agent's user id.
        api_url: ``ZENDESK_API_URL``, the API base URL; by default
            ``https://{subdomain}.zendesk.com/api/v2/`` (tests point it at an emulator).
        handoff_status: ``ZENDESK_HANDOFF_STATUS``, the status a handed-off ticket gets.
        handoff_group_id: ``ZENDESK_HANDOFF_GROUP_ID``, the group it is assigned to (unchanged
            when unset).
        handoff_tags: ``ZENDESK_HANDOFF_TAGS``, tags added on handoff (comma separated).
        handoff_keywords: ``ZENDESK_HANDOFF_KEYWORDS``, phrases by which a customer asks for a
            person (comma separated, whole words, any case).
        relay_requester_id: ``ZENDESK_RELAY_REQUESTER_ID``, the placeholder end-user who requests
            tickets opened for customers of other platforms (the bot's own account when unset).
        relay_tags: ``ZENDESK_RELAY_TAGS``, tags of such tickets.
        satisfaction_poll_s: ``ZENDESK_SATISFACTION_POLL_S``, seconds between polls of
            satisfaction ratings; 0 turns polling off.
        satisfaction_lookback_s: ``ZENDESK_SATISFACTION_LOOKBACK_S``, how far back each poll
            reads (ratings are created when offered, so this must cover the time customers
            take to answer the survey).
        help_center_locale: ``ZENDESK_HELP_CENTER_LOCALE``, the locale of the articles to
            import (e.g. ``en-us``); the default locale when unset.
        http_timeout: ``ZENDESK_HTTP_TIMEOUT``, seconds before an API call times out.
        signature_max_age_s: ``ZENDESK_SIGNATURE_MAX_AGE_S``, how old a signed webhook
            request may be (replays older than this are refused).
    """

    model_config = SettingsConfigDict(env_prefix="ZENDESK_", extra="ignore")

    subdomain: str | None = None
    email: str | None = None
    api_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    bot_user_id: int | None = None
    api_url: str | None = None
    handoff_status: str = "open"
    handoff_group_id: int | None = None
    handoff_tags: CommaList = ("bot_handoff",)
    handoff_keywords: CommaList = DEFAULT_HANDOFF_KEYWORDS
    relay_requester_id: int | None = None
    relay_tags: CommaList = ("supportbot_relay",)
    satisfaction_poll_s: float = Field(default=300.0, ge=0)
    satisfaction_lookback_s: float = Field(default=14 * 24 * 3600.0, gt=0)
    help_center_locale: str | None = None
    http_timeout: float = Field(default=15.0, gt=0)
    signature_max_age_s: float = Field(default=300.0, gt=0)

    @field_validator("handoff_tags", "handoff_keywords", "relay_tags", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("subdomain", "email", "help_center_locale", "api_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("handoff_status", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                "ZENDESK_API_URL must be an http(s) URL such as "
                f"https://acme.zendesk.com/api/v2/, not {value!r}"
            )
        return value if value.endswith("/") else value + "/"

    # Derived ------------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        """Whether the webhook adapter is asked for (any answering credential is set)."""
        return any(
            value is not None
            for value in (self.email, self.api_token, self.webhook_secret, self.bot_user_id)
        )

    @property
    def base_url(self) -> str:
        """The API base URL, ending in ``/api/v2/``.

        Raises:
            ConfigError: neither ``ZENDESK_API_URL`` nor ``ZENDESK_SUBDOMAIN`` is set.
        """
        if self.api_url is not None:
            return self.api_url
        if self.subdomain is None:
            raise ConfigError(
                "set ZENDESK_SUBDOMAIN to your Zendesk subdomain (acme for acme.zendesk.com)"
            )
        return f"https://{self.subdomain}.zendesk.com/api/v2/"

    @property
    def workspace(self) -> str:
        """The conversation workspace of this account: the subdomain (or the API host)."""
        if self.subdomain is not None:
            return self.subdomain
        return self.base_url.split("//", 1)[1].split("/", 1)[0]

    # Validation ---------------------------------------------------------------------------------

    def _subdomain_problems(self) -> list[str]:
        if self.subdomain is None:
            if self.api_url is None:
                return [
                    "set ZENDESK_SUBDOMAIN to your Zendesk subdomain (acme for acme.zendesk.com)"
                ]
            return []
        if not _SUBDOMAIN.match(self.subdomain):
            hint = self.subdomain.removeprefix("https://").removeprefix("http://").split(".")[0]
            return [
                f"ZENDESK_SUBDOMAIN must be the subdomain alone ({hint!r} for "
                f"{hint}.zendesk.com), lower case, not {self.subdomain!r}"
            ]
        return []

    def problems(self) -> list[str]:
        """What stops the webhook adapter from working, each with how to fix it."""
        found = self._subdomain_problems()
        if self.email is None or "@" not in self.email:
            found.append(
                "set ZENDESK_EMAIL to the sign-in email of the bot's agent account "
                "(API token authentication is email/token)"
            )
        if self.api_token is None:
            found.append(
                f"set ZENDESK_API_TOKEN to an API token ({_ADMIN} → APIs → Zendesk API → "
                "Settings: enable token access, then add a token)"
            )
        if self.webhook_secret is None:
            found.append(
                "set ZENDESK_WEBHOOK_SECRET to the webhook's signing secret "
                f"({_ADMIN} → Webhooks → your webhook → Signing secret → Reveal secret)"
            )
        if self.bot_user_id is None:
            found.append(
                "set ZENDESK_BOT_USER_ID to the user id of the bot's agent account (the number "
                "at the end of its profile URL, …/agent/users/<id>)"
            )
        if self.handoff_status not in TICKET_STATUSES:
            found.append(
                f"ZENDESK_HANDOFF_STATUS must be one of {', '.join(sorted(TICKET_STATUSES))}, "
                f"not {self.handoff_status!r}"
            )
        if not self.handoff_keywords:
            found.append(
                "ZENDESK_HANDOFF_KEYWORDS is empty: list the phrases by which customers ask for "
                "a person, comma separated (e.g. human,agent,talk to someone)"
            )
        return found

    def check(self) -> None:
        """Validate for the webhook adapter.

        Raises:
            ConfigError: listing every problem and how to fix it.
        """
        found = self.problems()
        if found:
            raise ConfigError("Zendesk settings cannot work:\n  - " + "\n  - ".join(found))

    def check_help_center(self) -> None:
        """Validate for the Help Center import (only the account is needed).

        Raises:
            ConfigError: the account is not set or the subdomain is malformed.
        """
        found = self._subdomain_problems()
        if (self.email is None) != (self.api_token is None):
            found.append(
                "set both ZENDESK_EMAIL and ZENDESK_API_TOKEN (to read restricted articles) or "
                "neither (public articles only)"
            )
        if found:
            raise ConfigError("Zendesk settings cannot work:\n  - " + "\n  - ".join(found))

    @classmethod
    def from_env(cls) -> ZendeskSettings:
        """Read the environment.

        Raises:
            ConfigError: a value cannot be parsed (e.g. a non-numeric user id).
        """
        try:
            return cls()
        except ValueError as e:
            raise ConfigError(f"invalid Zendesk settings: {e}") from e
