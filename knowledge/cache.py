"""A bounded cache of query vectors for repeated questions.

Customers ask the same things in the same words ("how do i reset my password"): the embedding of
a text depends only on the text and the model, so a hit skips the forward pass. Keys are the text
with case and runs of whitespace folded, which the (uncased) model's tokenizer ignores anyway, so
a hit returns exactly the vector the model would. The cache belongs to one `Embedder` (one model)
and is dropped whenever a knowledge base using it is (re)loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

Vector = npt.NDArray[np.float32]


def normalize(text: str) -> str:
    """The cache key of a text: lower-cased, whitespace runs folded to one space, trimmed.

    Only differences the uncased tokenizer ignores: `str.lower` (not `casefold`, which turns
    "ß" into "ss" and so changes the tokens).
    """
    return " ".join(text.lower().split())


class VectorCache:
    """Thread-safe LRU map from normalised text to its (read-only) vector.

    Args:
        size: the most vectors kept (384 floats, 1.5 KiB each); at least 1.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a vector cache holds at least one vector")
        self._cache: LRUCache[str, Vector] = LRUCache(maxsize=size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def size(self) -> int:
        return int(self._cache.maxsize)

    def __contains__(self, text: object) -> bool:
        """Whether the text's vector is cached (not counted as a hit or a miss)."""
        if not isinstance(text, str):
            return False
        with self._lock:
            return normalize(text) in self._cache

    def lookup(self, texts: Sequence[str]) -> list[Vector | None]:
        """The cached vector of each text, or None where there is none."""
        with self._lock:
            found = [self._cache.get(normalize(t)) for t in texts]
        hits = sum(v is not None for v in found)
        self.hits += hits
        self.misses += len(found) - hits
        return found

    def store(self, texts: Sequence[str], vectors: npt.NDArray[np.float32]) -> None:
        with self._lock:
            for text, vector in zip(texts, vectors, strict=True):
                frozen = np.array(vector, dtype=np.float32)
                frozen.flags.writeable = False
                self._cache[normalize(text)] = frozen

    def clear(self) -> None:
        """Forget every vector (the knowledge base or the model changed)."""
        with self._lock:
            self._cache.clear()
