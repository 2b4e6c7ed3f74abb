"""Socket Mode against the local Slack's WebSocket: envelopes in, acknowledgements out, and one
connection across replicas."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.slack import SlackAdapter
from adapters.slack.app import lease_name
from bot.service import Services
from tests.adapters.slack.conftest import APP_TOKEN, make_settings, payload
from tests.adapters.slack.emulator import SlackEmulator


@asynccontextmanager
async def socket_adapter(
    services: Services, emulator: SlackEmulator, holder: str
) -> AsyncIterator[SlackAdapter]:
    settings = make_settings(emulator, socket_mode=True, app_token=APP_TOKEN, signing_secret=None)
    adapter = SlackAdapter(services, settings, holder=holder)
    async with adapter.lifetime():
        yield adapter


async def test_envelopes_are_acknowledged_and_answered(
    services: Services, emulator: SlackEmulator
) -> None:
    async with socket_adapter(services, emulator, "replica-a") as adapter:
        assert adapter.socket_connected
        await emulator.wait_for(lambda: emulator.open_sockets == 1)
        envelope = payload("events_api_envelope")
        envelope_id = await emulator.send_envelope(envelope["payload"])
        await emulator.wait_for(
            lambda: any(a.get("envelope_id") == envelope_id for a in emulator.acks)
        )
        await emulator.wait_for(lambda: len(emulator.posts()) == 1)
        await adapter.drain()
        [post] = emulator.posts()
        assert post["thread_ts"] == "1700000900.001300"
        assert "Export &gt; PDF" in post["text"]
        # A redelivery (Slack retries unacknowledged envelopes) is acknowledged, not answered.
        again = await emulator.send_envelope(envelope["payload"])
        await emulator.wait_for(lambda: any(a.get("envelope_id") == again for a in emulator.acks))
        await adapter.drain()
        assert len(emulator.posts()) == 1
    # Shut down: the connection is closed and the lease released.
    await emulator.wait_for(lambda: emulator.open_sockets == 0)
    assert services.store.lease_holder(lease_name(APP_TOKEN)) is None
    connect_calls = emulator.calls_to("apps.connections.open")
    assert connect_calls and connect_calls[0].token == APP_TOKEN


async def test_bot_messages_over_socket_mode_are_acknowledged_and_ignored(
    services: Services, emulator: SlackEmulator
) -> None:
    async with socket_adapter(services, emulator, "replica-a") as adapter:
        envelope_id = await emulator.send_envelope(payload("message_self"))
        await emulator.wait_for(
            lambda: any(a.get("envelope_id") == envelope_id for a in emulator.acks)
        )
        await adapter.drain()
    assert emulator.posts() == []


async def test_one_replica_holds_the_connection_and_another_takes_over_when_it_dies(
    services: Services, emulator: SlackEmulator
) -> None:
    async with (
        socket_adapter(services, emulator, "replica-a") as first,
        socket_adapter(services, emulator, "replica-b") as second,
    ):
        assert first.socket_connected and not second.socket_connected
        await emulator.wait_for(lambda: emulator.open_sockets == 1)

        # replica-a "dies": it stops renewing and its connection drops, without a release.
        assert first.lease is not None
        await first.lease.abandon()
        died = time.monotonic()
        await first._disconnect()

        ttl, renew = first.settings.lease_ttl, first.settings.lease_renew
        await emulator.wait_for(lambda: second.socket_connected, within=ttl + renew + 2)
        assert time.monotonic() - died <= ttl + renew + 1.0
        await emulator.wait_for(lambda: emulator.open_sockets == 1)
        assert services.store.lease_holder(lease_name(APP_TOKEN)) == "replica-b"

        envelope_id = await emulator.send_envelope(payload("events_api_envelope")["payload"])
        await emulator.wait_for(
            lambda: any(a.get("envelope_id") == envelope_id for a in emulator.acks)
        )
        await second.drain()
        assert len(emulator.posts()) == 1
