"""Fine-tuning the retriever (`training.finetune`): a real tiny fine-tune of the bundled model.

One real fine-tune on the sample knowledge base (a few steps, the real all-MiniLM-L6-v2) is
shared by the module. The promotion rule is checked both ways with an injected evaluation, so a
cycle's fate does not hang on a few held-out questions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import KnowledgeError
from knowledge.embeddings import VERSION_FILE, Embedder, default_model_path, resolve_model_path
from knowledge.types import DECLINE_TAG, Entry
from training.errors import TrainingDataError
from training.evaluate import Evaluation, HeldOutPair, Metrics, evaluate_pairs
from training.finetune import (
    ModelRegistry,
    TrainConfig,
    TrainingData,
    TrainReport,
    distinct_batches,
    kb_pairs,
    load_pairs,
    mine_hard_negatives,
    split_kb,
    split_pairs,
    train,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_FAQ = REPO / "knowledge" / "sample" / "faq.jsonl"
SAMPLE_QUERIES = REPO / "knowledge" / "sample" / "queries.jsonl"
TINY = TrainConfig(max_steps=4, batch_size=16, holdout=0.2, learning_rate=5e-5)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainReport]:
    """The sample knowledge base, fine-tuned for a few real steps into a versioned folder."""
    out = tmp_path_factory.mktemp("models") / "models"
    report = train([SAMPLE_FAQ], [], out, config=TINY, progress=False)
    return out, report


def _fixed(scores: dict[str, float]) -> Callable[[Embedder, TrainingData], Evaluation]:
    """An evaluation that scores the base model and every candidate as told (by folder kind)."""

    def evaluate(embedder: Embedder, data: TrainingData) -> Evaluation:
        path = embedder.model_path
        kind = "candidate" if path.name.startswith(".candidate-") else "current"
        r1 = scores[kind]
        metrics = Metrics(10, r1, r1, r1)
        return Evaluation(metrics, kb=metrics)

    return evaluate


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    """A small exported pairs file: questions with their answers, some with a wrong answer."""
    topics = [
        ("How do I reset my password?", "Use the Forgot password link on the sign-in page."),
        ("Can I pay by invoice?", "Yearly Business plans can be paid by invoice."),
        ("How do I export a note as PDF?", "Open the note, then File > Export > PDF."),
        ("Where do I change my email?", "Settings > Account > Email, then confirm the link."),
        ("Is there a student discount?", "Students get 50% off Plus with a school address."),
        ("How do I delete my account?", "Settings > Account > Delete account removes it."),
    ]
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as fh:
        for i, (question, answer) in enumerate(topics):
            row = {"anchor": question, "positive": answer}
            if i % 2:
                row["negative"] = topics[(i + 1) % len(topics)][1]
            fh.write(json.dumps(row) + "\n")
            fh.write(
                json.dumps({"anchor": question.lower() + " please", "positive": answer}) + "\n"
            )
    return path


# -- the real fine-tune -----------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_a_real_fine_tune_writes_a_versioned_model_that_the_bot_resolves(
    trained: tuple[Path, TrainReport],
) -> None:
    out, report = trained
    (cycle,) = report.cycles
    assert cycle.steps == TINY.max_steps
    assert cycle.before.kb is not None and cycle.before.kb.queries > 0
    # Seeded: these few steps lift the held-out recall on the sample knowledge base.
    assert cycle.promoted, (cycle.before.overall, cycle.after.overall)
    assert cycle.after.overall.beats(cycle.before.overall)
    assert report.current == "v1" and report.model_path == out / "v1"

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["current"] == "v1"
    assert manifest["base_model"] == str(default_model_path())
    (version,) = manifest["versions"]
    assert version["metrics"]["overall"]["recall_at_1"] == round(cycle.after.overall.recall_at_1, 4)
    assert set(version["data"]) == {str(SAMPLE_FAQ)}
    assert version["base_model"] == str(default_model_path())
    assert json.loads((out / "v1" / VERSION_FILE).read_text())["version"] == "v1"
    assert [c["promoted"] for c in manifest["cycles"]] == [True]

    # New weights, the same serving limit as the base model (training used short texts).
    base = default_model_path()
    assert _sha(out / "v1" / "model.safetensors") != _sha(base / "model.safetensors")
    tuned = Embedder(out)
    assert tuned.model.max_seq_length == Embedder().model.max_seq_length == 256

    # The folder stands for its current version wherever a model is accepted.
    assert resolve_model_path(out) == out / "v1"
    assert tuned.model_path == out / "v1"
    assert tuned.fingerprint != Embedder().fingerprint


@pytest.mark.model
@pytest.mark.slow
def test_eval_accepts_the_models_folder(trained: tuple[Path, TrainReport]) -> None:
    out, _ = trained
    result = CliRunner().invoke(
        app,
        ["eval", "--kb", str(SAMPLE_FAQ), "--queries", str(SAMPLE_QUERIES), "--model", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "recall_at_1" in result.output


@pytest.mark.model
@pytest.mark.slow
def test_the_bot_rebuilds_its_index_when_the_model_changes(
    trained: tuple[Path, TrainReport], data_dir: Path
) -> None:
    from bot.service import open_kb
    from bot.settings import load_settings

    out, _ = trained
    index = data_dir / "index"
    before = json.loads((index / "manifest.json").read_text())
    (index / "calibration.json").write_text(json.dumps({"threshold": 0.5, "origin": "old"}))

    kb = open_kb(load_settings(data_dir=data_dir, model=out))

    after = json.loads((index / "manifest.json").read_text())
    assert before["model"] == Embedder().fingerprint
    assert after["model"] == Embedder(out).fingerprint != before["model"]
    assert after["entries"] == before["entries"] and after["units"] == before["units"]
    assert after["derived_threshold"] is not None
    # The old model's calibration no longer applies; it is kept aside, not used.
    assert kb.calibration() is None
    assert json.loads((index / "calibration.stale.json").read_text())["origin"] == "old"
    # The rebuilt index answers with the new model's vectors, and a second start reuses it.
    assert kb.loaded and not kb.model_changed
    assert open_kb(load_settings(data_dir=data_dir, model=out)).manifest == kb.manifest


# -- the promotion rule, both ways --------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_a_cycle_that_does_not_beat_the_current_model_is_not_promoted(
    tmp_path: Path, pairs_file: Path
) -> None:
    out = tmp_path / "models"
    seen: list[str] = []
    report = train(
        [],
        [pairs_file],
        out,
        config=TrainConfig(cycles=2, max_steps=1, batch_size=4, holdout=0.3),
        evaluate=_fixed({"current": 0.8, "candidate": 0.7}),
        on_status=seen.append,
        progress=False,
    )
    assert [c.promoted for c in report.cycles] == [False, False]
    assert report.current is None and report.promoted == ()
    assert report.model_path == default_model_path()
    # A rejected cycle halves the learning rate of the next one.
    assert [c.learning_rate for c in report.cycles] == [5e-5, 2.5e-5]
    assert not [p for p in out.iterdir() if p.is_dir()], "no version folder, no leftovers"
    manifest = ModelRegistry(out).manifest()
    assert manifest["current"] is None and manifest["versions"] == []
    assert [c["promoted"] for c in manifest["cycles"]] == [False, False]
    with pytest.raises(KnowledgeError, match="no promoted model yet"):
        Embedder(out)
    assert any("held-out pairs" in line for line in seen)


@pytest.mark.model
@pytest.mark.slow
def test_a_better_cycle_is_promoted_as_the_next_version(
    trained: tuple[Path, TrainReport], tmp_path: Path, pairs_file: Path
) -> None:
    out = tmp_path / "models"
    shutil.copytree(trained[0], out)
    report = train(
        [SAMPLE_FAQ],
        [pairs_file],
        out,
        config=TrainConfig(max_steps=1, batch_size=8, holdout=0.2),
        evaluate=_fixed({"current": 0.5, "candidate": 0.6}),
        progress=False,
    )
    assert report.promoted == ("v2",)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["current"] == "v2"
    assert [v["version"] for v in manifest["versions"]] == ["v1", "v2"]
    # Training continued from the version in service, not from the base model.
    assert manifest["versions"][1]["parent"] == str(out / "v1")
    assert resolve_model_path(out) == out / "v2"
    assert len(manifest["versions"][1]["data"]) == 2


# -- data, splits and batches (no model) ------------------------------------------------------


def test_hard_negatives_are_near_misses_from_other_entries() -> None:
    """Each question's negative belongs to another entry and is among its nearest ones."""
    entries = [
        Entry(id="card-lost", title="Lost card", answer="Freeze it in the app.",
              examples=("I lost my card", "my card is missing", "where is my card gone")),
        Entry(id="card-arrival", title="Card arrival", answer="Cards arrive in 5 days.",
              examples=("my new card has not arrived", "when will my card come", "card delivery")),
        Entry(id="fees", title="Fees", answer="Transfers are free.",
              examples=("do transfers cost anything", "what are your fees", "is there a charge")),
    ]  # fmt: skip
    embedder = Embedder(default_model_path())
    negatives = mine_hard_negatives(embedder, entries, seed=1, pool=1)
    owner = {ex.casefold(): e.id for e in entries for ex in e.examples}
    assert set(negatives) == set(owner)
    for anchor, negative in negatives.items():
        assert owner[negative.casefold()] != owner[anchor]
    # The nearest other-entry question of a lost card is about the card's arrival, not fees.
    assert owner[negatives["i lost my card"].casefold()] == "card-arrival"
    # Two questions filed under two entries but nearly the same are never each other's negative.
    twins = [
        Entry(id="a", title="A", answer="a", examples=("How do I close my account?", "bye")),
        Entry(id="b", title="B", answer="b", examples=("how do i close my account", "hello")),
    ]
    assert mine_hard_negatives(embedder, twins, seed=1).get("how do i close my account?") != (
        "how do i close my account"
    )


