"""The audit trail and webhooks: events, their sequence, endpoints, deliveries and attempts.

New tables only (CONTRACT 3.4, 3.5), nothing existing is touched. `event_log` gets its one
row: no event numbered yet, none fanned out to webhooks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Events are inserted unnumbered on PostgreSQL: only the pending index holds them until the
# sequencer numbers them (cbstop/db/tables.py).
NUMBERED = sa.text("seq IS NOT NULL")
PENDING = sa.text("seq IS NULL")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=True),
        sa.Column("integration_id", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("actor_type", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.CheckConstraint(
            "type IN ('integration.created', 'integration.updated')", name="ck_events_type"
        ),
        sa.CheckConstraint(
            "actor_type IN ('organisation', 'partner')", name="ck_events_actor_type"
        ),
    )
    op.create_index(
        "uq_events_seq",
        "events",
        ["seq"],
        unique=True,
        postgresql_where=NUMBERED,
        sqlite_where=NUMBERED,
    )
    op.create_index(
        "ix_events_pending",
        "events",
        ["created_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    for name, column in (
        ("organisation", "organisation_id"),
        ("partner", "partner_id"),
        ("integration", "integration_id"),
    ):
        op.create_index(
            f"ix_events_{name}_page",
            "events",
            [column, "seq"],
            postgresql_where=NUMBERED,
            sqlite_where=NUMBERED,
        )
    event_log = op.create_table(
        "event_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("fanned_out", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_log"),
        sa.CheckConstraint("id = 1", name="ck_event_log_one_row"),
    )
    op.bulk_insert(event_log, [{"id": 1, "last_seq": 0, "fanned_out": 0}])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=True),
        sa.Column("partner_group_id", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("event_types", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_webhook_endpoints_organisation_id",
        ),
        sa.ForeignKeyConstraint(
            ["partner_group_id"],
            ["partner_groups.id"],
            name="fk_webhook_endpoints_partner_group_id",
        ),
        sa.CheckConstraint(
            "(organisation_id IS NULL) <> (partner_group_id IS NULL)",
            name="ck_webhook_endpoints_exactly_one_owner",
        ),
        sa.CheckConstraint("status IN ('enabled', 'disabled')", name="ck_webhook_endpoints_status"),
    )
    op.create_index(
        "ix_webhook_endpoints_organisation_id", "webhook_endpoints", ["organisation_id"]
    )
    op.create_index(
        "ix_webhook_endpoints_partner_group_id", "webhook_endpoints", ["partner_group_id"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("endpoint_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("endpoint_id", "event_id", name="pk_webhook_deliveries"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_deliveries_endpoint_id",
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed', 'cancelled')",
            name="ck_webhook_deliveries_state",
        ),
        sa.CheckConstraint(
            "(state = 'pending') = (next_attempt_at IS NOT NULL)",
            name="ck_webhook_deliveries_due",
        ),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"])
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("endpoint_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint_id", "event_id", "attempt", name="pk_webhook_attempts"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_attempts_endpoint_id",
        ),
    )
    op.create_index("ix_webhook_attempts_started_at", "webhook_attempts", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_started_at", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_created_at", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_webhook_endpoints_partner_group_id", table_name="webhook_endpoints")
    op.drop_index("ix_webhook_endpoints_organisation_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    op.drop_table("event_log")
    op.drop_index("ix_events_integration_page", table_name="events")
    op.drop_index("ix_events_partner_page", table_name="events")
    op.drop_index("ix_events_organisation_page", table_name="events")
    op.drop_index("ix_events_pending", table_name="events")
    op.drop_index("uq_events_seq", table_name="events")
    op.drop_table("events")
