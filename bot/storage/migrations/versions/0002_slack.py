"""Platform installations (OAuth), OAuth states and leases (one Socket Mode link per app).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00+00:00

Written by hand to run on SQLite and PostgreSQL alike; the names follow
`bot.storage.tables.NAMING_CONVENTION`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the installation, oauth_state and lease tables."""
    op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("client_id", sa.String(), nullable=False),
        sa.Column("enterprise_id", sa.String(), nullable=False),
        sa.Column("team_id", sa.String(), nullable=False),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("has_bot", sa.Boolean(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_installation"),
    )
    op.create_index(
        "ix_installation_workspace",
        "installation",
        ["platform", "client_id", "enterprise_id", "team_id"],
    )
    op.create_table(
        "oauth_state",
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("platform", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state", name="pk_oauth_state"),
    )
    op.create_table(
        "lease",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_lease"),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("lease")
    op.drop_table("oauth_state")
    op.drop_index("ix_installation_workspace", table_name="installation")
    op.drop_table("installation")
