"""The `supportbot` command line.

Commands that load the model run in-process through typer's `CliRunner` (the model loads fast
once torch is imported); what only the console script does (`main()` turning errors into exit
code 1 and a one-line message) runs `supportbot` as a subprocess, on commands that fail before
any model is loaded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.evaluate import load_queries
from knowledge.ingest import load_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE_FAQ = REPO / "knowledge" / "sample" / "faq.jsonl"
SMALL_KB_IDS = (
    "sign-up",
    "reset-password",
    "change-email",
    "delete-account",
    "two-factor-auth",
    "pricing-plus",
    "export-pdf",
    "support-hours",
)
QUERIES = [
    {"text": "I forgot my password and can't get in", "expected": "reset-password"},
    {"text": "how do I make a new account", "expected": "sign-up"},
    {"text": "remove my profile and everything in it permanently", "expected": "delete-account"},
    {"text": "what does Plus cost per month", "expected": "pricing-plus"},
    {"text": "I need my meeting notes as a PDF", "expected": "export-pdf"},
    {"text": "What's the weather in Paris tomorrow?", "expected": None},
    {"text": "Give me a lasagna recipe", "expected": None},
]
EVAL_KEYS = {
    "queries",
    "in_scope",
    "out_of_scope",
    "threshold",
    "accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "answered_precision",
    "recall_at_1",
    "recall_at_5",
    "mrr",
    "latency_ms",
}


def supportbot() -> str:
    """The console script of this virtual environment (or the one on PATH)."""
    beside = Path(sys.executable).with_name("supportbot")
    if beside.exists():
        return str(beside)
    found = shutil.which("supportbot")
    assert found, "the supportbot console script is not installed"
    return found


def run_script(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTBOT_")}
    env.update(COLUMNS="500", NO_COLOR="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if data_dir is not None:
        env["SUPPORTBOT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [supportbot(), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def cli_env(data_dir: Path) -> dict[str, str | None]:
    """The environment of an in-process command: this data folder, nothing else configured."""
    env: dict[str, str | None] = {
        name: None for name in os.environ if name.startswith("SUPPORTBOT_")
    }
    env["SUPPORTBOT_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "500"  # rich wraps tables and messages at 80 columns otherwise
    return env


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small FAQ file (8 entries of the sample) and labelled queries for it."""
    folder = tmp_path_factory.mktemp("cli-files")
    wanted = set(SMALL_KB_IDS)
    lines = [
        line
        for line in SAMPLE_FAQ.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["id"] in wanted
    ]
    assert len(lines) == len(SMALL_KB_IDS)
    kb = folder / "faq.jsonl"
    kb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    queries = folder / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n", encoding="utf-8")
    return {"kb": kb, "queries": queries}


