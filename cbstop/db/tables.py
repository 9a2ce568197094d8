"""The schema, on one MetaData with a naming convention so migrations are deterministic.

Times are integer microseconds since the Unix epoch (UTC): exact, totally ordered, and the
same on PostgreSQL and SQLite. The migrations in `migrations/versions` create exactly this;
`tests/db/test_migrations.py` compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# Integration counts are kept in this many rows per owner, so that concurrent creates for one
# partner do not queue on one row; a count is the sum of its shards.
COUNT_SHARDS = 8

partners = Table(
    "partners",
    metadata,
    Column("id", Text, nullable=False),
    Column("name", Text, nullable=False),
    PrimaryKeyConstraint("id"),
)

partner_groups = Table(
    "partner_groups",
    metadata,
    Column("id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("is_admin", Boolean, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("id", "partner_id"),
    ForeignKeyConstraint(["partner_id"], ["partners.id"]),
)

organisations = Table(
    "organisations",
    metadata,
    Column("id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("partner_id", Text, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("id", "partner_id"),
    ForeignKeyConstraint(["partner_id"], ["partners.id"]),
    Index(None, "partner_id"),
)

# A group may only be assigned organisations of its own partner: both composite keys carry
# partner_id, so the database itself refuses a cross-partner assignment.
partner_group_organisations = Table(
    "partner_group_organisations",
    metadata,
    Column("partner_group_id", Text, nullable=False),
    Column("organisation_id", Text, nullable=False),
    Column("partner_id", Text, nullable=False),
    PrimaryKeyConstraint("partner_group_id", "organisation_id"),
    ForeignKeyConstraint(
        ["partner_group_id", "partner_id"], ["partner_groups.id", "partner_groups.partner_id"]
    ),
    ForeignKeyConstraint(
        ["organisation_id", "partner_id"], ["organisations.id", "organisations.partner_id"]
    ),
)

merchants = Table(
    "merchants",
    metadata,
    Column("id", Text, nullable=False),
    Column("organisation_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("id", "organisation_id"),
    ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
)

# partner_id is the owning organisation's partner, copied so that a partner's page is one
# index range; the composite key makes a wrong copy impossible.
integrations = Table(
    "integrations",
    metadata,
    Column("id", Text, nullable=False),
    Column("organisation_id", Text, nullable=False),
    Column("partner_id", Text, nullable=True),
    Column("name", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Changes whenever a value changes; the ETag is derived from it (CONTRACT 3.2).
    Column("version", BigInteger, nullable=False, server_default=text("1")),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("id", "organisation_id"),
    ForeignKeyConstraint(
        ["organisation_id", "partner_id"], ["organisations.id", "organisations.partner_id"]
    ),
    ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
    CheckConstraint("status IN ('ENABLED', 'DISABLED')", name="status"),
    CheckConstraint("length(name) BETWEEN 1 AND 255", name="name_length"),
    CheckConstraint("length(type) BETWEEN 1 AND 64", name="type_length"),
    Index(
        "ix_integrations_organisation_page",
        "organisation_id",
        text("created_at DESC"),
        "id",
    ),
    Index("ix_integrations_partner_page", "partner_id", text("created_at DESC"), "id"),
)

integration_merchants = Table(
    "integration_merchants",
    metadata,
    Column("integration_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("organisation_id", Text, nullable=False),
    PrimaryKeyConstraint("integration_id", "position"),
    UniqueConstraint("integration_id", "merchant_id"),
    ForeignKeyConstraint(
        ["integration_id", "organisation_id"],
        ["integrations.id", "integrations.organisation_id"],
    ),
    ForeignKeyConstraint(
        ["merchant_id", "organisation_id"], ["merchants.id", "merchants.organisation_id"]
    ),
    CheckConstraint("position >= 0", name="position"),
    # No index on merchant_id: no read goes by merchant, and a merchant is never deleted or
    # re-keyed (which is what such an index would serve); each one cost every create an
    # index entry per merchant (migration 0006).
    # Covers reading an integration's merchants in order: an index-only scan, no sort.
    Index("ix_integration_merchants_in_order", "integration_id", "position", "merchant_id"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, nullable=False),
    # HMAC-SHA256 of the key under the server secret, hex; the key itself is never stored.
    Column("key_hash", Text, nullable=False),
    Column("organisation_id", Text, nullable=True),
    Column("partner_group_id", Text, nullable=True),
    # Space-separated, sorted: "integrations:read integrations:write".
    Column("abilities", Text, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # Which secret key_hash was made with: 16 hex characters of HMAC-SHA256(secret, a fixed
    # message), never the secret (CONTRACT 3.6). NULL for a key made before migration 0004
    # until its first use fills it in.
    Column("secret_fingerprint", Text, nullable=True),
    # Past this time the key is refused like an unknown one; NULL: it never expires.
    Column("expires_at", BigInteger, nullable=True),
    # The key's last successful use, to the minute (written in the background, not per request).
    Column("last_used_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("key_hash"),
    ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
    ForeignKeyConstraint(["partner_group_id"], ["partner_groups.id"]),
    CheckConstraint(
        "(organisation_id IS NULL) <> (partner_group_id IS NULL)", name="exactly_one_owner"
    ),
    CheckConstraint("revoked = (revoked_at IS NOT NULL)", name="revoked_time"),
    CheckConstraint("length(key_hash) = 64", name="key_hash_length"),
    CheckConstraint("length(secret_fingerprint) = 16", name="secret_fingerprint_length"),
)

organisation_integration_counts = Table(
    "organisation_integration_counts",
    metadata,
    Column("organisation_id", Text, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("organisation_id", "shard"),
    ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
    CheckConstraint("n >= 0", name="n"),
)

partner_integration_counts = Table(
    "partner_integration_counts",
    metadata,
    Column("partner_id", Text, nullable=False),
    Column("shard", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("partner_id", "shard"),
    ForeignKeyConstraint(["partner_id"], ["partners.id"]),
    CheckConstraint("n >= 0", name="n"),
)

# The answers to successful writes made with an Idempotency-Key (CONTRACT 3.1), written in the
# same statement or transaction as the write itself. `owner` is the key owner
# (`organisation:<id>` or `partner_group:<id>`); `fingerprint` is SHA-256 of the method, path
# and canonical body; the answer is stored as sent (status, body bytes, Location, ETag).
# Rows older than CBSTOP_IDEMPOTENCY_TTL count as absent and are purged in the background.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("location", Text, nullable=True),
    Column("etag", Text, nullable=True),
    PrimaryKeyConstraint("owner", "key"),
    CheckConstraint("length(key) BETWEEN 1 AND 255", name="key_length"),
    Index(None, "created_at"),
)

# The audit trail (CONTRACT 3.4): one row per create and per changing PATCH, written in the
# same statement or transaction as the change. `data` is the event's JSON `data` member
# (`{"object": ..., "previous_attributes": ...}`) as text; `partner_id` is the organisation's
# partner, copied (as on integrations) so that a partner's events are one index range.
#
# `seq` orders the events and is what paging and webhook fan-out follow. It is given in commit
# order, so that a page never misses an event committed after it was read: on SQLite by the
# write itself (one writer at a time, `event_log.last_seq`); on PostgreSQL, where concurrent
# writers commit in any order, a write leaves it NULL and the sequencer
# (`cbstop/events/sequencer.py`), one at a time under `event_log`'s row lock, numbers the
# committed ones. An event without `seq` is not yet listed (docs/decisions.md).
events = Table(
    "events",
    metadata,
    Column("id", Text, nullable=False),
    Column("seq", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("organisation_id", Text, nullable=False),
    Column("partner_id", Text, nullable=True),
    Column("integration_id", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("idempotency_key", Text, nullable=True),
    Column("actor_type", Text, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("type IN ('integration.created', 'integration.updated')", name="type"),
    CheckConstraint("actor_type IN ('organisation', 'partner')", name="actor_type"),
    # Partial indexes: on PostgreSQL a write inserts its event unnumbered, into the primary
    # key and `ix_events_pending` only; the sequencer's numbering then adds it to the others.
    # Retention deletes the lowest numbers first (their times are the oldest), so no index on
    # the time is kept.
    Index(
        "uq_events_seq",
        "seq",
        unique=True,
        postgresql_where=text("seq IS NOT NULL"),
        sqlite_where=text("seq IS NOT NULL"),
    ),
    Index(
        "ix_events_pending",
        "created_at",
        "id",
        postgresql_where=text("seq IS NULL"),
        sqlite_where=text("seq IS NULL"),
    ),
    *(
        Index(
            f"ix_events_{name}_page",
            column,
            "seq",
            postgresql_where=text("seq IS NOT NULL"),
            sqlite_where=text("seq IS NOT NULL"),
        )
        for name, column in (
            ("organisation", "organisation_id"),
            ("partner", "partner_id"),
            ("integration", "integration_id"),
        )
    ),
)

# One row (id 1): the last `seq` given, and the last one whose webhook deliveries were made.
# Its row lock is what makes the sequencer and the fan-out run one at a time.
event_log = Table(
    "event_log",
    metadata,
    Column("id", Integer, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("fanned_out", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    CheckConstraint("id = 1", name="one_row"),
)

# Where events are POSTed (CONTRACT 3.5): owned, like a key, by an organisation or a partner
# group, and sent the events that owner can see. `secret` is the signing secret (`whsec_`
# and base64), kept as given: it must be at hand to sign. `event_types`: space-separated,
# sorted; empty for every type.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, nullable=False),
    Column("organisation_id", Text, nullable=True),
    Column("partner_group_id", Text, nullable=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("status", Text, nullable=False),
    # Why it was disabled (the receiver answered 410), when it was.
    Column("disabled_reason", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("id"),
    ForeignKeyConstraint(["organisation_id"], ["organisations.id"]),
    ForeignKeyConstraint(["partner_group_id"], ["partner_groups.id"]),
    CheckConstraint(
        "(organisation_id IS NULL) <> (partner_group_id IS NULL)", name="exactly_one_owner"
    ),
    CheckConstraint("status IN ('enabled', 'disabled')", name="status"),
    # The fan-out finds an event's endpoints by owner (events/sequencer.py).
    Index(None, "organisation_id"),
    Index(None, "partner_group_id"),
)

# One event to one endpoint: made by the fan-out, then attempted until delivered, given up
# (after the retry schedule) or cancelled (the endpoint was disabled). While pending,
# `next_attempt_at` is when it is due; a delivery claimed for an attempt has it moved past the
# attempt's timeout first, so a process that dies mid-attempt leaves it due again later.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("endpoint_id", "event_id"),
    ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"]),
    CheckConstraint("state IN ('pending', 'delivered', 'failed', 'cancelled')", name="state"),
    CheckConstraint("(state = 'pending') = (next_attempt_at IS NOT NULL)", name="due"),
    Index("ix_webhook_deliveries_due", "next_attempt_at"),
    Index("ix_webhook_deliveries_created_at", "created_at"),
)

# Every attempt to deliver, and its outcome: the HTTP status, or the error that stood in its
# place (timeout, refused connection). `worker` names the process that made it.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("duration_us", BigInteger, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("worker", Text, nullable=False),
    PrimaryKeyConstraint("endpoint_id", "event_id", "attempt"),
    ForeignKeyConstraint(["endpoint_id"], ["webhook_endpoints.id"]),
    Index("ix_webhook_attempts_started_at", "started_at"),
)
