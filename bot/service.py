"""Wiring: build the store, knowledge base, retriever, confidence model and engine from settings.

Every process (web, chat, Discord, evaluation) assembles its parts here, so they all answer the
same way.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bot.compose.base import Composer, ExtractiveComposer
from bot.engine import Engine, EngineConfig, Responder
from bot.handoff import HandoffSink, NoDeskHandoffSink
from bot.outbox import Sweeper
from bot.ratelimit import RateLimiter
from bot.relay import Relay, RelayConfig
from bot.settings import Settings, sample_kb_paths
from bot.storage.store import Store
from knowledge.base import IngestReport, KnowledgeBase
from knowledge.calibration import ConfidenceModel, derive
from knowledge.embeddings import Embedder
from knowledge.feedback import FeedbackIndex
from knowledge.retriever import Retriever
from knowledge.types import Entry
from policies.config import PolicyConfig, load_policy_config
from policies.smalltalk import SmalltalkConfig
from policies.texts import wording

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    kb: KnowledgeBase
    retriever: Retriever
    engine: Engine
    #: The human-handoff relay, when ``SUPPORTBOT_HANDOFF_DESK`` names a desk.
    relay: Relay | None = None

    def ready(self) -> None:
        """Make the process ready to answer: the model warmed up, then the heap settled
        (`settle_heap`). Every serving process calls it once, after building its services
        (which started the warm-up) and its app, so both overlap the model's loading."""
        self.kb.embedder.warm_up()
        settle_heap()

    def sweeper(self) -> Sweeper:
        """A sweeper for abandoned messages and unsent replies (`bot.outbox`), set up from the
        settings; the adapter registers its platform's sender and inbox handler on it."""
        return Sweeper(
            self.store,
            hold_s=self.settings.outbox_hold_s,
            interval_s=self.settings.outbox_sweep_s,
            max_attempts=self.settings.outbox_max_attempts,
        )


def settle_heap() -> None:
    """Take what start-up loaded out of the garbage collector's way (`gc.freeze`).

    A started web worker holds objects that live as long as it does (the model and its
    libraries, the index's entries, the web framework): 630,000 with torch, 200,000 with ONNX
    Runtime, on the bundled sample. Each of Python's full collections walks them all, 330 and
    95 ms on a 2-core machine, and answering messages allocates enough (twenty candidates a
    question) to set one off every few thousand messages: a pause for whoever is answered
    then, and 4–20% of a batched loop's time (docs/benchmarks.md, "Seventh round"). Frozen,
    they are left out of every collection; reference counting still frees any of them that is
    dropped, so only reference cycles among them (the knowledge base has none) would outlive
    a reload. Garbage is collected first, so none of it is frozen.
    """
    gc.collect()
    gc.freeze()


def ingest(
    kb: KnowledgeBase,
    entries: Sequence[Entry],
    *,
    replace_all: bool = False,
    progress: bool = False,
) -> IngestReport:
    """Ingest entries, then derive the knowledge base's own answering threshold."""
    report = kb.ingest(entries, replace_all=replace_all, progress=progress)
    model = derive(kb, Retriever(kb))
    kb.set_derived_threshold(model.threshold if model.origin == "derived" else None, model.samples)
    return report


def ingest_paths(
    kb: KnowledgeBase,
    paths: Sequence[Path | str],
    *,
    replace_all: bool = False,
    progress: bool = False,
) -> IngestReport:
    from knowledge.ingest import load_sources

    return ingest(kb, load_sources(paths), replace_all=replace_all, progress=progress)


def reindex(kb: KnowledgeBase, *, progress: bool = False) -> IngestReport:
    """Re-embed the stored entries with the knowledge base's (new) model; derive the threshold."""
    report = kb.rebuild(progress=progress)
    model = derive(kb, Retriever(kb))
    kb.set_derived_threshold(model.threshold if model.origin == "derived" else None, model.samples)
    return report


def confidence_model(kb: KnowledgeBase, override: float | None = None) -> ConfidenceModel:
    """The calibrated model if `kb calibrate` ran, else the derived threshold, else the default."""
    calibration = kb.calibration()
    if calibration is not None:
        model = ConfidenceModel.from_json(calibration)
    elif kb.manifest is not None and kb.manifest.derived_threshold is not None:
        model = ConfidenceModel(
            kb.manifest.derived_threshold, "derived", samples=kb.manifest.derived_from
        )
    else:
        model = ConfidenceModel(0.45, "default")
    if override is not None:
        model = replace(model, threshold=override, origin="configured")
    return model


def make_embedder(settings: Settings, model: Path | None = None) -> Embedder:
    """The embedder the settings ask for (backend, query cache, micro-batching).

    An ONNX export is cached in ``onnx/`` beside the index directory.
    """
    return Embedder(
        model or settings.model,
        backend=settings.embed_backend,
        onnx_dir=settings.index_dir.parent / "onnx",
        quantize=settings.embed_quantize,
        cache_size=settings.embed_cache_size,
        batch_window_ms=settings.embed_batch_window_ms,
        threads=settings.embed_threads,
        lanes=settings.embed_lanes,
    )