@pytest.fixture(scope="module")
def built(
    runner: CliRunner, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A data folder whose index `supportbot kb ingest` built from the small FAQ file."""
    data_dir = tmp_path_factory.mktemp("cli-data")
    result = runner.invoke(app, ["kb", "ingest", str(files["kb"])], env=cli_env(data_dir))
    assert result.exit_code == 0, result.output
    assert "Ingested" in result.stdout
    return data_dir


@pytest.fixture
def data_copy(built: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(built, target)
    return target


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def stats(runner: CliRunner, data_dir: Path) -> dict[str, object]:
    result = runner.invoke(app, ["kb", "stats", "--json"], env=cli_env(data_dir))
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.stdout)
    return parsed


# Help ------------------------------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = run_script("--help")

    assert result.returncode == 0, result.stderr
    for command in ("run", "chat", "kb", "eval", "data"):
        assert f" {command} " in result.stdout, command


@pytest.mark.parametrize(
    ("group", "commands"),
    [("kb", ("ingest", "stats", "calibrate")), ("data", ("import-intents",))],
)
def test_group_help_lists_its_commands(
    runner: CliRunner, group: str, commands: tuple[str, ...]
) -> None:
    result = runner.invoke(app, [group, "--help"])

    assert result.exit_code == 0, result.output
    for command in commands:
        assert command in result.stdout


# eval ------------------------------------------------------------------------------------------


@pytest.mark.model
def test_eval_json_prints_one_object_with_the_metrics(
    runner: CliRunner, files: dict[str, Path], tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        ["eval", "--kb", str(files["kb"]), "--queries", str(files["queries"]), "--json"],
        env=cli_env(tmp_path),
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    figures = json.loads(lines[0])
    assert isinstance(figures, dict)
    assert set(figures) == EVAL_KEYS
    assert set(figures["latency_ms"]) == {"p50", "p95", "p99"}
    assert figures["queries"] == len(QUERIES)
    assert figures["in_scope"] == 5
    assert figures["out_of_scope"] == 2
    assert 0.0 < figures["threshold"] < 1.0
    assert figures["recall_at_5"] >= 0.8
    # It evaluates in a temporary index: nothing lands in the data folder.
    assert not (tmp_path / "index").exists()


@pytest.mark.model
def test_eval_with_calibration(runner: CliRunner, files: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "eval",
            "--kb",
            str(files["kb"]),
            "--queries",
            str(files["queries"]),
            "--calibrate",
            str(files["queries"]),
            "--json",
        ],
        env=cli_env(tmp_path),
    )

    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures) == EVAL_KEYS
    assert 0.0 <= figures["threshold"] <= 1.0
    # Calibrated on the very queries it is measured on: it must get the abstentions right.
    assert figures["oos_recall"] == 1.0


@pytest.mark.model
def test_eval_calibrated_for_coverage_declines_the_share_asked(
    runner: CliRunner, files: dict[str, Path], tmp_path: Path
) -> None:
    """A lower floor can only keep more answers: every threshold meeting 1.0 also meets 0.5."""
    figures = {}
    for floor in ("0.5", "1.0"):
        result = runner.invoke(
            app,
            [
                "eval",
                *("--kb", str(files["kb"]), "--queries", str(files["queries"])),
                *("--calibrate", str(files["queries"]), "--objective", "coverage"),
                *("--min-oos-recall", floor, "--json"),
            ],
            env=cli_env(tmp_path),
        )
        assert result.exit_code == 0, result.output
        figures[floor] = json.loads(result.stdout)
        # Calibrated on the very queries it is measured on: the floor holds exactly.
        assert figures[floor]["oos_recall"] >= float(floor)
    assert figures["0.5"]["in_scope_accuracy"] >= figures["1.0"]["in_scope_accuracy"]
    assert figures["0.5"]["threshold"] <= figures["1.0"]["threshold"]


def test_eval_refuses_an_unknown_objective(files: dict[str, Path], tmp_path: Path) -> None:
    result = run_script(
        "eval", "--kb", str(files["kb"]), "--queries", str(files["queries"]),
        "--objective", "precision",
    )  # fmt: skip

    assert result.returncode == 2
    assert "coverage" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_with_a_malformed_queries_file_exits_1(files: dict[str, Path], tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"text": "fine", "expected": null}\n{"expected": "sign-up"}\n')

    result = run_script("eval", "--kb", str(files["kb"]), "--queries", str(queries), "--json")

    assert result.returncode == 1
    assert f"{queries}:2" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# kb ingest / stats / calibrate -----------------------------------------------------------------


@pytest.mark.model
def test_kb_ingest_then_stats(runner: CliRunner, built: Path, files: dict[str, Path]) -> None:
    figures = stats(runner, built)

    assert figures["entries"] == len(SMALL_KB_IDS)
    assert figures["directory"] == str(built / "index")
    assert figures["sources"] == [str(files["kb"].resolve())]
    assert figures["threshold_origin"] == "derived"
    assert figures["threshold"] == figures["derived_threshold"]
    assert isinstance(figures["threshold"], float)
    assert 0.0 < figures["threshold"] < 1.0
    assert (built / "index" / "manifest.json").exists()


@pytest.mark.model
def test_kb_ingest_again_reuses_every_vector(
    runner: CliRunner, data_copy: Path, files: dict[str, Path]
) -> None:
    result = runner.invoke(app, ["kb", "ingest", str(files["kb"])], env=cli_env(data_copy))

    assert result.exit_code == 0, result.output
    assert "0 texts embedded" in " ".join(result.stdout.split())
    assert stats(runner, data_copy)["entries"] == len(SMALL_KB_IDS)


@pytest.mark.model
def test_kb_stats_reports_a_configured_threshold(runner: CliRunner, built: Path) -> None:
    env = {**cli_env(built), "SUPPORTBOT_THRESHOLD": "0.42"}
    result = runner.invoke(app, ["kb", "stats", "--json"], env=env)

    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["threshold"], figures["threshold_origin"]) == (0.42, "configured")


MALFORMED = [
    pytest.param('{"id": "broken", "answer": ', "invalid JSON", id="bad-json"),
    pytest.param('{"id": "no-answer", "question": "Where?"}', "answer", id="missing-answer"),
    pytest.param('{"id": 7, "answer": "x"}', "id", id="id-number"),
]


@pytest.mark.parametrize(("bad_line", "message"), MALFORMED)
def test_kb_ingest_malformed_line_exits_1_and_leaves_the_index(
    data_copy: Path, files: dict[str, Path], tmp_path: Path, bad_line: str, message: str
) -> None:
    good = files["kb"].read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*good[:3], bad_line, *good[3:]]) + "\n", encoding="utf-8")
    before = snapshot(data_copy)

    result = run_script("kb", "ingest", str(bad), data_dir=data_copy)

    assert result.returncode == 1
    assert f"{bad}:4" in result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(data_copy) == before


def test_kb_ingest_error_names_a_path_with_brackets(tmp_path: Path) -> None:
    folder = tmp_path / "kb[old]"
    folder.mkdir()
    bad = folder / "faq.jsonl"
    bad.write_text('{"id": "x", "answer": \n', encoding="utf-8")

    result = run_script("kb", "ingest", str(bad), data_dir=tmp_path / "data")

    assert result.returncode == 1
    assert f"{bad}:1" in result.stderr


def test_kb_ingest_missing_path_exits_1(tmp_path: Path) -> None:
    result = run_script("kb", "ingest", str(tmp_path / "nope.jsonl"), data_dir=tmp_path / "data")

    assert result.returncode == 1
    assert "nope.jsonl" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "index" / "manifest.json").exists()


def test_kb_stats_without_an_index_exits_1(tmp_path: Path) -> None:
    result = run_script("kb", "stats", "--json", data_dir=tmp_path / "empty")

    assert result.returncode == 1
    assert "supportbot kb ingest" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.model
def test_kb_calibrate_then_stats_reports_calibrated(
    runner: CliRunner, data_copy: Path, files: dict[str, Path]
) -> None:
    result = runner.invoke(
        app, ["kb", "calibrate", "--queries", str(files["queries"])], env=cli_env(data_copy)
    )

    assert result.exit_code == 0, result.output
    assert "Calibrated" in result.stdout
    calibration = json.loads((data_copy / "index" / "calibration.json").read_text())
    assert calibration["queries_file"] == str(files["queries"])
    assert (calibration["objective"], calibration["objective_setting"]) == ("recall", 0.025)
    assert calibration["origin"] == "calibrated"
    assert calibration["samples"] == len(QUERIES)
    figures = stats(runner, data_copy)
    assert figures["threshold_origin"] == "calibrated"
    assert figures["threshold_objective"] == "recall (0.025)"
    assert figures["threshold"] == calibration["threshold"]
    assert 0.0 <= figures["threshold"] <= 1.0  # type: ignore[operator]


# data import-intents ---------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        writer.writerows(rows)


@pytest.fixture
def intents_folder(tmp_path: Path) -> Path:
    """A tiny data set shaped like BANKING77 plus an out-of-scope split."""
    root = tmp_path / "intents"
    root.mkdir()
    _write_csv(
        root / "train.csv",
        [
            ("my card hasn't arrived", "card_arrival"),
            ("when will my card come", "card_arrival"),
            ("my card hasn't arrived", "card_arrival"),
            ("how do I top up", "top_up"),
            ("add money to my account", "top_up"),
        ],
    )
    _write_csv(root / "test.csv", [("card still not here", "card_arrival"), ("top up?", "top_up")])
    for split, texts, labels in (
        ("train", ["lost my card", "freeze my card"], ["lost_card", "freeze"]),
        ("valid", ["card gone missing"], ["lost_card"]),
    ):
        folder = root / "oos" / split
        folder.mkdir(parents=True)
        (folder / "seq.in").write_text("\n".join(texts) + "\n", encoding="utf-8")
        (folder / "label").write_text("\n".join(labels) + "\n", encoding="utf-8")
    ood = root / "oos" / "ood-oos" / "valid"
    ood.mkdir(parents=True)
    (ood / "seq.in").write_text("what's the weather\n", encoding="utf-8")
    return root


def test_data_import_intents(runner: CliRunner, intents_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    result = runner.invoke(
        app,
        ["data", "import-intents", str(intents_folder), "--out", str(out)],
        env=cli_env(tmp_path),
    )

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "kb.jsonl",
        "oos-kb.jsonl",
        "oos-valid.jsonl",
        "test.jsonl",
    ]
    entries = {entry.id: entry for entry in load_sources([out / "kb.jsonl"])}
    assert set(entries) == {"card_arrival", "top_up"}
    assert entries["card_arrival"].title == "Card arrival"
    assert entries["card_arrival"].examples == ("my card hasn't arrived", "when will my card come")
    assert [(q.text, q.expected) for q in load_queries(out / "test.jsonl")] == [
        ("card still not here", "card_arrival"),
        ("top up?", "top_up"),
    ]
    assert {e.id for e in load_sources([out / "oos-kb.jsonl"])} == {"lost_card", "freeze"}
    assert [(q.text, q.expected) for q in load_queries(out / "oos-valid.jsonl")] == [
        ("card gone missing", "lost_card"),
        ("what's the weather", None),
    ]
    for name in ("kb.jsonl", "test.jsonl", "oos-kb.jsonl", "oos-valid.jsonl"):
        assert name in result.stdout


def test_data_import_intents_on_an_empty_folder_exits_1(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    result = run_script(
        "data", "import-intents", str(tmp_path / "empty"), "--out", str(tmp_path / "o")
    )

    assert result.returncode == 1
    assert "no intent data found" in result.stderr
    assert "Traceback" not in result.stderr