def test_an_entry_that_declines_is_no_positive_and_lends_no_held_out_question() -> None:
    topics = [
        Entry(f"e{i}", f"a{i}", f"Q{i}", tuple(f"q{i} {j}" for j in range(6))) for i in range(3)
    ]
    declining = Entry(
        "out-of-scope", "-", None, tuple(f"other {j}" for j in range(6)), tags=(DECLINE_TAG,)
    )
    kept, held = split_kb([*topics, declining], 0.5, seed=1)
    assert held and all(q.entry_id != "out-of-scope" for q in held)
    trained = {t for p in kb_pairs(kept, 1) for t in (p.anchor, p.positive)}
    assert not any(t.startswith("other") for t in trained)


def test_a_fine_tune_with_hard_negatives_trains_on_triplets(tmp_path: Path) -> None:
    config = TrainConfig(max_steps=2, batch_size=16, holdout=0.2, hard_negatives=True)
    report = train([SAMPLE_FAQ], [], tmp_path / "models", config=config, progress=False)
    (cycle,) = report.cycles
    assert cycle.steps == 2
    assert cycle.train_rows > 0


def test_kb_split_keeps_held_out_questions_out_of_training() -> None:
    entries = [
        Entry(f"e{i}", f"answer {i}", f"Question {i}", tuple(f"q{i} {j}" for j in range(10)))
        for i in range(5)
    ] + [Entry("few", "a", "Few?", ("only one", "only two"))]
    kept, held = split_kb(entries, 0.2, seed=1)
    assert len(held) == 5 * 2  # 20% of ten examples each; "few" lends none
    held_texts = {q.text for q in held}
    trained_texts = {t for p in kb_pairs(kept, 1) for t in (p.anchor, p.positive)}
    assert not held_texts & trained_texts
    assert {q.entry_id for q in held} == {f"e{i}" for i in range(5)}
    assert split_kb(entries, 0.2, seed=1) == (kept, held), "seeded"
    _, capped = split_kb(entries, 0.2, seed=1, max_holdout=5)
    assert len(capped) == 5


