"""Multi-workspace mode: installing through OAuth stores the installation in the bot's database,
and events from that workspace are answered with its own token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.slack.convert import PLATFORM
from bot.service import Services
from tests.adapters.slack.conftest import Harness, make_settings, payload, serve
from tests.adapters.slack.emulator import SlackEmulator

CLIENT_ID = "1111.2222"


@pytest.fixture
async def oauth_slack(services: Services, emulator: SlackEmulator) -> AsyncIterator[Harness]:
    settings = make_settings(
        emulator, bot_token=None, client_id=CLIENT_ID, client_secret="client-secret"
    )
    async with serve(services, settings, emulator) as harness:
        yield harness


async def _install(slack: Harness, code: str = "abc") -> str:
    page = await slack.http.get("/slack/install")
    assert page.status_code == 200
    assert "https://slack.com/oauth/v2/authorize" in page.text
    state = re.search(r"state=([0-9a-f]+)", page.text)
    assert state is not None
    callback = await slack.http.get(
        "/slack/oauth_redirect",
        params={"code": code, "state": state.group(1)},
        headers={"Cookie": f"slack-app-oauth-state={state.group(1)}"},
    )
    assert callback.status_code == 200, callback.text
    return state.group(1)


def _mention_in_installed_team() -> dict[str, Any]:
    event = payload("app_mention")
    event["team_id"] = "T0OAUTH"
    event["authorizations"][0].update(team_id="T0OAUTH", user_id="U0BOT2")
    event["event"]["text"] = "<@U0BOT2> How do I reset my password?"
    return event


async def test_install_then_answer_with_the_installed_token(oauth_slack: Harness) -> None:
    store = oauth_slack.services.store
    await _install(oauth_slack)
    [exchange] = oauth_slack.emulator.calls_to("oauth.v2.access")
    assert exchange.params["code"] == "abc"
    installed = store.find_installation(PLATFORM, CLIENT_ID, enterprise_id=None, team_id="T0OAUTH")
    assert installed is not None and installed["bot_token"] == "xoxb-T0OAUTH-abc"
    assert oauth_slack.counts()["oauth_state"] == 0  # used up

    await oauth_slack.send(_mention_in_installed_team())
    await oauth_slack.settle()
    [post] = oauth_slack.emulator.calls_to("chat.postMessage")
    assert post.token == "xoxb-T0OAUTH-abc"
    assert post.params["thread_ts"] == "1700000100.000200"


async def test_a_state_is_used_once(oauth_slack: Harness) -> None:
    state = await _install(oauth_slack)
    again = await oauth_slack.http.get(
        "/slack/oauth_redirect",
        params={"code": "def", "state": state},
        headers={"Cookie": f"slack-app-oauth-state={state}"},
    )
    assert again.status_code >= 400
    assert len(oauth_slack.emulator.calls_to("oauth.v2.access")) == 1


async def test_events_from_workspaces_without_an_installation_are_not_answered(
    oauth_slack: Harness,
) -> None:
    response = await oauth_slack.send(_mention_in_installed_team())
    await oauth_slack.settle()
    assert response.status_code < 500
    assert oauth_slack.emulator.posts() == []
