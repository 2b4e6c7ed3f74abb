"""Bounded load on 127.0.0.1: many customers against `supportbot run --workers N` on PostgreSQL.

Creates a fresh PostgreSQL database (dropped afterwards unless ``--keep``), starts a local Slack
emulator (the one the tests use) and ``supportbot run --workers N`` against both, then lets
simulated customers talk, all at once (asyncio + httpx):

* web customers through ``POST /api/chat``, each message with its own ``message_id``; a share of
  them is sent twice at the same moment (a client retrying), which may land on two workers;
* Slack customers through signed ``POST /slack/events`` (DMs); a share of the events is
  delivered again with ``X-Slack-Retry-Num: 1`` (as Slack retries a slow acknowledgement), and
  each customer waits for the bot's reply in the emulator before the next message.

Each customer sends its messages one after another (a conversation is sequential), with distinct
questions from the bundled sample knowledge base. After the run it counts, per inbound message,
the customer messages and replies stored in the database and the replies posted to the emulator:

* lost: an accepted message without exactly one reply recorded (and for Slack, posted);
* duplicate: a message with more than one reply (stored or posted), or stored twice.

* Discord customers (``--discord-customers``) write DMs through the tests' fake Discord gateway
  to a separate ``supportbot discord`` process on the same database; a share of the messages is
  delivered twice on the gateway (Discord's at-least-once delivery), and each customer waits for
  the bot's reply on the fake's REST API before the next message.

It prints throughput, latency p50/p95/p99 (web: the request; Slack and Discord: the event until
the reply is posted), lost and duplicate replies, and each worker's resident memory.

With ``--kill-worker-after S`` one worker is killed with SIGKILL S seconds into the load;
uvicorn's supervisor starts a new one. Web customers and Slack retry what got no answer (a
browser retrying with the same ``message_id``, Slack re-delivering an unacknowledged event);
what the dead worker had accepted is answered by the others' sweepers after its hold
(``--outbox-hold``, ``SUPPORTBOT_OUTBOX_HOLD_S``; docs/reliability.md).

    python bench/load.py [--workers 4] [--customers 200] [--slack-customers 40]
                         [--discord-customers 40] [--messages 3]
                         [--max-seconds 120] [--retry-share 0.1] [--kill-worker-after S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
# The Slack emulator lives with the tests it was written for.
sys.path.insert(0, str(REPO))
from tests.adapters.discord.fake_discord import TOKEN as DISCORD_TOKEN  # noqa: E402
from tests.adapters.discord.fake_discord import FakeDiscord  # noqa: E402
from tests.adapters.slack.emulator import (  # noqa: E402
    SlackEmulator,
    dm_event,
    signature_headers,
)
from tests.support import stop_gracefully, worker_processes  # noqa: E402

SAMPLE_FAQ = REPO / "knowledge" / "sample" / "faq.jsonl"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "load-test-signing-secret"
BOT_TOKEN = "xoxb-load-test"
TEAM = "T0TEST"

console = Console(width=110)
#: Tries of one delivery in all, and the pause between them, when it got no answer.
RETRIES = 10
RETRY_PAUSE_S = 1.0
#: What a Slack customer allows beyond the usual wait for a sweeper to recover its answer.
SWEEP_WAIT_S = 35.0


@dataclass
class Sent:
    """One customer message as the harness saw it."""

    platform: str
    message_id: str
    channel: str
    accepted: bool = False
    latency_s: float | None = None
    status: list[int] = field(default_factory=list)
    #: The distinct reply ids the web chat returned for it (a retry gets the stored one back).
    replies_returned: set[str] = field(default_factory=set)


@dataclass
class Run:
    sent: list[Sent] = field(default_factory=list)
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: Deliveries repeated because the first got no answer (a killed worker, a 5xx).
    redeliveries: int = 0
    killed: list[int] = field(default_factory=list)


def questions() -> list[list[str]]:
    """For each FAQ entry, the ways of asking it (question and examples)."""
    asked = []
    for line in SAMPLE_FAQ.read_text("utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            asked.append([entry["question"], *entry.get("examples", [])])
    return asked


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (0.0, 0.0, 0.0)
    p50, p95, p99 = np.percentile(np.array(values) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# Database ------------------------------------------------------------------------------------


def recreate_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def stored(name: str) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Per (platform, platform message id): customer messages stored, and replies to them."""
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    rows_q = """
        SELECT c.platform, m.platform_message_id, count(DISTINCT m.id), count(r.id)
        FROM message m JOIN conversation c ON c.id = m.conversation_id
        LEFT JOIN reply r ON r.message_id = m.id
        WHERE m.role = 'user' GROUP BY c.platform, m.platform_message_id
    """
    messages: Counter[tuple[str, str]] = Counter()
    replies: Counter[tuple[str, str]] = Counter()
    with psycopg.connect(url) as connection:
        for platform, message_id, count, answered in connection.execute(rows_q):
            messages[(platform, message_id)] = count
            replies[(platform, message_id)] = answered
    return messages, replies