def test_pairs_split_by_anchor_never_leaks(pairs_file: Path) -> None:
    pairs = load_pairs(pairs_file)
    assert len(pairs) == 12 and sum(p.negative is not None for p in pairs) == 3
    train_rows, held = split_pairs(pairs, 0.3, seed=7)
    assert held
    held_anchors = {p.anchor.casefold() for p in held}
    assert not held_anchors & {p.anchor.casefold() for p in train_rows}
    assert not held_anchors & {p.positive.casefold() for p in train_rows}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2: not valid JSON"),
        ('["a", "b"]', "line 2: each line must be a JSON object"),
        ('{"anchor": "", "positive": "x"}', 'line 2: "anchor" must be a non-empty string'),
        ('{"anchor": "q"}', 'line 2: "positive" must be a non-empty string'),
        ('{"anchor": "q", "positive": "a", "negative": 3}', '"negative" must be a string'),
    ],
)
def test_malformed_pairs_name_their_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"anchor": "q", "positive": "a"}\n' + line + "\n")
    with pytest.raises(TrainingDataError, match=message):
        load_pairs(path)


def test_bad_settings_and_missing_data_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="--batch-size must be at least 2"):
        train([], [], tmp_path, config=TrainConfig(batch_size=1))
    with pytest.raises(TrainingDataError, match="--entry-loss must be 0"):
        train([], [], tmp_path, config=TrainConfig(entry_loss=-1))
    with pytest.raises(TrainingDataError, match="give --kb and/or --pairs"):
        train([], [], tmp_path)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"id": "a", "answer": "b", "examples": ["c"]}) + "\n")
    with pytest.raises(TrainingDataError, match="too little data to hold any out"):
        train([tiny], [], tmp_path / "out")


