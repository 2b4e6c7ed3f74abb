"""Knowledge gaps and error analysis, from what the database recorded.

**Gaps.** `find_gaps` gathers the questions the bot did not handle well in a period:

* *unanswered*: the reply was a fallback or a clarifying question;
* *low confidence*: it answered with a confidence below ``low_confidence``;
* *thumbs down*: somebody rated the reply 👎 (any kind).

It embeds them with the real sentence-transformers model (`knowledge.embeddings.Embedder`) and
groups them with agglomerative clustering (average linkage, cosine distance, a distance threshold
rather than a number of clusters). Why that and not KMeans or HDBSCAN: the number of gap topics is
unknown and changes every week (KMeans needs it up front), a period holds tens to a few thousand
questions (the O(n²) distance matrix is cheap), and HDBSCAN labels most of a small, sparse set as
noise, where every unanswered question should land somewhere — a singleton cluster is a fine
answer. Each cluster gets a label from its top TF-IDF terms (one document per cluster, so terms
that set it apart from the other clusters rank first), its count, its count in the previous period
of the same length (previous questions join the cluster whose centroid is nearest, if within the
threshold), and the example questions nearest to its centroid.

**Failures.** `classify_failures` sorts replies that went wrong into retrieval miss, wrong
decision, policy, handoff (and outdated, unclassified); the rules are in `docs/monitoring.md` and
in `classify_failures`' docstring, applied in that order, first match wins.
"""

from __future__ import annotations

import enum
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from bot.storage.tables import Feedback, Handoff, Message, ReplyRecord, ReviewItem
from policies.sentiment import compound

if TYPE_CHECKING:
    from knowledge.embeddings import Embedder
    from knowledge.retriever import Retriever

__all__ = [
    "DEFAULT_DISTANCE",
    "Failure",
    "FailureKind",
    "GapCluster",
    "GapQuestion",
    "GapReport",
    "classify_failures",
    "cluster_label",
    "failure_counts",
    "find_gaps",
    "gap_questions",
]

logger = logging.getLogger(__name__)

#: Cosine distance under which two questions share a cluster (average similarity above 0.45:
#: all-MiniLM-L6-v2 puts paraphrases like "gift cards?" / "buy a gift voucher" near 0.5).
DEFAULT_DISTANCE: Final = 0.55
#: Words that say nothing about a topic, on top of scikit-learn's English stop words.
EXTRA_STOP_WORDS: Final[tuple[str, ...]] = (
    "does",
    "did",
    "doing",
    "want",
    "need",
    "help",
    "please",
    "hi",
    "hello",
    "hey",
    "way",
    "possible",
    "know",
    "tell",
    "thanks",
    "ok",
)
#: An agent's reply "is" an entry when their embeddings are at least this similar.
AGENT_MATCH: Final = 0.6
#: A customer's message after a handoff "repeats" an earlier one at this similarity.
REPEAT_MATCH: Final = 0.75
#: A customer message this negative (VADER) rejects the policy reply before it.
REJECT_SENTIMENT: Final = -0.5
_REJECTION = re.compile(
    r"^\s*(no|nope|nah)\b|not what i|that'?s not|that is not|wrong|didn'?t help|doesn'?t help|"
    r"not helpful|useless|stop|i didn'?t ask",
    re.IGNORECASE,
)

Vectors = npt.NDArray[np.float32]


class GapReason(enum.StrEnum):
    """Why a question counts as a gap."""

    THUMBS_DOWN = "thumbs_down"
    UNANSWERED = "unanswered"
    LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True, slots=True)
class GapQuestion:
    """A customer question the bot did not handle well."""

    reply_id: str
    conversation_id: str
    text: str
    reason: GapReason
    kind: str
    confidence: float | None
    at: datetime


@dataclass(frozen=True, slots=True)
class GapCluster:
    """Similar gap questions.

    Attributes:
        label: the top terms, joined ("refund · invoice · charged").
        terms: the top TF-IDF terms, best first.
        count: questions in the period.
        previous: questions of the previous period that fall in this cluster.
        reasons: questions per reason ("unanswered", "low_confidence", "thumbs_down").
        examples: distinct questions nearest to the centroid, nearest first.
    """

    label: str
    terms: tuple[str, ...]
    count: int
    previous: int
    reasons: dict[str, int]
    examples: tuple[str, ...]

    @property
    def trend(self) -> int:
        """This period's count minus the previous period's."""
        return self.count - self.previous


