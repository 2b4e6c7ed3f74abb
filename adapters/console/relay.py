"""The terminal's side of the human-handoff relay (`bot.relay`): agents' replies while you wait.

With a desk configured (``SUPPORTBOT_HANDOFF_DESK``), `supportbot chat` serves its conversations'
customer side of the relay: `ConsoleRelay` runs the relay's delivery loop for the console
platform in a background thread, and `ConsoleCustomerChannel` prints each delivered message, an
agent's reply under the agent's name, while the prompt waits for your next line. The desk itself
(the Slack agents' channel, Zendesk, Discord) is served by the process that runs that adapter,
sharing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from rich.console import Console
from rich.text import Text

from bot.model import ConversationKey
from bot.relay import RELAY_AUTHOR, Relay

__all__ = ["BOT_NAME", "PLATFORM", "ConsoleCustomerChannel", "ConsoleRelay"]

logger = logging.getLogger(__name__)

PLATFORM = "console"
BOT_NAME = "Lumen Assistant"


class ConsoleCustomerChannel:
    """Prints relayed messages in the terminal (`bot.relay.AuthoredCustomerChannel`).

    Raises `ValueError` for another platform's conversation (a wiring error); returns None (a
    terminal line has no id, and nothing printed comes back as the customer's message).
    """

    def __init__(self, out: Console, *, bot_name: str = BOT_NAME) -> None:
        self.out = out
        self.bot_name = bot_name

    async def post(
        self, key: ConversationKey, text: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        return await self.post_as(key, text, RELAY_AUTHOR, post_id=post_id, retaken=retaken)

    async def post_as(
        self, key: ConversationKey, text: str, author: str, *, post_id: str, retaken: bool = False
    ) -> str | None:
        # A terminal keeps nothing to look for: a message whose process died after printing it
        # is printed again by the next one (the console is a single process, so this is moot).
        if key.platform != PLATFORM:
            raise ValueError(f"the console cannot post to a {key.platform} conversation")
        if author == RELAY_AUTHOR:
            label = Text(f"{self.bot_name}:", style="bold cyan")
        else:
            label = Text(f"{author} (support team):", style="bold green")
        self.out.print()
        self.out.print(label)
        self.out.print(Text(text))
        return None


class ConsoleRelay:
    """The relay's delivery loop for console customers, in a daemon thread of its own.

    Args:
        relay: the engine's relay.
        out: where relayed messages are printed.
    """

    def __init__(self, relay: Relay, out: Console, *, bot_name: str = BOT_NAME) -> None:
        self.relay = relay
        relay.register_channel(PLATFORM, ConsoleCustomerChannel(out, bot_name=bot_name))
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name="console-relay", daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self.relay.run((PLATFORM,)))
        self._started.set()
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    def start(self) -> None:
        """Start delivering in the background."""
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for the thread (a round in flight finishes first)."""
        task = self._task
        if task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("console relay: the delivery thread did not stop within %.0f s", timeout)
