"""The relay outbox's back-off on the row: `attempts` and `next_attempt_at` on `relay_outbox`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 18:10:00+00:00

Written by hand to run on SQLite (batch mode) and PostgreSQL alike. Rows queued before this
revision get no failed attempts and no wait, so they are tried at the next round, as a restarted
process tried them before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add relay_outbox.attempts and relay_outbox.next_attempt_at."""
    with op.batch_alter_table("relay_outbox") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop relay_outbox.next_attempt_at and relay_outbox.attempts."""
    with op.batch_alter_table("relay_outbox") as batch:
        batch.drop_column("next_attempt_at")
        batch.drop_column("attempts")