def test_batches_never_hold_one_entry_twice_and_group_alike_lengths() -> None:
    keys = [frozenset({f"entry{i % 9}"}) for i in range(300)]
    lengths = [(i * 37) % 101 for i in range(300)]
    batches = distinct_batches(keys, 8, seed=3, lengths=lengths)
    assert sorted(row for batch in batches for row in batch) == list(range(300))
    for batch in batches:
        assert len({next(iter(keys[row])) for row in batch}) == len(batch) <= 8
    assert distinct_batches(keys, 8, seed=3, lengths=lengths) == batches, "seeded"
    # Batches of alike lengths pad less than random ones.
    padded = sum(max(lengths[r] for r in b) * len(b) for b in batches)
    plain = distinct_batches(keys, 8, seed=3)
    assert padded < sum(max(lengths[r] for r in b) * len(b) for b in plain)


def test_metrics_and_the_promotion_rule() -> None:
    m = Metrics.from_ranks([1, 2, None, 1])
    assert (m.queries, m.recall_at_1, m.recall_at_5, m.mrr) == (4, 0.5, 0.75, 0.625)
    assert Metrics(4, 0.6, 0.9, 0.7).beats(Metrics(4, 0.5, 0.9, 0.9))
    assert Metrics(4, 0.5, 0.9, 0.71).beats(Metrics(4, 0.5, 0.9, 0.7))
    assert not Metrics(4, 0.5, 0.9, 0.7).beats(Metrics(4, 0.5, 0.9, 0.7))
    assert not Metrics(4, 0.4, 0.9, 0.99).beats(Metrics(4, 0.5, 0.9, 0.1))


@pytest.mark.model
def test_pairs_evaluation_ranks_each_anchor_against_all_held_out_answers(
    embedder: Embedder,
) -> None:
    pairs = [
        HeldOutPair("How do I reset my password?", "Use Forgot password on the sign-in page."),
        HeldOutPair("Can I pay by invoice?", "Business plans can be paid by invoice yearly."),
        HeldOutPair("Export a note to PDF", "File > Export > PDF saves the note as a PDF."),
    ]
    metrics = evaluate_pairs(embedder, pairs)
    assert metrics.queries == 3 and metrics.recall_at_1 == 1.0
    swapped = [HeldOutPair(p.anchor, pairs[(i + 1) % 3].positive) for i, p in enumerate(pairs)]
    assert evaluate_pairs(embedder, swapped).recall_at_1 == 0.0


def test_a_models_folder_without_its_version_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"current": "v3"}))
    with pytest.raises(KnowledgeError, match="names version 'v3'"):
        resolve_model_path(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(KnowledgeError, match="unreadable"):
        resolve_model_path(tmp_path)


def test_the_train_command_reports_bad_settings_before_loading_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", "--kb", str(SAMPLE_FAQ), "--out", str(tmp_path), "--batch-size", "1"]
    )
    assert isinstance(result.exception, TrainingDataError)
    assert "--batch-size must be at least 2" in str(result.exception)
    assert not list(tmp_path.iterdir())
