"""Zendesk ticket exports: tickets with their comments, and the users who wrote them.

Accepted layouts:
- one JSON file `{"tickets": [...], "users": [...]}` (the shape of the Tickets API's
  `include=users` side-load, with each ticket's `comments` list added);
- a JSONL file of tickets (the JSON export Zendesk mails an admin), each line a ticket with its
  `comments`, optionally a `users` list next to it in `users.json`;
- a folder holding `tickets.json` or `tickets.jsonl` and `users.json`.

A ticket: `id`, `subject`, `requester_id`, `status`, `tags`, `created_at`,
`satisfaction_rating: {"score": "good"|"bad"}`, `comments: [{"author_id", "public", "body"
(or "plain_body"), "created_at"}]`.

Roles: the requester, and users whose `role` is "end-user", are customers; users whose role is
"agent" or "admin" are agents; ids in `options.bots` are the bot. Private comments (internal
notes) are dropped. Tickets "solved" or "closed" are resolved; a good satisfaction rating counts
as a 👍, a bad one as a 👎.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.errors import TrainingDataError
from training.importers.base import ImportOptions, ImportResult, People, read_json_file
from training.model import Conversation, Signals, Speaker, Turn, parse_time

__all__ = ["load_zendesk"]

logger = logging.getLogger(__name__)

RESOLVED_STATUSES = frozenset({"solved", "closed"})


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise TrainingDataError(f"cannot read: {exc}", path) from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TrainingDataError(f"line {number} is not JSON: {exc.msg}", path) from exc
    return rows


def _read(path: Path) -> tuple[list[Any], list[Any]]:
    """(tickets, users) from any accepted layout."""
    if path.is_dir():
        for name in ("tickets.json", "tickets.jsonl"):
            if (path / name).exists():
                tickets, users = _read(path / name)
                break
        else:
            raise TrainingDataError("no tickets.json or tickets.jsonl in the folder", path)
        if not users and (path / "users.json").exists():
            users = _users(read_json_file(path / "users.json"))
        return tickets, users
    if path.suffix == ".jsonl":
        tickets = _read_jsonl(path)
        sibling = path.with_name("users.json")
        users = _users(read_json_file(sibling)) if sibling.exists() else []
        return tickets, users
    data = read_json_file(path)
    if isinstance(data, list):
        return data, []
    if isinstance(data, dict) and isinstance(data.get("tickets"), list):
        return data["tickets"], _users(data)
    if isinstance(data, dict) and isinstance(data.get("ticket"), dict):
        return [data["ticket"]], _users(data)
    raise TrainingDataError('not a Zendesk ticket export: expected {"tickets": [...]}', path)


def _users(data: Any) -> list[Any]:
    if isinstance(data, dict):
        data = data.get("users", [])
    return data if isinstance(data, list) else []


def load_zendesk(path: Path, options: ImportOptions) -> ImportResult:
    """Read a Zendesk ticket export; see the module docstring."""
    tickets, users = _read(path)
    roles: dict[str, str] = {}
    pairs: list[tuple[str, list[str | None]]] = []
    for user in users:
        if isinstance(user, dict) and user.get("id") is not None:
            roles[str(user["id"])] = str(user.get("role", "end-user"))
            if str(user["id"]) not in options.bots:
                pairs.append((str(user["id"]), [user.get("name"), user.get("alias")]))
    dropped: Counter[str] = Counter()
    conversations = []
    for ticket in tickets:
        if not isinstance(ticket, dict) or ticket.get("id") is None:
            dropped["malformed"] += 1
            continue
        for user in ticket.get("users") or ():
            if isinstance(user, dict) and user.get("id") is not None:
                roles.setdefault(str(user["id"]), str(user.get("role", "end-user")))
                pairs.append((str(user["id"]), [user.get("name"), user.get("alias")]))
        conversation = _ticket(ticket, roles, options, str(path), dropped)
        if conversation is not None:
            conversations.append(conversation)
    logger.info("zendesk export %s: %d tickets", path, len(conversations))
    return ImportResult(tuple(conversations), People.build(pairs), dict(dropped))


def _ticket(
    ticket: Mapping[str, Any],
    roles: Mapping[str, str],
    options: ImportOptions,
    source: str,
    dropped: Counter[str],
) -> Conversation | None:
    requester = str(ticket.get("requester_id", ""))
    comments = ticket.get("comments")
    if not isinstance(comments, list):
        # A ticket without its comments still has its first message.
        comments = [
            {
                "author_id": requester,
                "body": ticket.get("description"),
                "public": True,
                "created_at": ticket.get("created_at"),
            }
        ]
    turns = []
    for comment in comments:
        if not isinstance(comment, dict):
            dropped["malformed"] += 1
            continue
        if comment.get("public") is False:
            dropped["zendesk:internal_note"] += 1
            continue
        author = str(comment.get("author_id", ""))
        if author in options.bots:
            role = Speaker.BOT
        elif author == requester or roles.get(author, "end-user") == "end-user":
            role = Speaker.CUSTOMER
        else:
            role = Speaker.AGENT
        if author in options.agents:
            role = Speaker.AGENT
        text = str(comment.get("plain_body") or comment.get("body") or "")
        meta = {"message_id": str(comment.get("id", ""))}
        turns.append(Turn(role, author, text, parse_time(comment.get("created_at")), meta))
    rating = ticket.get("satisfaction_rating") or {}
    score = str(rating.get("score", "")) if isinstance(rating, dict) else ""
    status = str(ticket.get("status", ""))
    return Conversation(
        id=f"zendesk:{ticket['id']}",
        source=source,
        platform="zendesk",
        turns=tuple(turns),
        signals=Signals(
            resolved=(status in RESOLVED_STATUSES) if status else None,
            thumbs_up=1 if score == "good" else 0,
            thumbs_down=1 if score == "bad" else 0,
            handed_off=any(t.role is Speaker.BOT for t in turns)
            and any(t.role is Speaker.AGENT for t in turns),
        ),
    )
