"""OAuth installations and states in the bot's own database (tables ``installation`` and
``oauth_state``, created by migration 0002), for slack-bolt's multi-workspace mode.

Installations are slack_sdk's own records kept as JSON (tokens included: protect the database as
you would the tokens). Each save adds a row; the newest row for a workspace wins.

`WorkspaceClients` gives work that runs outside an event (the outbox sweeper, the relay) a Web
API client with a workspace's own bot token, which bolt otherwise finds only per request, or
with the token of the org-wide (Enterprise Grid) install that covers the workspace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import uuid4

from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import PLATFORM
from bot.model import utcnow
from bot.storage.store import Store

__all__ = [
    "DatabaseInstallationStore",
    "DatabaseOAuthStateStore",
    "NotInstalledError",
    "WorkspaceClients",
]

logger = logging.getLogger(__name__)


def _workspace(
    enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None
) -> tuple[str | None, str | None]:
    # An org-wide install serves every workspace of the org: it is stored without a team.
    if is_enterprise_install:
        return enterprise_id, None
    return enterprise_id, team_id


class DatabaseInstallationStore(AsyncInstallationStore):
    """slack-bolt's installation store on the bot's database.

    Args:
        store: the bot's database.
        client_id: the Slack app's client id (one database can serve several apps).
    """

    def __init__(self, store: Store, client_id: str) -> None:
        self.store = store
        self.client_id = client_id
        self._logger = logger

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-bolt writes to."""
        return self._logger

    async def async_save(self, installation: Installation) -> None:
        """Save an installation (after the OAuth flow)."""
        enterprise_id, team_id = _workspace(
            installation.enterprise_id, installation.team_id, installation.is_enterprise_install
        )
        data: dict[str, Any] = dict(vars(installation))
        await asyncio.to_thread(
            self.store.save_installation,
            PLATFORM,
            self.client_id,
            data,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=installation.user_id,
            has_bot=installation.bot_token is not None,
        )
        logger.info(
            "Slack app installed in team %s (enterprise %s)",
            installation.team_id,
            installation.enterprise_id,
        )

    async def async_save_bot(self, bot: Bot) -> None:
        """Save a bot-only installation."""
        await self.async_save(
            Installation(
                app_id=bot.app_id,
                enterprise_id=bot.enterprise_id,
                enterprise_name=bot.enterprise_name,
                team_id=bot.team_id,
                team_name=bot.team_name,
                bot_token=bot.bot_token,
                bot_id=bot.bot_id,
                bot_user_id=bot.bot_user_id,
                bot_scopes=bot.bot_scopes,
                bot_refresh_token=bot.bot_refresh_token,
                bot_token_expires_at=bot.bot_token_expires_at,
                user_id="",
                is_enterprise_install=bot.is_enterprise_install,
                installed_at=bot.installed_at,
                custom_values=bot.custom_values,
            )
        )

    async def _find(
        self,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None,
        *,
        user_id: str | None = None,
        bot_only: bool = False,
        any_enterprise: bool = False,
    ) -> Installation | None:
        enterprise_id, team_id = _workspace(enterprise_id, team_id, is_enterprise_install)
        data = await asyncio.to_thread(
            self.store.find_installation,
            PLATFORM,
            self.client_id,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            bot_only=bot_only,
            any_enterprise=any_enterprise,
        )
        return None if data is None else Installation(**data)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The newest bot installation of a workspace (or org)."""
        found = await self._find(enterprise_id, team_id, is_enterprise_install, bot_only=True)
        return None if found is None else found.to_bot()

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The newest installation of a workspace, or of one installing user in it."""
        return await self._find(enterprise_id, team_id, is_enterprise_install, user_id=user_id)

    async def async_find_workspace_bot(self, team_id: str) -> Bot | None:
        """The newest bot installation in workspace `team_id`, whether or not the workspace
        belongs to an Enterprise Grid organisation (a workspace install there is stored with its
        enterprise id, which work that knows only the workspace does not have)."""
        found = await self._find(None, team_id, False, bot_only=True, any_enterprise=True)
        return None if found is None else found.to_bot()

    async def async_find_enterprise_bots(self) -> list[Bot]:
        """The newest bot of each org-wide (Enterprise Grid) install, the latest saved last.

        They are stored without a team, so finding one for a workspace means asking Slack which
        workspaces each covers (`WorkspaceClients`).
        """
        rows = await asyncio.to_thread(
            self.store.enterprise_bot_installations, PLATFORM, self.client_id
        )
        return [Installation(**data).to_bot() for data in rows]

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget a workspace's installations (the bot token goes with them)."""
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        """Forget a workspace's installations, or one user's."""
        await asyncio.to_thread(
            self.store.delete_installations,
            PLATFORM,
            self.client_id,
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
        )


class DatabaseOAuthStateStore(AsyncOAuthStateStore):
    """One-time OAuth ``state`` values in the bot's database, valid for ``expiration_seconds``."""

    def __init__(self, store: Store, expiration_seconds: int = 600) -> None:
        self.store = store
        self.expiration_seconds = expiration_seconds
        self._logger = logger

    @property
    def logger(self) -> logging.Logger:
        """The logger slack-bolt writes to."""
        return self._logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        """A new state value."""
        state = uuid4().hex
        expires_at = utcnow() + timedelta(seconds=self.expiration_seconds)
        await asyncio.to_thread(self.store.issue_oauth_state, PLATFORM, state, expires_at)
        return state

    async def async_consume(self, state: str) -> bool:
        """True once for a state issued here that has not expired."""
        return await asyncio.to_thread(self.store.consume_oauth_state, PLATFORM, state)