# Customers -----------------------------------------------------------------------------------


async def web_customer(
    client: httpx.AsyncClient, run: Run, index: int, texts: list[str], retry_share: float
) -> None:
    conversation = f"load-{index}"
    for turn, text in enumerate(texts):
        sent = Sent("web", f"w{index}-{turn}-{uuid.uuid4().hex[:6]}", conversation)
        run.sent.append(sent)
        body = {
            "conversation_id": conversation,
            "user": f"customer-{index}",
            "text": text,
            "message_id": sent.message_id,
        }
        copies = 2 if random.random() < retry_share else 1
        run.retries += copies - 1

        async def post(body: dict[str, str] = body, sent: Sent = sent) -> None:
            started = time.perf_counter()
            for attempt in range(RETRIES):
                # A browser retries what got no answer, with the same message_id.
                if attempt:
                    run.redeliveries += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                try:
                    response = await client.post("/api/chat", json=body)
                except httpx.HTTPError as e:
                    run.errors[f"web {type(e).__name__}"] += 1
                    continue
                if response.status_code < 500:
                    break
                run.errors[f"web HTTP {response.status_code}"] += 1
            else:
                return
            sent.status.append(response.status_code)
            if response.status_code == 200:
                sent.replies_returned.update(r["id"] for r in response.json()["replies"])
                elapsed = time.perf_counter() - started
                if not sent.accepted or (sent.latency_s or 0) > elapsed:
                    sent.latency_s = elapsed
                sent.accepted = True
            else:
                run.errors[f"web HTTP {response.status_code}"] += 1

        await asyncio.gather(*(post() for _ in range(copies)))


def signed(body: bytes) -> dict[str, str]:
    return signature_headers(body, SECRET) | {"Content-Type": "application/json"}


async def slack_customer(
    client: httpx.AsyncClient,
    emulator: SlackEmulator,
    run: Run,
    index: int,
    texts: list[str],
    retry_share: float,
) -> None:
    channel, user = f"D{index:05d}", f"U{index:05d}"
    for turn, text in enumerate(texts):
        ts = f"{1_700_000_000 + index}.{turn + 1:06d}"
        sent = Sent("slack", ts, channel)
        run.sent.append(sent)
        event = dm_event(
            team=TEAM,
            channel=channel,
            user=user,
            ts=ts,
            text=text,
            event_id=f"Ev{index:05d}{turn}",
        )
        body = json.dumps(event).encode()
        before = len(emulator.messages[channel])
        started = time.perf_counter()

        async def deliver(retry: int, body: bytes = body, sent: Sent = sent) -> None:
            for attempt in range(RETRIES):
                # Slack delivers an event again while it gets no 200.
                if attempt:
                    run.redeliveries += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
                headers = signed(body)
                if retry or attempt:
                    number = str(retry + attempt)
                    headers |= {"X-Slack-Retry-Num": number, "X-Slack-Retry-Reason": "timeout"}
                try:
                    response = await client.post("/slack/events", content=body, headers=headers)
                except httpx.HTTPError as e:
                    run.errors[f"slack {type(e).__name__}"] += 1
                    continue
                if response.status_code < 500:
                    break
                run.errors[f"slack HTTP {response.status_code}"] += 1
            else:
                return
            sent.status.append(response.status_code)
            if response.status_code == 200:
                sent.accepted = True
            else:
                run.errors[f"slack HTTP {response.status_code}"] += 1

        if random.random() < retry_share:
            run.retries += 1
            # The retry arrives while the first delivery is still being worked on.
            await asyncio.gather(deliver(0), deliver(1))
        else:
            await deliver(0)
        if not sent.accepted:
            continue
        try:
            await emulator.wait_for(
                lambda channel=channel, before=before: len(emulator.messages[channel]) > before,
                # Time for a sweeper to answer what a killed worker had accepted.
                within=30 + 2 * SWEEP_WAIT_S,
            )
        except TimeoutError:
            continue  # counted as lost below
        sent.latency_s = time.perf_counter() - started


