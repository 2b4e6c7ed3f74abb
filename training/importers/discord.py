"""DiscordChatExporter JSON exports: one file per channel or thread (or a folder of them).

Shape: `{"guild": {"id", "name"}, "channel": {"id", "type", "name", ...}, "messages": [{"id",
"type", "timestamp", "content", "author": {"id", "name", "nickname", "isBot", "roles": [...]},
"reactions": [{"emoji": {"name"}, "count"}], "mentions": [{"id", "name", "nickname"}],
"reference": {"messageId"}}]}`.

Conversations: a thread or forum post export (channel type `GuildPublicThread`,
`GuildPrivateThread`) is one conversation. In a plain channel, conversations are rebuilt from
replies: a message whose `reference.messageId` points at an earlier one joins that message's
conversation; a new message from someone who started a conversation less than 10 minutes ago
continues it (customers send bursts); anything else starts a new one.

Roles: bots (`isBot`) are the bot; members with one of `options.agent_roles` or named in
`options.agents` are agents; in a conversation, its starter is the customer and other people
who answer are agents. Message types other than `Default` and `Reply` (joins, pins, thread
notices, calls) are dropped. Reactions: ✅ resolves, 👍/👎 on an answer count as feedback.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from training.errors import TrainingDataError
from training.importers.base import ImportOptions, ImportResult, People, read_json_file
from training.model import Conversation, Signals, Speaker, Turn, parse_time

__all__ = ["load_discord"]

logger = logging.getLogger(__name__)

KEPT_TYPES = frozenset({"Default", "Reply", "0", "19"})
THREAD_TYPES = frozenset({"GuildPublicThread", "GuildPrivateThread", "GuildNewsThread"})
BURST = timedelta(minutes=10)
RESOLVED = frozenset({"✅", "☑️", "✔️", "white_check_mark"})
UP = frozenset({"👍", "thumbsup", "+1"})
DOWN = frozenset({"👎", "thumbsdown", "-1"})


@dataclass
class _Thread:
    root: str
    starter: str
    messages: list[dict[str, Any]] = field(default_factory=list)


def load_discord(path: Path, options: ImportOptions) -> ImportResult:
    """Read one DiscordChatExporter JSON file, or every `.json` file in a folder."""
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise TrainingDataError("no .json files: give a DiscordChatExporter JSON export", path)
    result = ImportResult(())
    for file in files:
        result = result.merge(_load_file(file, options))
    logger.info("discord export %s: %d conversations", path, len(result.conversations))
    return result


def _emoji(reaction: Mapping[str, Any]) -> tuple[str, int]:
    emoji = reaction.get("emoji") or {}
    name = str(emoji.get("name") or emoji.get("code") or "")
    return name, int(reaction.get("count") or 1)


def _load_file(file: Path, options: ImportOptions) -> ImportResult:
    data = read_json_file(file)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise TrainingDataError(
            'not a DiscordChatExporter JSON export (no "messages" list); export with --format Json',
            file,
        )
    channel = data.get("channel") or {}
    guild = data.get("guild") or {}
    channel_id = str(channel.get("id", file.stem))
    guild_id = str(guild.get("id", ""))
    is_thread = str(channel.get("type", "")) in THREAD_TYPES
    dropped: Counter[str] = Counter()
    pairs: list[tuple[str, list[str | None]]] = []
    agents = set(options.agents)
    roles_of: dict[str, set[str]] = {}
    bots = set(options.bots)
    threads: list[_Thread] = []
    thread_of: dict[str, _Thread] = {}
    last_by_author: dict[str, tuple[_Thread, Any]] = {}
    for message in data["messages"]:
        if not isinstance(message, dict) or "id" not in message:
            dropped["malformed"] += 1
            continue
        kind = str(message.get("type", "Default"))
        if kind not in KEPT_TYPES:
            dropped[f"discord:{kind}"] += 1
            continue
        author = message.get("author") or {}
        author_id = str(author.get("id", ""))
        if not author.get("isBot"):
            pairs.append((author_id, [author.get("name"), author.get("nickname")]))
        for mention in message.get("mentions") or ():
            if isinstance(mention, dict) and mention.get("id"):
                pairs.append((str(mention["id"]), [mention.get("name"), mention.get("nickname")]))
        if author.get("isBot"):
            bots.add(author_id)
        roles_of[author_id] = {
            str(r.get("name")) for r in author.get("roles") or () if isinstance(r, dict)
        }
        when = parse_time(message.get("timestamp"))
        reference = (message.get("reference") or {}).get("messageId")
        thread: _Thread | None = None
        if is_thread:
            thread = threads[0] if threads else None
        elif reference and str(reference) in thread_of:
            thread = thread_of[str(reference)]
        elif author_id in last_by_author and author_id not in bots:
            previous, at = last_by_author[author_id]
            if previous.starter == author_id and when and at and when - at <= BURST:
                thread = previous
        if thread is None:
            thread = _Thread(root=str(message["id"]), starter=author_id)
            threads.append(thread)
        thread.messages.append(message)
        thread_of[str(message["id"])] = thread
        last_by_author[author_id] = (thread, when)
    people = People.build(pairs)
    conversations = []
    for thread in threads:
        turns: list[Turn] = []
        counts: Counter[str] = Counter()
        for message in thread.messages:
            author_id = str((message.get("author") or {}).get("id", ""))
            names = set(people.names.get(author_id, ())) | {author_id}
            if author_id in bots or names & bots:
                role = Speaker.BOT
            elif names & agents or roles_of.get(author_id, set()) & options.agent_roles:
                role = Speaker.AGENT
            elif author_id == thread.starter:
                role = Speaker.CUSTOMER
            else:
                role = Speaker.AGENT
            reactions = [_emoji(r) for r in message.get("reactions") or () if isinstance(r, dict)]
            meta: dict[str, Any] = {"message_id": str(message["id"])}
            if any(name in RESOLVED for name, _ in reactions):
                counts["resolved"] += 1
            if role is not Speaker.CUSTOMER:
                up = sum(n for name, n in reactions if name in UP)
                down = sum(n for name, n in reactions if name in DOWN)
                counts["up"] += up
                counts["down"] += down
                if up != down:
                    meta["feedback"] = "up" if up > down else "down"
            text = str(message.get("content") or "")
            turns.append(Turn(role, author_id, text, parse_time(message.get("timestamp")), meta))
        conversations.append(
            Conversation(
                id=f"discord:{guild_id}:{channel_id}:{thread.root}",
                source=str(file),
                platform="discord",
                turns=tuple(turns),
                signals=Signals(
                    resolved=True if counts["resolved"] else None,
                    thumbs_up=counts["up"],
                    thumbs_down=counts["down"],
                    handed_off=any(t.role is Speaker.BOT for t in turns)
                    and any(t.role is Speaker.AGENT for t in turns),
                ),
            )
        )
    return ImportResult(tuple(conversations), people, dict(dropped))
