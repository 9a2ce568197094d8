"""Keys remember which secret hashed them, when they expire, and when they were last used.

`api_keys.secret_fingerprint` (16 hex characters of HMAC-SHA256(secret, a fixed message)) lets
`serve`, `keys create` and `load` refuse a secret that matches none of the stored keys
(CONTRACT 3.6); existing keys get NULL and their fingerprint on their first use.
`expires_at` (NULL: never) and `last_used_at` (to the minute) are new and empty. Three
nullable columns without defaults: no table rewrite on PostgreSQL, one ALTER each on SQLite
(the check constraint goes through Alembic's batch mode there, which copies the table).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("secret_fingerprint", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.BigInteger(), nullable=True))
        batch.create_check_constraint(
            "ck_api_keys_secret_fingerprint_length", "length(secret_fingerprint) = 16"
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("ck_api_keys_secret_fingerprint_length", type_="check")
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
        batch.drop_column("secret_fingerprint")