@dataclass(frozen=True, slots=True)
class GapReport:
    """The gap clusters of a period, largest first."""

    since: datetime
    until: datetime
    clusters: tuple[GapCluster, ...]
    total: int
    previous_total: int
    reasons: dict[str, int] = field(default_factory=dict)


def _norm_reason(reason: str | None) -> str:
    return re.sub(r"[^a-z]+", "_", (reason or "").lower()).strip("_")


def gap_questions(
    engine: Engine,
    since: datetime,
    until: datetime,
    *,
    low_confidence: float,
) -> list[GapQuestion]:
    """The gap questions of the replies made in [since, until), oldest first.

    A reply counts once, under the first reason that applies: thumbs down, unanswered, low
    confidence.
    """
    query = (
        select(ReplyRecord, Message)
        .outerjoin(Message, col(ReplyRecord.message_id) == col(Message.id))
        .where(col(ReplyRecord.created_at) >= since, col(ReplyRecord.created_at) < until)
        .order_by(col(ReplyRecord.created_at))
    )
    with Session(engine) as session:
        rows = list(session.exec(query))
        ids = [reply.id for reply, _ in rows]
        down: set[str] = set()
        if ids:
            feedback = select(Feedback.reply_id).where(
                col(Feedback.reply_id).in_(ids), Feedback.value == "down"
            )
            down = set(session.exec(feedback))
    result: list[GapQuestion] = []
    for reply, message in rows:
        reason: GapReason | None = None
        if reply.id in down:
            reason = GapReason.THUMBS_DOWN
        elif reply.kind in ("fallback", "clarify"):
            reason = GapReason.UNANSWERED
        elif (
            reply.kind == "answer"
            and reply.confidence is not None
            and reply.confidence < low_confidence
        ):
            reason = GapReason.LOW_CONFIDENCE
        if reason is None:
            continue
        text = (message.text if message is not None else "") or reply.query
        text = " ".join(text.split())
        if not text:
            continue
        result.append(
            GapQuestion(
                reply.id,
                reply.conversation_id,
                text,
                reason,
                reply.kind,
                reply.confidence,
                reply.created_at,
            )
        )
    return result


def _cluster(vectors: Vectors, distance: float) -> npt.NDArray[np.int_]:
    """Cluster labels for unit vectors: agglomerative, average linkage, cosine distance."""
    if len(vectors) == 0:
        return np.zeros(0, dtype=np.int_)
    if len(vectors) == 1:
        return np.zeros(1, dtype=np.int_)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None,
        metric="cosine",
        linkage="average",
        distance_threshold=distance,
    )
    return np.asarray(model.fit_predict(vectors), dtype=np.int_)


def cluster_label(documents: Sequence[str], terms: int = 3) -> list[tuple[str, ...]]:
    """The top TF-IDF terms of each document (one document per cluster).

    Unigrams and bigrams, English stop words removed; a cluster whose words are all stop words
    gets no terms.
    """
    if not documents:
        return []
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    vectorizer = TfidfVectorizer(
        stop_words=sorted(ENGLISH_STOP_WORDS.union(EXTRA_STOP_WORDS)),
        ngram_range=(1, 2),
        sublinear_tf=True,
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b",
    )
    try:
        matrix = vectorizer.fit_transform(documents)
    except ValueError:  # nothing but stop words everywhere
        return [() for _ in documents]
    vocabulary = np.asarray(vectorizer.get_feature_names_out())
    labels: list[tuple[str, ...]] = []
    for row in range(matrix.shape[0]):
        weights = matrix.getrow(row).toarray().ravel()
        order = [i for i in np.argsort(-weights, kind="stable") if weights[i] > 0]
        chosen: list[str] = []
        for index in order:
            term = str(vocabulary[index])
            # Skip a unigram already inside a chosen bigram, and vice versa.
            if any(term in c.split() or c in term.split() for c in chosen):
                continue
            chosen.append(term)
            if len(chosen) == terms:
                break
        labels.append(tuple(chosen))
    return labels


