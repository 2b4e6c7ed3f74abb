"""A training loss that also teaches the model which entry a question belongs to.

`MultipleNegativesRankingLoss` only compares the texts of one batch: each question must land
nearer its partner than the batch's other 63 rows. A knowledge base with many examples per entry
says more than that: *every* example of an entry should sit near the others, and apart from
*every* other entry. `EntryProxyLoss` adds that as a normalized-softmax classification over the
entries (proxy-based metric learning, as in "Classification is a Strong Baseline for Deep Metric
Learning", Zhai & Wu, 2019): each entry has a learned unit vector, its *proxy*, started at the
mean of its texts under the model being trained, and each labelled text is pulled towards its
entry's proxy and pushed from the other proxies by a cross-entropy over scaled cosine
similarities. The cosine geometry is the one retrieval uses, so the ranking and the head
(`knowledge.head`) both profit. The proxies are thrown away after training; the saved model is a
plain sentence-transformers model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["NO_ENTRY", "EntryProxyLoss"]

#: The label of a row that belongs to no entry (an exported pair): it only ranks.
NO_ENTRY = -1


class EntryProxyLoss(nn.Module):
    """The ranking loss plus `weight` times the entry classification of anchors and positives.

    Rows carry their entry's index as ``label`` (`NO_ENTRY` for none); a row's positive belongs to
    the anchor's entry (`training.finetune.kb_pairs` builds them so).
    """

    def __init__(
        self,
        model: SentenceTransformer,
        proxies: Tensor,
        *,
        scale: float = 20.0,
        weight: float = 1.0,
    ) -> None:
        from sentence_transformers.sentence_transformer.losses import (
            MultipleNegativesRankingLoss,
        )

        super().__init__()
        self.model = model
        self.ranking = MultipleNegativesRankingLoss(model)
        self.proxies = nn.Parameter(functional.normalize(proxies.detach().clone(), dim=-1))
        self.scale = scale
        self.weight = weight

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = [self.model(f)["sentence_embedding"] for f in sentence_features]
        ranking = self.ranking.compute_loss_from_embeddings(embeddings, labels)
        texts = torch.cat(embeddings[:2])
        entries = torch.cat([labels, labels]).long()
        keep = entries != NO_ENTRY
        if not bool(keep.any()):
            return ranking
        logits = (
            self.scale
            * functional.normalize(texts[keep], dim=-1)
            @ functional.normalize(self.proxies, dim=-1).T
        )
        return ranking + self.weight * functional.cross_entropy(logits, entries[keep])
