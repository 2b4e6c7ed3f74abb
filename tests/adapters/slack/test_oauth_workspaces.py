"""Work outside an event in multi-workspace (OAuth) mode: the outbox sweeper sends each
workspace's abandoned events and unsent replies, and the relay its agents' words, with that
workspace's own bot token, read from its installation; a workspace without one is logged and
retried (the sweeper in the end gives up), never crashed on.

Two workspaces are installed in the bot's database (`DatabaseInstallationStore`); the emulator
records the token of every Web API call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.oauth.installation_store.models.installation import Installation

from adapters.slack import SlackAdapter, render
from adapters.slack.convert import PLATFORM, Route
from adapters.slack.installation import (
    DatabaseInstallationStore,
    NotInstalledError,
    WorkspaceClients,
)
from adapters.slack.outbound import make_client, post_once
from adapters.slack.recovery import SlackInbox, SlackReplySender, inbox_payload
from bot.handoff import HandoffRequest
from bot.model import ConversationKey, InboundMessage, Reply, Role, utcnow
from bot.outbox import Destination, Sweeper, reply_from_stored
from bot.relay import Relay, RelayConfig, RelayOutcome
from bot.service import Services
from bot.settings import Settings
from bot.storage.store import Store
from tests.adapters.slack.conftest import Harness, make_settings, payload, serve
from tests.adapters.slack.emulator import SlackEmulator
from tests.support import DATABASE_BACKENDS, shared_database

CLIENT_ID = "1111.2222"
TEAM_A, TOKEN_A, DM_A = "T0AAAA", "xoxb-T0AAAA-token", "D0AAAA"
TEAM_B, TOKEN_B, DM_B = "T0BBBB", "xoxb-T0BBBB-token", "D0BBBB"
TEAM_GONE, DM_GONE = "T0GONE", "D0GONE"


def _dm(team: str, channel: str, ts: str) -> InboundMessage:
    return InboundMessage(
        platform=PLATFORM,
        workspace=team,
        channel=channel,
        user=f"U0{team}",
        message_id=f"{channel}:{ts}",
        text="How do I reset my password?",
    )


async def _install(
    store: DatabaseInstallationStore, team: str | None, token: str, *, enterprise: str | None = None
) -> None:
    """A bot install as the OAuth flow saves it: a workspace's (`team`; inside a Grid org when
    `enterprise` is given too), or an org-wide one (`enterprise`, and no workspace)."""
    owner = team or enterprise
    await store.async_save(
        Installation(
            app_id="A0TEST",
            enterprise_id=enterprise,
            team_id=team,
            bot_token=token,
            bot_id=f"B{owner}",
            bot_user_id=f"U{owner}BOT",
            user_id="U0INSTALLER",
            is_enterprise_install=team is None,
        )
    )


def _abandon_event(services: Services, message: InboundMessage, key: str) -> None:
    """An event a process acknowledged and recorded, then died (its hold is over)."""
    assert services.store.accept_inbound(
        PLATFORM, key, inbox_payload(message, Route.ANSWER), hold_s=-1
    )


def _abandon_reply(services: Services, message: InboundMessage) -> str:
    """A reply stored for `message` whose process died before recording it as posted."""
    store = services.store
    conversation = store.get_or_create_conversation(message.conversation, message.user)
    row = store.add_message(conversation.id, Role.USER, message.user, message.text, "q1")
    reply = Reply.answer("Open Settings, then Reset.", ())
    destination = Destination.of(message, reply).to_json()
    return store.add_reply(conversation.id, row, reply, destination=destination, hold_s=-1)


def _oauth_adapter(services: Services, emulator: SlackEmulator) -> SlackAdapter:
    settings = make_settings(
        emulator, bot_token=None, client_id=CLIENT_ID, client_secret="client-secret"
    )
    return SlackAdapter(services, settings)


def _sweeper(adapter: SlackAdapter, *, hold_s: float = 30, max_attempts: int = 5) -> Sweeper:
    """What `SlackAdapter._start_sweeper` registers, swept by hand (one round per call)."""
    sweeper = Sweeper(adapter.store, hold_s=hold_s, max_attempts=max_attempts)
    sweeper.add_sender(SlackReplySender(adapter.client_for))
    sweeper.add_inbox(SlackInbox(adapter.engine, adapter.client_for, adapter._post_reply))
    return sweeper


@pytest.fixture
async def installed(services: Services) -> AsyncIterator[DatabaseInstallationStore]:
    """Workspaces A and B installed; nothing for `TEAM_GONE`."""
    store = DatabaseInstallationStore(services.store, CLIENT_ID)
    await _install(store, TEAM_A, TOKEN_A)
    await _install(store, TEAM_B, TOKEN_B)
    yield store


async def test_the_running_adapter_answers_each_workspace_with_its_own_token(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    fast = dataclasses.replace(
        services, settings=Settings(data_dir=services.settings.data_dir, outbox_sweep_s=0.1)
    )
    _abandon_event(fast, _dm(TEAM_B, DM_B, "1700000001.000100"), "event:EvB")
    _abandon_event(fast, _dm(TEAM_A, DM_A, "1700000002.000100"), "event:EvA")
    settings = make_settings(
        emulator, bot_token=None, client_id=CLIENT_ID, client_secret="client-secret"
    )
    async with serve(fast, settings, emulator) as slack:
        await emulator.wait_for(lambda: len(emulator.posts()) >= 2)
        await _sweeps_pass(slack)

        posts = emulator.calls_to("chat.postMessage")
        assert sorted((p.params["channel"], p.token) for p in posts) == [
            (DM_A, TOKEN_A),
            (DM_B, TOKEN_B),
        ]
        store = fast.store
        assert store.inbox_status(PLATFORM, "event:EvA") == "done"
        assert store.inbox_status(PLATFORM, "event:EvB") == "done"
        for message in (_dm(TEAM_A, DM_A, "-"), _dm(TEAM_B, DM_B, "-")):
            stored = store.latest_reply(
                store.get_or_create_conversation(message.conversation, "-").id
            )
            (posted,) = emulator.messages[message.channel]
            assert stored is not None and stored.platform_ref == f"{message.channel}:{posted['ts']}"


async def _sweeps_pass(slack: Harness, rounds: int = 3) -> None:
    """Let the running sweeper (every 0.1 s) go round a few more times."""
    await asyncio.sleep(0.1 * rounds + 0.2)
    await slack.settle()


async def test_an_abandoned_event_of_b_is_answered_once_with_bs_token(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    message = _dm(TEAM_B, DM_B, "1700000003.000100")
    _abandon_event(services, message, "event:EvB3")
    sweeper = _sweeper(_oauth_adapter(services, emulator), hold_s=30)

    counts = await sweeper.sweep()

    assert counts.redelivered == 1 and counts.failed == 0
    (post,) = emulator.calls_to("chat.postMessage")
    assert post.token == TOKEN_B and post.params["channel"] == DM_B
    assert services.store.inbox_status(PLATFORM, "event:EvB3") == "done"
    assert not await sweeper.sweep()
    assert len(emulator.calls_to("chat.postMessage")) == 1
    assert services.store.counts()["reply"] == 1


async def test_an_unsent_reply_of_a_is_sent_once_with_as_token(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    reply_id = _abandon_reply(services, _dm(TEAM_A, DM_A, "1700000004.000100"))
    sweeper = _sweeper(_oauth_adapter(services, emulator), hold_s=30)

    counts = await sweeper.sweep()

    assert counts.resent == 1
    (post,) = emulator.calls_to("chat.postMessage")
    assert post.token == TOKEN_A and post.params["channel"] == DM_A
    assert {call.token for call in emulator.calls} == {TOKEN_A}  # the look for a copy too
    assert services.store.reply_delivery(reply_id) == ("sent", 1)
    assert not await sweeper.sweep()
    assert len(emulator.messages[DM_A]) == 1


async def test_a_reply_of_a_posted_before_the_crash_is_not_posted_again(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    reply_id = _abandon_reply(services, _dm(TEAM_A, DM_A, "1700000005.000100"))
    info = services.store.get_reply(reply_id)
    assert info is not None
    # The dead process posted with A's token and died before recording the post.
    ts = await post_once(
        make_client(make_settings(emulator), TOKEN_A),
        channel=DM_A,
        thread_ts=None,
        message=render.reply_message(reply_from_stored(info)),
        reply_id=reply_id,
    )
    emulator.calls.clear()

    counts = await _sweeper(_oauth_adapter(services, emulator), hold_s=30).sweep()

    assert counts.resent == 1
    assert len(emulator.messages[DM_A]) == 1
    assert emulator.calls_to("chat.postMessage") == []
    [looked] = emulator.calls_to("conversations.history")
    assert looked.token == TOKEN_A
    stored = services.store.get_reply(reply_id)
    assert stored is not None and stored.platform_ref == f"{DM_A}:{ts}"


async def test_a_workspace_without_an_installation_is_retried_then_given_up(
    services: Services,
    emulator: SlackEmulator,
    installed: DatabaseInstallationStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _abandon_event(services, _dm(TEAM_GONE, DM_GONE, "1700000006.000100"), "event:EvGone")
    reply_id = _abandon_reply(services, _dm(TEAM_GONE, DM_GONE, "1700000007.000100"))
    # A hold of 0: each sweep claims the rows again at once.
    sweeper = _sweeper(_oauth_adapter(services, emulator), hold_s=0, max_attempts=2)
    caplog.set_level(logging.WARNING, logger="bot.outbox")

    rounds = [await sweeper.sweep() for _ in range(3)]

    assert [(r.failed, r.given_up) for r in rounds] == [(2, 0), (2, 0), (0, 2)]
    assert "no bot installation in workspace 'T0GONE'" in caplog.text
    assert emulator.calls == []  # nothing was posted, nor looked for, with another token
    store = services.store
    assert store.inbox_status(PLATFORM, "event:EvGone") == "failed"
    assert store.reply_delivery(reply_id) == ("failed", 3)
    assert store.counts()["reply"] == 1  # the abandoned event's turn never ran
    assert not await sweeper.sweep()


async def test_workspace_clients_follow_reinstalls_and_uninstalls(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    clients = WorkspaceClients(
        installed, lambda token: make_client(make_settings(emulator), token), ttl_s=0
    )
    first = await clients.client(TEAM_A)
    assert first.token == TOKEN_A and first.base_url == emulator.api_url
    assert await clients.client(TEAM_A) is first  # same token: same client

    await _install(installed, TEAM_A, "xoxb-T0AAAA-reinstalled")
    assert (await clients.client(TEAM_A)).token == "xoxb-T0AAAA-reinstalled"

    await installed.async_delete_bot(enterprise_id=None, team_id=TEAM_A)
    with pytest.raises(NotInstalledError):
        await clients.client(TEAM_A)
    assert (await clients.client(TEAM_B)).token == TOKEN_B


class _Desk:
    """An agents' desk elsewhere (another platform): every card is ``card-<conversation>``."""

    async def open_card(self, request: HandoffRequest) -> str:
        return f"card-{request.conversation_id}"

    async def post(
        self, card_ref: str, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        return None


async def _hand_over(relay: Relay, services: Services, key: ConversationKey) -> str:
    """A conversation handed to a person whose card is open; the card's reference."""
    conversation = services.store.get_or_create_conversation(key, "U0CUSTOMER")
    relay.request(
        HandoffRequest(conversation.id, key, "U0CUSTOMER", PLATFORM, "Refund?", "topic:billing")
    )
    assert await relay.deliver_pending("desk") == 1
    return f"card-{conversation.id}"


async def test_the_relay_reaches_customers_in_their_own_workspace(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    relay = Relay(services.store, RelayConfig(desk="desk", reply_wait_s=0))
    relay_services = dataclasses.replace(services, relay=relay)
    _oauth_adapter(relay_services, emulator)  # registers Slack's customers with the relay
    relay.register_desk("desk", _Desk())
    in_b = ConversationKey(PLATFORM, TEAM_B, DM_B, "")
    gone = ConversationKey(PLATFORM, TEAM_GONE, DM_GONE, "")
    card_b, card_gone = (
        await _hand_over(relay, services, in_b),
        await _hand_over(relay, services, gone),
    )

    said = "Hi, Sam from billing here."
    assert relay.agent_said(card_b, "U0AGENT", said, "1700000010.000100") is RelayOutcome.CLAIMED
    assert relay.agent_said(card_gone, "U0AGENT", said, "1700000011.000100") is (
        RelayOutcome.CLAIMED
    )
    await relay.deliver_pending(PLATFORM)

    posts = emulator.calls_to("chat.postMessage")
    assert {(p.params["channel"], p.token) for p in posts} == {(DM_B, TOKEN_B)}
    assert said in [m["text"] for m in emulator.messages[DM_B]]
    # Not installed: nothing posted, the messages stay queued for a round after the back-off.
    assert DM_GONE not in emulator.messages
    later = utcnow() + timedelta(seconds=relay.config.retry_max_s + 1)
    assert len(services.store.pending_relay(PLATFORM, now=later)) == 2


def _in_team(body: dict[str, object], team: str) -> dict[str, object]:
    """A Slack payload as workspace `team` sends it."""
    body["team_id"] = team
    for authorization in body.get("authorizations") or []:  # type: ignore[attr-defined]
        authorization["team_id"] = team
    return body


async def test_a_thumbs_down_reaction_in_b_is_followed_up_with_bs_token(
    services: Services, emulator: SlackEmulator, installed: DatabaseInstallationStore
) -> None:
    """The quick reasons after a 👎 go out with the reacting workspace's token (the event's
    client), not the adapter's, which has none in OAuth mode."""
    settings = make_settings(
        emulator, bot_token=None, client_id=CLIENT_ID, client_secret="client-secret"
    )
    async with serve(services, settings, emulator) as slack:
        await slack.send(_in_team(payload("app_mention"), TEAM_B))
        await slack.settle()
        answer_ts = emulator.messages["C0GENERAL"][-1]["ts"]
        reaction = _in_team(payload("reaction_added"), TEAM_B)
        reaction["event"]["reaction"] = "-1"  # type: ignore[index]
        reaction["event"]["item"]["ts"] = answer_ts  # type: ignore[index]
        await slack.send(reaction)
        await slack.settle()
        posts = emulator.calls_to("chat.postMessage")
        assert len(posts) == 2  # the answer, then the quick reasons
        assert {p.token for p in posts} == {TOKEN_B}


# Enterprise Grid org-wide installs ----------------------------------------------------------------

ENTERPRISE, TOKEN_ORG = "E0GRID", "xoxb-E0GRID-token"
TEAM_1, DM_1 = "T0GRID1", "D0GRID1"
TEAM_2, DM_2 = "T0GRID2", "D0GRID2"
TEAM_3, TOKEN_3, DM_3 = "T0CCCC", "xoxb-T0CCCC-token", "D0CCCC"


async def _install_org(store: DatabaseInstallationStore, enterprise: str, token: str) -> None:
    """An org-wide install: the enterprise, and no workspace."""
    await _install(store, None, token, enterprise=enterprise)


def _covers(emulator: SlackEmulator, token: str, *teams: str) -> None:
    """What Slack's ``auth.teams.list`` answers for an org-wide token."""
    emulator.org_teams[token] = [{"id": team, "name": f"Workspace {team}"} for team in teams]


@pytest.fixture
async def grid(
    services: Services, emulator: SlackEmulator
) -> AsyncIterator[DatabaseInstallationStore]:
    """An org-wide install covering workspaces 1 and 2; workspace 3 installed on its own."""
    store = DatabaseInstallationStore(services.store, CLIENT_ID)
    await _install_org(store, ENTERPRISE, TOKEN_ORG)
    _covers(emulator, TOKEN_ORG, TEAM_1, TEAM_2)
    await _install(store, TEAM_3, TOKEN_3)
    yield store


class _Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _grid_clients(
    store: DatabaseInstallationStore, emulator: SlackEmulator, **options: Any
) -> WorkspaceClients:
    return WorkspaceClients(
        store, lambda token: make_client(make_settings(emulator), token), **options
    )


async def test_replies_in_an_org_wide_workspace_go_out_with_the_org_token(
    services: Services, emulator: SlackEmulator, grid: DatabaseInstallationStore
) -> None:
    in_2 = _abandon_reply(services, _dm(TEAM_2, DM_2, "1700000020.000100"))
    in_3 = _abandon_reply(services, _dm(TEAM_3, DM_3, "1700000021.000100"))
    sweeper = _sweeper(_oauth_adapter(services, emulator), hold_s=30)

    counts = await sweeper.sweep()

    assert counts.resent == 2 and counts.failed == 0
    posts = emulator.calls_to("chat.postMessage")
    assert sorted((p.params["channel"], p.token) for p in posts) == [
        (DM_3, TOKEN_3),
        (DM_2, TOKEN_ORG),
    ]
    # Only the org-wide token was asked what it covers; workspace 3 was found on its own.
    assert [call.token for call in emulator.calls_to("auth.teams.list")] == [TOKEN_ORG]
    assert services.store.reply_delivery(in_2) == ("sent", 1)
    assert services.store.reply_delivery(in_3) == ("sent", 1)


async def test_the_relay_reaches_a_customer_in_an_org_wide_workspace(
    services: Services, emulator: SlackEmulator, grid: DatabaseInstallationStore
) -> None:
    relay = Relay(services.store, RelayConfig(desk="desk", reply_wait_s=0))
    _oauth_adapter(dataclasses.replace(services, relay=relay), emulator)
    relay.register_desk("desk", _Desk())
    card = await _hand_over(relay, services, ConversationKey(PLATFORM, TEAM_1, DM_1, ""))

    said = "Hi, Sam from billing here."
    assert relay.agent_said(card, "U0AGENT", said, "1700000022.000100") is RelayOutcome.CLAIMED
    await relay.deliver_pending(PLATFORM)

    posts = emulator.calls_to("chat.postMessage")  # the handoff notice, then the agent's words
    assert {(p.params["channel"], p.token) for p in posts} == {(DM_1, TOKEN_ORG)}
    assert [m["text"] for m in emulator.messages[DM_1]][-1] == said
    assert services.store.pending_relay(PLATFORM) == []


async def test_a_workspace_no_install_covers_is_still_not_installed(
    services: Services,
    emulator: SlackEmulator,
    grid: DatabaseInstallationStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A second org-wide install whose token Slack no longer accepts (revoked): it covers nothing.
    await _install_org(grid, "E0REVOKED", "xoxb-E0REVOKED-revoked")
    clients = _grid_clients(grid, emulator)
    caplog.set_level(logging.WARNING, logger="adapters.slack.installation")

    for _ in range(2):
        with pytest.raises(NotInstalledError):
            await clients.client(TEAM_GONE)

    # Both org-wide tokens were asked once; the second look used what they said.
    asked = emulator.calls_to("auth.teams.list")
    assert sorted(call.token or "" for call in asked) == [
        "xoxb-E0GRID-token",
        "xoxb-E0REVOKED-revoked",
    ]
    assert "Slack refuses the token of enterprise E0REVOKED" in caplog.text
    assert emulator.calls_to("chat.postMessage") == []
    assert (await clients.client(TEAM_2)).token == TOKEN_ORG  # the org itself still works


async def test_auth_teams_list_is_asked_once_per_ttl_not_per_post(
    services: Services, emulator: SlackEmulator, grid: DatabaseInstallationStore
) -> None:
    clock = _Clock()
    clients = _grid_clients(grid, emulator, ttl_s=300, clock=clock)
    for team in (TEAM_1, TEAM_2, TEAM_1, TEAM_2):
        assert (await clients.client(team)).token == TOKEN_ORG
    first = await clients.client(TEAM_1)
    assert await clients.client(TEAM_2) is first  # one token: one client
    assert len(emulator.calls_to("auth.teams.list")) == 1

    # The sweeper's posts: three replies in the org's workspaces, one question to Slack.
    for n, (team, dm) in enumerate([(TEAM_1, DM_1), (TEAM_2, DM_2), (TEAM_1, DM_1)]):
        _abandon_reply(services, _dm(team, dm, f"17000000{30 + n}.000100"))
    emulator.calls.clear()
    assert (await _sweeper(_oauth_adapter(services, emulator)).sweep()).resent == 3
    assert {p.token for p in emulator.calls_to("chat.postMessage")} == {TOKEN_ORG}
    assert len(emulator.calls_to("auth.teams.list")) == 1

    # A workspace added to the org is found once the period is over, not before.
    emulator.calls.clear()
    _covers(emulator, TOKEN_ORG, TEAM_1, TEAM_2, "T0GRID9")
    clock.now += 299
    with pytest.raises(NotInstalledError):
        await clients.client("T0GRID9")
    assert emulator.calls_to("auth.teams.list") == []
    clock.now += 2
    assert (await clients.client("T0GRID9")).token == TOKEN_ORG
    assert len(emulator.calls_to("auth.teams.list")) == 1


async def test_every_page_of_auth_teams_list_is_read(
    services: Services, emulator: SlackEmulator, grid: DatabaseInstallationStore
) -> None:
    teams = [f"T0PAGE{n}" for n in range(5)]
    _covers(emulator, TOKEN_ORG, *teams)
    emulator.teams_page_max = 2  # Slack may answer with fewer than asked for

    clients = _grid_clients(grid, emulator)

    assert (await clients.client(teams[-1])).token == TOKEN_ORG  # on the third page
    assert [call.params.get("cursor") for call in emulator.calls_to("auth.teams.list")] == [
        None,
        "2",
        "4",
    ]
    assert (await clients.client(teams[0])).token == TOKEN_ORG
    assert len(emulator.calls_to("auth.teams.list")) == 3


@pytest.fixture(params=DATABASE_BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty, migrated store on each backend."""
    with shared_database(request.param, tmp_path, "supportbot_grid") as url:
        store = Store.from_url(url)
        try:
            yield store
        finally:
            store.close()


async def test_the_org_wide_installs_are_listed_newest_bot_per_enterprise(
    any_store: Store,
) -> None:
    store = DatabaseInstallationStore(any_store, CLIENT_ID)
    await _install_org(store, "E0ONE", "xoxb-E0ONE-first")
    await _install_org(store, "E0TWO", "xoxb-E0TWO-token")
    await _install_org(store, "E0ONE", "xoxb-E0ONE-reinstalled")
    await _install_org(DatabaseInstallationStore(any_store, "9999.0000"), "E0APP", "xoxb-other")
    await _install(store, TEAM_3, TOKEN_3)  # a workspace's own install
    # A workspace install inside a Grid org: it has its workspace.
    await _install(store, "T0INGRID", "xoxb-T0INGRID-token", enterprise="E0ONE")
    await store.async_save(  # a user's own org-wide authorisation, without a bot
        Installation(
            app_id="A0TEST",
            enterprise_id="E0USER",
            user_id="U0SOMEONE",
            user_token="xoxp-E0USER-user",
            is_enterprise_install=True,
        )
    )

    bots = await store.async_find_enterprise_bots()

    assert [(b.enterprise_id, b.team_id, b.bot_token) for b in bots] == [
        ("E0TWO", None, "xoxb-E0TWO-token"),
        ("E0ONE", None, "xoxb-E0ONE-reinstalled"),
    ]
    assert all(b.is_enterprise_install for b in bots)


async def test_a_workspace_install_inside_a_grid_org_is_found_by_its_workspace(
    services: Services, emulator: SlackEmulator, grid: DatabaseInstallationStore
) -> None:
    # Installed on its own, but in the org: stored with the enterprise id as well. Its own token
    # comes before the org-wide one, which covers it too.
    team, token, dm = "T0GRID4", "xoxb-T0GRID4-token", "D0GRID4"
    await _install(grid, team, token, enterprise=ENTERPRISE)
    _covers(emulator, TOKEN_ORG, TEAM_1, TEAM_2, team)
    reply = _abandon_reply(services, _dm(team, dm, "1700000040.000100"))
    sweeper = _sweeper(_oauth_adapter(services, emulator), hold_s=30)

    counts = await sweeper.sweep()

    assert counts.resent == 1 and counts.failed == 0
    assert [(p.params["channel"], p.token) for p in emulator.calls_to("chat.postMessage")] == [
        (dm, token)
    ]
    assert emulator.calls_to("auth.teams.list") == []
    assert services.store.reply_delivery(reply) == ("sent", 1)
