"""The relay outbox's expiring claim: `claimed_at` on `relay_outbox`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 19:10:00+00:00

Written by hand to run on SQLite (batch mode) and PostgreSQL alike. A message is now claimed as
"posting" (with `claimed_at`) and marked "sent" once posted, so a claim whose process died is
taken again. Rows written before this revision keep their status: a "sent" row stays sent (it
was claimed under the old rule and cannot be told apart from a posted one).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add relay_outbox.claimed_at."""
    with op.batch_alter_table("relay_outbox") as batch:
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop relay_outbox.claimed_at; a message being posted counts as sent, as it did then."""
    op.execute("UPDATE relay_outbox SET status = 'sent' WHERE status = 'posting'")
    with op.batch_alter_table("relay_outbox") as batch:
        batch.drop_column("claimed_at")