def find_gaps(
    engine: Engine,
    embedder: Embedder,
    *,
    since: datetime,
    until: datetime,
    low_confidence: float,
    distance: float = DEFAULT_DISTANCE,
    examples: int = 3,
    min_count: int = 1,
) -> GapReport:
    """Cluster the gap questions of [since, until) and compare with the period before.

    Args:
        engine: the bot's database.
        embedder: the sentence-transformers model.
        since: start of the period (inclusive).
        until: end of the period (exclusive).
        low_confidence: answers below this confidence count as gaps (e.g. threshold + 0.1).
        distance: cosine distance under which questions share a cluster.
        examples: example questions kept per cluster.
        min_count: clusters with fewer questions in the period are left out.
    """
    if until <= since:
        raise ValueError("the period must end after it starts")
    previous_since = since - (until - since)
    current = gap_questions(engine, since, until, low_confidence=low_confidence)
    previous = gap_questions(engine, previous_since, since, low_confidence=low_confidence)
    reasons = Counter(q.reason.value for q in current)
    if not current:
        return GapReport(since, until, (), 0, len(previous), dict(reasons))
    vectors = embedder.encode([q.text for q in current])
    labels = _cluster(vectors, distance)
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[int(label)].append(index)
    groups = list(members.values())
    centroids = np.stack([vectors[m].mean(axis=0) for m in groups])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(min=1e-12)
    previous_counts = [0] * len(groups)
    if previous:
        old = embedder.encode([q.text for q in previous])
        similarity = old @ centroids.T
        best = similarity.argmax(axis=1)
        for row, group in enumerate(best):
            if 1.0 - float(similarity[row, group]) <= distance:
                previous_counts[int(group)] += 1
    terms = cluster_label([" ".join(current[i].text for i in m) for m in groups])
    clusters: list[GapCluster] = []
    for number, group in enumerate(groups):
        if len(group) < min_count:
            continue
        closeness = vectors[group] @ centroids[number]
        chosen: list[str] = []
        seen: set[str] = set()
        for i in np.argsort(-closeness, kind="stable"):
            text = current[group[int(i)]].text
            if text.lower() not in seen:
                seen.add(text.lower())
                chosen.append(text)
            if len(chosen) == examples:
                break
        top = terms[number]
        clusters.append(
            GapCluster(
                label=" · ".join(top) if top else chosen[0][:60],
                terms=top,
                count=len(group),
                previous=previous_counts[number],
                reasons=dict(Counter(current[i].reason.value for i in group)),
                examples=tuple(chosen),
            )
        )
    clusters.sort(key=lambda c: (-c.count, -c.trend, c.label))
    return GapReport(since, until, tuple(clusters), len(current), len(previous), dict(reasons))


# Failures ----------------------------------------------------------------------------------------


class FailureKind(enum.StrEnum):
    """The kinds of failure `classify_failures` tells apart."""

    HANDOFF = "handoff"
    POLICY = "policy"
    OUTDATED = "outdated"
    RETRIEVAL_MISS = "retrieval_miss"
    WRONG_DECISION = "wrong_decision"
    UNCLASSIFIED = "unclassified"


@dataclass(frozen=True, slots=True)
class Failure:
    """A reply that went wrong, and why we think so.

    Attributes:
        reply_id: the reply.
        conversation_id: its conversation.
        kind: the failure's kind.
        reply_kind: the reply's kind.
        question: what the customer asked.
        evidence: the signal that decided it, in words.
        expected_entry: the entry that should have answered, when known.
        at: when the bot replied.
    """

    reply_id: str
    conversation_id: str
    kind: FailureKind
    reply_kind: str
    question: str
    evidence: str
    expected_entry: str | None
    at: datetime


@dataclass
class _Turn:
    role: str
    text: str
    at: datetime
    message_id: int | None


class _Matcher:
    """Embedding look-ups the rules need: an agent's text → entry, and repeated questions."""

    def __init__(self, retriever: Retriever | None) -> None:
        self.retriever = retriever
        self._answers: Vectors | None = None

    def entry_for(self, text: str) -> str | None:
        """The entry whose answer an agent's reply matches (cosine ≥ AGENT_MATCH), or None."""
        if self.retriever is None or not text.strip():
            return None
        kb = self.retriever.kb
        if not kb.entries:
            return None
        if self._answers is None:
            self._answers = kb.embedder.encode([e.answer for e in kb.entries])
        vector = kb.embedder.encode([text])[0]
        scores = self._answers @ vector
        best = int(scores.argmax())
        return kb.entries[best].id if float(scores[best]) >= AGENT_MATCH else None

    def top_k(self, query: str, k: int) -> tuple[str, ...] | None:
        """The ids of the top-k entries for `query` now, or None without a retriever."""
        if self.retriever is None or not query.strip():
            return None
        retrieval = self.retriever.retrieve(query, top=k)
        return tuple(c.entry.id for c in retrieval.candidates[:k])

    def repeats(self, text: str, earlier: Sequence[str]) -> bool:
        """Whether `text` asks again what one of `earlier` asked."""
        if not earlier or not text.strip():
            return False
        plain = " ".join(text.lower().split())
        if any(plain == " ".join(e.lower().split()) for e in earlier):
            return True
        if self.retriever is None:
            return False
        vectors = self.retriever.kb.embedder.encode([text, *earlier])
        return bool((vectors[1:] @ vectors[0]).max() >= REPEAT_MATCH)


