"""A conversation's next-message context vector, kept for whichever worker answers it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 17:30:00+00:00

Written by hand to run on SQLite (batch mode) and PostgreSQL alike. `Store.keep_context`
writes the three columns; a conversation without them simply has no vector kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add conversation.context_row, context_key and context_vector."""
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("context_row", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("context_key", sa.String(), nullable=True))
        batch.add_column(sa.Column("context_vector", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Drop them: the vectors are only a head start, rebuilt by the next turns."""
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("context_vector")
        batch.drop_column("context_key")
        batch.drop_column("context_row")
