"""Errors the project raises on purpose.

    SupportBotError
    ├── ConfigError          settings that cannot work; the message says how to fix them
    ├── StorageError         the database refused or is unreachable
    └── KnowledgeError       the knowledge base cannot be built or loaded
        ├── IngestError      a source file is malformed (path and line number attached)
        └── IndexMissingError  no index was built yet

Every error carries what a person needs to act on it in its message.
"""

from __future__ import annotations

from pathlib import Path


class SupportBotError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(SupportBotError):
    """A setting is missing or invalid."""


class StorageError(SupportBotError):
    """The database could not do what was asked."""


class KnowledgeError(SupportBotError):
    """The knowledge base could not be built, loaded or searched."""


class IngestError(KnowledgeError):
    """A knowledge source is malformed.

    Attributes:
        path: the file.
        line: the 1-based line number, where the format has lines.
    """

    def __init__(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class IndexMissingError(KnowledgeError):
    """No index has been built in the data directory."""
