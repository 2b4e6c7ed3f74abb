"""The dialogue engine with the real model, the sample knowledge base and real databases.

`Responder` tests check the decision alone; `Engine` tests check a whole turn, read back through
the `Store`. One set of services (SQLite) is shared by the module: every test talks in
conversations of its own, so they do not see each other's history.
"""

from __future__ import annotations

import gc
import logging
import shutil
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import make_url

from bot.engine import ERROR_TEXT, FALLBACK_TEXT, Responder
from bot.errors import StorageError
from bot.model import (
    ActionKind,
    ConversationKey,
    FeedbackEvent,
    FeedbackValue,
    InboundMessage,
    Owner,
    Reply,
    ReplyKind,
    Role,
    Turn,
)
from bot.service import Services, build_services, settle_heap
from bot.settings import Settings
from bot.text import clean_text
from knowledge.retriever import ContextSearch
from knowledge.types import Context
from tests.support import fresh_postgres_database

pytestmark = pytest.mark.model


def _build(data_dir: Path, embedder: object, **settings: object) -> Services:
    """The bot's services on `data_dir`, sharing the session's already loaded model."""
    # The session's model: same weights, so the index's fingerprint check passes.
    return build_services(Settings(data_dir=data_dir, **settings), embedder=embedder)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory,
    sample_kb_dir: Path,
    embedder: object,
) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("engine") / "data"
    shutil.copytree(sample_kb_dir, data / "index")
    built = _build(data, embedder)
    yield built
    built.store.close()


@pytest.fixture
def responder(services: Services) -> Responder:
    return services.engine.responder


@pytest.fixture
def no_retrieval(monkeypatch: pytest.MonkeyPatch, services: Services) -> None:
    """Fail the test if the knowledge base is searched."""

    def forbidden(*args: object, **kwargs: object) -> object:
        raise AssertionError("the knowledge base was searched")

    monkeypatch.setattr(services.retriever, "retrieve", forbidden)
    monkeypatch.setattr(services.retriever, "retrieve_follow_up", forbidden)


@pytest.fixture
def cached(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    """Query vectors cached, as the bot's settings have them by default (`embed_cache_size`);
    the session's shared embedder has no cache."""
    from knowledge.cache import VectorCache

    monkeypatch.setattr(services.kb.embedder, "cache", VectorCache(64))


def new_channel() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def message(
    channel: str,
    text: str,
    *,
    message_id: str | None = None,
    user: str = "u-1",
    addressed: bool = True,
) -> InboundMessage:
    return InboundMessage(
        platform="web",
        workspace="",
        channel=channel,
        user=user,
        message_id=message_id or uuid.uuid4().hex,
        text=text,
        addressed=addressed,
    )


def conversation_id(services: Services, channel: str) -> str:
    """The storage id of the web conversation on `channel` (it must exist already)."""
    info = services.store.get_or_create_conversation(ConversationKey("web", "", channel), "?")
    return info.id


def recording(embedder: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts `embedder` runs its model on from now on (the model still runs)."""
    embedded: list[str] = []
    real = embedder._encode_small

    def counted(texts: Sequence[str]) -> object:
        embedded.extend(texts)
        return real(texts)

    monkeypatch.setattr(embedder, "_encode_small", counted)
    return embedded


def contexts_read(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[Context | None]:
    """The contexts the engine's turns read from now on (`Responder.context_of`)."""
    seen: list[Context | None] = []
    context_of = services.engine.responder.context_of

    def noted(history: Sequence[Turn]) -> Context | None:
        seen.append(context_of(history))
        return seen[-1]

    monkeypatch.setattr(services.engine.responder, "context_of", noted)
    return seen


def asked_about_storage(services: Services) -> tuple[str, Context]:
    """A new web conversation that asked how much storage the free plan has and was answered:
    its channel, and the context its next message is searched with (`bot.context`): the
    question, and the answering entry's question as the topic."""
    channel = new_channel()
    question = "How much storage do I get on the free plan?"
    first = services.engine.handle(message(channel, question))
    context = services.engine.responder.context_of(
        [Turn(Role.USER, question), Turn(Role.BOT, first[0].text)]
    )
    assert context is not None and context.question == question
    assert context.topic_entry == first[0].sources[0].id
    # The topic's vector is the index's: only the question's is ever asked of the embedder.
    assert services.retriever.context_parts_to_embed(context) == (question,)
    return channel, context


def table_growth(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] != before.get(name, 0)
    }


# Responder -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("How do I reset my password?", "reset-password"),
        ("How do I export a note as a PDF?", "export-pdf"),
        ("Which payment methods do you accept?", "payment-methods"),
        ("What are your support hours?", "support-hours"),
    ],
)
def test_faq_question_is_answered_with_its_entry(
    responder: Responder, text: str, entry: str
) -> None:
    reply, trace = responder.respond(text)

    assert reply.kind is ReplyKind.ANSWER
    assert reply.sources[0].id == entry
    assert reply.text == responder.retriever.kb.entry(entry).answer  # type: ignore[union-attr]
    assert 0.0 < reply.sources[0].score <= 1.0
    assert reply.confidence is not None
    assert reply.sources[0].score == pytest.approx(reply.confidence, abs=1e-4)
    assert reply.confidence >= responder.confidence.threshold
    kinds = [action.kind for action in reply.actions]
    assert ActionKind.FEEDBACK_UP in kinds
    assert ActionKind.FEEDBACK_DOWN in kinds
    assert trace.decision is not None and trace.decision.answered
    assert trace.retrieval is not None
    assert trace.query == text
    assert not trace.used_context
    assert trace.timings["total_ms"] > 0