def open_kb(
    settings: Settings,
    *,
    bootstrap: bool = True,
    progress: bool = False,
    embedder: Embedder | None = None,
) -> KnowledgeBase:
    """Load the knowledge base; on first start, build it from the bundled sample.

    `embedder` is the settings' (`make_embedder`) when not given.
    """
    if embedder is None:
        embedder = make_embedder(settings)
    kb = KnowledgeBase(settings.index_dir, embedder, mmap=settings.index_mmap)
    if not kb.exists and bootstrap:
        logger.info("no knowledge base at %s yet: ingesting the bundled sample", kb.directory)
        ingest_paths(kb, sample_kb_paths(), progress=progress)
    elif kb.model_changed:
        # A new model (e.g. one `supportbot train` promoted): the stored vectors no longer match.
        logger.warning(
            "the index at %s was built with another embedding model: re-embedding it with %s",
            kb.directory,
            kb.embedder.model_path,
        )
        reindex(kb, progress=progress)
    return kb.load()


def load_policies(settings: Settings) -> PolicyConfig:
    """The conversation policies: ``SUPPORTBOT_POLICIES`` or the bundled defaults, validated.

    Raises:
        ConfigError: the file is missing or invalid; the message says where and how to fix it.
    """
    return load_policy_config(settings.policies, default_bot_name=settings.bot_name)


def build_composer(settings: Settings, kb: KnowledgeBase) -> Composer:
    """The answer composer: generative when ``SUPPORTBOT_LLM_MODEL`` is set, else extractive.

    The generative composer checks its answers with the knowledge base's own embedding model.

    Raises:
        ConfigError: the prompt version does not exist or its templates do not parse.
    """
    if not settings.llm_model:
        return ExtractiveComposer()
    from bot.compose.generative import GenerativeComposer, LLMConfig
    from bot.compose.grounding import GroundingGuard
    from bot.compose.prompts import PromptSet

    prompts = PromptSet(settings.prompt_version, settings.prompts_dir)
    config = LLMConfig(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        temperature=settings.llm_temperature,
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
    )
    logger.info(
        "generative answers: model=%s endpoint=%s prompt=%s budget=%.1fs",
        config.model,
        config.base_url or "(OpenAI default)",
        prompts.version,
        config.timeout_s,
    )
    return GenerativeComposer(config, prompts, GroundingGuard(kb.embedder))


def build_services(
    settings: Settings,
    *,
    progress: bool = False,
    handoff_sink: HandoffSink | None = None,
    embedder: Embedder | None = None,
) -> Services:
    """Assemble every part from the settings.

    The policy settings are validated first, so a bad file stops the start-up before the
    database or the knowledge base is touched.

    Args:
        settings: the process settings.
        progress: show progress while the sample knowledge base is built on first start.
        handoff_sink: receives the engine's handoff requests (default: the relay when
            ``SUPPORTBOT_HANDOFF_DESK`` is set, else a `NoDeskHandoffSink`: the customer gets
            ``SUPPORTBOT_HANDOFF_CONTACT`` and the bot keeps the conversation).
        embedder: the model, already loaded elsewhere (the settings' by default,
            `make_embedder`); it must be the one the index was built with.

    Raises:
        ConfigError: the policy settings are invalid.
    """
    policies = load_policies(settings)
    texts = wording(policies.base)
    # The model loads and warms up in a thread while the database and the index are opened
    # (ONNX Runtime does it without the GIL); `Services.ready` waits for it.
    if embedder is None:
        embedder = make_embedder(settings)
    embedder.warm_up(wait=False)
    store = Store.from_url(settings.db_url)
    kb = open_kb(settings, progress=progress, embedder=embedder)
    # Ratings of answers move ranking for similar questions (`knowledge.feedback`).
    retriever = Retriever(kb, feedback=FeedbackIndex())
    config = EngineConfig(
        history_turns=settings.history_turns,
        max_message_chars=settings.max_message_chars,
        smalltalk=SmalltalkConfig(
            bot_name=policies.base.persona.bot_name or settings.bot_name,
            # Already formatted: braces in them are meant literally.
            greeting=texts.greeting.replace("{", "{{").replace("}", "}}"),
            thanks=texts.thanks.replace("{", "{{").replace("}", "}}"),
            goodbye=texts.goodbye.replace("{", "{{").replace("}", "}}"),
        ),
    )
    responder = Responder(
        retriever,
        confidence_model(kb, settings.threshold),
        config,
        batch_window_ms=settings.decision_batch_window_ms,
    )
    relay = None
    if handoff_sink is None and settings.handoff_desk is not None:
        relay = Relay(
            store,
            RelayConfig(
                desk=settings.handoff_desk,
                timeout_s=settings.handoff_timeout_s,
                poll_s=settings.relay_poll_s,
                contact=settings.handoff_contact,
                opening_grace_s=settings.relay_opening_grace_s,
                reply_wait_s=settings.relay_reply_wait_s,
            ),
        )
        handoff_sink = relay
    elif handoff_sink is None:
        # No desk: do not promise a person; give the customer the contact instead.
        handoff_sink = NoDeskHandoffSink(settings.handoff_contact)
    engine = Engine(
        store,
        responder,
        policies=policies,
        handoff_sink=handoff_sink,
        composer=build_composer(settings, kb),
        compose_passages=settings.llm_passages,
        rate_limiter=RateLimiter.from_setting(settings.rate_limit),
        redact_transcripts=settings.redact_transcripts,
    )
    engine.outbox_hold_s = settings.outbox_hold_s
    engine.load_feedback()
    return Services(settings, store, kb, retriever, engine, relay)
