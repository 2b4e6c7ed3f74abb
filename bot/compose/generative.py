"""The generative composer: an OpenAI-compatible Chat Completions model words the answer.

Per answer::

    render the prompt (bot/prompts/<version>, personal data masked) → one chat completion within
    the time budget → checks: a usable text, not NO_ANSWER, citations in range → the grounding
    guard (every sentence backed by the passages) → the generated answer, citations renumbered
    to the reply's sources

Any failure on the way returns the extractive answer with the reason (``timeout``, ``http_500``,
``connection``, ``malformed``, ``declined``, ``bad_citation``, ``unsupported``), logged at WARNING
and kept with the reply for error analysis. The `openai` package is imported when the composer is
built, so a bot without a model never loads it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bot.compose.base import ComposeOutcome, ComposeRequest, Composition, Passage
from bot.compose.grounding import GroundingGuard
from bot.compose.prompts import NO_ANSWER, PromptSet
from bot.model import Reply, Source

if TYPE_CHECKING:
    from openai import OpenAI

__all__ = ["GenerativeComposer", "LLMConfig"]

logger = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d+)\]")
#: Without a key, local OpenAI-compatible servers (vLLM, llama.cpp, Ollama) still need a value.
PLACEHOLDER_KEY = "not-needed"


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """Where and how to ask the model.

    Attributes:
        model: the model name the endpoint serves.
        base_url: the endpoint's base URL, e.g. ``http://127.0.0.1:8080/v1``; None: OpenAI's (or
            ``OPENAI_BASE_URL``).
        api_key: the key; None: ``OPENAI_API_KEY``, else a placeholder for keyless local servers.
        temperature: sampling temperature (low keeps answers close to the passages).
        timeout_s: the time budget for the whole request; past it the extractive answer goes out.
        max_tokens: the longest answer asked for.
    """

    model: str
    base_url: str | None = None
    api_key: str | None = None
    temperature: float = 0.2
    timeout_s: float = 8.0
    max_tokens: int = 400


class GenerativeComposer:
    """Words answers with a language model, falling back to the extractive answer.

    Args:
        config: the endpoint and the budget.
        prompts: the prompt templates in force.
        guard: the grounding guard.
        client: an `openai.OpenAI` client (tests); by default one is built from `config` with no
            retries, since a retry would spend the turn's budget twice.
    """

    name = "generative"

    def __init__(
        self,
        config: LLMConfig,
        prompts: PromptSet,
        guard: GroundingGuard,
        *,
        client: OpenAI | None = None,
    ) -> None:
        self.config = config
        self.prompts = prompts
        self.guard = guard
        if client is None:
            import os

            from openai import OpenAI

            client = OpenAI(
                base_url=config.base_url,
                api_key=config.api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_KEY,
                timeout=config.timeout_s,
                max_retries=0,
            )
        self.client = client

    def compose(self, request: ComposeRequest) -> Composition:
        """Ask the model, check its answer, and return it or the extractive one; never raises."""
        started = time.perf_counter()
        details: dict[str, Any] = {
            "model": self.config.model,
            "prompt_version": self.prompts.version,
        }

        def fall_back(reason: str, generated: str | None = None, **more: Any) -> Composition:
            latency = (time.perf_counter() - started) * 1000
            logger.warning(
                "generated answer not used: %s (model=%s prompt=%s latency_ms=%.0f)",
                reason,
                self.config.model,
                self.prompts.version,
                latency,
            )
            return Composition.fell_back(
                request,
                self.name,
                reason,
                generated=generated,
                latency_ms=latency,
                **details,
                **more,
            )

        try:
            prompt = self.prompts.render(request)
        except Exception as e:  # a broken template must not break the turn
            logger.exception("rendering the prompt failed")
            return fall_back(f"prompt: {type(e).__name__}")
        details["redacted"] = prompt.redacted
        try:
            text = self._complete(prompt.messages)
        except Exception as e:
            return fall_back(_reason(e))
        if (time.perf_counter() - started) > self.config.timeout_s:
            return fall_back("timeout", text)
        if text is None or not text.strip():
            return fall_back("malformed", text)
        answer = text.strip()
        if answer.strip(" .\"'`").upper() == NO_ANSWER:
            return fall_back("declined", answer)
        cited = [int(n) for n in _CITATION.findall(answer)]
        if any(not 1 <= n <= len(request.passages) for n in cited):
            return fall_back("bad_citation", answer)
        report = self.guard.check(answer, [p.text for p in request.passages])
        if not report.grounded:
            return fall_back("unsupported", answer, support=report.sentences)
        latency = (time.perf_counter() - started) * 1000
        reply = _with_citations(request.reply, answer, request.passages, cited)
        logger.info(
            "generated answer sent (model=%s prompt=%s sentences=%d latency_ms=%.0f)",
            self.config.model,
            self.prompts.version,
            len(report.sentences),
            latency,
        )
        return Composition(
            reply,
            ComposeOutcome.GENERATED,
            self.name,
            generated=answer,
            support=report.sentences,
            latency_ms=latency,
            model=self.config.model,
            prompt_version=self.prompts.version,
            redacted=prompt.redacted,
        )

    def _complete(self, messages: tuple[dict[str, str], ...]) -> str | None:
        """One chat completion; the content of its first choice (None when there is none)."""
        completion: Any = self.client.chat.completions.create(
            model=self.config.model,
            messages=list(messages),  # type: ignore[arg-type]
            temperature=self.config.temperature,
            max_tokens=self.config.max_tokens,
            timeout=self.config.timeout_s,
        )
        choices = getattr(completion, "choices", None)
        if not choices:
            return None
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        return content if isinstance(content, str) else None


def _reason(error: Exception) -> str:
    """A short, stable reason for a failed request (no payloads, no secrets)."""
    import openai

    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIStatusError):
        return f"http_{error.status_code}"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    if isinstance(error, openai.APIResponseValidationError | ValueError):
        return "malformed"
    return f"error: {type(error).__name__}"


def _with_citations(
    reply: Reply, answer: str, passages: tuple[Passage, ...], cited: list[int]
) -> Reply:
    """The generated reply: the reply's sources first, then other cited passages' sources.

    Citation numbers are rewritten to positions in the reply's sources, so [n] in the text is
    the n-th source an adapter shows.
    """
    sources: list[Source] = list(reply.sources)
    for number in dict.fromkeys(cited):
        source = passages[number - 1].source
        if all(s.id != source.id for s in sources):
            sources.append(source)
    position = {s.id: i for i, s in enumerate(sources, start=1)}

    def renumber(match: re.Match[str]) -> str:
        source = passages[int(match.group(1)) - 1].source
        return f"[{position[source.id]}]"

    return replace(reply, text=_CITATION.sub(renumber, answer), sources=tuple(sources))
