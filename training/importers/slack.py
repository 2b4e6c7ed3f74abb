"""Slack workspace exports: a folder or zip with `users.json`, `channels.json` (and, in full
exports, `groups.json`, `dms.json`, `mpims.json`) and one folder per conversation holding a JSON
file per day (`2024-03-01.json`: a list of messages).

Threads are rebuilt from `thread_ts`: every message whose `thread_ts` equals a parent's `ts` joins
that parent's conversation (the parent is the message whose `ts == thread_ts`, or whose replies
name it through `parent_user_id`). A top-level message with no replies is a conversation of one
turn (the cleaning step drops those without an answer).

Roles: the thread's starter is the customer; other people who reply are agents; messages from
bots (`bot_id`, `subtype: bot_message`, or users flagged `is_bot`) are the bot. `options.agents`
(ids or names) makes people agents even when they start a thread, and `options.bots` adds bots.
Reactions carry signals: ✅ (white_check_mark, heavy_check_mark) marks the thread resolved,
👍/👎 on an answer count as feedback.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.importers.base import ExportReader, ImportOptions, ImportResult, People
from training.model import Conversation, Signals, Speaker, Turn, parse_time

__all__ = ["SYSTEM_SUBTYPES", "load_slack"]

logger = logging.getLogger(__name__)

SYSTEM_SUBTYPES = frozenset(
    {
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "channel_archive",
        "channel_unarchive",
        "group_join",
        "group_leave",
        "group_topic",
        "group_purpose",
        "group_name",
        "group_archive",
        "group_unarchive",
        "pinned_item",
        "unpinned_item",
        "reminder_add",
        "bot_add",
        "bot_remove",
        "tombstone",
        "message_deleted",
        "huddle_thread",
        "channel_convert_to_private",
    }
)
"""Message subtypes that are Slack's own notices, not something a person said."""

RESOLVED_REACTIONS = frozenset({"white_check_mark", "heavy_check_mark", "ballot_box_with_check"})
UP_REACTIONS = frozenset({"+1", "thumbsup"})
DOWN_REACTIONS = frozenset({"-1", "thumbsdown"})

_LISTS = (
    ("channels.json", "name"),
    ("groups.json", "name"),
    ("mpims.json", "name"),
    ("dms.json", "id"),
)


def _people(users: list[dict[str, Any]]) -> tuple[People, set[str]]:
    pairs = []
    bots: set[str] = set()
    for user in users:
        if not isinstance(user, dict) or "id" not in user:
            continue
        profile = user.get("profile") or {}
        if user.get("is_bot") or user.get("is_app_user"):
            bots.add(str(user["id"]))
            if profile.get("bot_id"):
                bots.add(str(profile["bot_id"]))
            continue  # a bot's name is no personal data, and often the product's name
        pairs.append(
            (
                str(user["id"]),
                [
                    user.get("name"),
                    user.get("real_name"),
                    profile.get("real_name"),
                    profile.get("display_name"),
                    profile.get("first_name"),
                    profile.get("last_name"),
                ],
            )
        )
    return People.build(pairs), bots


