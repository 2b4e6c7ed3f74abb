"""Knowledge-base proposals mined from agents' answers in resolved handoffs.

For every stored conversation that a person took over and that ended resolved, each answer the
agent gave after the handoff, with the customer's question before it, becomes a candidate entry.
Candidates are PII-scrubbed (the same redaction as training data; greetings naming the customer
are cut), then dropped when the knowledge base already answers them (the question's best entry
is at least `duplicate_similarity` similar, or an entry's answer is) or when an earlier candidate
of the same run says the same. The rest are stored as "proposed" (`Store.add_proposal`) for a
person to approve (`supportbot kb proposals approve ID`, which adds the entry to the knowledge
base) or reject.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bot.storage.store import ProposalInfo, Store
from knowledge.types import Entry, content_id
from training.clean import clean
from training.importers.base import ImportResult
from training.importers.database import load_store
from training.pairs import build_pairs

if TYPE_CHECKING:
    from knowledge.base import IngestReport, KnowledgeBase

__all__ = [
    "PROPOSAL_SOURCE",
    "MiningReport",
    "approve_proposal",
    "mine_proposals",
    "proposal_entries",
]

logger = logging.getLogger(__name__)

PROPOSAL_SOURCE = "supportbot:approved-proposals"
"""The knowledge-base source of approved proposals (re-ingested together on each approval)."""

_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))\b[^\n.!,]*[,.!]?\s*",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"<[A-Z]+_\d+>")


@dataclass(frozen=True, slots=True)
class MiningReport:
    """What a mining run found."""

    candidates: int
    proposed: int
    known_to_kb: int
    repeated: int
    with_pii: int

    def to_json(self) -> dict[str, int]:
        return {
            "candidates": self.candidates,
            "proposed": self.proposed,
            "known_to_kb": self.known_to_kb,
            "repeated": self.repeated,
            "with_pii": self.with_pii,
        }


def _tidy(answer: str) -> str:
    return _GREETING.sub("", answer, count=1).strip()


def mine_proposals(
    store: Store,
    kb: KnowledgeBase,
    *,
    duplicate_similarity: float = 0.85,
    region: str = "US",
    on_progress: Callable[[int], None] | None = None,
) -> MiningReport:
    """Propose knowledge-base entries from resolved handoffs; see the module docstring."""
    imported = load_store(store)
    handed = tuple(c for c in imported.conversations if c.signals.handed_off and c.signals.resolved)
    cleaned, _ = clean(ImportResult(handed, imported.people), region=region, dedup_threshold=None)
    candidates = [
        p for p in build_pairs(cleaned, window=0) if p.answer_role == "agent" and p.after_handoff
    ]
    known = repeated = with_pii = proposed = 0
    if not candidates:
        return MiningReport(0, 0, 0, 0, 0)
    answers = [_tidy(p.answer) for p in candidates]
    embedder = kb.embedder
    q_vectors = embedder.encode([p.question for p in candidates])
    a_vectors = embedder.encode(answers)
    entry_answers = embedder.encode([e.answer for e in kb.entries]) if kb.entries else None
    from knowledge.retriever import Retriever

    retriever = Retriever(kb)
    accepted: list[np.ndarray] = []
    for index, pair in enumerate(candidates):
        if on_progress is not None:
            on_progress(1)
        answer = answers[index]
        if _PLACEHOLDER.search(answer):
            # A reply that still names someone's e-mail, card or phone is not a reusable answer.
            with_pii += 1
            continue
        found = retriever.search(q_vectors[index], pair.question, top=1)
        top = found.top
        nearest = (top.entry.id, float(top.dense)) if top is not None else (None, None)
        best_answer = (
            float(np.max(entry_answers @ a_vectors[index])) if entry_answers is not None else 0.0
        )
        if (top is not None and top.dense >= duplicate_similarity) or (
            best_answer >= duplicate_similarity
        ):
            known += 1
            continue
        if any(float(v @ a_vectors[index]) >= duplicate_similarity for v in accepted):
            repeated += 1
            continue
        accepted.append(a_vectors[index])
        fingerprint = content_id(pair.question.strip().lower(), answer.strip().lower())
        conversation_id = pair.conversation_id.removeprefix("db:")
        stored = store.add_proposal(
            question=pair.question.strip(),
            answer=answer,
            fingerprint=fingerprint,
            conversation_id=conversation_id,
            nearest_entry=nearest[0],
            nearest_score=nearest[1],
        )
        if stored is None:
            repeated += 1
        else:
            proposed += 1
    report = MiningReport(len(candidates), proposed, known, repeated, with_pii)
    logger.info("mined handoffs: %s", report.to_json())
    return report


def proposal_entries(proposals: list[ProposalInfo]) -> list[Entry]:
    """Knowledge-base entries for approved proposals (id `proposal-<id>`)."""
    return [
        Entry(
            id=f"proposal-{p.id}",
            answer=p.answer,
            question=p.question,
            examples=p.examples,
            title=p.question[:80],
            tags=("from-handoff",),
            source=PROPOSAL_SOURCE,
        )
        for p in proposals
    ]


def approve_proposal(
    store: Store, kb: KnowledgeBase, proposal_id: int, *, reviewer: str
) -> tuple[ProposalInfo, IngestReport]:
    """Approve a proposal and add it to the knowledge base (with every other approved one).

    All approved proposals share one source, so re-ingesting them is idempotent and leaves the
    rest of the knowledge base untouched.

    Raises:
        StorageError: there is no such proposal.
    """
    from bot.errors import StorageError
    from bot.service import ingest

    proposal = store.get_proposal(proposal_id)
    if proposal is None:
        raise StorageError(
            f"no knowledge-base proposal {proposal_id}; list them with "
            "`supportbot kb proposals list`"
        )
    approved = {p.id: p for p in store.proposals("approved")}
    approved[proposal.id] = proposal
    # The knowledge base first: a failed ingest leaves the proposal waiting, not approved.
    report = ingest(kb, proposal_entries(sorted(approved.values(), key=lambda p: p.id)))
    info = store.review_proposal(
        proposal_id, "approved", reviewer=reviewer, entry_id=f"proposal-{proposal_id}"
    )
    return info, report