def test_a_fresh_data_folder_answers_with_onnx_runtime_by_default(
    tmp_path: Path, responder: Responder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a user who configures nothing gets: the model exported once into the data folder,
    the bundled sample embedded and searched with ONNX Runtime, the answers torch gives."""
    monkeypatch.delenv("SUPPORTBOT_EMBED_BACKEND", raising=False)
    data = tmp_path / "data"
    services = build_services(Settings(data_dir=data))
    try:
        assert services.kb.embedder.backend == "onnx"
        assert [p.parent for p in data.glob("onnx/*.onnx")] == [data / "onnx"]
        for text in ("How do I reset my password?", "Which payment methods do you accept?"):
            reply, _ = services.engine.responder.respond(text)
            expected, _ = responder.respond(text)  # the module's torch-embedded services
            assert reply.kind is expected.kind is ReplyKind.ANSWER
            assert [s.id for s in reply.sources] == [s.id for s in expected.sources]
            assert reply.confidence == pytest.approx(expected.confidence, abs=1e-3)
    finally:
        services.store.close()


@pytest.mark.parametrize(
    "text",
    [
        "What's the weather in Paris tomorrow?",
        "Give me a lasagna recipe",
        "Who won the football World Cup in 2018?",
    ],
)
def test_out_of_scope_question_is_never_answered(responder: Responder, text: str) -> None:
    reply, trace = responder.respond(text)

    assert reply.kind in (ReplyKind.FALLBACK, ReplyKind.CLARIFY)
    assert reply.confidence is not None
    assert reply.confidence < responder.confidence.threshold
    assert trace.decision is not None and not trace.decision.answered
    if reply.kind is ReplyKind.FALLBACK:
        assert reply.text == FALLBACK_TEXT
        assert reply.sources == ()
        assert [a.kind for a in reply.actions] == [ActionKind.HANDOFF]


@pytest.mark.usefixtures("no_retrieval")
@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hello", "Lumen Assistant"),
        ("Hi there!", "Lumen Assistant"),
        ("good morning team", "Lumen Assistant"),
        ("thanks!", "welcome"),
        ("Thank you so much", "welcome"),
        ("bye", "Goodbye"),
        ("Have a nice day!", "Goodbye"),
    ],
)
def test_greetings_and_thanks_are_smalltalk_without_retrieval(
    responder: Responder, text: str, says: str
) -> None:
    reply, trace = responder.respond(text)

    assert reply.kind is ReplyKind.SMALLTALK
    assert says in reply.text
    assert reply.sources == ()
    assert reply.actions == ()
    assert trace.retrieval is None and trace.decision is None


@pytest.mark.usefixtures("no_retrieval")
@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"], ids=["empty", "spaces", "whitespace"])
def test_empty_text_gets_a_polite_prompt(responder: Responder, text: str) -> None:
    reply, trace = responder.respond(text)

    assert reply.kind is ReplyKind.SMALLTALK
    assert "What would you like to know?" in reply.text
    assert trace.retrieval is None


@pytest.mark.usefixtures("no_retrieval")
def test_very_long_text_is_refused_politely(responder: Responder) -> None:
    text = ("How do I reset my password? " * 400)[:10_000]

    reply, trace = responder.respond(text)

    assert reply.kind is ReplyKind.FALLBACK
    assert "too long" in reply.text
    assert str(responder.config.max_message_chars) in reply.text
    assert [a.kind for a in reply.actions] == [ActionKind.HANDOFF]
    assert trace.retrieval is None
    assert len(trace.query) <= 200


ODD_TEXTS = [
    pytest.param("😀🎉🔥🙈", id="emoji"),
    pytest.param("🏳️‍🌈" * 60, id="zwj-emoji-sequences"),
    pytest.param("كيف أعيد تعيين كلمة المرور الخاصة بي؟", id="arabic-rtl"),
    pytest.param("איך אני מאפס את הסיסמה?", id="hebrew-rtl"),
    pytest.param("\u202ereset my password\u202c", id="bidi-override"),
    pytest.param("\u200b\u200b\u200b", id="zero-width-only"),
    pytest.param("reset\x00my\x00password", id="nul-inside"),
    pytest.param("\x00", id="nul-only"),
    pytest.param("ｈｏｗ ｄｏ ｉ ｒｅｓｅｔ ｍｙ ｐａｓｓｗｏｒｄ", id="fullwidth"),
    pytest.param("Z̷̢͉a̸̧͔l̵̨̛g̶͍̈o̴̰͝ password", id="zalgo"),
    pytest.param("\x1b[31mred\x1b[0m \x07", id="control-chars"),
    pytest.param("<script>alert(1)</script> ' OR 1=1; --", id="markup-and-sql"),
    pytest.param("𝓗𝓸𝔀 𝓭𝓸 𝓘 𝓮𝔁𝓹𝓸𝓻𝓽?", id="math-alphanumerics"),
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_odd_text_gets_a_reply(responder: Responder, text: str) -> None:
    reply, _ = responder.respond(text)

    assert isinstance(reply, Reply)
    assert reply.text.strip()
    if reply.kind is ReplyKind.ANSWER:
        assert reply.sources


def test_lone_surrogate_gets_a_reply(responder: Responder) -> None:
    reply, _ = responder.respond("reset my password \ud800")

    assert reply.text.strip()


# Engine.handle ---------------------------------------------------------------------------------


def test_handle_persists_conversation_message_and_reply(services: Services) -> None:
    store = services.store
    channel = new_channel()
    before = store.counts()

    replies = services.engine.handle(message(channel, "How do I reset my password?", user="ann"))

    assert len(replies) == 1
    reply = replies[0]
    assert reply.kind is ReplyKind.ANSWER
    assert reply.id
    assert reply.sources[0].id == "reset-password"
    growth = table_growth(before, store.counts())
    assert {name: growth.get(name, 0) for name in ("conversation", "message", "reply")} == {
        "conversation": 1,
        "message": 2,
        "reply": 1,
    }
    assert growth.get("processed_event") == 1
    assert "feedback" not in growth and "handoff" not in growth

    conversation = store.get_conversation(conversation_id(services, channel))
    assert conversation is not None
    assert conversation.key == ConversationKey("web", "", channel)
    assert conversation.customer == "ann"
    assert conversation.owner is Owner.BOT
    assert conversation.status == "open"
    assert store.history(conversation.id) == [
        Turn(Role.USER, "How do I reset my password?"),
        Turn(Role.BOT, reply.text),
    ]

    stored = store.get_reply(reply.id)
    assert stored is not None
    assert stored.conversation_id == conversation.id
    assert stored.kind is ReplyKind.ANSWER
    assert stored.text == reply.text
    assert stored.sources == reply.sources
    assert [s.score for s in stored.sources] == [s.score for s in reply.sources]
    assert stored.confidence == pytest.approx(reply.confidence)
    assert stored.query == "How do I reset my password?"
    assert stored.message_id is not None
    assert stored.latency_ms is not None and stored.latency_ms > 0


def test_handle_reads_the_history_for_a_follow_up(services: Services) -> None:
    """The stored turns are the context: the follow-up's query carries the earlier question."""
    channel = new_channel()
    first = services.engine.handle(message(channel, "How much storage do I get on the free plan?"))
    assert first[0].sources[0].id == "storage-limit-free"

    follow_up = services.engine.handle(message(channel, "and if we're on Business?"))

    assert follow_up[0].kind is ReplyKind.ANSWER
    assert follow_up[0].sources[0].id == "storage-limit-business"
    stored = services.store.get_reply(follow_up[0].id)
    assert stored is not None
    assert "storage" in stored.query.lower()
    assert stored.query.endswith("and if we're on Business?")
    assert len(services.store.history(conversation_id(services, channel))) == 4


def test_a_turn_embeds_its_question_while_it_stores_the_turn(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine prefetches the turn's text (`Responder.prefetch`): one forward pass, run by
    the prefetch thread, and the same answer as without it."""
    embedder = services.kb.embedder
    passes: list[str] = []
    real = embedder._encode_small
    prefetching = threading.Event()

    def counted(texts: Sequence[str]) -> object:
        if threading.current_thread().name.startswith("embed-anticipate"):
            return real(texts)  # the next message's context, after the reply
        passes.append(threading.current_thread().name)
        if passes[-1].startswith("embed-prefetch"):
            prefetching.set()
        return real(texts)

    monkeypatch.setattr(embedder, "_encode_small", counted)
    # A prefetch not started when the turn needs its vector is cancelled (the turn's own pass
    # is as fast): on a busy machine the thread may start late, so the storage waits for it.
    open_turn = services.store.open_turn

    def opened_once_prefetching(*args: Any, **kwargs: Any) -> object:
        prefetching.wait(10)
        return open_turn(*args, **kwargs)

    monkeypatch.setattr(services.store, "open_turn", opened_once_prefetching)
    replies = services.engine.handle(message(new_channel(), "How do I reset my password?"))
    assert [r.sources[0].id for r in replies] == ["reset-password"]
    assert len(passes) == 1 and passes[0].startswith("embed-prefetch")

    passes.clear()  # not addressed to the bot: nothing is embedded ahead
    prefetching.clear()
    monkeypatch.setattr(services.store, "open_turn", open_turn)
    services.engine.handle(message(new_channel(), "How do I reset my password?", addressed=False))
    assert all(not name.startswith("embed-prefetch") for name in passes)


def test_a_turn_starts_its_pass_first_only_where_its_storage_holds_the_gil(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SQLite the turn's storage holds the GIL, so the prefetch waits for its pass to
    start (`Embedder.prefetch(start=True)`); a database server's round trips let the GIL go."""
    starts: list[bool] = []
    prefetch = services.engine.responder.prefetch

    def told(text: str, *, start: bool = False) -> None:
        starts.append(start)
        prefetch(text, start=start)

    monkeypatch.setattr(services.engine.responder, "prefetch", told)
    services.engine.handle(message(new_channel(), "How do I reset my password?"))
    monkeypatch.setattr(type(services.store), "in_process", property(lambda store: False))
    services.engine.handle(message(new_channel(), "How do I reset my password?"))
    assert starts == [True, False]


@pytest.mark.usefixtures("cached")
def test_a_follow_up_runs_the_model_on_its_own_words_only(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right after the answer, a follow-up's context costs no pass: its question's vector is
    cached from its own turn and its topic's is in the index."""
    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel, _ = asked_about_storage(services)
    embedded = recording(services.kb.embedder, monkeypatch)
    follow_up = services.engine.handle(message(channel, "and if we're on Business?"))
    assert follow_up[0].sources[0].id == "storage-limit-business"
    assert embedded == ["and if we're on Business?"]


@pytest.mark.usefixtures("cached")
def test_after_a_reply_that_is_not_an_answer_a_follow_up_is_read_with_the_question_alone(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fallback's or a question back's set wording is no topic: the follow-up's context is
    the customer's question alone, and the model runs on the follow-up's own words only (the
    question's vector is cached from its turn)."""
    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel = new_channel()
    question = "Can I pay for the Lumen subscription with cryptocurrency?"
    first = services.engine.handle(message(channel, question))
    assert first[0].kind in (ReplyKind.FALLBACK, ReplyKind.CLARIFY)
    seen = contexts_read(services, monkeypatch)
    embedded = recording(services.kb.embedder, monkeypatch)
    services.engine.handle(message(channel, "and with PayPal?"))
    assert seen and all(context == Context(question) for context in seen)
    assert embedded == ["and with PayPal?"]


def test_after_a_relay_notice_a_follow_up_is_read_with_the_question_alone(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's notice to the customer (here: an agent gave the conversation back) is the
    handoff's wording, not a topic."""
    from bot.relay import RELAY_AUTHOR, RelayConfig

    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel = new_channel()
    question = "How much storage do I get on the free plan?"
    services.engine.handle(message(channel, question))
    notice = RelayConfig(desk="slack").released_text
    services.store.add_message(conversation_id(services, channel), Role.BOT, RELAY_AUTHOR, notice)
    seen = contexts_read(services, monkeypatch)
    services.engine.handle(message(channel, "and on Business?"))
    assert seen and all(context == Context(question) for context in seen)


@pytest.mark.usefixtures("cached")
def test_the_next_message_s_context_is_embedded_while_the_customer_writes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reply, once the process is idle, the engine embeds the parts of the context the
    next message would be searched with that are not at hand (`Responder.anticipate`; here the
    question, its cached vector dropped): a follow-up then runs no pass for them and gets the
    answer it got without."""
    embedder = services.kb.embedder
    # This process's own quiet decides (the CPU meter has its own tests): the machine running
    # the suite may be busy with other work.
    monkeypatch.setattr(embedder._ahead, "_meter", None)
    anticipate = services.engine.responder.anticipate
    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel, context = asked_about_storage(services)
    assert embedder.cache is not None and context.question is not None
    embedder.cache.clear()
    said = services.store.history(conversation_id(services, channel))
    anticipate([Turn(turn.role, turn.text) for turn in said])
    embedder.settle()
    assert embedder.anticipated(context.question)

    embedded = recording(embedder, monkeypatch)
    follow_up = services.engine.handle(message(channel, "and if we're on Business?"))
    assert follow_up[0].sources[0].id == "storage-limit-business"
    assert embedded == ["and if we're on Business?"]  # the question taken as anticipated
    assert not embedder.anticipated(context.question)


@pytest.mark.usefixtures("cached")
def test_a_follow_up_s_context_is_searched_while_its_own_vector_is_computed(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the message's own vector is still being computed (a live turn's prefetch), the
    turn searches its context (`Responder._context_ahead`); the follow-up search then takes
    that search instead of running it again, and answers as it did without."""
    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel, context = asked_about_storage(services)
    retriever = services.retriever
    monkeypatch.setattr(services.kb.embedder, "pending", lambda text: True)
    searched_words: list[str] = []
    search = retriever.search

    def recorded(vector: Any, query: str, **kwargs: Any) -> Any:
        searched_words.append(query)
        return search(vector, query, **kwargs)

    taken: list[object] = []
    follow_up_search = retriever.retrieve_follow_up

    def took(*args: Any, **kwargs: Any) -> Any:
        taken.append(kwargs.get("ahead"))
        return follow_up_search(*args, **kwargs)

    monkeypatch.setattr(retriever, "search", recorded)
    monkeypatch.setattr(retriever, "retrieve_follow_up", took)
    follow_up = services.engine.handle(message(channel, "and if we're on Business?"))
    assert follow_up[0].sources[0].id == "storage-limit-business"
    (ahead,) = taken
    assert isinstance(ahead, ContextSearch) and ahead.context == context
    assert searched_words == [context.text]  # once, during the wait

    # Without a history there is no context to search ahead.
    searched_words.clear()
    services.engine.handle(message(new_channel(), "How do I reset my password?"))
    assert searched_words == []


@pytest.mark.usefixtures("cached")
def test_a_follow_up_s_context_is_embedded_while_the_message_is_searched(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing embedded ahead (no quiet moment came), a message that looks like a
    follow-up has its context embedded by the prefetch thread, beside its own search
    (`Responder.prefetch_context`), and gets the answer it got without."""
    embedder = services.kb.embedder
    monkeypatch.setattr(services.engine.responder, "anticipate", lambda *args: None)
    channel, context = asked_about_storage(services)
    assert embedder.cache is not None
    embedder.cache.clear()  # the question's vector is not at hand (as in another worker)
    assert not embedder.anticipated(context.question)

    ran: list[str] = []
    started = threading.Event()
    real = embedder._encode_small

    def counted(texts: Sequence[str]) -> object:
        if context.question in texts:
            ran.append(threading.current_thread().name)
            started.set()
        return real(texts)

    # The follow-up search takes the context's vector from the prefetch thread once that pass
    # has started; on a busy machine the thread may start late, so the search waits for it.
    follow_up_search = services.retriever.retrieve_follow_up

    def once_started(*args: Any, **kwargs: Any) -> object:
        started.wait(10)
        return follow_up_search(*args, **kwargs)

    monkeypatch.setattr(embedder, "_encode_small", counted)
    monkeypatch.setattr(services.retriever, "retrieve_follow_up", once_started)
    follow_up = services.engine.handle(message(channel, "and if we're on Business?"))
    assert follow_up[0].sources[0].id == "storage-limit-business"
    assert len(ran) == 1 and ran[0].startswith("embed-prefetch")


@pytest.mark.usefixtures("cached")
def test_the_next_message_s_context_reaches_whichever_worker_answers_it(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vector of the context's question is kept with the conversation
    (`Store.keep_context`), in the first quiet moment, though this worker had it cached: another
    worker on the same database, with a model of its own, answers the follow-up without
    embedding the context, as it would have answered it by itself."""
    from knowledge.embeddings import Embedder

    here = services.kb.embedder
    monkeypatch.setattr(here._ahead, "_meter", None)  # this process's own quiet decides
    there = Embedder()
    other = _build(services.settings.data_dir, there)
    try:
        channel, context = asked_about_storage(services)
        here.settle()
        kept = services.store.get_or_create_conversation(ConversationKey("web", "", channel), "?")
        assert kept.context is not None
        assert kept.context.key == there.vector_key(context.question)
        assert len(kept.context.vector) == there.dimension * 4

        embedded = recording(there, monkeypatch)
        follow_up = other.engine.handle(message(channel, "and if we're on Business?"))
        assert follow_up[0].sources[0].id == "storage-limit-business"
        # Its own words are embedded there; the context's question came with the
        # conversation, and its topic's vector is in the index.
        assert embedded == ["and if we're on Business?"]
    finally:
        there.close()
        other.store.close()


def test_same_message_id_twice_is_answered_once(services: Services) -> None:
    store = services.store
    channel, message_id = new_channel(), uuid.uuid4().hex
    first = services.engine.handle(
        message(channel, "How do I delete my account?", message_id=message_id)
    )
    after_first = store.counts()

    second = services.engine.handle(
        message(channel, "How do I delete my account?", message_id=message_id)
    )

    assert len(first) == 1
    assert second == []
    assert store.counts() == after_first
    history = store.history(conversation_id(services, channel))
    assert [turn.role for turn in history] == [Role.USER, Role.BOT]


def test_message_ids_are_per_platform(services: Services) -> None:
    """The de-duplication key is (platform, message id): another platform's id may repeat."""
    shared_id = uuid.uuid4().hex
    web = services.engine.handle(
        message(new_channel(), "How do I reset my password?", message_id=shared_id)
    )
    other = InboundMessage(
        "console", "", new_channel(), "u-1", shared_id, "How do I reset my password?"
    )

    assert len(web) == 1
    assert len(services.engine.handle(other)) == 1


def test_message_ids_are_per_workspace(services: Services) -> None:
    shared_id = uuid.uuid4().hex[:8]
    acme = InboundMessage("zendesk", "acme", new_channel(), "u-1", shared_id, "hello")
    globex = InboundMessage("zendesk", "globex", new_channel(), "u-2", shared_id, "hello")

    assert len(services.engine.handle(acme)) == 1
    assert len(services.engine.handle(globex)) == 1


def test_human_owned_conversation_gets_no_reply_but_is_recorded(services: Services) -> None:
    store = services.store
    channel = new_channel()
    conversation = store.get_or_create_conversation(ConversationKey("web", "", channel), "u-1")
    store.set_owner(conversation.id, Owner.HUMAN, "agent-7", "customer asked for a person")
    replies_before = store.counts()["reply"]

    replies = services.engine.handle(message(channel, "How do I reset my password?"))

    assert replies == []
    assert store.counts()["reply"] == replies_before
    assert store.history(conversation.id) == [Turn(Role.USER, "How do I reset my password?")]

    store.set_owner(conversation.id, Owner.BOT, "agent-7")
    back = services.engine.handle(message(channel, "How do I reset my password?"))
    assert [r.kind for r in back] == [ReplyKind.ANSWER]


def test_unaddressed_message_gets_no_reply_but_is_recorded(services: Services) -> None:
    store = services.store
    channel = new_channel()
    replies_before = store.counts()["reply"]

    replies = services.engine.handle(
        message(channel, "anyone know how to export to PDF?", addressed=False)
    )

    assert replies == []
    assert store.counts()["reply"] == replies_before
    conversation = conversation_id(services, channel)
    assert store.history(conversation) == [Turn(Role.USER, "anyone know how to export to PDF?")]

    answered = services.engine.handle(message(channel, "How do I export a note as a PDF?"))
    assert answered[0].sources[0].id == "export-pdf"
    assert len(store.history(conversation)) == 3


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "x" * 10_000,
        "😀 مرحبا \u202e\x00",
    ],
    ids=["empty", "greeting", "10k-chars", "odd-unicode"],
)
def test_handle_stores_every_kind_of_reply(services: Services, text: str) -> None:
    channel = new_channel()

    replies = services.engine.handle(message(channel, text))

    assert len(replies) == 1
    assert replies[0].text != ERROR_TEXT
    stored = services.store.get_reply(replies[0].id)
    assert stored is not None
    assert stored.kind is replies[0].kind
    history = services.store.history(conversation_id(services, channel))
    # NUL and other control characters are dropped: PostgreSQL cannot store them.
    stored_text = clean_text(text, normalize=False)
    assert history == [Turn(Role.USER, stored_text), Turn(Role.BOT, replies[0].text)]


def test_failure_inside_retrieval_becomes_an_apology(
    services: Services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the index is on fire")

    monkeypatch.setattr(services.retriever, "retrieve", broken)
    channel = new_channel()
    replies_before = services.store.counts()["reply"]

    with caplog.at_level(logging.ERROR, logger="bot.engine"):
        replies = services.engine.handle(message(channel, "How do I reset my password?"))

    assert len(replies) == 1
    assert replies[0].kind is ReplyKind.FALLBACK
    assert replies[0].text == ERROR_TEXT
    assert ActionKind.HANDOFF in [a.kind for a in replies[0].actions]
    assert "turn failed" in caplog.text
    assert "the index is on fire" in caplog.text
    assert services.store.counts()["reply"] == replies_before
    assert services.store.history(conversation_id(services, channel)) == [
        Turn(Role.USER, "How do I reset my password?")
    ]


# Engine.record_feedback ------------------------------------------------------------------------


def feedback(reply_id: str, user: str, value: FeedbackValue | None, event_id: str) -> FeedbackEvent:
    return FeedbackEvent("web", reply_id, user, value, event_id)


def test_record_feedback_up_down_withdraw_and_repeats(services: Services) -> None:
    engine, store = services.engine, services.store
    reply = engine.handle(message(new_channel(), "How do I reset my password?"))[0]
    tag = uuid.uuid4().hex

    assert engine.record_feedback(feedback(reply.id, "ann", FeedbackValue.UP, f"{tag}-1"))
    assert store.feedback_for(reply.id) == {"up": 1, "down": 0}
    # The same event delivered again.
    assert not engine.record_feedback(feedback(reply.id, "ann", FeedbackValue.UP, f"{tag}-1"))
    # A new event with the same rating: counted once.
    assert not engine.record_feedback(feedback(reply.id, "ann", FeedbackValue.UP, f"{tag}-2"))
    assert store.feedback_for(reply.id) == {"up": 1, "down": 0}
    # A change of mind replaces the rating.
    assert engine.record_feedback(feedback(reply.id, "ann", FeedbackValue.DOWN, f"{tag}-3"))
    assert store.feedback_for(reply.id) == {"up": 0, "down": 1}
    # Another user counts separately.
    assert engine.record_feedback(feedback(reply.id, "bob", FeedbackValue.UP, f"{tag}-4"))
    assert store.feedback_for(reply.id) == {"up": 1, "down": 1}
    # Withdrawing, once; a second withdrawal changes nothing.
    assert engine.record_feedback(feedback(reply.id, "ann", None, f"{tag}-5"))
    assert not engine.record_feedback(feedback(reply.id, "ann", None, f"{tag}-6"))
    assert store.feedback_for(reply.id) == {"up": 1, "down": 0}
    assert store.counts()["feedback"] >= 1


def test_record_feedback_on_unknown_reply_raises_storage_error(services: Services) -> None:
    with pytest.raises(StorageError, match="no reply"):
        services.engine.record_feedback(
            feedback("no-such-reply", "ann", FeedbackValue.UP, uuid.uuid4().hex)
        )


# PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped at teardown."""
    with fresh_postgres_database("supportbot_eng") as url:
        yield url


@pytest.fixture
def postgres_services(data_dir: Path, postgres_url: str, embedder: object) -> Iterator[Services]:
    services = _build(data_dir, embedder, database_url=postgres_url)
    yield services
    services.store.close()


@pytest.mark.postgres
def test_handle_on_postgres(postgres_services: Services, postgres_url: str) -> None:
    services = postgres_services
    store = services.store
    assert store.engine.url.get_backend_name() == "postgresql"
    assert store.engine.url.database == make_url(postgres_url).database
    channel = new_channel()

    first = services.engine.handle(
        message(channel, "How much does the Plus plan cost?", message_id="p1")
    )
    again = services.engine.handle(
        message(channel, "How much does the Plus plan cost?", message_id="p1")
    )
    smalltalk = services.engine.handle(message(channel, "thanks!"))

    assert [r.kind for r in first] == [ReplyKind.ANSWER]
    assert first[0].sources[0].id == "pricing-plus"
    assert again == []
    assert [r.kind for r in smalltalk] == [ReplyKind.SMALLTALK]
    conversation = conversation_id(services, channel)
    assert store.history(conversation) == [
        Turn(Role.USER, "How much does the Plus plan cost?"),
        Turn(Role.BOT, first[0].text),
        Turn(Role.USER, "thanks!"),
        Turn(Role.BOT, smalltalk[0].text),
    ]
    stored = store.get_reply(first[0].id)
    assert stored is not None
    assert stored.sources == first[0].sources
    assert stored.query == "How much does the Plus plan cost?"
    counts = store.counts()
    assert (counts["conversation"], counts["message"], counts["reply"]) == (1, 4, 2)

    assert services.engine.record_feedback(feedback(first[0].id, "ann", FeedbackValue.UP, "f1"))
    assert not services.engine.record_feedback(feedback(first[0].id, "ann", FeedbackValue.UP, "f1"))
    assert store.feedback_for(first[0].id) == {"up": 1, "down": 0}


@pytest.mark.postgres
def test_nul_in_message_on_postgres(postgres_services: Services) -> None:
    channel = new_channel()

    replies = postgres_services.engine.handle(message(channel, "reset my password\x00"))

    assert len(replies) == 1
    assert replies[0].text != ERROR_TEXT
    history = postgres_services.store.history(conversation_id(postgres_services, channel))
    assert [turn.role for turn in history] == [Role.USER, Role.BOT]


class _Node:
    """Something a reference cycle can be made of (and a weak reference can watch)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_heap_collects_garbage_then_freezes_what_lives() -> None:
    living = [_Node() for _ in range(1000)]
    cycle = _Node()
    cycle.other = _Node()
    cycle.other.other = cycle
    watched = weakref.ref(cycle.other)
    del cycle
    gc.disable()  # so only settle_heap can collect the cycle
    try:
        assert watched() is not None
        settle_heap()
        assert watched() is None, "garbage is collected, not frozen"
        assert gc.get_freeze_count() >= len(living)
        assert not any(gc.is_finalized(n) for n in living)
    finally:
        gc.unfreeze()
        gc.enable()


def test_the_model_warms_up_while_the_services_are_built_and_ready_waits_for_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serving process reads its index and builds its app while ONNX Runtime loads the
    model; only `ready` waits for the model (docs/benchmarks.md, "Seventeenth round")."""
    from knowledge.embeddings import Embedder

    gate, ran = threading.Event(), []
    real_pass = Embedder._encode_small

    def held_pass(self: Embedder, texts: Sequence[str]) -> Any:
        if threading.current_thread().name != "embedder-warm-up":
            return real_pass(self, texts)  # other tests' embedders' threads
        ran.append(self)
        assert gate.wait(5)
        return np.ones((len(texts), self.dimension), dtype=np.float32)

    monkeypatch.setattr(Embedder, "_encode_small", held_pass)
    services = build_services(Settings(data_dir=data_dir))  # returns while the pass is held
    try:
        assert ran == [services.kb.embedder]
        assert services.kb.entries  # the index was read meanwhile
        ready = threading.Thread(target=services.ready)
        ready.start()
        ready.join(0.3)
        assert ready.is_alive(), "ready() did not wait for the warm-up"
        gate.set()
        ready.join(5)
        assert not ready.is_alive()
        assert ran == [services.kb.embedder]  # once
    finally:
        gate.set()
        gc.unfreeze()
        services.store.close()


def test_services_ready_warms_the_model_and_settles_the_heap(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    warmed: list[int] = []
    monkeypatch.setattr(
        services.kb.embedder, "warm_up", lambda: warmed.append(gc.get_freeze_count())
    )
    try:
        services.ready()
        # Warmed first, so what the first pass allocates for good is frozen too.
        assert warmed == [0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