def _reactions(message: Mapping[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for reaction in message.get("reactions") or ():
        if isinstance(reaction, dict) and reaction.get("name"):
            # "+1::skin-tone-2" is still a thumbs up.
            name = str(reaction["name"]).split("::", 1)[0]
            counts[name] += int(reaction.get("count") or len(reaction.get("users") or ()) or 1)
    return counts


def load_slack(path: Path, options: ImportOptions) -> ImportResult:
    """Read a Slack workspace export (folder or zip); see the module docstring."""
    with ExportReader(path) as reader:
        users_file = "users.json" if reader.exists("users.json") else "org_users.json"
        users = reader.json(users_file) if reader.exists(users_file) else []
        people, bot_users = _people(users if isinstance(users, list) else [])
        bots = set(options.bots) | bot_users
        agents = set(options.agents)
        folders: list[tuple[str, str]] = []  # (folder, channel id)
        for list_name, key in _LISTS:
            if not reader.exists(list_name):
                continue
            for channel in reader.json(list_name) or ():
                if isinstance(channel, dict) and channel.get(key):
                    folders.append((str(channel[key]), str(channel.get("id", channel[key]))))
        dropped: Counter[str] = Counter()
        conversations: list[Conversation] = []
        for folder, channel_id in folders:
            messages: list[dict[str, Any]] = []
            for day in reader.files_under(folder):
                content = reader.json(day)
                if isinstance(content, list):
                    messages.extend(m for m in content if isinstance(m, dict))
            conversations.extend(
                _threads(channel_id, messages, str(path), people, bots, agents, dropped)
            )
    logger.info("slack export %s: %d conversations", path, len(conversations))
    return ImportResult(tuple(conversations), people, dict(dropped))


def _is_bot(message: Mapping[str, Any], bots: set[str]) -> bool:
    return bool(
        message.get("subtype") == "bot_message"
        or message.get("bot_id")
        or str(message.get("user", "")) in bots
        or str(message.get("bot_id", "")) in bots
    )


def _author(message: Mapping[str, Any]) -> str:
    return str(message.get("user") or message.get("bot_id") or message.get("username") or "")


def _threads(
    channel_id: str,
    messages: list[dict[str, Any]],
    source: str,
    people: People,
    bots: set[str],
    agents: set[str],
    dropped: Counter[str],
) -> list[Conversation]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in messages:
        if message.get("type", "message") != "message" or "ts" not in message:
            dropped["non_message"] += 1
            continue
        subtype = message.get("subtype")
        if subtype in SYSTEM_SUBTYPES:
            dropped[f"slack:{subtype}"] += 1
            continue
        root = str(message.get("thread_ts") or message["ts"])
        groups[root].append(message)
    conversations = []
    for root, group in groups.items():
        group.sort(key=lambda m: float(m["ts"]))
        starter = next((m for m in group if str(m["ts"]) == root), group[0])
        customer = str(starter.get("user") or starter.get("parent_user_id") or _author(starter))
        if not customer:
            customer = next(
                (str(m["parent_user_id"]) for m in group if m.get("parent_user_id")), ""
            )
        turns: list[Turn] = []
        signals: Counter[str] = Counter()
        for message in group:
            author = _author(message)
            names = set(people.names.get(author, ())) | {author}
            reactions = _reactions(message)
            if _is_bot(message, bots):
                role = Speaker.BOT
            elif names & agents:
                role = Speaker.AGENT
            elif author == customer:
                role = Speaker.CUSTOMER
            else:
                role = Speaker.AGENT
            if any(name in RESOLVED_REACTIONS for name in reactions):
                signals["resolved"] += 1
            meta: dict[str, Any] = {"message_id": f"{channel_id}:{message['ts']}"}
            if role is not Speaker.CUSTOMER:
                up = sum(reactions[name] for name in UP_REACTIONS)
                down = sum(reactions[name] for name in DOWN_REACTIONS)
                signals["up"] += up
                signals["down"] += down
                if up > down:
                    meta["feedback"] = "up"
                elif down > up:
                    meta["feedback"] = "down"
            text = str(message.get("text") or "")
            for file in message.get("files") or ():
                if isinstance(file, dict) and file.get("title") and not text:
                    text = str(file["title"])
            turns.append(Turn(role, author, text, parse_time(message["ts"]), meta))
        conversations.append(
            Conversation(
                id=f"slack:{channel_id}:{root}",
                source=source,
                platform="slack",
                turns=tuple(turns),
                signals=Signals(
                    resolved=True if signals["resolved"] else None,
                    thumbs_up=signals["up"],
                    thumbs_down=signals["down"],
                    handed_off=any(t.role is Speaker.BOT for t in turns)
                    and any(t.role is Speaker.AGENT for t in turns),
                ),
            )
        )
    return conversations
