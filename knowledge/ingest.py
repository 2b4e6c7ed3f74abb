"""Read knowledge sources (FAQ files and article folders) into :class:`Entry` objects.

Supported sources:

* ``.jsonl``: FAQ entries, one JSON object per line (see :func:`load_jsonl_entries`).
* ``.csv``: FAQ entries with a header row naming at least ``question`` and ``answer``.
* ``.md``/``.markdown``, ``.html``/``.htm``, ``.txt``: articles, split into passages by
  headings and length (see :mod:`knowledge.chunking`), one entry per passage.
* a directory: every supported file below it, in sorted order (hidden files and folders
  skipped).

Nothing is written anywhere: a malformed source raises :class:`~bot.errors.IngestError` before
anything is returned, so a failed ingest changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from bot.errors import IngestError
from knowledge.chunking import Section, split_html, split_markdown, split_text
from knowledge.types import Entry, content_id

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_EXTENSIONS", "load_jsonl_entries", "load_sources"]

_FAQ_EXTENSIONS = frozenset({".jsonl", ".csv"})
_MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown"})
_HTML_EXTENSIONS = frozenset({".html", ".htm"})
_TEXT_EXTENSIONS = frozenset({".txt"})
SUPPORTED_EXTENSIONS: frozenset[str] = (
    _FAQ_EXTENSIONS | _MARKDOWN_EXTENSIONS | _HTML_EXTENSIONS | _TEXT_EXTENSIONS
)
"""File extensions :func:`load_sources` reads (lower case, with the dot)."""

_CSV_REQUIRED = ("question", "answer")
_CSV_OPTIONAL = ("id", "title", "url", "examples", "tags")
_JSON_TYPE_NAMES: Mapping[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}
_ORDER_PREFIX = re.compile(r"^\d+[-_. ]+(?=\S)")


def load_sources(paths: Sequence[Path | str], *, max_chars: int = 1200) -> list[Entry]:
    """Load every entry from the given files and directories.

    Args:
        paths: files (``.jsonl``, ``.csv``, ``.md``, ``.markdown``, ``.html``, ``.htm``,
            ``.txt``) and directories to read recursively. A file reached twice is read once.
        max_chars: the longest an article passage may be.

    Returns:
        The entries, in the order of ``paths`` (and sorted file order within directories).
        Each entry's ``source`` is the resolved path of its file.

    Raises:
        IngestError: a path does not exist or has an unsupported extension, a file is not
            UTF-8 or is malformed (with its line number where it has one), or two files define
            the same entry id.
        TypeError: ``paths`` is a single string or path rather than a sequence of them.
    """
    if isinstance(paths, (str, Path)):
        raise TypeError("load_sources() takes a sequence of paths, not a single path")

    entries: list[Entry] = []
    origin: dict[str, Path] = {}  # entry id -> file that defined it
    seen_files: set[Path] = set()
    for given in paths:
        for file in _expand(Path(given)):
            resolved = file.resolve()
            if resolved in seen_files:
                logger.debug("skipping %s: already read", file)
                continue
            seen_files.add(resolved)
            loaded = _load_file(resolved, max_chars=max_chars)
            for entry in loaded:
                first = origin.get(entry.id)
                if first is not None:
                    raise IngestError(
                        resolved,
                        f"entry id {entry.id!r} is also defined in {first}; ids must be unique "
                        "across all sources",
                    )
                origin[entry.id] = resolved
            entries.extend(loaded)
            logger.info("read %d entries from %s", len(loaded), resolved)
    return entries


def load_jsonl_entries(lines: Iterable[str], *, source: str) -> list[Entry]:
    """Parse FAQ entries from JSON Lines.

    Each non-blank line is one JSON object with ``id`` (string, required, unique) and
    ``answer`` (string, required); ``question``, ``title`` and ``url`` (strings), and
    ``examples`` and ``tags`` (lists of strings) are optional, and ``null`` counts as absent.
    Other keys are ignored. Strings are stripped of surrounding whitespace and NUL characters.

    Args:
        lines: the lines (with or without their line endings); line numbers count from 1.
        source: where the lines came from; becomes each entry's ``source`` and the path in
            errors.

    Returns:
        The entries, in line order.

    Raises:
        IngestError: a line is not valid JSON, not an object, lacks ``id`` or ``answer``, has a
            field of the wrong type, or repeats an earlier id; ``line`` says which.
    """
    entries: list[Entry] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise IngestError(
                source, f"invalid JSON: {error.msg} (column {error.colno})", line=number
            ) from None
        except (ValueError, RecursionError) as error:
            raise IngestError(source, f"invalid JSON: {error}", line=number) from None
        if not isinstance(record, dict):
            raise IngestError(
                source, f"expected a JSON object, got {_json_type(record)}", line=number
            )
        try:
            entry = _faq_entry(record, source=source)
        except _FieldError as error:
            raise IngestError(source, str(error), line=number) from None
        if entry.id in first_line:
            raise IngestError(
                source,
                f"duplicate id {entry.id!r} (first used on line {first_line[entry.id]})",
                line=number,
            )
        first_line[entry.id] = number
        entries.append(entry)
    return entries


# --- files --------------------------------------------------------------------------------


def _supported() -> str:
    return ", ".join(sorted(SUPPORTED_EXTENSIONS))


def _expand(path: Path) -> Iterator[Path]:
    """The files a given path stands for: itself, or the supported files below it."""
    if path.is_dir():
        found = [
            file
            for file in path.rglob("*")
            if file.suffix.lower() in SUPPORTED_EXTENSIONS
            and not any(part.startswith(".") for part in file.relative_to(path).parts)
            and file.is_file()
        ]
        if not found:
            logger.warning("no %s files in %s", _supported(), path)
        yield from sorted(found, key=lambda file: file.relative_to(path).as_posix())
    elif path.is_file():
        if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            kind = f"'{path.suffix}'" if path.suffix else "without an extension"
            raise IngestError(
                path, f"unsupported file type {kind}; supported: {_supported()}, or a directory"
            )
        yield path
    elif path.exists():
        raise IngestError(path, "not a regular file or directory")
    else:
        raise IngestError(path, "no such file or directory")


def _load_file(path: Path, *, max_chars: int) -> list[Entry]:
    suffix = path.suffix.lower()
    text = _read_text(path)
    source = str(path)
    if suffix == ".jsonl":
        return load_jsonl_entries(_split_lines(text), source=source)
    if suffix == ".csv":
        return _load_csv(text, source=source)
    fallback = _pretty_stem(path)
    if suffix in _MARKDOWN_EXTENSIONS:
        sections = split_markdown(text, max_chars=max_chars)
    elif suffix in _HTML_EXTENSIONS:
        sections = split_html(text, max_chars=max_chars)
    else:
        sections = split_text(text, title=fallback, max_chars=max_chars)
    return _article_entries(sections, source=source, fallback_title=fallback)


def _read_text(path: Path) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is dropped)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise IngestError(path, f"cannot read the file: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        hint = ""
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (it looks like UTF-16)"
        raise IngestError(
            path,
            f"not valid UTF-8{hint}: byte {data[error.start]:#04x} at offset {error.start}; "
            "save the file as UTF-8",
            line=line,
        ) from None


def _split_lines(text: str) -> list[str]:
    """Split at ``\\n`` only: JSON strings may hold U+2028 and other characters that
    :meth:`str.splitlines` would break at."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _pretty_stem(path: Path) -> str:
    """A title from a file name: ``02-reset_your-password.md`` -> ``Reset your password``."""
    stem = _ORDER_PREFIX.sub("", path.stem)
    words = " ".join(re.split(r"[-_\s]+", stem)).strip()
    if not words:
        return path.stem
    return words[0].upper() + words[1:]


