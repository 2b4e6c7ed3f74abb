"""Text matching shared by the policies: configured phrases, acknowledgements, repeated questions.

Pure functions over strings. Phrases from the settings file match as whole words in any case
("agent" matches "an agent please", not "reagent"); a ``*`` inside a phrase matches the rest of a
word ("refund*" matches "refunds", "f*ck" matches "fuck" and "f*ck"). Curly apostrophes read as
straight ones, so "I’d like…" matches "I'd like…".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

__all__ = [
    "PhraseMatcher",
    "is_acknowledgement",
    "is_affirmative",
    "looks_like_new_question",
    "normalize",
    "similar_questions",
    "words",
]

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_WORD = re.compile(r"[\w']+")
_NOT_WORD = re.compile(r"[^\w']+")

#: Replies that accept an offer to bring in a person.
_AFFIRMATIVES = frozenset(
    {
        "y",
        "yes",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "please",
        "yes please",
        "please do",
        "yes please do",
        "ok please",
        "okay please",
        "sure please",
        "go ahead",
        "yes go ahead",
        "do it",
        "yes do it",
    }
)
#: Short messages that acknowledge rather than ask: they never reopen a resolved thread.
_ACKNOWLEDGEMENTS = frozenset(
    {
        "ok",
        "okay",
        "k",
        "kk",
        "cool",
        "great",
        "nice",
        "perfect",
        "awesome",
        "excellent",
        "brilliant",
        "lovely",
        "super",
        "got it",
        "noted",
        "fine",
        "alright",
        "all right",
        "sounds good",
        "will do",
        "ok cool",
        "ok great",
        "ok thanks",
        "okay thanks",
    }
)
#: Question words and auxiliaries: they open questions and carry no topic.
_ASKING = frozenset(
    [
        "how",
        "what",
        "why",
        "where",
        "when",
        "who",
        "which",
        "can",
        "could",
        "would",
        "should",
        "will",
        "may",
        "do",
        "does",
        "did",
        "is",
        "are",
        "was",
        "were",
        "i",
        "my",
        "we",
        "our",
        "it",
        "there",
        "please",
    ]
)
#: First words that make a message a question or a request even without a question mark.
_QUESTION_LEADS = _ASKING | {
    "what's",
    "whats",
    "help",
    "i'm",
    "im",
    "it's",
    "also",
    "another",
    "one",
}
_THANKS = re.compile(r"\b(thanks|thank|thx|ty|cheers)\b")
#: Words that carry no topic; left out when comparing two questions.
_STOPWORDS = _ASKING | frozenset(
    [
        "a",
        "an",
        "the",
        "me",
        "you",
        "your",
        "its",
        "be",
        "been",
        "to",
        "of",
        "in",
        "on",
        "for",
        "with",
        "and",
        "or",
        "but",
        "again",
        "still",
        "so",
        "this",
        "that",
        "just",
        "now",
    ]
)


def normalize(text: str) -> str:
    """Case-folded words separated by single spaces; punctuation and emoji dropped."""
    return " ".join(_NOT_WORD.sub(" ", text.translate(_APOSTROPHES).casefold()).split())


def words(text: str) -> list[str]:
    """The words of `text`, case-folded."""
    return _WORD.findall(text.translate(_APOSTROPHES).casefold())


def _phrase_pattern(phrase: str) -> str | None:
    tokens = [t for t in re.split(r"[^\w'*]+", phrase.translate(_APOSTROPHES).casefold()) if t]
    tokens = [t for t in tokens if t.strip("*")]
    if not tokens:
        return None
    parts = [re.escape(token).replace(r"\*", r"[\w*]*") for token in tokens]
    return r"(?<![\w*'])" + r"[^\w*']+".join(parts) + r"(?![\w*'])"


class PhraseMatcher:
    """Finds configured phrases in text, as whole words in any case.

    Args:
        phrases: the phrases; a ``*`` matches the rest of a word. Empty phrases are ignored.
    """

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(phrases)
        compiled = [(p, _phrase_pattern(p)) for p in self.phrases]
        self._patterns = tuple((p, re.compile(pattern)) for p, pattern in compiled if pattern)

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def find(self, text: str) -> str | None:
        """The first configured phrase found in `text` (as configured), or None."""
        folded = text.translate(_APOSTROPHES).casefold()
        for phrase, pattern in self._patterns:
            if pattern.search(folded):
                return phrase
        return None

    def count(self, text: str) -> int:
        """How many of the configured phrases occur in `text`."""
        folded = text.translate(_APOSTROPHES).casefold()
        return sum(1 for _, pattern in self._patterns if pattern.search(folded))


@lru_cache(maxsize=64)
def matcher(phrases: tuple[str, ...]) -> PhraseMatcher:
    """A cached `PhraseMatcher` for a tuple of phrases (settings are immutable)."""
    return PhraseMatcher(phrases)


def is_affirmative(text: str) -> bool:
    """Whether the message just says yes ("yes please", "sure", "ok")."""
    return normalize(text) in _AFFIRMATIVES


def is_acknowledgement(text: str) -> bool:
    """Whether the message only acknowledges: "ok", "great", "thanks again", "👍", "🙏"."""
    folded = normalize(text)
    if not folded:
        return True  # only emoji or punctuation
    if folded in _ACKNOWLEDGEMENTS:
        return True
    return bool(_THANKS.search(folded)) and "?" not in text and len(folded.split()) <= 6


def looks_like_new_question(text: str) -> bool:
    """Whether the message asks something, rather than acknowledging or thanking.

    A question mark, a question or request word first ("how", "can", "my", "I"…) or five words or
    more that are not thanks make it a question.
    """
    if "?" in text:
        return True
    if is_acknowledgement(text):
        return False
    tokens = normalize(text).split()
    if not tokens:
        return False
    return tokens[0] in _QUESTION_LEADS or len(tokens) >= 5


def _topic_words(text: str) -> frozenset[str]:
    return frozenset(w for w in normalize(text).split() if w not in _STOPWORDS)


def similar_questions(first: str, second: str, threshold: float = 0.6) -> bool:
    """Whether two messages ask the same thing: their topic words overlap (Jaccard) enough."""
    a, b = _topic_words(first), _topic_words(second)
    if not a or not b:
        return normalize(first) == normalize(second) and bool(normalize(first))
    return len(a & b) / len(a | b) >= threshold
