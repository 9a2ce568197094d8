"""Drop the index of integration_merchants on merchant_id: it served no read.

Every read of an integration's merchants goes by integration (`ix_integration_merchants_in_order`),
and cbstop never deletes or re-keys a merchant, which is all an index on the referencing
column of a foreign key is for. Each create paid for it: one more index entry per merchant
row (issue 14's review of the write path, docs/performance.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_integration_merchants_merchant_id", table_name="integration_merchants")


def downgrade() -> None:
    op.create_index(
        "ix_integration_merchants_merchant_id", "integration_merchants", ["merchant_id"]
    )
