"""`supportbot discord`: settings checked first, then the real process against the fake Discord."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import ConfigError
from tests.adapters.discord.conftest import WAIT
from tests.adapters.discord.fake_discord import TOKEN, FakeDiscord


def test_missing_token_stops_before_anything_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("SUPPORTBOT_DISCORD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["discord"])
    assert isinstance(result.exception, ConfigError)
    assert "DISCORD_TOKEN" in str(result.exception)


@pytest.mark.slow
async def test_supportbot_discord_process_answers_and_stops_on_ctrl_c(
    fake: FakeDiscord, data_dir: Path
) -> None:
    env = {
        **os.environ,
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_URL": fake.api_url,
        "SUPPORTBOT_DATA_DIR": str(data_dir),
        "SUPPORTBOT_DISCORD_SUPPORT_CHANNELS": str(fake.support_channel),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bot.cli import main; main()",
        "discord",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await asyncio.wait_for(fake.connected.wait(), 60)  # the model loads first
        await asyncio.sleep(0.2)  # READY → on_ready
        question = await fake.post_message(fake.support_channel, "How do I reset my password?")
        await fake.wait_for(lambda: fake.bot_messages(question), WAIT, "the process's answer")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        output, _ = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode == 0, output.decode()[-2000:]
    assert b"kind=answer" in output
    assert TOKEN.encode() not in output  # the token is never logged
