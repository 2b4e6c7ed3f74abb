"""Wiring: build the store, knowledge base, retriever, confidence model and engine from settings.

Every process (web, chat, Discord, evaluation) assembles its parts here, so they all answer the
same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bot.engine import Engine, EngineConfig, Responder
from bot.handoff import HandoffSink
from bot.relay import Relay, RelayConfig
from bot.settings import Settings, sample_kb_paths
from bot.storage.store import Store
from knowledge.base import IngestReport, KnowledgeBase
from knowledge.calibration import ConfidenceModel, derive
from knowledge.embeddings import Embedder
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


def open_kb(settings: Settings, *, bootstrap: bool = True, progress: bool = False) -> KnowledgeBase:
    """Load the knowledge base; on first start, build it from the bundled sample."""
    kb = KnowledgeBase(settings.index_dir, Embedder(settings.model))
    if not kb.exists and bootstrap:
        logger.info("no knowledge base at %s yet: ingesting the bundled sample", kb.directory)
        ingest_paths(kb, sample_kb_paths(), progress=progress)
    return kb.load()


def load_policies(settings: Settings) -> PolicyConfig:
    """The conversation policies: ``SUPPORTBOT_POLICIES`` or the bundled defaults, validated.

    Raises:
        ConfigError: the file is missing or invalid; the message says where and how to fix it.
    """
    return load_policy_config(settings.policies, default_bot_name=settings.bot_name)


def build_services(
    settings: Settings,
    *,
    progress: bool = False,
    handoff_sink: HandoffSink | None = None,
) -> Services:
    """Assemble every part from the settings.

    The policy settings are validated first, so a bad file stops the start-up before the
    database or the knowledge base is touched.

    Args:
        settings: the process settings.
        progress: show progress while the sample knowledge base is built on first start.
        handoff_sink: receives the engine's handoff requests (default: the relay when
            ``SUPPORTBOT_HANDOFF_DESK`` is set, else one that logs).

    Raises:
        ConfigError: the policy settings are invalid.
    """
    policies = load_policies(settings)
    texts = wording(policies.base)
    store = Store.from_url(settings.db_url)
    kb = open_kb(settings, progress=progress)
    retriever = Retriever(kb)
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
    responder = Responder(retriever, confidence_model(kb, settings.threshold), config)
    relay = None
    if handoff_sink is None and settings.handoff_desk is not None:
        relay = Relay(
            store,
            RelayConfig(
                desk=settings.handoff_desk,
                timeout_s=settings.handoff_timeout_s,
                poll_s=settings.relay_poll_s,
                contact=settings.handoff_contact,
            ),
        )
        handoff_sink = relay
    engine = Engine(store, responder, policies=policies, handoff_sink=handoff_sink)
    return Services(settings, store, kb, retriever, engine, relay)
