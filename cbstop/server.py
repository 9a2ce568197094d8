"""Running the service: migrate, then serve with uvicorn, draining on SIGTERM.

On SIGTERM (or Ctrl-C) a worker at once answers `/readyz` with 503, stops accepting
connections, lets requests in flight finish for up to `drain_timeout` seconds, and exits 0.

Every worker runs on the one `Settings` object `serve` was given, handed down whole as JSON
in `CBSTOP_WORKER_SETTINGS` (workers are fresh interpreters, spawned, not forked).

Metrics add up across workers: `serve` makes a private directory for prometheus_client's
multiprocess files (`PROMETHEUS_MULTIPROC_DIR`, inherited by every worker) before any worker
starts, with one worker too, and removes it when it exits; the supervisor drops a dead
worker's gauges when it restarts it. Every process of the server (supervisor and workers)
writes its messages, uvicorn's among them, as JSON lines (observability/logging.py).

uvicorn's private names used here (bounded in pyproject.toml, checked by tests/test_hooks.py):
`Server._captured_signals`, and `multiprocess.Process`, `multiprocess.Server`,
`Process.target` of its supervisor, and its `Multiprocess.keep_subprocess_alive` (replaces a
dead worker in `Multiprocess.processes`; stops at a worker's `STARTUP_FAILURE` exit code).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
from functools import partial
from types import FrameType
from typing import Any, cast
from urllib.parse import urlsplit

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess, multiprocess

from cbstop import __version__
from cbstop.app import AppState, create_app
from cbstop.db.database import run_with_database
from cbstop.db.migrate import migrate
from cbstop.keys.service import check_key_secrets
from cbstop.observability import logging as obs_logging
from cbstop.observability.logging import log
from cbstop.observability.metrics import MULTIPROC_DIR
from cbstop.ratelimit.policy import parse_limit
from cbstop.settings import PLACEHOLDER_KEY_SECRET, Settings
from cbstop.web.protocol import EnvelopeHttpToolsProtocol, Limits

WORKER_SETTINGS = "CBSTOP_WORKER_SETTINGS"

_states: list[AppState] = []


class ConfigurationError(Exception):
    """The service cannot start with these settings."""


def check_settings(settings: Settings) -> None:
    """Refuse settings that are unsafe in production."""
    secrets = settings.key_secrets
    if not secrets:
        raise ConfigurationError("CBSTOP_KEY_SECRET is empty; set a long random secret")
    if settings.production and any(s == PLACEHOLDER_KEY_SECRET or len(s) < 16 for s in secrets):
        raise ConfigurationError(
            "CBSTOP_PRODUCTION is set but CBSTOP_KEY_SECRET is the placeholder or shorter "
            "than 16 characters; set a long random secret"
        )


def app_factory() -> Any:
    """The app of one worker, on the settings `serve` handed down (logging is configured by
    then: by `serve` in a single process, by `DrainingProcess.target` in a worker)."""
    app = create_app(Settings.model_validate_json(os.environ[WORKER_SETTINGS]))
    _states.append(app.state)
    return app


class DrainingServer(uvicorn.Server):
    """uvicorn, with readiness turned off the moment a shutdown signal arrives."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for state in _states:
            state.draining = True
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signals it caught once it has shut down, so a drained
        # process would die of its SIGTERM (exit -15); draining is the answer to the signal.
        self._captured_signals.clear()


class DrainingProcess(multiprocess.Process):
    """One worker of uvicorn's supervisor, serving with a DrainingServer.

    A worker is a spawned interpreter: it unpickles this object (importing this module), then
    builds its server by `multiprocess.Server`. Swapped in the supervisor, that name would never
    reach a worker (they would run plain uvicorn: readiness never off, exit -15); it is swapped
    here, in the worker, before the server is built.
    """

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        settings = Settings.model_validate_json(os.environ[WORKER_SETTINGS])
        obs_logging.configure(settings.log_level)
        multiprocess.Server = DrainingServer  # type: ignore[attr-defined]
        super().target(sockets)


