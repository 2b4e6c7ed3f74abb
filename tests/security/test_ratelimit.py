"""Per-user rate limits: the token bucket, and the engine's "slow down" reply then silence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine, Responder
from bot.model import InboundMessage
from bot.ratelimit import SLOW_DOWN_TEXT, RateLimit, RateLimiter, Verdict
from bot.service import confidence_model
from bot.settings import Settings, load_settings
from bot.storage.store import Store
from knowledge.base import KnowledgeBase
from knowledge.retriever import Retriever


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "messages", "period"),
    [("20/minute", 20, 60.0), ("5/second", 5, 1.0), ("100/hour", 100, 3600.0), ("10/30s", 10, 30)],
)
def test_limits_read_as_written(text: str, messages: int, period: float) -> None:
    assert RateLimit.parse(text) == RateLimit(messages, period)


@pytest.mark.parametrize("text", ["fast", "20", "20/fortnight", "0/minute", "-1/s", "1/0s"])
def test_unreadable_limits_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match=r"20/minute|at least one"):
        RateLimit.parse(text)


def test_the_setting_is_validated_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.errors import ConfigError

    monkeypatch.setenv("SUPPORTBOT_RATE_LIMIT", "lots")
    with pytest.raises(ConfigError, match="20/minute"):
        load_settings()
    monkeypatch.setenv("SUPPORTBOT_RATE_LIMIT", "20/minute")
    assert load_settings().rate_limit == "20/minute"
    monkeypatch.setenv("SUPPORTBOT_RATE_LIMIT", "off")
    assert load_settings().rate_limit is None


def test_a_bucket_allows_a_burst_then_warns_once_then_is_silent_then_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimit(3, 60.0), clock=clock)

    assert [limiter.check("ann") for _ in range(3)] == [Verdict.ALLOW] * 3
    assert limiter.check("ann") is Verdict.SLOW_DOWN
    assert limiter.check("ann") is Verdict.SILENT
    assert limiter.check("ann") is Verdict.SILENT
    assert limiter.check("bob") is Verdict.ALLOW  # per user
    clock.now += 20.0  # one token back (3 per 60 s)
    assert limiter.check("ann") is Verdict.ALLOW
    assert limiter.check("ann") is Verdict.SLOW_DOWN  # warned again after an allowed message


def test_buckets_stay_bounded_under_made_up_users() -> None:
    limiter = RateLimiter(RateLimit(1, 60.0), clock=FakeClock(), max_keys=100)
    for n in range(1000):
        limiter.check(f"user-{n}")
    assert len(limiter) == 100


def message(n: int, user: str = "ann", channel: str = "c1") -> InboundMessage:
    return InboundMessage(
        platform="web",
        workspace="",
        channel=channel,
        user=user,
        message_id=f"m{n}-{user}",
        text="How do I export my notes?",
        addressed=True,
    )


@pytest.fixture
def engine(tmp_path: Path, sample_kb_dir: Path, embedder: Any) -> Any:
    kb = KnowledgeBase(sample_kb_dir, embedder).load()
    store = Store.from_url(f"sqlite:///{tmp_path / 'limits.db'}")
    limiter = RateLimiter(RateLimit.parse("3/minute"), clock=FakeClock())
    built = Engine(store, Responder(Retriever(kb), confidence_model(kb)), rate_limiter=limiter)
    yield built
    store.close()


@pytest.mark.model
def test_over_the_limit_one_slow_down_then_silence_and_no_work(engine: Engine) -> None:
    replies = [engine.handle(message(n)) for n in range(3)]
    assert all(r and r[0].text != SLOW_DOWN_TEXT for r in replies)
    stored = engine.store.counts()

    slow = engine.handle(message(3))
    assert [r.text for r in slow] == [SLOW_DOWN_TEXT]
    assert engine.handle(message(4)) == []
    assert engine.handle(message(5)) == []
    # Nothing was stored or answered for the refused messages.
    assert engine.store.counts() == stored
    # Another customer is not affected.
    assert engine.handle(message(0, user="bob", channel="c2"))[0].text != SLOW_DOWN_TEXT


def test_build_services_applies_the_setting(tmp_path: Path, sample_kb_dir: Path) -> None:
    import shutil

    from bot.service import build_services

    shutil.copytree(sample_kb_dir, tmp_path / "index")
    services = build_services(Settings(data_dir=tmp_path, rate_limit="20/minute"))
    try:
        limiter = services.engine.rate_limiter
        assert limiter is not None and limiter.limit == RateLimit(20, 60.0)
    finally:
        services.store.close()
