"""The storage of one live turn, without the decision: five transactions against two.

Interleaves, turn by turn, what a turn stored before (`claim_event`, `get_or_create_conversation`,
`recent_turns`, `add_message`, `add_reply`: five transactions) with what it stores now
(`Store.open_turn` + `add_reply`: two), each turn in a new conversation and under
`Store.conversation_lock` as in `Engine.handle`, and prints the medians in milliseconds.

    python bench/turn_storage.py [--database-url URL] [--turns 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable

from bot.model import ConversationKey, Reply, Role, Source
from bot.storage.store import Store, TurnMessage

REPLY = Reply.answer("An answer.", (Source("entry-1", 0.9, "Entry", None),), 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="Default: a SQLite file in a temporary folder.")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--warm-up", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.from_url(args.database_url or f"sqlite:///{tmp}/turns.db")
        run = uuid.uuid4().hex[:8]

        def five_calls(i: int) -> None:
            key = ConversationKey("bench", "", f"{run}-five-{i}")
            with store.conversation_lock(str(key)):
                store.claim_event("bench", f"message::{run}-five-{i}")
                conversation = store.get_or_create_conversation(key, "u")
                store.recent_turns(conversation.id, 40)
                row = store.add_message(conversation.id, Role.USER, "u", "hello", f"five-{i}")
                store.add_reply(conversation.id, row, REPLY, query="hello", latency_ms=1.0)

        def open_turn(i: int) -> None:
            key = ConversationKey("bench", "", f"{run}-open-{i}")
            with store.conversation_lock(str(key)):
                message = TurnMessage(f"message::{run}-open-{i}", f"open-{i}", "u", "hello")
                opening = store.open_turn("bench", key, "u", [message], 40)
                assert opening.conversation is not None
                store.add_reply(
                    opening.conversation.id, opening.rows[-1], REPLY, query="hello", latency_ms=1.0
                )

        ways: dict[str, Callable[[int], None]] = {
            "five transactions": five_calls,
            "open_turn + add_reply": open_turn,
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for i in range(args.turns):
            for name, way in ways.items():
                started = time.perf_counter()
                way(i)
                times[name].append((time.perf_counter() - started) * 1000)
        store.close()
    print(f"{store.engine.dialect.name}, median of {args.turns - args.warm_up} turns:")
    for name, values in times.items():
        print(f"  {name:<24} {statistics.median(values[args.warm_up :]):.2f} ms")


if __name__ == "__main__":
    main()
