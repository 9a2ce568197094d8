"""Initial schema: tenants, merchants, integrations, keys and maintained counts.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_partners"),
    )
    op.create_table(
        "partner_groups",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_partner_groups"),
        sa.UniqueConstraint("id", "partner_id", name="uq_partner_groups_id_partner_id"),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name="fk_partner_groups_partner_id"
        ),
    )
    op.create_table(
        "organisations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_organisations"),
        sa.UniqueConstraint("id", "partner_id", name="uq_organisations_id_partner_id"),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name="fk_organisations_partner_id"
        ),
    )
    op.create_index("ix_organisations_partner_id", "organisations", ["partner_id"])
    op.create_table(
        "partner_group_organisations",
        sa.Column("partner_group_id", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "partner_group_id", "organisation_id", name="pk_partner_group_organisations"
        ),
        sa.ForeignKeyConstraint(
            ["partner_group_id", "partner_id"],
            ["partner_groups.id", "partner_groups.partner_id"],
            name="fk_partner_group_organisations_partner_group_id_partner_id",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id", "partner_id"],
            ["organisations.id", "organisations.partner_id"],
            name="fk_partner_group_organisations_organisation_id_partner_id",
        ),
    )
    op.create_table(
        "merchants",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_merchants"),
        sa.UniqueConstraint("id", "organisation_id", name="uq_merchants_id_organisation_id"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_merchants_organisation_id",
        ),
    )
    op.create_table(
        "integrations",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.Column("partner_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_integrations"),
        sa.UniqueConstraint("id", "organisation_id", name="uq_integrations_id_organisation_id"),
        sa.ForeignKeyConstraint(
            ["organisation_id", "partner_id"],
            ["organisations.id", "organisations.partner_id"],
            name="fk_integrations_organisation_id_partner_id",
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_integrations_organisation_id",
        ),
        sa.CheckConstraint("status IN ('ENABLED', 'DISABLED')", name="ck_integrations_status"),
        sa.CheckConstraint("length(name) BETWEEN 1 AND 255", name="ck_integrations_name_length"),
        sa.CheckConstraint("length(type) BETWEEN 1 AND 64", name="ck_integrations_type_length"),
    )
    op.create_index(
        "ix_integrations_organisation_page",
        "integrations",
        ["organisation_id", sa.text("created_at DESC"), "id"],
    )
    op.create_index(
        "ix_integrations_partner_page",
        "integrations",
        ["partner_id", sa.text("created_at DESC"), "id"],
    )
    op.create_table(
        "integration_merchants",
        sa.Column("integration_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("integration_id", "position", name="pk_integration_merchants"),
        sa.UniqueConstraint(
            "integration_id",
            "merchant_id",
            name="uq_integration_merchants_integration_id_merchant_id",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id", "organisation_id"],
            ["integrations.id", "integrations.organisation_id"],
            name="fk_integration_merchants_integration_id_organisation_id",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "organisation_id"],
            ["merchants.id", "merchants.organisation_id"],
            name="fk_integration_merchants_merchant_id_organisation_id",
        ),
        sa.CheckConstraint("position >= 0", name="ck_integration_merchants_position"),
    )
    op.create_index(
        "ix_integration_merchants_merchant_id", "integration_merchants", ["merchant_id"]
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("organisation_id", sa.Text(), nullable=True),
        sa.Column("partner_group_id", sa.Text(), nullable=True),
        sa.Column("abilities", sa.Text(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_api_keys_organisation_id",
        ),
        sa.ForeignKeyConstraint(
            ["partner_group_id"],
            ["partner_groups.id"],
            name="fk_api_keys_partner_group_id",
        ),
        sa.CheckConstraint(
            "(organisation_id IS NULL) <> (partner_group_id IS NULL)",
            name="ck_api_keys_exactly_one_owner",
        ),
        sa.CheckConstraint("revoked = (revoked_at IS NOT NULL)", name="ck_api_keys_revoked_time"),
        sa.CheckConstraint("length(key_hash) = 64", name="ck_api_keys_key_hash_length"),
    )
    op.create_table(
        "organisation_integration_counts",
        sa.Column("organisation_id", sa.Text(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organisation_id", "shard", name="pk_organisation_integration_counts"
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name="fk_organisation_integration_counts_organisation_id",
        ),
        sa.CheckConstraint("n >= 0", name="ck_organisation_integration_counts_n"),
    )
    op.create_table(
        "partner_integration_counts",
        sa.Column("partner_id", sa.Text(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("partner_id", "shard", name="pk_partner_integration_counts"),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name="fk_partner_integration_counts_partner_id",
        ),
        sa.CheckConstraint("n >= 0", name="ck_partner_integration_counts_n"),
    )


def downgrade() -> None:
    for table in (
        "partner_integration_counts",
        "organisation_integration_counts",
        "api_keys",
        "integration_merchants",
        "integrations",
        "merchants",
        "partner_group_organisations",
        "organisations",
        "partner_groups",
        "partners",
    ):
        op.drop_table(table)
