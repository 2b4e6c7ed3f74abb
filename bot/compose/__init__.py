"""How answers are worded: extractive (the default, no model) or generative (a language model).

- `base`: the `Composer` protocol, its request and result types, `ExtractiveComposer`.
- `generative`: `GenerativeComposer`, any OpenAI-compatible Chat Completions endpoint.
- `prompts`: the versioned Jinja2 templates in ``bot/prompts/<version>/``.
- `grounding`: the guard that checks every generated sentence against the passages.
- `suite`: ``supportbot prompts check``: a suite of questions run against the configured model.

Only `base` is imported here; the others load on use (the `openai` package only when a model is
configured). Details and settings: docs/generative.md.
"""

from bot.compose.base import (
    ComposeOutcome,
    Composer,
    ComposeRequest,
    Composition,
    ExtractiveComposer,
    Passage,
    SentenceSupport,
    passages_for,
)

__all__ = [
    "ComposeOutcome",
    "ComposeRequest",
    "Composer",
    "Composition",
    "ExtractiveComposer",
    "Passage",
    "SentenceSupport",
    "passages_for",
]