class NotInstalledError(LookupError):
    """A workspace has no bot installation (never installed, or uninstalled since).

    Attributes:
        team_id: the workspace.
    """

    def __init__(self, team_id: str) -> None:
        super().__init__(f"the Slack app has no bot installation in workspace {team_id!r}")
        self.team_id = team_id


#: Slack's errors for a token it no longer accepts: an org-wide install with one covers nothing.
_REFUSED_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
)
#: Workspaces asked for per ``auth.teams.list`` page (Slack's maximum; it may return fewer).
TEAMS_PAGE_LIMIT = 1000


@dataclass
class _Org:
    """What ``auth.teams.list`` said an org-wide install's token covers, and when it said it."""

    token: str
    client: AsyncWebClient
    teams: frozenset[str]
    read_at: float


async def _covered_teams(client: AsyncWebClient, enterprise_id: str) -> frozenset[str]:
    """Every workspace an org-wide install's token covers (all pages of ``auth.teams.list``).

    A token Slack refuses covers nothing: the install was revoked, and only a new install helps.
    Any other failure raises, so that the caller tries again rather than give the workspace up.
    """
    teams: set[str] = set()
    cursor: str | None = None
    while True:
        try:
            response = await client.auth_teams_list(cursor=cursor, limit=TEAMS_PAGE_LIMIT)
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error not in _REFUSED_TOKEN_ERRORS:
                raise
            logger.warning(
                "Slack refuses the token of enterprise %s's org-wide install (%s): it covers no "
                "workspace until it is installed again",
                enterprise_id,
                error,
            )
            return frozenset()
        teams.update(str(team["id"]) for team in response.get("teams") or [])
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if cursor is None:
            return frozenset(teams)


class WorkspaceClients:
    """Web API clients per workspace, each with the bot token of that workspace's installation.

    Clients are kept for `ttl_s` seconds, then the installation is read again: a reinstall's
    new token is used from then on, and a workspace uninstalled meanwhile raises
    `NotInstalledError` again instead of posting with a revoked token for ever.

    A workspace with no installation of its own may be covered by an org-wide (Enterprise
    Grid) install, which is stored without its workspaces: Slack's ``auth.teams.list`` says
    which ones each org-wide token covers. Its answer is kept for `ttl_s` too, so that it is
    asked once per install and period, not per message.

    Args:
        installations: where the installations are (`DatabaseInstallationStore`).
        make_client: a client for a bot token (`outbound.make_client` with the adapter's
            settings, so the base URL and retries are those of the adapter's other clients).
        ttl_s: how long a client, or what an org-wide token covers, is reused before it is read
            again.
        clock: seconds that only go forward (`time.monotonic`), for the `ttl_s` periods.
    """

    def __init__(
        self,
        installations: DatabaseInstallationStore,
        make_client: Callable[[str], AsyncWebClient],
        *,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.installations = installations
        self.make_client = make_client
        self.ttl_s = ttl_s
        self.clock = clock
        self._clients: dict[str, tuple[str, AsyncWebClient, float]] = {}
        # By enterprise id. One lookup at a time, so that workspaces looked up together (a
        # sweep's rows) wait for one `auth.teams.list` instead of each making their own.
        self._orgs: dict[str, _Org] = {}
        self._orgs_lock = asyncio.Lock()

    async def client(self, team_id: str) -> AsyncWebClient:
        """The client for workspace `team_id`.

        Raises:
            NotInstalledError: the workspace has no bot installation, nor is it covered by an
                org-wide one.
        """
        cached = self._clients.get(team_id)
        now = self.clock()
        if cached is not None and now - cached[2] < self.ttl_s:
            return cached[1]
        bot = await self.installations.async_find_workspace_bot(team_id)
        if bot is not None and bot.bot_token:
            token = bot.bot_token
            if cached is not None and cached[0] == token:
                client = cached[1]  # the same token: the same client (and its connections)
            else:
                client = self.make_client(token)
        else:
            found = await self._org_client(team_id)
            if found is None:
                self._clients.pop(team_id, None)
                raise NotInstalledError(team_id)
            token, client = found
        self._clients[team_id] = (token, client, now)
        return client

    async def _org_client(self, team_id: str) -> tuple[str, AsyncWebClient] | None:
        """The token and client of an org-wide install that covers `team_id`, if one does.

        An install whose ``auth.teams.list`` fails for another reason than a refused token is
        skipped while the others are asked; if none covers the workspace, that failure is
        raised, because the workspace may well be covered by it.
        """
        bots = await self.installations.async_find_enterprise_bots()
        failure: Exception | None = None
        async with self._orgs_lock:
            for bot in bots:
                if not bot.bot_token or not bot.enterprise_id:
                    continue
                try:
                    org = await self._org(bot.enterprise_id, bot.bot_token)
                except Exception as exc:
                    failure = failure or exc
                    continue
                if team_id in org.teams:
                    return org.token, org.client
        if failure is not None:
            raise failure
        return None

    async def _org(self, enterprise_id: str, token: str) -> _Org:
        """What an org-wide install covers: from the cache within `ttl_s` (same token), else
        from ``auth.teams.list``."""
        org = self._orgs.get(enterprise_id)
        now = self.clock()
        same_token = org is not None and org.token == token
        if org is not None and same_token and now - org.read_at < self.ttl_s:
            return org
        client = org.client if org is not None and same_token else self.make_client(token)
        org = _Org(token, client, await _covered_teams(client, enterprise_id), now)
        self._orgs[enterprise_id] = org
        return org

    def forget(self, team_id: str) -> None:
        """Read the workspace's installation again at the next `client` call."""
        self._clients.pop(team_id, None)
