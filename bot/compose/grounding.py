"""The grounding guard: every sentence of a generated answer must be backed by the passages.

Each sentence that can carry a claim (at least `min_content_words` content words, or any number)
is scored against the passages it was generated from:

- ``similarity``: the best cosine between the sentence and a passage sentence (or a whole
  passage), with the real embedding model;
- ``overlap``: the share of the sentence's content words (stop words dropped, Snowball-stemmed)
  found anywhere in the passages;
- ``missing_numbers``: numbers it states that no passage states ("$99", "90 days").

A sentence is supported when it states no missing number and either its similarity reaches
`strong_similarity`, or its similarity reaches `min_similarity` *and* its overlap reaches
`min_overlap`. An answer is grounded when it has at least one checked sentence and every checked
sentence is supported.

Passage sentences that address an AI rather than a customer ("ignore previous instructions…",
"you are now…", "system prompt") are not evidence: a passage with an injected instruction must
not vouch for an answer that obeys it.

The defaults were tuned on the sample knowledge base with paraphrased
(supported) and invented (unsupported) sentences: see ``tests/compose/test_grounding.py``, which
fails if they stop separating the two.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from bot.compose.base import SentenceSupport

__all__ = [
    "GroundingConfig",
    "GroundingGuard",
    "GroundingReport",
    "SupportsEncode",
    "looks_like_injection",
    "split_sentences",
]

_CITATION = re.compile(r"\s*\[(\d+)\]")
_MARKUP = re.compile(r"[*`_#|]+|^\s*>\s*")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+\s*(?:[-*•]\s+|\d+[.)]\s+)?")
_WORD = re.compile(r"[a-z][a-z'-]*|\d+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.!?\n]{0,40}\b(?:instructions?|rules?|prompts?|"
    r"guidelines?|directions?)\b|\byou are now\b|\bsystem prompt\b|\bnew instructions?\b|"
    r"\bas an ai\b|\b(?:assistant|chatbot|ai|model)\s*(?:must|should|shall)\b",
    re.IGNORECASE,
)
#: Words that carry no claim of their own (also polite filler: "sure", "happy to help").
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing don down during each
    either else ever every few for from further get gets got had has have having he her here
    hers him his how i if in into is it its itself just let me might more most must my no
    nor not now of off on once only or other our ours out over own please same she should so
    some such than that the their theirs them then there these they this those through to
    too under until up us very want was we were what when where which while who whom why
    will with would yes yet you your yours sure great happy help hope glad course thanks
    thank
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class SupportsEncode(Protocol):
    """An embedding model: `knowledge.embeddings.Embedder` or a test double."""

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> Any:
        """Unit-normalised vectors, one row per text."""
        ...


@dataclass(frozen=True, slots=True)
class GroundingConfig:
    """The guard's thresholds (see the module docstring)."""

    min_similarity: float = 0.5
    min_overlap: float = 0.6
    strong_similarity: float = 0.8
    min_content_words: int = 3


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """The guard's verdict on one answer."""

    sentences: tuple[SentenceSupport, ...]

    @property
    def checked(self) -> tuple[SentenceSupport, ...]:
        return tuple(s for s in self.sentences if s.checked)

    @property
    def grounded(self) -> bool:
        checked = self.checked
        return bool(checked) and all(s.supported for s in checked)

    @property
    def unsupported(self) -> tuple[SentenceSupport, ...]:
        return tuple(s for s in self.sentences if s.checked and not s.supported)


def _plain(text: str) -> str:
    return _MARKUP.sub("", _CITATION.sub("", text)).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, citations and Markdown markup removed, empty ones dropped."""
    parts = _SENTENCE_BREAK.split(text)
    return [plain for part in parts if (plain := _plain(part))]


def looks_like_injection(sentence: str) -> bool:
    """Whether a sentence reads as an instruction to an AI rather than a fact for a customer."""
    return _INJECTION.search(sentence) is not None


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


class GroundingGuard:
    """Checks generated answers against their passages.

    Args:
        embedder: the embedding model (the knowledge base's own, so the scores match the ones
            the thresholds were tuned with).
        config: the thresholds.
    """

    #: Passage units whose vectors are kept (about 1.5 kB each).
    cache_size = 4096

    def __init__(self, embedder: SupportsEncode, config: GroundingConfig | None = None) -> None:
        self.embedder = embedder
        self.config = config or GroundingConfig()
        self._stemmer: Any = None
        # PyStemmer's stemmers are not thread-safe; the engine runs turns in worker threads.
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()

    def _stems(self, text: str) -> list[str]:
        words = [w.strip("'-") for w in _WORD.findall(text.lower())]
        words = [w for w in words if w and not w.isdigit() and w not in _STOPWORDS]
        with self._lock:
            if self._stemmer is None:
                import Stemmer

                self._stemmer = Stemmer.Stemmer("english")
            return list(self._stemmer.stemWords(words))

    def check(self, answer: str, passages: Sequence[str]) -> GroundingReport:
        """Score every sentence of `answer` against `passages`."""
        sentences = split_sentences(answer)
        if not sentences:
            return GroundingReport(())
        units: list[str] = []
        known_stems: set[str] = set()
        known_numbers: set[str] = set()
        for passage in passages:
            evidence = [s for s in split_sentences(passage) if not looks_like_injection(s)]
            units.extend(evidence)
            if evidence:
                units.append(" ".join(evidence))
            for sentence in evidence:
                known_stems.update(self._stems(sentence))
                known_numbers |= _numbers(sentence)
        similarities = self._similarities(sentences, units)
        config = self.config
        verdicts: list[SentenceSupport] = []
        for sentence, similarity in zip(sentences, similarities, strict=True):
            stems = self._stems(sentence)
            numbers = _numbers(sentence)
            missing = tuple(sorted(numbers - known_numbers))
            checked = len(stems) >= config.min_content_words or bool(numbers)
            overlap = sum(s in known_stems for s in stems) / len(stems) if stems else 1.0
            supported = not missing and (
                similarity >= config.strong_similarity
                or (similarity >= config.min_similarity and overlap >= config.min_overlap)
            )
            verdicts.append(
                SentenceSupport(
                    sentence,
                    round(similarity, 4),
                    round(overlap, 4),
                    missing,
                    checked,
                    supported or not checked,
                )
            )
        return GroundingReport(tuple(verdicts))

    def _similarities(self, sentences: list[str], units: list[str]) -> list[float]:
        if not units:
            return [0.0] * len(sentences)
        answer = np.asarray(self.embedder.encode(sentences), dtype=np.float32)
        evidence = self._passage_vectors(units)
        scores = answer @ evidence.T
        return [float(row.max()) for row in scores]

    def _passage_vectors(self, units: list[str]) -> npt.NDArray[np.float32]:
        """Vectors of passage units, cached: the same entries come back turn after turn."""
        with self._lock:
            missing = [u for u in dict.fromkeys(units) if u not in self._cache]
        if missing:
            fresh = np.asarray(self.embedder.encode(missing), dtype=np.float32)
            with self._lock:
                for unit, vector in zip(missing, fresh, strict=True):
                    self._cache[unit] = vector
                    self._cache.move_to_end(unit)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        with self._lock:
            return np.stack([self._cache[u] for u in units])
