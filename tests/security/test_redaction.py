"""``SUPPORTBOT_REDACT_TRANSCRIPTS=1``: stored customer messages have personal data masked; the
turn itself (and so the reply) used the real text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from bot.engine import Engine, Responder
from bot.model import InboundMessage, Role, Turn
from bot.service import confidence_model
from bot.storage.store import Store
from bot.storage.tables import Message
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever

pytestmark = pytest.mark.model

TEXT = "How do I export my notes? Mail me at ann.lee@example.com or call +44 20 7946 0958"


def stored_texts(store: Store) -> list[str]:
    with Session(store.engine) as session:
        return [m.text for m in session.exec(select(Message)).all() if m.role == Role.USER]


@pytest.fixture
def kb(sample_kb_dir: Path, embedder: Any) -> KnowledgeBase:
    return KnowledgeBase(sample_kb_dir, embedder).load()


@pytest.mark.parametrize("redact", [True, False])
def test_stored_messages_are_redacted_only_when_asked(
    tmp_path: Path, kb: KnowledgeBase, redact: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kb.embedder._ahead, "_meter", None)  # this process's quiet alone
    store = Store.from_url(f"sqlite:///{tmp_path / 'redact.db'}")
    engine = Engine(
        store, Responder(Retriever(kb), confidence_model(kb)), redact_transcripts=redact
    )
    try:
        message = InboundMessage("web", "", "c1", "ann", "m1", TEXT, addressed=True)
        replies = engine.handle(message)
        plain = Engine(store, engine.responder).responder.respond(TEXT)[0]
        # The reply is what the real text gets: redaction changes the record, not the answer.
        assert replies and replies[0].text == plain.text
        (text,) = stored_texts(store)
        # The next message's context is anticipated as that turn will read this one back.
        kb.embedder.settle()
        context = engine.responder.context_of(
            [Turn(Role.USER, text), Turn(Role.BOT, replies[0].text)]
        )
        assert context is not None and context.question == text
        assert kb.embedder.anticipated(text)
        if redact:
            assert not kb.embedder.anticipated(TEXT)
            assert "ann.lee@example.com" not in text and "7946" not in text
            assert "[EMAIL]" in text and "[PHONE]" in text
            assert text.startswith("How do I export my notes?")
        else:
            assert text == TEXT
    finally:
        store.close()


def test_the_setting_reaches_the_engine(tmp_path: Path, sample_kb_dir: Path) -> None:
    import shutil

    from bot.service import build_services
    from bot.settings import Settings

    shutil.copytree(sample_kb_dir, tmp_path / "index")
    services = build_services(Settings(data_dir=tmp_path, redact_transcripts=True))
    try:
        assert services.engine.redact_transcripts is True
    finally:
        services.store.close()
