"""Topics, caps per topic and platform, and a split that cannot leak.

1. **Topics**: the source's intent label where every pair has one; otherwise the questions are
   embedded (the retrieval model) and clustered with KMeans (scikit-learn), k = √(n/2) within
   [2, 50]; each cluster is named by its most frequent distinctive word ("t03:refund").
2. **Caps**: no topic keeps more than `cap_topic` pairs and no platform more than
   `cap_platform`; the pairs kept are drawn at random (seeded) but those with a positive signal
   (resolved, 👍, an agent's answer after a handoff) first.
3. **Split**: conversations are ordered by start time and the latest `test_fraction` of them are
   the test split: every pair of a conversation is on one side, and nothing in train is later
   than the earliest test conversation. A test asserts no conversation id is on both sides.
4. **Resample**: in train only (so no copy reaches test), topics below `min_topic` are
   oversampled with replacement up to it.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from training.pairs import Pair

if TYPE_CHECKING:
    from knowledge.embeddings import Embedder

__all__ = ["BalanceReport", "Split", "assign_topics", "balance", "split_by_time"]

_STOP_WORDS = (
    "a an the i my me we our you your it its is are was were be been to of in on for with at by "
    "from and or but not no can could would should will do does did have has had how what when "
    "where why which who this that these those there here please hi hello thanks thank help get "
    "just so if as about any all some one up out into than then also im dont cant yes ok"
)
_STOP = frozenset(_STOP_WORDS.split(" "))


@dataclass(frozen=True, slots=True)
class Split:
    """Train and test pairs, disjoint by conversation."""

    train: tuple[Pair, ...]
    test: tuple[Pair, ...]


@dataclass
class BalanceReport:
    """Distributions before and after balancing, for the report."""

    topics_before: Counter[str] = field(default_factory=Counter)
    topics_after: Counter[str] = field(default_factory=Counter)
    platforms_before: Counter[str] = field(default_factory=Counter)
    platforms_after: Counter[str] = field(default_factory=Counter)
    topic_method: str = ""
    train: int = 0
    test: int = 0
    train_conversations: int = 0
    test_conversations: int = 0
    oversampled: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "topic_method": self.topic_method,
            "topics": {
                t: {"before": self.topics_before[t], "after": self.topics_after[t]}
                for t in sorted(self.topics_before | self.topics_after)
            },
            "platforms": {
                p: {"before": self.platforms_before[p], "after": self.platforms_after[p]}
                for p in sorted(self.platforms_before | self.platforms_after)
            },
            "train_pairs": self.train,
            "test_pairs": self.test,
            "train_conversations": self.train_conversations,
            "test_conversations": self.test_conversations,
            "oversampled": self.oversampled,
        }

    def tables(self) -> list[Any]:
        """Rich tables of topics and platforms, before and after."""
        from rich.table import Table

        tables = []
        for title, before, after in (
            (f"Topics ({self.topic_method})", self.topics_before, self.topics_after),
            ("Platforms", self.platforms_before, self.platforms_after),
        ):
            table = Table(title=title)
            table.add_column("name")
            table.add_column("before", justify="right")
            table.add_column("after", justify="right")
            for name in sorted(before | after, key=lambda k: (-before[k], k)):
                table.add_row(name, str(before[name]), str(after[name]))
            table.add_row("[bold]total", str(before.total()), str(after.total()))
            tables.append(table)
        return tables


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in _STOP and not w.isdigit()]


def assign_topics(
    pairs: Sequence[Pair],
    embedder: Embedder | None,
    *,
    k: int | None = None,
    seed: int = 0,
) -> tuple[list[Pair], str]:
    """Pairs with `topic` set, and how topics were found ("intent", "kmeans", "single").

    Intent labels win when every pair has one. Otherwise KMeans on the question embeddings
    (needs `embedder`); with no embedder or fewer than 4 pairs, one topic "all".
    """
    if pairs and all(p.intent for p in pairs):
        return [replace(p, topic=p.intent) for p in pairs], "intent"
    if embedder is None or len(pairs) < 4:
        return [replace(p, topic="all") for p in pairs], "single"
    from sklearn.cluster import KMeans

    vectors = embedder.encode([p.question for p in pairs])
    clusters = k or max(2, min(50, round(math.sqrt(len(pairs) / 2))))
    clusters = min(clusters, len(pairs))
    labels = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit_predict(
        np.asarray(vectors)
    )
    overall = Counter(w for p in pairs for w in set(_words(p.question)))
    names: dict[int, str] = {}
    for cluster in range(clusters):
        members = [p for p, label in zip(pairs, labels, strict=True) if label == cluster]
        local = Counter(w for p in members for w in set(_words(p.question)))
        # Distinctive: frequent here relative to everywhere.
        best = max(
            local, key=lambda w: (local[w] / (overall[w] ** 0.5), local[w], w), default="misc"
        )
        names[cluster] = f"t{cluster:02d}:{best}"
    return [
        replace(p, topic=names[int(label)]) for p, label in zip(pairs, labels, strict=True)
    ], "kmeans"


def _positive(pair: Pair) -> bool:
    return bool(pair.resolved or pair.feedback == "up" or pair.after_handoff)


def _cap(pairs: list[Pair], key: Callable[[Pair], str], cap: int, rng: random.Random) -> list[Pair]:
    groups: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        groups[key(pair)].append(pair)
    keep: set[str] = set()
    for members in groups.values():
        if len(members) <= cap:
            keep.update(p.id for p in members)
            continue
        shuffled = members[:]
        rng.shuffle(shuffled)
        shuffled.sort(key=lambda p: not _positive(p))  # stable: positives first, shuffled
        keep.update(p.id for p in shuffled[:cap])
    return [p for p in pairs if p.id in keep]


def split_by_time(pairs: Sequence[Pair], test_fraction: float) -> Split:
    """The latest `test_fraction` of conversations (by their first pair's time) are test."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    never = datetime.max.replace(tzinfo=UTC)
    first: dict[str, tuple[datetime, str]] = {}
    for pair in pairs:
        moment = pair.time or never
        if pair.conversation_id not in first or moment < first[pair.conversation_id][0]:
            first[pair.conversation_id] = (moment, pair.conversation_id)
    ordered = sorted(first.values())
    n_test = round(len(ordered) * test_fraction)
    if test_fraction > 0 and n_test == 0 and len(ordered) > 1:
        n_test = 1
    test_ids = {cid for _, cid in ordered[len(ordered) - n_test :]} if n_test else set()
    return Split(
        train=tuple(p for p in pairs if p.conversation_id not in test_ids),
        test=tuple(p for p in pairs if p.conversation_id in test_ids),
    )


def balance(
    pairs: Sequence[Pair],
    *,
    cap_topic: int | None = None,
    cap_platform: int | None = None,
    min_topic: int = 0,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Split, BalanceReport]:
    """Cap, split and resample pairs that already carry topics; see the module docstring.

    `cap_topic` defaults to twice the median topic size (at least 10).
    """
    rng = random.Random(seed)
    report = BalanceReport()
    report.topics_before = Counter(p.topic or "all" for p in pairs)
    report.platforms_before = Counter(p.platform for p in pairs)
    kept = list(pairs)
    if cap_topic is None and report.topics_before:
        sizes = sorted(report.topics_before.values())
        cap_topic = max(10, 2 * sizes[len(sizes) // 2])
    if cap_topic is not None:
        kept = _cap(kept, lambda p: p.topic or "all", cap_topic, rng)
    if cap_platform is not None:
        kept = _cap(kept, lambda p: p.platform, cap_platform, rng)
    split = split_by_time(kept, test_fraction)
    train = list(split.train)
    if min_topic > 0:
        by_topic: dict[str, list[Pair]] = defaultdict(list)
        for pair in train:
            by_topic[pair.topic or "all"].append(pair)
        for members in by_topic.values():
            for copy in range(max(0, min_topic - len(members))):
                source = rng.choice(members)
                train.append(replace(source, id=f"{source.id}~{copy + 1}"))
                report.oversampled += 1
    split = Split(tuple(train), split.test)
    after = [*split.train, *split.test]
    report.topics_after = Counter(p.topic or "all" for p in after)
    report.platforms_after = Counter(p.platform for p in after)
    report.train, report.test = len(split.train), len(split.test)
    report.train_conversations = len({p.conversation_id for p in split.train})
    report.test_conversations = len({p.conversation_id for p in split.test})
    return split, report
