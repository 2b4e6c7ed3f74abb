"""Tests for knowledge.embeddings: the real all-MiniLM-L6-v2 model, and lazy heavy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.errors import KnowledgeError
from knowledge.embeddings import Embedder, model_fingerprint
from tests.support import REPO, run_python

TEXTS = [
    "How do I reset my password?",
    "I forgot my password and can't log in",
    "How much does the Business plan cost?",
    "Can I export a note as a PDF?",
]


# --- the real model ---------------------------------------------------------------------------


@pytest.mark.model
def test_vectors_are_float32_unit_length_and_384_wide(embedder: Embedder) -> None:
    vectors = embedder.encode(TEXTS)
    assert embedder.dimension == 384
    assert vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_same_text_gives_the_same_vector(embedder: Embedder) -> None:
    first = embedder.encode([TEXTS[0]])
    again = embedder.encode([TEXTS[0]])
    np.testing.assert_allclose(first, again, atol=1e-6)
    twice = embedder.encode([TEXTS[0], TEXTS[0]])
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


@pytest.mark.model
def test_batch_encoding_matches_one_at_a_time(embedder: Embedder) -> None:
    batch = embedder.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(batch[i], embedder.encode([text])[0], atol=1e-5)


@pytest.mark.model
def test_encode_with_progress_matches_encode(embedder: Embedder) -> None:
    np.testing.assert_allclose(
        embedder.encode_with_progress(TEXTS), embedder.encode(TEXTS), atol=1e-5
    )


@pytest.mark.model
def test_similar_texts_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    reset, forgot, business, pdf = embedder.encode(TEXTS)
    assert float(reset @ forgot) > float(reset @ business) + 0.2
    assert float(reset @ forgot) > float(reset @ pdf) + 0.2
    assert not np.allclose(reset, forgot)


def test_empty_input_gives_an_empty_matrix_of_the_right_width(embedder: Embedder) -> None:
    empty = embedder.encode([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32


def test_fingerprint_is_stable_and_short(embedder: Embedder) -> None:
    assert embedder.fingerprint == model_fingerprint(embedder.model_path)
    assert len(embedder.fingerprint) == 16
    int(embedder.fingerprint, 16)  # hexadecimal


# --- bad model folders -----------------------------------------------------------------------


def test_a_folder_without_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a model")
    with pytest.raises(KnowledgeError, match="not a sentence-transformers model directory"):
        Embedder(tmp_path)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match=r"no modules\.json or config\.json"):
        Embedder(str(tmp_path / "nowhere"))


def test_fingerprint_changes_with_the_model_config(tmp_path: Path) -> None:
    a = tmp_path / "model"
    a.mkdir()
    (a / "config.json").write_text('{"hidden_size": 8}')
    before = model_fingerprint(a)
    (a / "config.json").write_text('{"hidden_size": 16}')
    assert model_fingerprint(a) != before
    assert Embedder(a).dimension == 16  # read from config.json, no model load


# --- nothing heavy at import time ------------------------------------------------------------


def test_importing_embeddings_does_not_import_torch() -> None:
    result = run_python(
        "import knowledge.embeddings, sys; "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    assert result.returncode == 0, result.stderr


def test_cli_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['supportbot', '--help']\n"
        "from bot.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'faiss') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "kb" in result.stdout  # the help text was printed


def test_supportbot_help_import_trace_has_no_torch() -> None:
    script = Path(sys.executable).parent / "supportbot"
    target = [str(script)] if script.exists() else ["-m", "bot.cli"]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *target, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "typer" in imported  # the import trace is really there
    assert not [m for m in imported if m.split(".")[0] in {"torch", "sentence_transformers"}]
