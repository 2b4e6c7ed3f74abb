"""The entry classification added to the ranking loss (`training.losses.EntryProxyLoss`), on the
real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from knowledge.base import units_of
from knowledge.embeddings import default_model_path
from knowledge.types import DECLINE_TAG, Entry
from training.finetune import (
    TrainConfig,
    TrainingPair,
    _dataset,
    _entry_proxies,
    decline_rows,
    kb_pairs,
    train,
)
from training.losses import NO_ENTRY, EntryProxyLoss

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[2]
SAMPLE_FAQ = REPO / "knowledge" / "sample" / "faq.jsonl"

ROWS = [
    ("How do I reset my password?", "I forgot my password"),
    ("Can I pay by invoice?", "Do you accept invoices?"),
    ("Where do I change my email?", "How can I update my email address?"),
]


@pytest.fixture(scope="module")
def model() -> object:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_path()), device="cpu", local_files_only=True)


def _features(model: object, texts: list[str]) -> dict[str, torch.Tensor]:
    return model.tokenize(texts)  # type: ignore[attr-defined, no-any-return]


def _loss(
    model: object, labels: list[int], weight: float = 1.0
) -> tuple[EntryProxyLoss, torch.Tensor]:
    torch.manual_seed(0)
    proxies = torch.randn(len(ROWS), 384)
    loss = EntryProxyLoss(model, proxies, weight=weight)  # type: ignore[arg-type]
    features = [_features(model, [a for a, _ in ROWS]), _features(model, [p for _, p in ROWS])]
    return loss, loss(features, torch.tensor(labels))


def test_the_loss_is_the_ranking_loss_plus_the_weighted_entry_classification(model: object) -> None:
    loss, total = _loss(model, [0, 1, 2], weight=0.5)
    with torch.no_grad():
        anchors = model.encode([a for a, _ in ROWS], convert_to_tensor=True)  # type: ignore[attr-defined]
        positives = model.encode([p for _, p in ROWS], convert_to_tensor=True)  # type: ignore[attr-defined]
        similarities = 20 * functional.normalize(anchors) @ functional.normalize(positives).T
        ranking = functional.cross_entropy(similarities, torch.arange(3))
        texts = functional.normalize(torch.cat([anchors, positives]))
        logits = 20 * texts @ functional.normalize(loss.proxies).T
        classification = functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert total.item() == pytest.approx((ranking + 0.5 * classification).item(), rel=1e-4)


def test_rows_of_no_entry_only_rank(model: object) -> None:
    _, unlabelled = _loss(model, [NO_ENTRY] * 3)
    _, unweighted = _loss(model, [0, 1, 2], weight=0.0)
    assert unlabelled.item() == pytest.approx(unweighted.item(), rel=1e-5)


def test_gradients_reach_the_encoder_and_the_proxies(model: object) -> None:
    loss, total = _loss(model, [0, 1, NO_ENTRY])
    total.backward()
    assert loss.proxies.grad is not None
    # Every proxy is pulled towards its entry's texts or pushed from the others'.
    assert bool((loss.proxies.grad.abs().sum(dim=1) > 0).all())
    encoder = next(p for p in loss.model.parameters() if p.requires_grad)  # type: ignore[attr-defined]
    assert encoder.grad is not None and encoder.grad.abs().sum() > 0
    loss.model.zero_grad()  # type: ignore[attr-defined]


def test_rows_are_labelled_with_their_entry_and_proxies_start_at_its_mean(
    model: object,
) -> None:
    entries = [
        Entry(f"e{i}", f"answer {i}", f"Question {i}?", tuple(f"q{i} {j}" for j in range(4)))
        for i in range(3)
    ] + [Entry("oos", "-", None, ("not ours", "nor this"), tags=(DECLINE_TAG,))]
    proxies = _entry_proxies(model, entries, progress=False)  # type: ignore[arg-type]
    labels = {entry.id: index for index, entry in enumerate(entries)}
    rows = [
        *kb_pairs(entries, seed=1),
        *decline_rows(entries),
        TrainingPair("an exported question", "its answer"),
        # An exported pair whose question is also one of an entry's: it still names no entry.
        TrainingPair("q1 0", "the agent's answer"),
    ]
    dataset = _dataset(rows, labels)
    for row in dataset:
        if row["positive"] in ("its answer", "the agent's answer"):
            assert row["label"] == NO_ENTRY
        elif row["anchor"] in ("not ours", "nor this"):
            assert row["positive"] == row["anchor"] and row["label"] == 3
        else:  # "q1 2" and "Question 1?" belong to entry 1
            assert row["label"] == int(re.findall(r"\d", row["anchor"])[0])
    assert "label" not in _dataset(rows).column_names
    texts = [t for _, t in units_of(entries[1])]
    mean = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).mean(0)  # type: ignore[attr-defined]
    assert torch.allclose(proxies[1], functional.normalize(mean, dim=0), atol=1e-5)
    assert torch.allclose(proxies.norm(dim=1), torch.ones(len(entries)), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("with_kb", [True, False], ids=["kb-and-pairs", "pairs-only"])
def test_a_fine_tune_with_the_entry_loss_trains(tmp_path: Path, with_kb: bool) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"anchor": f"{question} ({i})", "positive": answer}) + "\n"
            for i in range(4)
            for question, answer in ROWS
        )
    )
    config = TrainConfig(max_steps=2, batch_size=8, holdout=0.2, entry_loss=1.0)
    kbs = [SAMPLE_FAQ] if with_kb else []
    said: list[str] = []
    report = train(
        kbs, [pairs], tmp_path / "models", config=config, progress=False, on_status=said.append
    )
    (cycle,) = report.cycles
    assert cycle.steps == 2
    assert cycle.train_rows > 0
    losses = "ranking + entry loss" if with_kb else "ranking loss,"
    assert any(f"training ({losses}" in line for line in said), said
