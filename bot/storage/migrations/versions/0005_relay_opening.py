"""When a process took a relay card's opening, so a dead process's opening can be re-taken.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 10:00:00+00:00

Written by hand to run on SQLite (batch mode) and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add relay_link.opening_at."""
    with op.batch_alter_table("relay_link") as batch:
        batch.add_column(sa.Column("opening_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop relay_link.opening_at."""
    with op.batch_alter_table("relay_link") as batch:
        batch.drop_column("opening_at")
