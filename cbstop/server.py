"""Running the service: migrate, then serve with uvicorn, draining on SIGTERM.

On SIGTERM (or Ctrl-C) a worker at once answers `/readyz` with 503, stops accepting
connections, lets requests in flight finish for up to `drain_timeout` seconds, and exits 0.

Every worker runs on the one `Settings` object `serve` was given, handed down whole as JSON
in `CBSTOP_WORKER_SETTINGS` (workers are fresh interpreters, spawned, not forked).

uvicorn's private names used here (bounded in pyproject.toml, checked by tests/test_hooks.py):
`Server._captured_signals`, and `multiprocess.Process`, `multiprocess.Server`,
`Process.target` of its supervisor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from functools import partial
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.supervisors import Multiprocess, multiprocess

from cbstop.app import AppState, create_app
from cbstop.db.migrate import migrate
from cbstop.observability import logging as obs_logging
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
    """The app of one worker, on the settings `serve` handed down."""
    obs_logging.configure()
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


def limits(settings: Settings) -> Limits:
    """What one connection may take of a worker."""
    return Limits(
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


def serve(settings: Settings, *, host: str, port: int, workers: int = 1) -> None:
    """Apply pending migrations, then serve until told to stop."""
    check_settings(settings)
    migrate(settings.database_url)
    # uvicorn calls it with (config, server_state, app_state) for each connection.
    protocol = partial(EnvelopeHttpToolsProtocol, limits=limits(settings))
    config = uvicorn.Config(
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
        timeout_keep_alive=5,
    )
    # The whole object, not variable by variable: every field reaches every worker, and since
    # every field is in it, no stray CBSTOP_ variable in a worker's environment overrides one.
    os.environ[WORKER_SETTINGS] = settings.to_json()
    try:
        if workers > 1:
            # uvicorn's supervisor makes each worker by this module-level name.
            multiprocess.Process = DrainingProcess  # type: ignore[misc]
            DrainingMultiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            DrainingServer(config).run()
    finally:
        del os.environ[WORKER_SETTINGS]
