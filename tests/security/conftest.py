"""The security tests share the fuzzing suite's fully mounted app (web chat, dashboard, metrics,
Slack over HTTP, Zendesk)."""

from __future__ import annotations

from tests.fuzz.conftest import fuzz_app, fuzz_kb

__all__ = ["fuzz_app", "fuzz_kb"]
