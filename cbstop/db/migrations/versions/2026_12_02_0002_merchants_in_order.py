"""An index that covers reading an integration's merchants in order.

Every representation lists merchant_ids by position; the unique (integration_id,
merchant_id) index made that a heap visit and a sort per integration (20 per list page).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_integration_merchants_in_order",
        "integration_merchants",
        ["integration_id", "position", "merchant_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_integration_merchants_in_order", table_name="integration_merchants")
