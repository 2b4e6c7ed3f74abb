"""Mining agents' answers from resolved handoffs into proposed knowledge-base entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import StorageError
from bot.model import ConversationKey, Owner, Role
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever
from training.mining import PROPOSAL_SOURCE, approve_proposal, mine_proposals

pytestmark = pytest.mark.model

MERGE_ANSWER = (
    "Select both notebooks in the sidebar, right-click and choose Merge notebooks; every note "
    "keeps its tags and dates."
)


def handoff(store: Store, thread: str, question: str, answer: str, *, resolved: bool = True) -> str:
    """A web conversation the bot handed to an agent, who answered (and resolved it)."""
    conversation = store.get_or_create_conversation(ConversationKey("web", "", thread), "cust")
    store.add_message(conversation.id, Role.USER, "cust", question)
    store.set_owner(conversation.id, Owner.HUMAN, actor="cust", reason="asked for a person")
    store.add_message(conversation.id, Role.AGENT, "agent-rafael", answer)
    if resolved:
        store.set_owner(conversation.id, Owner.BOT, actor="agent-rafael", reason="resolved")
        store.set_status(conversation.id, "closed")
    return conversation.id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}")


@pytest.fixture
def kb(kb_copy: Path, embedder) -> KnowledgeBase:  # type: ignore[no-untyped-def]
    return KnowledgeBase(kb_copy, embedder).load()


def test_resolved_handoff_answers_become_proposals(store: Store, kb: KnowledgeBase) -> None:
    known = next(e for e in kb.entries if e.question)
    novel_id = handoff(
        store, "1", "Can I merge two notebooks into one?", "Hi Dana, " + MERGE_ANSWER
    )
    handoff(store, "2", known.question or "", known.answer)  # the KB already says this
    handoff(store, "3", "Can I merge notebooks together?", MERGE_ANSWER)  # said already, above
    handoff(store, "4", "Where is my invoice?", "I sent it to dana@example.com just now.")
    handoff(store, "5", "Is there a Linux app?", "Yes, a Flatpak and a .deb.", resolved=False)

    report = mine_proposals(store, kb)

    assert report.to_json() == {
        "candidates": 4,  # the unresolved handoff is no candidate
        "proposed": 1,
        "known_to_kb": 1,
        "repeated": 1,
        "with_pii": 1,
    }
    (proposal,) = store.proposals("proposed")
    assert proposal.question == "Can I merge two notebooks into one?"
    assert proposal.answer == MERGE_ANSWER  # the greeting naming the customer is cut
    assert proposal.conversation_id == novel_id
    assert proposal.nearest_entry is not None and proposal.nearest_score is not None
    # Mining again proposes nothing new.
    assert mine_proposals(store, kb).proposed == 0
    assert len(store.proposals()) == 1


def test_approving_adds_the_entry_and_rejecting_does_not(store: Store, kb: KnowledgeBase) -> None:
    handoff(store, "1", "Can I merge two notebooks into one?", MERGE_ANSWER)
    handoff(
        store,
        "2",
        "Can I read my notes on a Kindle?",
        "Not directly: e-mail the exported PDF to your Kindle's Send to Kindle address.",
    )
    mine_proposals(store, kb)
    merge, student = sorted(store.proposals("proposed"), key=lambda p: p.id)
    entries_before = len(kb.entries)

    info, _ = approve_proposal(store, kb, merge.id, reviewer="lead")
    rejected = store.review_proposal(student.id, "rejected", reviewer="lead", note="policy")

    assert info.status == "approved" and info.entry_id == f"proposal-{merge.id}"
    assert info.reviewer == "lead" and info.reviewed_at is not None
    assert rejected.status == "rejected" and rejected.note == "policy"
    assert len(kb.entries) == entries_before + 1
    entry = kb.entry(f"proposal-{merge.id}")
    assert entry is not None and entry.source == PROPOSAL_SOURCE
    found = Retriever(kb).retrieve("how do I merge notebooks").top
    assert found is not None and found.entry.id == f"proposal-{merge.id}"
    assert [p.id for p in store.proposals("approved")] == [merge.id]
    with pytest.raises(StorageError, match="no knowledge-base proposal 999"):
        approve_proposal(store, kb, 999, reviewer="lead")
