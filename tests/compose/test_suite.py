"""`supportbot prompts check`: suites, their validation and the pass/fail table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.compose.prompts import PROMPTS_DIR
from bot.compose.suite import SuiteCase, _judge, load_suite
from bot.errors import ConfigError
from tests.compose.fake_llm import FakeLLM

SUITE = """
cases:
  - name: grounded reset
    question: How do I reset my password?
    facts: ["Forgot password", ["60 minutes", "an hour"]]
    claims: ["24 hours"]
  - name: out of scope
    question: What is the capital of Australia?
    expect: not_answered
  - name: a fact the answer lacks
    question: How do I reset my password?
    facts: ["$500"]
"""


def test_the_shipped_sample_suite_is_valid() -> None:
    suite = load_suite(PROMPTS_DIR / "suites" / "sample.yaml")
    assert len(suite.cases) >= 8
    assert any(case.before for case in suite.cases)
    assert any(case.expect == "not_answered" for case in suite.cases)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cases: []", "cases"),
        ("cases:\n  - question: hi\n    expect: maybe", "expect"),
        ("cases:\n  - facts: [a]", "question"),
        ("cases: [", "not valid YAML"),
    ],
)
def test_a_bad_suite_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_suite(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")


def test_judging_a_case() -> None:
    case = SuiteCase(question="q", facts=("Forgot", ("60 minutes", "an hour")), claims=("24 h",))
    assert _judge(case, "Click forgot password; it lasts an hour.", "generated")[2]
    missing, made, passed = _judge(case, "Click Forgot. Valid 24 h.", "generated")
    assert missing == ("60 minutes | an hour",) and made == ("24 h",) and not passed
    assert not _judge(case, "Forgot, an hour", "fell_back")[2]  # the prompt's answer was not used


@pytest.mark.model
def test_prompts_check_prints_a_pass_fail_table(
    tmp_path: Path, sample_kb_dir: Path, fake_llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(sample_kb_dir, tmp_path / "data" / "index")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPORTBOT_LLM_BASE_URL", fake_llm.base_url)
    monkeypatch.setenv("SUPPORTBOT_LLM_MODEL", "grounded")
    runner = CliRunner()

    result = runner.invoke(app, ["prompts", "check", str(suite)], terminal_width=200)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    rows = {
        name: line
        for name in ("grounded reset", "out of scope", "a fact the")
        for line in lines
        if name in line
    }
    assert "PASS" in rows["grounded reset"] and "generated" in rows["grounded reset"]
    assert "PASS" in rows["out of scope"] and "not_answered" in rows["out of scope"]
    assert "FAIL" in rows["a fact the"] and "$500" in rows["a fact the"]
    assert "2/3 passed" in result.output

    unsupported = runner.invoke(
        app, ["prompts", "check", str(suite), "--llm-model", "unsupported", "--json"]
    )
    assert unsupported.exit_code == 1
    cases = json.loads(unsupported.output.strip().splitlines()[-1])
    assert (cases[0]["outcome"], cases[0]["reason"], cases[0]["passed"]) == (
        "fell_back",
        "unsupported",
        False,
    )
    # The scratch database is thrown away; the bot's own has no trace of the suite.
    assert not (tmp_path / "data" / "supportbot.db").exists()


def test_prompts_check_needs_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPPORTBOT_LLM_MODEL", raising=False)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(app, ["prompts", "check", str(suite)])
    assert isinstance(result.exception, ConfigError)
    assert "SUPPORTBOT_LLM_MODEL" in str(result.exception)