def _rejects(text: str) -> bool:
    return bool(_REJECTION.search(text)) or compound(text) <= REJECT_SENTIMENT


def classify_failures(
    engine: Engine,
    *,
    since: datetime,
    until: datetime,
    retriever: Retriever | None = None,
    top_k: int = 5,
) -> list[Failure]:
    """Classify the replies of [since, until) that went wrong; rules in order, first match wins.

    Signals: 👎 (with its reason), a reviewer's verdict and expected entry (review queue), the
    conversation's later messages (customer and agent) and its handoff rows. *E** is the entry that
    should have answered: the reviewer's expected entry, else the entry whose answer the first
    later agent message matches (cosine ≥ 0.6; needs `retriever`). *Top-k* is the retriever's
    top `top_k` for the reply's query now (the reply's stored sources without a retriever).

    1. **handoff**: a handoff reply whose handoff timed out (the relay handed the conversation back,
       reason "timeout"), or after which the customer asked again (a message repeating an earlier
       one, cosine ≥ 0.75) before any agent wrote.
    2. **policy**: a smalltalk or handoff reply (made by a conversation policy, not the knowledge
       base) that the customer rejected: 👎, a reviewer's "wrong", or the customer's next message
       says no ("no", "not what I asked", "that's wrong", "didn't help", …) or is strongly
       negative (VADER ≤ -0.5).
    3. For answers, clarifications and fallbacks judged bad (👎, a reviewer's "wrong", or — for a
       clarification or fallback — an agent later answered with an entry E*):
       a. **outdated**: the 👎 reason is "outdated";
       b. **retrieval miss**: E* is known and not in the top-k; or E* is unknown and the 👎
          reason is "not what I asked";
       c. **wrong decision**: E* is known and in the top-k (the bot had the right entry, yet fell
          back, clarified, or answered another one); or an answer judged bad with E* unknown
          (it answered above the threshold when it should have abstained);
       d. **unclassified**: anything else judged bad.
    """
    window = (col(ReplyRecord.created_at) >= since, col(ReplyRecord.created_at) < until)
    with Session(engine) as session:
        replies = list(
            session.exec(select(ReplyRecord).where(*window).order_by(col(ReplyRecord.created_at)))
        )
        if not replies:
            return []
        ids = [r.id for r in replies]
        conversations = sorted({r.conversation_id for r in replies})
        feedback: dict[str, list[Feedback]] = defaultdict(list)
        for row in session.exec(select(Feedback).where(col(Feedback.reply_id).in_(ids))):
            feedback[row.reply_id].append(row)
        reviews = {
            row.reply_id: row
            for row in session.exec(
                select(ReviewItem).where(
                    col(ReviewItem.reply_id).in_(ids), col(ReviewItem.verdict).is_not(None)
                )
            )
        }
        turns: dict[str, list[_Turn]] = defaultdict(list)
        for message in session.exec(
            select(Message)
            .where(col(Message.conversation_id).in_(conversations))
            .order_by(col(Message.id))
        ):
            turns[message.conversation_id].append(
                _Turn(message.role, message.text, message.created_at, message.id)
            )
        handoffs: dict[str, list[Handoff]] = defaultdict(list)
        for handoff in session.exec(
            select(Handoff).where(col(Handoff.conversation_id).in_(conversations))
        ):
            handoffs[handoff.conversation_id].append(handoff)
    matcher = _Matcher(retriever)
    failures: list[Failure] = []
    for reply in replies:
        failure = _classify(
            reply,
            feedback[reply.id],
            reviews.get(reply.id),
            turns[reply.conversation_id],
            handoffs[reply.conversation_id],
            matcher,
            top_k,
        )
        if failure is not None:
            failures.append(failure)
    return failures


def _after(turns: list[_Turn], reply: ReplyRecord) -> list[_Turn]:
    """The conversation's messages after the reply's own history line."""
    # The reply's history line is the first bot message with its text at or after the reply's
    # inbound message; messages are in id order.
    start = 0
    if reply.message_id is not None:
        start = next((i + 1 for i, t in enumerate(turns) if t.message_id == reply.message_id), 0)
    for i in range(start, len(turns)):
        if turns[i].role == "bot" and turns[i].text == reply.text:
            return turns[i + 1 :]
    return [t for t in turns[start:] if t.at > reply.created_at]


