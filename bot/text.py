"""Making inbound text safe to store and to search."""

from __future__ import annotations

import unicodedata

_CONTROL = {c: None for c in range(32) if chr(c) not in "\n\t"}
_CONTROL[0x7F] = None


def clean_text(text: str, *, normalize: bool = True) -> str:
    """Text without NUL and other control characters or lone surrogates, trimmed.

    PostgreSQL rejects NUL in text and tokenizers reject lone surrogates, so neither may reach
    the database or the model. With `normalize`, the text is also NFKC-normalised (fullwidth
    "ｐａｓｓｗｏｒｄ" reads "password"), which suits searching but not storing.
    """
    text = text.encode("utf-8", errors="replace").decode("utf-8").translate(_CONTROL)
    if normalize:
        text = unicodedata.normalize("NFKC", text)
    return text.strip()
