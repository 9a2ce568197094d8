"""The `cbstop` command: serve, migrate, load world files, manage keys and webhook endpoints.

Every operational failure (unreachable database, bad URL, bad world file, unknown owner...)
is one line on stderr and exit status 1; usage mistakes exit 2. Never a traceback.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

# Typer vendors its own copy of click: its exceptions, not the `click` package's, are raised.
from typer._click import exceptions as click_errors

from cbstop.settings import Settings

if TYPE_CHECKING:
    from cbstop.db.database import Database
    from cbstop.keys.service import CreatedKey, KeyInfo, SecretUse
    from cbstop.webhooks.endpoints import CreatedEndpoint
    from cbstop.webhooks.repository import StoredAttempt

T = TypeVar("T")

app = typer.Typer(
    name="cbstop",
    help="cbstop: the ChargebackStop Integrations API, self-hosted.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(
    help="Create, revoke and list API keys. A key's secret is shown once, at creation.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(
    help="Add, list and remove webhook endpoints; show recent deliveries. An endpoint's "
    "signing secret is shown once, when it is added.",
    no_args_is_help=True,
)
app.add_typer(webhooks_app, name="webhooks")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://user@host:port/db or sqlite:///path.db "
        "[default: $CBSTOP_DATABASE_URL, then sqlite:///./cbstop.db]",
        show_default=False,
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from cbstop import __version__

        typer.echo(f"cbstop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the version and exit.",
            callback=_show_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """cbstop: the ChargebackStop Integrations API, self-hosted."""


class Ability(StrEnum):
    read = "integrations:read"
    write = "integrations:write"


class CliError(Exception):
    """A failure to report as one line."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"cbstop: error: {message}", err=True)
    raise typer.Exit(code)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn every failure into one readable line on stderr and a non-zero exit."""
    from cbstop.keys.service import KeyManagementError
    from cbstop.webhooks.endpoints import WebhookError
    from cbstop.world.loader import WorldError

    try:
        yield
    except typer.Exit:
        raise
    except CliError as exc:
        _fail(str(exc), exc.code)
    except (WorldError, KeyManagementError, WebhookError) as exc:
        _fail(_first_line(exc))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        _fail(_describe_failure(exc))


def _describe_failure(exc: Exception) -> str:
    """The operator's view of an unexpected failure, mostly: the database is not reachable."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

    from cbstop.errors import ServiceUnavailable

    server = sys.modules.get("cbstop.server")
    if server is not None and isinstance(exc, server.ConfigurationError):
        return _first_line(exc)
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        return f"invalid setting {name} (CBSTOP_{name.upper()}): {first['msg']}"
    if isinstance(exc, OperationalError):
        return f"the database is not available: {_first_line(exc.orig or exc)}"
    if isinstance(exc, DBAPIError):
        return f"database error: {_first_line(exc.orig or exc)}"
    if isinstance(exc, SQLAlchemyError | ServiceUnavailable):
        cause = exc.__cause__ or exc
        return f"the database is not available: {_first_line(cause)}"
    if isinstance(exc, ValueError):
        return _first_line(exc)
    if isinstance(exc, OSError):
        return f"the database is not reachable: {_first_line(exc)}"
    if type(exc).__module__.startswith("asyncpg"):
        return f"database error: {_first_line(exc)}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _settings(database_url: str | None) -> Settings:
    """Settings from the environment, with the database URL the command was given."""
    return Settings() if database_url is None else Settings(database_url=database_url)


def _migrated(database_url: str | None) -> Settings:
    from cbstop.db.migrate import migrate

    settings = _settings(database_url)
    migrate(settings.database_url)
    return settings