def _classify(
    reply: ReplyRecord,
    feedback: list[Feedback],
    review: ReviewItem | None,
    turns: list[_Turn],
    handoffs: list[Handoff],
    matcher: _Matcher,
    top_k: int,
) -> Failure | None:
    question = next(
        (
            t.text
            for t in turns
            if reply.message_id is not None and t.message_id == reply.message_id
        ),
        reply.query,
    )
    later = _after(turns, reply)
    thumbs_down = [f for f in feedback if f.value == "down"]
    reasons = {_norm_reason(f.reason) for f in thumbs_down if f.reason}
    reviewed_wrong = review is not None and review.verdict == "wrong"

    def failure(kind: FailureKind, evidence: str, expected: str | None = None) -> Failure:
        return Failure(
            reply.id,
            reply.conversation_id,
            kind,
            reply.kind,
            question,
            evidence,
            expected,
            reply.created_at,
        )

    if reply.kind == "handoff":
        timed_out = any(
            h.actor == "relay"
            and (h.reason or "") == "timeout"
            and h.created_at >= reply.created_at
            for h in handoffs
        )
        if timed_out:
            return failure(FailureKind.HANDOFF, "the handoff timed out: no agent claimed it")
        earlier = [t.text for t in turns if t.role == "user" and t not in later]
        for turn in later:
            if turn.role == "agent":
                break
            if turn.role == "user" and matcher.repeats(turn.text, earlier):
                return failure(
                    FailureKind.HANDOFF,
                    f"the customer asked again before an agent wrote: {turn.text!r}",
                )
    if reply.kind in ("smalltalk", "handoff"):
        next_user = next((t for t in later if t.role == "user"), None)
        if thumbs_down:
            return failure(FailureKind.POLICY, "👎 on a policy reply")
        if reviewed_wrong:
            return failure(FailureKind.POLICY, "a reviewer marked the policy reply wrong")
        if next_user is not None and _rejects(next_user.text):
            return failure(FailureKind.POLICY, f"the customer answered {next_user.text!r}")
        return None
    if reply.kind not in ("answer", "clarify", "fallback"):
        return None
    expected = review.expected_entry if review is not None and review.expected_entry else None
    agent_entry: str | None = None
    if expected is None:
        agent = next((t for t in later if t.role == "agent"), None)
        if agent is not None:
            agent_entry = matcher.entry_for(agent.text)
            expected = agent_entry
    bad = (
        bool(thumbs_down)
        or reviewed_wrong
        or (reply.kind in ("clarify", "fallback") and agent_entry is not None)
    )
    if not bad:
        return None
    if "outdated" in reasons:
        return failure(FailureKind.OUTDATED, "👎 reason: outdated")
    answered = str(reply.sources[0].get("id")) if reply.kind == "answer" and reply.sources else None
    if expected is not None:
        if reply.kind == "answer" and expected == answered:
            return failure(
                FailureKind.UNCLASSIFIED,
                "judged wrong, yet it answered the expected entry",
                expected,
            )
        top = matcher.top_k(reply.query, top_k)
        if top is None:
            top = tuple(str(s.get("id")) for s in reply.sources)
        source = "a reviewer" if agent_entry is None else "a later agent answer"
        if expected not in top:
            return failure(
                FailureKind.RETRIEVAL_MISS,
                f"{source} names {expected}, not in the top {top_k}",
                expected,
            )
        return failure(
            FailureKind.WRONG_DECISION,
            f"{source} names {expected}, which was in the top {top_k}, yet the bot replied "
            f"with a {reply.kind}" + (f" ({answered})" if answered else ""),
            expected,
        )
    if any(r in ("not_what_i_asked", "not_what_i_meant") for r in reasons):
        return failure(FailureKind.RETRIEVAL_MISS, "👎 reason: not what I asked")
    if reply.kind == "answer":
        signal = "👎" if thumbs_down else "a reviewer's 'wrong'"
        return failure(
            FailureKind.WRONG_DECISION,
            f"{signal} on an answer at confidence "
            f"{reply.confidence if reply.confidence is not None else float('nan'):.2f}: it should "
            "have abstained",
        )
    return failure(FailureKind.UNCLASSIFIED, "judged bad without a known right entry")


def failure_counts(failures: Sequence[Failure]) -> dict[str, int]:
    """Failures per kind, every kind present (0 where none)."""
    counts: dict[str, int] = {kind.value: 0 for kind in FailureKind}
    for failure in failures:
        counts[failure.kind.value] += 1
    return counts
