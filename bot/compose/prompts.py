"""Prompt templates as files: ``bot/prompts/<version>/{system,passages,context}.j2``.

The version in force is ``SUPPORTBOT_PROMPT_VERSION`` (default ``v1``); ``SUPPORTBOT_PROMPTS_DIR``
points at another folder of versions. A new wording is a new folder: the old one stays, so a
change can be compared (``supportbot prompts check``) and rolled back by configuration.

What the customer wrote and what the knowledge base says go into the prompt as quoted data: Jinja's
``tojson`` filter JSON-encodes them and escapes ``<``, ``>``, ``&`` and ``'``, so no passage or
message can close its ``<passages>``/``<message>`` fence or pose as instructions. Personal data is
masked (`bot.redact`) before rendering, so it never leaves for the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.compose.base import ComposeRequest
from bot.errors import ConfigError
from bot.model import Role
from bot.redact import redact

__all__ = ["NO_ANSWER", "PROMPTS_DIR", "TEMPLATES", "PromptSet", "RenderedPrompt"]

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TEMPLATES = ("system.j2", "passages.j2", "context.j2")
#: What the model says when the passages do not answer the message.
NO_ANSWER = "NO_ANSWER"
#: The conversation lines a prompt carries, newest last.
HISTORY_LINES = 6
#: At most this many sentences in an answer (told to the model).
MAX_SENTENCES = 5


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """Chat messages ready to send, and how much personal data was masked in them."""

    messages: tuple[dict[str, str], ...]
    redacted: int


class PromptSet:
    """One version of the prompt templates, loaded and checked once.

    Args:
        version: the folder name under `root`.
        root: the folder of versions (default: the bundled ``bot/prompts``).

    Raises:
        ConfigError: the version folder or one of its templates is missing or does not parse.
    """

    def __init__(self, version: str = "v1", root: Path | None = None) -> None:
        import jinja2

        self.version = version
        self.root = root or PROMPTS_DIR
        folder = self.root / version
        if not folder.is_dir():
            known = sorted(p.parent.name for p in self.root.glob("*/system.j2"))
            raise ConfigError(
                f"no prompt version {version!r} in {self.root}: set SUPPORTBOT_PROMPT_VERSION to "
                f"one of {', '.join(known) or '(none)'}"
            )
        missing = [name for name in TEMPLATES if not (folder / name).is_file()]
        if missing:
            raise ConfigError(
                f"prompt version {version!r} ({folder}) lacks {', '.join(missing)}: every version "
                f"needs {', '.join(TEMPLATES)}"
            )
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # plain text for a model; data goes through `tojson`
            keep_trailing_newline=False,
        )
        try:
            self._templates = {name: self._env.get_template(name) for name in TEMPLATES}
        except jinja2.TemplateError as e:
            raise ConfigError(f"prompt version {version!r}: a template does not parse: {e}") from e

    def render(self, request: ComposeRequest) -> RenderedPrompt:
        """The system and user messages for `request`, personal data masked.

        Raises:
            ConfigError: a template uses a variable that is not provided.
        """
        import jinja2

        masked = 0

        def clean(text: str) -> str:
            nonlocal masked
            result = redact(text)
            masked += sum(n for _, n in result.counts)
            return result.text

        passages = [
            {"n": p.number, "title": clean(p.title or ""), "text": clean(p.text)}
            for p in request.passages
        ]
        history = [
            {
                "role": "customer" if turn.role is Role.USER else "assistant",
                "text": clean(turn.text),
            }
            for turn in request.history[-HISTORY_LINES:]
            if turn.text
        ]
        values: dict[str, Any] = {
            "bot_name": request.bot_name,
            "tone": request.tone,
            "no_answer": NO_ANSWER,
            "max_sentences": MAX_SENTENCES,
            "passages": passages,
            "history": history,
            "message": clean(request.question),
        }
        try:
            system = self._templates["system.j2"].render(values).strip()
            user = "\n\n".join(
                self._templates[name].render(values).strip()
                for name in ("passages.j2", "context.j2")
            )
        except jinja2.UndefinedError as e:
            raise ConfigError(f"prompt version {self.version!r}: {e}") from e
        return RenderedPrompt(
            ({"role": "system", "content": system}, {"role": "user", "content": user}), masked
        )