# --- articles -----------------------------------------------------------------------------


def _article_entries(sections: list[Section], *, source: str, fallback_title: str) -> list[Entry]:
    entries: list[Entry] = []
    ids: set[str] = set()
    for section in sections:
        entry_id = content_id(source, "/".join(section.heading_path), section.text)
        if entry_id in ids:  # the same passage under the same headings twice: keep one
            logger.debug("%s: dropping a repeated passage under %s", source, section.heading_path)
            continue
        ids.add(entry_id)
        title = section.title or fallback_title
        entries.append(
            Entry(
                id=entry_id,
                answer=section.text,
                question=section.heading_path[-1] if section.heading_path else title,
                title=title,
                source=source,
                heading_path=section.heading_path,
            )
        )
    return entries


# --- FAQ records --------------------------------------------------------------------------


class _FieldError(ValueError):
    """A record's field is missing or has the wrong type."""


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _clean(value: str) -> str:
    return value.replace("\x00", "").strip()


def _required_string(record: Mapping[str, object], key: str) -> str:
    value = record.get(key)
    if value is None:
        raise _FieldError(f"missing required field {key!r}")
    if not isinstance(value, str):
        raise _FieldError(f"field {key!r} must be a string, got {_json_type(value)}")
    cleaned = _clean(value)
    if not cleaned:
        raise _FieldError(f"field {key!r} is empty")
    return cleaned