def _with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work(db)` on an opened database, closing it afterwards."""
    from cbstop.db.database import run_with_database

    return run_with_database(settings, work)


def _check_key_secrets(settings: Settings) -> None:
    """Refuse to go on, in one line, when live keys exist and none of the configured secrets
    is one they were hashed with (CONTRACT 3.6); the database must be migrated."""
    from cbstop.keys.service import check_key_secrets

    _with_database(settings, lambda db: check_key_secrets(db, settings.key_secrets))


# --- serve, migrate, load ----------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    proxy_headers: Annotated[
        bool | None,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="Trust X-Forwarded-For and X-Forwarded-Proto from --forwarded-allow-ips "
            "[default: $CBSTOP_PROXY_HEADERS, then off]",
            show_default=False,
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies trusted with --proxy-headers: comma-separated addresses or '*' "
            "[default: $CBSTOP_FORWARDED_ALLOW_IPS, then 127.0.0.1]",
            show_default=False,
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Serve a throwaway SQLite database loaded with the demo world; print its keys.",
        ),
    ] = False,
) -> None:
    """Apply pending migrations, then serve the API until stopped."""
    with _one_line_errors():
        demo_dir: Path | None = None
        try:
            if demo:
                if database_url is not None:
                    raise CliError("--demo uses its own database: leave out --database-url", 2)
                # uvicorn re-raises the stop signal once it has shut down; turn it into a
                # normal exit so the throwaway database is removed below.
                signal.signal(signal.SIGTERM, _stop)
                signal.signal(signal.SIGINT, _stop)
                settings, demo_dir = _prepare_demo(host, port)
            else:
                settings = _settings(database_url)
            overrides = {"proxy_headers": proxy_headers, "forwarded_allow_ips": forwarded_allow_ips}
            settings = settings.model_copy(
                update={k: v for k, v in overrides.items() if v is not None}
            )
            from cbstop.server import serve as run_server

            run_server(settings, host=host, port=port, workers=workers)
        finally:
            if demo_dir is not None:
                shutil.rmtree(demo_dir, ignore_errors=True)


def _stop(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


def _prepare_demo(host: str, port: int) -> tuple[Settings, Path]:
    from cbstop.demo import prepare_demo

    settings = Settings()
    prepared = prepare_demo(settings.key_secrets)
    settings = Settings(database_url=prepared.database_url)
    reach = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - compared, not bound
    if ":" in reach:
        reach = f"[{reach}]"
    base = f"http://{reach}:{port}"
    echo = typer.echo
    echo(f"cbstop demo: a throwaway SQLite database in {prepared.directory}")
    echo("Demo keys:")
    for key in prepared.keys:
        echo(f"  {key.secret}")
        echo(f"      {key.id}: {key.sees}")
    first = prepared.keys[0]
    echo("Try:")
    echo(f'  curl -H "Authorization: Bearer {first.secret}" {base}/v1/integrations')
    echo(f"API documentation: {base}/v1/docs")
    sys.stdout.flush()
    return settings, prepared.directory


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Apply pending database migrations (safe when several processes run it at once)."""
    with _one_line_errors():
        from cbstop.db.migrate import current_revision

        settings = _migrated(database_url)
        typer.echo(f"Database is at revision {current_revision(settings.database_url)}.")


@app.command()
def load(
    file: Annotated[
        Path,
        typer.Argument(
            help="World file (JSON): tenants, merchants, integrations, keys, webhook endpoints."
        ),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Load a world file in one transaction: all of it, or nothing and the offending entry."""
    with _one_line_errors():
        from cbstop.world.loader import load_world_file

        if not file.is_file():
            raise CliError(f"world file {file} does not exist")
        settings = _migrated(database_url)
        _check_key_secrets(settings)
        summary = load_world_file(
            settings.database_url, file, key_secret=settings.key_secrets, progress=True
        )
        typer.echo(f"Loaded {file}: {summary.describe()}.")


# --- keys -------------------------------------------------------------------------------------


def _duration_option(value: str | None) -> str | None:
    """`--expires-in`: a usage error (exit 2) unless it is a duration."""
    from cbstop.keys.service import parse_duration

    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


@keys_app.command("create")
def keys_create(
    organisation: Annotated[
        str | None,
        typer.Option("--organisation", help="Organisation the key acts for.", show_default=False),
    ] = None,
    partner_group: Annotated[
        str | None,
        typer.Option("--partner-group", help="Partner group the key acts for.", show_default=False),
    ] = None,
    ability: Annotated[
        list[Ability] | None,
        typer.Option(
            "--ability",
            help="Grant only this ability (repeatable). Default: both.",
            show_default=False,
        ),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            help="Refuse the key (401) this long after its creation: a whole number and "
            "d, h, m or s, like 90d, 12h, 30m, 45s. Default: it never expires.",
            show_default=False,
            callback=_duration_option,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key for an organisation or a partner group; its secret is printed once.

    It is hashed with the newest secret of CBSTOP_KEY_SECRET, which must be the server's:
    when keys exist and none of the configured secrets made them, nothing is created."""
    with _one_line_errors():
        from cbstop.keys.service import check_key_secrets, create_key, parse_duration

        if (organisation is None) == (partner_group is None):
            raise CliError("give exactly one of --organisation and --partner-group", 2)
        settings = _migrated(database_url)
        abilities = None if ability is None else [a.value for a in ability]
        lifetime = None if expires_in is None else parse_duration(expires_in)

        async def create(db: Database) -> CreatedKey:
            await check_key_secrets(db, settings.key_secrets)
            return await create_key(
                db,
                settings.key_secrets[0],
                organisation_id=organisation,
                partner_group_id=partner_group,
                abilities=abilities,
                expires_in=lifetime,
            )

        created = _with_database(settings, create)
        info = created.info
        owner = info.owner_kind.replace("_", " ")
        expiry = "" if info.expires_at is None else f", expires {_minute(info.expires_at)}"
        typer.echo(
            f"Created key {info.id} for {owner} {info.owner_id} "
            f"({', '.join(sorted(info.abilities))}{expiry})."
        )
        typer.echo("Its secret is shown only this once; store it now:")
        typer.echo(created.secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Id of the key (as `cbstop keys list` shows).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: it stops working within a second. Revoking twice is harmless."""
    with _one_line_errors():
        from cbstop.keys.service import revoke_key

        settings = _migrated(database_url)
        _with_database(settings, lambda db: revoke_key(db, key_id))
        typer.echo(f"Revoked key {key_id}.")


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """List every key: id, owner, abilities, creation, expiry, last use (to the minute),
    revocation and the fingerprint of the secret it is hashed with; then how many live keys
    each secret holds (CONTRACT 3.6). Never the secret."""
    with _one_line_errors():
        from cbstop.keys.service import keys_per_secret, list_keys

        settings = _migrated(database_url)

        async def read(db: Database) -> tuple[list[KeyInfo], list[SecretUse]]:
            return await list_keys(db), await keys_per_secret(db, settings.key_secrets)

        keys, uses = _with_database(settings, read)
        if not keys:
            typer.echo("No keys.")
            return
        rows = [
            ("ID", "OWNER", "ABILITIES", "CREATED", "EXPIRES", "LAST_USED", "REVOKED", "SECRET")
        ]
        for k in keys:
            rows.append(
                (
                    k.id,
                    f"{k.owner_kind} {k.owner_id}",
                    ",".join(sorted(k.abilities)),
                    _time(k.created_at),
                    _minute(k.expires_at) if k.expires_at is not None else "never",
                    _minute(k.last_used_at) if k.last_used_at is not None else "never",
                    _time(k.revoked_at) if k.revoked_at is not None else "-",
                    k.secret_fingerprint or "?",
                )
            )
        _table(rows)
        typer.echo("")
        typer.echo("Live keys (not revoked, not expired) per key secret:")
        _table([("SECRET", "KEYS", "")] + [_secret_row(u) for u in uses])


# --- webhooks ---------------------------------------------------------------------------------


def _url_option(value: str) -> str:
    """`--url`: a usage error (exit 2) unless http(s) with a host."""
    from cbstop.webhooks.endpoints import url_problem

    problem = url_problem(value)
    if problem is not None:
        raise typer.BadParameter(problem)
    return value


def _event_option(values: list[str] | None) -> list[str] | None:
    """`--event`: a usage error (exit 2) for an unknown or repeated event type."""
    from cbstop.webhooks.endpoints import event_types_problem

    problem = event_types_problem(values or [])
    if problem is not None:
        raise typer.BadParameter(problem)
    return values


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[
        str,
        typer.Option(
            "--url",
            help="Where events are POSTed: an http:// or https:// URL.",
            show_default=False,
            callback=_url_option,
        ),
    ],
    organisation: Annotated[
        str | None,
        typer.Option(
            "--organisation", help="Send the events of this organisation.", show_default=False
        ),
    ] = None,
    partner_group: Annotated[
        str | None,
        typer.Option(
            "--partner-group",
            help="Send the events this partner group's keys can see.",
            show_default=False,
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help="Send only this event type (repeatable): integration.created, "
            "integration.updated. Default: every type.",
            show_default=False,
            callback=_event_option,
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Add a webhook endpoint for an organisation or a partner group; its signing secret is
    printed once."""
    with _one_line_errors():
        from cbstop.webhooks.endpoints import add_endpoint

        if (organisation is None) == (partner_group is None):
            raise CliError("give exactly one of --organisation and --partner-group", 2)
        settings = _migrated(database_url)

        async def add(db: Database) -> CreatedEndpoint:
            return await add_endpoint(
                db,
                url=url,
                organisation_id=organisation,
                partner_group_id=partner_group,
                event_types=event or (),
            )

        created = _with_database(settings, add)
        info = created.info
        owner = info.owner_kind.replace("_", " ")
        events = ", ".join(info.event_types) or "every event type"
        typer.echo(
            f"Added webhook endpoint {info.id} for {owner} {info.owner_id} ({info.url}, {events})."
        )
        typer.echo("Its signing secret is shown only this once; give it to the receiver now:")
        typer.echo(created.secret)


@webhooks_app.command("list")
def webhooks_list(database_url: DatabaseUrl = None) -> None:
    """List every webhook endpoint: id, owner, URL, event types, creation and status (with why
    it was disabled). Never the signing secret."""
    with _one_line_errors():
        from cbstop.webhooks.endpoints import list_endpoints

        settings = _migrated(database_url)
        endpoints = _with_database(settings, list_endpoints)
        if not endpoints:
            typer.echo("No webhook endpoints.")
            return
        rows = [("ID", "OWNER", "URL", "EVENTS", "CREATED", "STATUS")]
        for e in endpoints:
            status = e.status
            if e.disabled_reason is not None:
                status += f" ({e.disabled_reason})"
            rows.append(
                (
                    e.id,
                    f"{e.owner_kind} {e.owner_id}",
                    e.url,
                    ",".join(e.event_types) or "all",
                    _time(e.created_at),
                    status,
                )
            )
        _table(rows)


@webhooks_app.command("remove")
def webhooks_remove(
    endpoint_id: Annotated[
        str, typer.Argument(help="Id of the endpoint (as `cbstop webhooks list` shows).")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a webhook endpoint with its deliveries and their attempts: nothing more is sent
    to it."""
    with _one_line_errors():
        from cbstop.webhooks.endpoints import remove_endpoint

        settings = _migrated(database_url)
        _with_database(settings, lambda db: remove_endpoint(db, endpoint_id))
        typer.echo(f"Removed webhook endpoint {endpoint_id}.")


@webhooks_app.command("enable")
def webhooks_enable(
    endpoint_id: Annotated[
        str, typer.Argument(help="Id of the endpoint (as `cbstop webhooks list` shows).")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Send events to an endpoint again after its receiver answered 410 (deliveries cancelled
    meanwhile are not sent)."""
    with _one_line_errors():
        from cbstop.webhooks.endpoints import enable_endpoint

        settings = _migrated(database_url)
        was_disabled = _with_database(settings, lambda db: enable_endpoint(db, endpoint_id))
        if was_disabled:
            typer.echo(f"Enabled webhook endpoint {endpoint_id}.")
        else:
            typer.echo(f"Webhook endpoint {endpoint_id} was already enabled.")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    endpoint_id: Annotated[
        str | None,
        typer.Argument(help="Only this endpoint's attempts. Default: every endpoint's."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="How many attempts to show.", min=1, max=10_000)
    ] = 20,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the most recent delivery attempts, newest first: when, endpoint, event, attempt
    number, duration, the delivery's state now (pending with its next attempt, delivered,
    failed, cancelled) and the outcome (HTTP status, or the error in its place)."""
    with _one_line_errors():
        from cbstop.webhooks.endpoints import recent_attempts

        settings = _migrated(database_url)
        attempts = _with_database(settings, lambda db: recent_attempts(db, endpoint_id, limit))
        if not attempts:
            typer.echo("No delivery attempts.")
            return
        header = ("TIME", "ENDPOINT", "EVENT", "ATTEMPT", "DURATION", "STATE", "NEXT", "RESULT")
        _table([header, *(_attempt_row(a) for a in attempts)])


def _attempt_row(a: StoredAttempt) -> tuple[str, ...]:
    # The outcome comes last: an error's text has spaces, every other column has none.
    result = f"HTTP {a.status_code}" if a.status_code is not None else a.error or "?"
    return (
        _time(a.started_at),
        a.endpoint_id,
        a.event_id,
        str(a.attempt),
        f"{a.duration_us / 1000:.0f}ms",
        a.state or "purged",
        _time(a.next_attempt_at) if a.next_attempt_at is not None else "-",
        result,
    )


def _secret_row(use: SecretUse) -> tuple[str, str, str]:
    if use.fingerprint is None:
        where = "unknown: stored before fingerprints, gets one on its next use"
    elif use.position is None:
        where = "not in CBSTOP_KEY_SECRET: these keys cannot authenticate"
    else:
        where = f"CBSTOP_KEY_SECRET #{use.position}" + (" (newest)" if use.position == 1 else "")
    return (use.fingerprint or "?", str(use.keys), where)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _time(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _minute(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%MZ")


def main() -> None:
    """Console-script entry point: usage mistakes are one line too, with where to find help."""
    try:
        code = app(standalone_mode=False, prog_name="cbstop")
    except click_errors.NoArgsIsHelpError as exc:
        # The help is the answer to a bare `cbstop` or `cbstop keys`, not an error.
        if exc.message:
            typer.echo(exc.message)
        code = 0
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "cbstop"
        typer.echo(f"cbstop: error: {exc.format_message()} (see '{where} --help')", err=True)
        code = exc.exit_code
    except click_errors.ClickException as exc:
        typer.echo(f"cbstop: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("cbstop: error: interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
