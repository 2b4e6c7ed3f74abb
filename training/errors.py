"""Errors of the training-data pipeline, under the project's one root exception.

SupportBotError (bot.errors)
└── TrainingDataError      an export or data file cannot be read or is malformed
    └── ExportFormatError  a written training file breaks its format's rules
"""

from __future__ import annotations

from pathlib import Path

from bot.errors import SupportBotError

__all__ = ["ExportFormatError", "TrainingDataError"]


class TrainingDataError(SupportBotError):
    """A source export cannot be read, or holds something the importer cannot use.

    Attributes:
        path: the file or folder at fault, where there is one.
    """

    def __init__(self, message: str, path: Path | str | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class ExportFormatError(TrainingDataError):
    """A training file breaks the rules of its format (e.g. OpenAI chat fine-tuning).

    Attributes:
        problems: one line per problem, with the example's line number.
    """

    def __init__(self, problems: list[str], path: Path | str | None = None) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(problems[:5]) + (
            f"; … {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        super().__init__(f"{len(problems)} problem(s): {shown}", path)
