"""Hypothesis strategies for hostile input: odd unicode, wrong types, deep nesting, junk bytes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Characters that break naive code: NUL and controls, bidi overrides, zero-width joiners,
#: combining marks, a non-character, the replacement character, and wide emoji.
ODD_CHARACTERS = [
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "\u200b",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\ufffd",
    "\uffff",
    "\u0301",
    "\u0489",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "ﷺ",
    "𒐫",
]
ZALGO = "Z\u0351\u0352\u0353a\u0354\u0355\u0356l\u0357\u0358\u0359g\u035a\u035b\u035co" * 40


def odd_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Text mixing ordinary words, odd characters and lone surrogates (which only JSON escapes
    can carry: `json_bytes` writes them with ``ensure_ascii``)."""
    pieces = st.one_of(
        st.text(max_size=40),
        st.sampled_from(ODD_CHARACTERS),
        st.sampled_from(["\ud800", "\udfff", "\udc80x"]),
        st.sampled_from(["How do I export my notes?", "reset password", ZALGO[:200], "<@U0BOT>"]),
    )
    return st.lists(pieces, max_size=12).map("".join).map(lambda s: s[:max_size])


def json_values(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Any JSON value, with odd text in its strings and keys."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        odd_text(60),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(st.one_of(odd_text(20), st.sampled_from(KEYS)), children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


#: Field names the adapters look for, so fuzzed objects reach deeper code.
KEYS = [
    "type",
    "event",
    "text",
    "user",
    "channel",
    "ts",
    "thread_ts",
    "team_id",
    "event_id",
    "conversation_id",
    "reply_id",
    "value",
    "reason",
    "message_id",
    "detail",
    "comment",
    "body",
    "id",
    "author",
    "actions",
    "container",
    "item",
    "reaction",
    "payload",
    "subject",
    "token",
    "challenge",
]


def json_bytes(value: Any) -> bytes:
    """`value` as JSON bytes; ASCII-escaped, so lone surrogates travel as ``\\ud800``."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


def deep_json(depth: int, *, kind: str = "list") -> bytes:
    """A JSON document nested `depth` levels deep (arrays or objects)."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def mutated(document: Any) -> st.SearchStrategy[Any]:
    """`document` with one leaf (at any depth) replaced by an arbitrary JSON value, or a key
    dropped: a recorded payload that is nearly right, which reaches the deepest code."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, (*path, index))

    walk(document, ())

    def apply(path: tuple[Any, ...], replacement: Any, drop: bool) -> Any:
        copy = json.loads(json.dumps(document))
        if not path:
            return replacement
        parent = copy
        for step in path[:-1]:
            parent = parent[step]
        if drop and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
        return copy

    return st.builds(apply, st.sampled_from(paths), json_values(8), st.booleans())


#: Bytes that are not a JSON document: truncated, binary, wrong encodings.
junk_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"text": "unterminated',
            b"\xff\xfe\x00\x00",
            b"null",
            b"[]",
            b'"just a string"',
            b"1e999999",
            b'{"a": NaN}',
            b"\xef\xbb\xbf{}",
            '{"text": "caf\u00e9"}'.encode("latin-1"),
        ]
    ),
)