class DrainingMultiprocess(Multiprocess):
    """uvicorn's supervisor, passing SIGTERM/SIGINT on to the workers the moment it arrives.

    uvicorn's own supervisor looks at its signals only every half second, and until then its
    workers still answer `/readyz` with 200.
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_now)

    def _stop_now(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit.set()
        self.terminate_all()

    def keep_subprocess_alive(self) -> None:
        """uvicorn's restart of a dead worker, then one warning saying how it ended; and the
        live gauges of any worker no longer running (dead, or replaced on SIGHUP or SIGTTOU)
        dropped from the metrics (its counters stay in the sums).

        Called every half second by the supervisor's loop, the thread that also starts and
        replaces workers, so a worker still starting is never taken for a gone one."""
        before = list(self.processes)
        super().keep_subprocess_alive()
        _drop_gauges_of_all_but({p.pid for p in self.processes if p.pid is not None})
        for old in before:
            if old in self.processes or old.pid is None:
                continue
            code = old.exitcode
            how = (
                f"killed by {signal.Signals(-code).name}"
                if code is not None and code < 0
                else f"exited with {code}"
            )
            new = self.processes[before.index(old)].pid
            log.warning(
                "worker %d %s; restarted as worker %s",
                old.pid,
                how,
                new,
                extra={"fields": {"worker": old.pid, "exitcode": code, "restarted_as": new}},
            )

    @property
    def failed_to_start(self) -> bool:
        """Whether a worker failed before it served (uvicorn then stops the others)."""
        return any(p.exitcode == STARTUP_FAILURE for p in self.processes)


def _drop_gauges_of_all_but(running: set[int]) -> None:
    """Drop the live gauges (pool, process) of every worker not in `running`."""
    directory = os.environ[MULTIPROC_DIR]
    for name in os.listdir(directory):
        # gauge_liveall_1234.db, gauge_livesum_1234.db: a live gauge's file, and its pid.
        kind, _, rest = name.partition("_live")
        pid = rest.rpartition("_")[2].removesuffix(".db")
        if kind == "gauge" and pid.isdigit() and int(pid) not in running:
            mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


def limits(settings: Settings) -> Limits:
    """What one connection may take of a worker."""
    return Limits(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


def describe_database(url: str) -> dict[str, str]:
    """The database's kind and where it is, for the startup line: never user, password or
    query string."""
    if url.startswith(("postgresql://", "postgres://")):
        return {"database": "postgresql", "database_at": _server_at(url, 5432)}
    return {"database": "sqlite", "database_at": url.removeprefix("sqlite:///").split("?")[0]}


def describe_limits(settings: Settings) -> dict[str, str | int]:
    """The rate limits and where they are counted, for the startup line: Redis's host, port
    and database, never its password."""
    described: dict[str, str | int] = {
        "rate_limit": settings.rate_limit,
        "auth_failure_limit": settings.auth_failure_limit,
        "max_in_flight": settings.max_in_flight,
    }
    if not settings.redis_url:
        return described | {"rate_limits_in": "memory"}
    url = settings.redis_url
    at = urlsplit(url).path if url.startswith("unix:") else _server_at(url, 6379)
    return described | {"rate_limits_in": "redis", "redis_at": at}


def _server_at(url: str, default_port: int) -> str:
    """`host:port/path` of a server's URL: never its user, password or query string."""
    parts = urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}{parts.path}"


def uvicorn_config(settings: Settings, *, host: str, port: int, workers: int) -> uvicorn.Config:
    """What uvicorn is told: our app and protocol, no logging of its own, and the settings'
    timeouts and proxy trust."""
    # uvicorn calls it with (config, server_state, app_state) for each connection.
    protocol = partial(EnvelopeHttpToolsProtocol, limits=limits(settings))
    return uvicorn.Config(
        "cbstop.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=cast(type[asyncio.Protocol], protocol),
        # An upgrade request (WebSocket, h2c) is served as plain HTTP, through the app.
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.drain_timeout) or 1,
        # uvicorn's type says int; it only hands the seconds to call_later, so a float works.
        timeout_keep_alive=cast(int, settings.keep_alive_timeout),
        # uvicorn wraps the app in its ProxyHeadersMiddleware (Config.load), whatever the
        # protocol class: the client address in the scope is then the forwarded one.
        proxy_headers=settings.proxy_headers,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    """Apply pending migrations, check the key secrets against the stored keys, then serve
    until told to stop."""
    check_settings(settings)
    obs_logging.configure(settings.log_level)
    migrate(settings.database_url)
    # Keys the configured secrets cannot verify would all get 401: refuse instead (CONTRACT 3.6).
    run_with_database(settings, lambda db: check_key_secrets(db, settings.key_secrets))
    config = uvicorn_config(settings, host=host, port=port, workers=workers)
    # The whole object, not variable by variable: every field reaches every worker, and since
    # every field is in it, no stray CBSTOP_ variable in a worker's environment overrides one.
    os.environ[WORKER_SETTINGS] = settings.to_json()
    previous = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = metrics_dir = tempfile.mkdtemp(prefix="cbstop-metrics-")
    try:
        if workers > 1:
            # uvicorn's supervisor makes each worker by this module-level name.
            multiprocess.Process = DrainingProcess  # type: ignore[misc]
            supervisor = DrainingMultiprocess(config, sockets=[config.bind_socket()])
            _log_start(settings, host, port, workers)
            supervisor.run()
            if supervisor.failed_to_start:
                raise SystemExit(STARTUP_FAILURE)  # as uvicorn exits with one worker
        else:
            _log_start(settings, host, port, workers)
            DrainingServer(config).run()
    finally:
        del os.environ[WORKER_SETTINGS]
        if previous is None:
            del os.environ[MULTIPROC_DIR]
        else:
            os.environ[MULTIPROC_DIR] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _log_start(settings: Settings, host: str, port: int, workers: int) -> None:
    address = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    database = describe_database(settings.database_url)
    limits_at = describe_limits(settings)
    log.info(
        "cbstop %s serving on %s with %d worker%s, database %s at %s",
        __version__,
        address,
        workers,
        "" if workers == 1 else "s",
        database["database"],
        database["database_at"],
        extra={
            "fields": {
                "event": "startup",
                "version": __version__,
                "address": address,
                "workers": workers,
                **database,
                **limits_at,
            }
        },
    )
    if "forwarded_allow_ips" in settings.model_fields_set and not settings.proxy_headers:
        log.warning(
            "CBSTOP_FORWARDED_ALLOW_IPS is set but proxy headers are off: X-Forwarded-For is "
            "ignored and every client counts as the proxy's own address (one auth-failure "
            "budget for all); set CBSTOP_PROXY_HEADERS=true (serve --proxy-headers)"
        )
    limited = any(parse_limit(v) for v in (settings.rate_limit, settings.auth_failure_limit))
    if workers > 1 and limited and not settings.redis_url:
        log.warning(
            "rate limits are counted by each of the %d workers: an owner may get up to %d times "
            "its quota; set CBSTOP_REDIS_URL to count them once for every worker and instance",
            workers,
            workers,
        )