def _optional_string(record: Mapping[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _FieldError(f"field {key!r} must be a string, got {_json_type(value)}")
    return _clean(value) or None


def _string_list(record: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _FieldError(f"field {key!r} must be a list of strings, got {_json_type(value)}")
    items: dict[str, None] = {}  # ordered and de-duplicated
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _FieldError(
                f"field {key!r} must be a list of strings; item {index} is {_json_type(item)}"
            )
        cleaned = _clean(item)
        if cleaned:
            items[cleaned] = None
    return tuple(items)


def _faq_entry(record: Mapping[str, object], *, source: str) -> Entry:
    return Entry(
        id=_required_string(record, "id"),
        answer=_required_string(record, "answer"),
        question=_optional_string(record, "question"),
        examples=_string_list(record, "examples"),
        title=_optional_string(record, "title"),
        url=_optional_string(record, "url"),
        tags=_string_list(record, "tags"),
        source=source,
    )


def _load_csv(text: str, *, source: str) -> list[Entry]:
    """FAQ entries from CSV text; see :func:`load_sources` for the columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    entries: list[Entry] = []
    first_line: dict[str, int] = {}
    end_of_previous = 0
    while True:
        start = end_of_previous + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            hint = ""
            if "field limit" in str(error):
                hint = "; a field is too long for the CSV reader, use JSON Lines for such answers"
            raise IngestError(source, f"malformed CSV: {error}{hint}", line=start) from None
        end_of_previous = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = _csv_header(row, source=source, line=start)
            continue
        if len(row) > len(header):
            raise IngestError(
                source,
                f"row has {len(row)} fields but the header has {len(header)}; "
                "quote fields that contain commas",
                line=start,
            )
        cells = dict(zip(header, [*row, *([""] * (len(header) - len(row)))], strict=True))
        try:
            entry = _csv_entry(cells, source=source)
        except _FieldError as error:
            raise IngestError(source, str(error), line=start) from None
        if entry.id in first_line:
            raise IngestError(
                source,
                f"duplicate id {entry.id!r} (first used on line {first_line[entry.id]})",
                line=start,
            )
        first_line[entry.id] = start
        entries.append(entry)
    if header is None:
        raise IngestError(
            source, "empty CSV file; expected a header row with question and answer columns"
        )
    return entries


def _csv_header(row: list[str], *, source: str, line: int) -> list[str]:
    names = [cell.replace("\x00", "").strip().lower() for cell in row]
    duplicates = sorted({name for name in names if name and names.count(name) > 1})
    if duplicates:
        raise IngestError(source, f"duplicate column(s): {', '.join(duplicates)}", line=line)
    missing = [name for name in _CSV_REQUIRED if name not in names]
    if missing:
        found = ", ".join(name or "(blank)" for name in names)
        raise IngestError(
            source,
            f"missing required column(s) {', '.join(missing)}; found columns: {found}; "
            f"needed: {', '.join(_CSV_REQUIRED)} (optional: {', '.join(_CSV_OPTIONAL)})",
            line=line,
        )
    return names


def _csv_entry(cells: Mapping[str, str], *, source: str) -> Entry:
    question = _clean(cells["question"])
    answer = _clean(cells["answer"])
    if not question:
        raise _FieldError("the question is empty")
    if not answer:
        raise _FieldError("the answer is empty")
    entry_id = _clean(cells.get("id", "")) or content_id(question)
    return Entry(
        id=entry_id,
        answer=answer,
        question=question,
        examples=_split_cell(cells.get("examples", ""), "|"),
        title=_clean(cells.get("title", "")) or None,
        url=_clean(cells.get("url", "")) or None,
        tags=_split_cell(cells.get("tags", ""), "|,"),
        source=source,
    )


def _split_cell(cell: str, separators: str) -> tuple[str, ...]:
    parts = (_clean(part) for part in re.split(f"[{re.escape(separators)}]", cell))
    return tuple(dict.fromkeys(part for part in parts if part))
