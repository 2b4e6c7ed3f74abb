"""What every importer returns, and the small readers they share.

An importer is a pure function `load(path, options) -> ImportResult`: it reads one export
(a file, a folder or a zip) and returns the conversations in the internal format plus the
people the export names (its user directory), which the redaction step needs to mask names.
System lines (joins, pins, topic changes) are dropped here and counted in `dropped`.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Protocol

from training.errors import TrainingDataError
from training.model import Conversation

__all__ = [
    "ExportReader",
    "ImportOptions",
    "ImportResult",
    "Importer",
    "People",
    "read_json_file",
]


@dataclass(frozen=True, slots=True)
class People:
    """The people an export names: platform user id → the names they go by.

    Used to mask mentions (`<@U123>`, `<@123>`) and names (display names, real names,
    user names) in the text.
    """

    names: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", MappingProxyType(dict(self.names)))

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, Iterable[str | None]]]) -> People:
        """From (user id, names) pairs; empty names are skipped, repeated ids merged."""
        merged: dict[str, list[str]] = {}
        for user_id, names in pairs:
            bucket = merged.setdefault(str(user_id), [])
            for name in names:
                if name and isinstance(name, str) and name.strip() and name.strip() not in bucket:
                    bucket.append(name.strip())
        return cls({k: tuple(v) for k, v in merged.items()})

    def merge(self, other: People) -> People:
        return People.build([*self.names.items(), *other.names.items()])

    def all_names(self) -> list[str]:
        return sorted({n for names in self.names.values() for n in names}, key=len, reverse=True)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """An export read into the internal format.

    Attributes:
        conversations: one per thread, ticket or stored conversation.
        people: the user directory (ids → names), for name redaction.
        dropped: system and noise lines left out while reading, counted by kind.
    """

    conversations: tuple[Conversation, ...]
    people: People = field(default_factory=People)
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "conversations", tuple(self.conversations))
        object.__setattr__(self, "dropped", MappingProxyType(dict(self.dropped)))

    def merge(self, other: ImportResult) -> ImportResult:
        return ImportResult(
            self.conversations + other.conversations,
            self.people.merge(other.people),
            dict(Counter(self.dropped) + Counter(other.dropped)),
        )


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """Settings an importer may use; each ignores those that do not apply.

    Attributes:
        agents: user ids or names to treat as human agents (Slack, Discord, CSV).
        bots: user ids or names to treat as the bot (e.g. Zendesk's bot user).
        agent_roles: Discord role names whose members are agents ("Support", "Staff").
        columns: CSV/JSONL column names, keyed by field (`conversation_id`, `role`, `author`,
            `text`, `timestamp`, `platform`, `resolved`, `feedback`, `intent`).
        platform: the platform to record for CSV/JSONL rows without a platform column.
    """

    agents: frozenset[str] = frozenset()
    bots: frozenset[str] = frozenset()
    agent_roles: frozenset[str] = frozenset()
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    platform: str = "chat"


class Importer(Protocol):
    """Reads one export into conversations.

    Contract: pure (reads `path`, writes nothing); raises `TrainingDataError` naming the file
    and what is wrong when the export is unreadable; never fails on one odd message: a message
    it cannot use is dropped and counted in `ImportResult.dropped`.
    """

    def __call__(self, path: Path, options: ImportOptions) -> ImportResult: ...


class ExportReader:
    """Reads the files of an export that is a folder or a zip file, by relative path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
            # Zips made by hand often wrap everything in one top folder.
            tops = {PurePosixPath(n).parts[0] for n in names if "/" in n}
            if len(tops) == 1 and not any("/" not in n for n in names):
                self._prefix = tops.pop() + "/"
        elif not path.is_dir():
            raise TrainingDataError(
                "not a folder or a zip file: give the export's folder or zip", path
            )

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ExportReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def exists(self, name: str) -> bool:
        if self._zip is not None:
            try:
                self._zip.getinfo(self._prefix + name)
            except KeyError:
                return False
            return True
        return (self.path / name).is_file()

    def files_under(self, folder: str) -> Iterator[str]:
        """Relative paths of the `.json` files directly in `folder`, sorted."""
        if self._zip is not None:
            base = self._prefix + folder.rstrip("/") + "/"
            names = sorted(
                n[len(self._prefix) :]
                for n in self._zip.namelist()
                if n.startswith(base) and n.endswith(".json") and "/" not in n[len(base) :]
            )
            yield from names
            return
        directory = self.path / folder
        if directory.is_dir():
            for file in sorted(directory.glob("*.json")):
                yield f"{folder}/{file.name}"

    def json(self, name: str) -> Any:
        """The parsed JSON file `name`."""
        where = f"{self.path}/{name}" if self._zip is None else f"{self.path}!{name}"
        try:
            if self._zip is not None:
                raw = self._zip.read(self._prefix + name)
            else:
                raw = (self.path / name).read_bytes()
            return json.loads(raw.decode("utf-8-sig"))
        except KeyError as exc:
            raise TrainingDataError(f"missing {name} in the export", self.path) from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TrainingDataError(f"cannot read JSON: {exc}", where) from exc


def read_json_file(path: Path) -> Any:
    """A JSON file's content, with an error that names the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as exc:
        raise TrainingDataError("no such file", path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingDataError(f"cannot read JSON: {exc}", path) from exc