async def discord_customer(
    fake: FakeDiscord, run: Run, index: int, texts: list[str], retry_share: float
) -> None:
    """A customer DMing the bot through the fake gateway, one message after another."""
    user_id, channel = fake.add_customer(f"load{index}")
    for text in texts:
        before = fake.bot_posts.get(channel, 0)
        started = time.perf_counter()
        message_id = await fake.post_message(channel, text, author_id=user_id)
        sent = Sent("discord", str(message_id), str(channel), accepted=True)
        run.sent.append(sent)
        if random.random() < retry_share:
            run.retries += 1
            # At-least-once delivery: the same MESSAGE_CREATE again, under a new sequence.
            await fake.dispatch("MESSAGE_CREATE", fake.messages[message_id])
        try:
            await fake.wait_for(
                lambda before=before: fake.bot_posts.get(channel, 0) > before,
                # Time for a sweeper to answer what a dead process had accepted.
                30 + 2 * SWEEP_WAIT_S,
                "the bot's reply",
            )
        except AssertionError:
            continue  # counted as lost below
        sent.latency_s = time.perf_counter() - started


# The run -------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, url: str, data: Path, emulator: SlackEmulator) -> Any:
    policies = data.parent / "policies.yaml"
    # A short burst window: Slack messages are answered 0.1 s after the last one of a burst,
    # not after the default 2 s (web turns do not wait for bursts).
    policies.write_text("turn_taking:\n  burst_window_seconds: 0.1\n")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SUPPORTBOT_DATA_DIR": str(data),
        "SUPPORTBOT_POLICIES": str(policies),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": emulator.api_url,
        "SUPPORTBOT_OUTBOX_HOLD_S": str(args.outbox_hold),
        "SUPPORTBOT_OUTBOX_SWEEP_S": "1",
    }
    for name in ("SUPPORTBOT_RATE_LIMIT", "SUPPORTBOT_HANDOFF_DESK", "SUPPORTBOT_LLM_MODEL"):
        env.pop(name, None)
    log = (data.parent / "server.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            "--workers",
            str(args.workers),
            "--port",
            str(args.port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data.parent,
    )
    return process, log


def start_discord(url: str, data: Path, fake: FakeDiscord) -> Any:
    """``supportbot discord`` on the same database and data folder, against the fake."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SUPPORTBOT_DATA_DIR": str(data),
        "SUPPORTBOT_POLICIES": str(data.parent / "policies.yaml"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DISCORD_TOKEN": DISCORD_TOKEN,
        "DISCORD_API_URL": fake.api_url,
        "SUPPORTBOT_OUTBOX_HOLD_S": "30",
        "SUPPORTBOT_OUTBOX_SWEEP_S": "1",
    }
    for name in ("SUPPORTBOT_RATE_LIMIT", "SUPPORTBOT_HANDOFF_DESK", "SUPPORTBOT_LLM_MODEL"):
        env.pop(name, None)
    log = (data.parent / "discord.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "discord"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=data.parent,
    )
    return process, log


async def wait_discord(process: Any, log_path: Path, fake: FakeDiscord, within: float) -> float:
    """Seconds until the Discord process identified on the fake gateway."""
    started = time.monotonic()
    while not fake.connected.is_set():
        if process.poll() is not None:
            text = await asyncio.to_thread(log_path.read_text)
            raise SystemExit("the Discord process stopped:\n" + text[-4000:])
        if time.monotonic() - started > within:
            raise SystemExit("the Discord process did not connect in time")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def wait_ready(process: Any, log_path: Path, workers: int, within: float) -> float:
    started = time.monotonic()
    while True:
        # The event loop keeps serving the Slack emulator meanwhile.
        text = await asyncio.to_thread(log_path.read_text)
        if process.poll() is not None:
            raise SystemExit("the server stopped:\n" + text[-4000:])
        # uvicorn says so once a worker's app (the model and index loaded) serves requests.
        if text.count("Application startup complete") >= workers:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise SystemExit("the workers did not start in time:\n" + text[-4000:])
        await asyncio.sleep(0.5)


async def load(args: argparse.Namespace) -> None:
    random.seed(args.seed)
    asked = questions()
    url = recreate_database(args.database)
    emulator = SlackEmulator()
    await emulator.start()
    fake_discord = FakeDiscord()
    await fake_discord.start()
    discord_process: Any = None
    discord_log: Any = None
    tmp = Path(tempfile.mkdtemp(prefix="supportbot-load-"))
    data = tmp / "data"
    console.print(
        f"[bold]load[/]: {args.workers} workers, PostgreSQL database {args.database}, "
        f"{args.customers} web + {args.slack_customers} Slack + {args.discord_customers} "
        f"Discord customers × {args.messages} "
        f"messages, {args.retry_share:.0%} delivered twice, at most {args.max_seconds:.0f} s"
    )
    process, log = start_server(args, url, data, emulator)
    run = Run()
    try:
        startup = await wait_ready(process, tmp / "server.log", args.workers, args.start_seconds)
        pids = sorted(worker_processes(process.pid))
        idle_rss = {pid: rss_mb(pid) for pid in pids}
        console.print(f"{len(pids)} workers ready in {startup:.1f} s (sample knowledge base)")
        if args.discord_customers:
            # After the workers: the supervisor has built the index the process loads.
            discord_process, discord_log = start_discord(url, data, fake_discord)
            took = await wait_discord(
                discord_process, tmp / "discord.log", fake_discord, args.start_seconds
            )
            console.print(f"the Discord process connected in {took:.1f} s")

        def plan() -> list[str]:
            return [random.choice(ways) for ways in random.sample(asked, args.messages)]

        limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{args.port}", timeout=60, limits=limits
        ) as client:
            customers = (
                [
                    web_customer(client, run, i, plan(), args.retry_share)
                    for i in range(args.customers)
                ]
                + [
                    slack_customer(client, emulator, run, i, plan(), args.retry_share)
                    for i in range(args.slack_customers)
                ]
                + [
                    discord_customer(fake_discord, run, i, plan(), args.retry_share)
                    for i in range(args.discord_customers)
                ]
            )
            began = time.perf_counter()
            tasks = [asyncio.create_task(c) for c in customers]
            if args.kill_worker_after is not None:
                tasks.append(asyncio.create_task(kill_a_worker(process.pid, args, run)))
            done, pending = await asyncio.wait(tasks, timeout=args.max_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    run.errors[f"harness {type(task.exception()).__name__}"] += 1
            wall = time.perf_counter() - began
        # Replies still in flight (Slack answers after the acknowledgement) get a moment; after
        # a kill, what the dead worker held waits for its hold to expire and a sweep.
        await asyncio.sleep(2 if not run.killed else args.outbox_hold * 2 + 5)
        busy_rss = {pid: rss_mb(pid) for pid in pids}
        report(args, run, emulator, fake_discord, wall, len(pending), idle_rss, busy_rss)
    finally:
        if discord_process is not None:
            stop_gracefully(discord_process, discord_log)
        await fake_discord.close()
        stop_gracefully(process, log)
        await emulator.stop()
        if not args.keep:
            drop_database(args.database)
        console.print(f"server log: {tmp / 'server.log'}")


async def kill_a_worker(supervisor: int, args: argparse.Namespace, run: Run) -> None:
    """SIGKILL one worker `--kill-worker-after` seconds into the load, then wait for uvicorn
    to start its replacement."""
    await asyncio.sleep(args.kill_worker_after)
    before = sorted(worker_processes(supervisor))
    if not before:
        run.errors["no worker to kill"] += 1
        return
    victim = before[len(before) // 2]
    os.kill(victim, signal.SIGKILL)
    run.killed.append(victim)
    killed_at = time.perf_counter()
    console.print(f"killed worker {victim} with SIGKILL at {args.kill_worker_after:.1f} s")
    for _ in range(600):
        if worker_processes(supervisor) - set(before):
            console.print(f"a new worker was started {time.perf_counter() - killed_at:.1f} s later")
            return
        await asyncio.sleep(0.5)
    run.errors["killed worker not replaced"] += 1


def report(
    args: argparse.Namespace,
    run: Run,
    emulator: SlackEmulator,
    fake_discord: FakeDiscord,
    wall: float,
    unfinished: int,
    idle_rss: dict[int, float],
    busy_rss: dict[int, float],
) -> None:
    totals = [0, 0]
    messages, replies = stored(args.database)
    # Posted to the emulator, per DM channel (one customer each; DMs are answered top-level).
    posted = Counter(
        {channel: len(items) for channel, items in emulator.messages.items() if channel[0] == "D"}
    )
    table = Table(title=f"supportbot load: {args.workers} workers on PostgreSQL")
    for column in ("", "messages", "accepted", "answered/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right" if column else "left")
    table.add_column("lost", justify="right")
    table.add_column("duplicate", justify="right")
    wire: list[str] = []
    # The bot's messages on the fake Discord, per DM channel (one customer each).
    on_discord = Counter(
        {
            channel: fake_discord.bot_posts.get(int(channel), 0)
            for channel in {s.channel for s in run.sent if s.platform == "discord"}
        }
    )
    for platform in ("web", "slack", "discord"):
        sent = [s for s in run.sent if s.platform == platform]
        if not sent:
            continue
        accepted = [s for s in sent if s.accepted]
        lost = dup = 0
        for s in accepted:
            # The engine's id of a Slack message is "<channel>:<ts>" (adapters.slack.convert).
            mid = f"{s.channel}:{s.message_id}" if platform == "slack" else s.message_id
            key = (platform, mid)
            if replies.get(key, 0) == 0:
                lost += 1
            elif replies[key] > 1 or messages[key] > 1 or len(s.replies_returned) > 1:
                dup += 1
        if platform in ("slack", "discord"):
            on_wire = posted if platform == "slack" else on_discord
            expected = Counter(s.channel for s in accepted)
            channels = set(expected) | set(on_wire)
            missing = sum(max(expected[c] - on_wire[c], 0) for c in channels)
            extra = sum(max(on_wire[c] - expected[c], 0) for c in channels)
            where = "the emulator" if platform == "slack" else "the fake Discord"
            wire.append(
                f"{platform.title()}: {sum(on_wire.values())} replies posted to {where} for "
                f"{len(accepted)} accepted messages: {missing} missing, {extra} extra"
            )
            lost, dup = max(lost, missing), max(dup, extra)
        latencies = [s.latency_s for s in accepted if s.latency_s is not None]
        p50, p95, p99 = percentiles(latencies)
        table.add_row(
            platform,
            str(len(sent)),
            str(len(accepted)),
            f"{len(latencies) / wall:.1f}",
            f"{p50:.0f}",
            f"{p95:.0f}",
            f"{p99:.0f}",
            str(lost),
            str(dup),
        )
        totals[0] += lost
        totals[1] += dup
    console.print(table)
    answered = sum(1 for s in run.sent if s.latency_s is not None)
    console.print(
        f"wall {wall:.1f} s, {answered} messages answered: {answered / wall:.1f} messages/s in "
        f"all; {run.retries} repeated deliveries; {unfinished} customers unfinished at the limit"
    )
    if run.killed:
        console.print(
            f"worker(s) killed with SIGKILL: {run.killed}; {run.redeliveries} deliveries "
            "repeated after no answer"
        )
    for line in wire:
        console.print(line)
    console.print(
        f"[bold]lost replies: {totals[0]}, duplicate replies: {totals[1]}[/]"
        + (f"; errors: {dict(run.errors)}" if run.errors else "")
    )
    console.print(
        "worker RSS MB (idle → after load): "
        + ", ".join(f"{idle_rss[p]:.0f}→{busy_rss[p]:.0f}" for p in idle_rss)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--customers", type=int, default=200, help="web customers")
    parser.add_argument("--slack-customers", type=int, default=40)
    parser.add_argument(
        "--discord-customers",
        type=int,
        default=40,
        help="Discord customers (DMs through the fake gateway to a `supportbot discord` process)",
    )
    parser.add_argument("--messages", type=int, default=3, help="messages per customer")
    parser.add_argument("--retry-share", type=float, default=0.1)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--start-seconds", type=float, default=300.0)
    parser.add_argument("--connections", type=int, default=100, help="HTTP connections")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--database", default="supportbot_load")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--kill-worker-after",
        type=float,
        default=None,
        metavar="S",
        help="SIGKILL one worker S seconds into the load (uvicorn starts a new one)",
    )
    parser.add_argument(
        "--outbox-hold",
        type=float,
        default=30.0,
        metavar="S",
        help="SUPPORTBOT_OUTBOX_HOLD_S for the workers: how long before a sweeper takes over",
    )
    args = parser.parse_args()
    args.port = args.port or free_port()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(load(args))


if __name__ == "__main__":
    main()
