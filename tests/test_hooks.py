"""The private names of uvicorn and typer that cbstop relies on are still there, as used.

pyproject.toml bounds both libraries below their next minor release. Raising a bound is
this file, plus the behaviour tests named beside the bound, passing on the new version; a
failure here names the hook that moved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.metadata import version

import pytest
from typer._click import exceptions as click_errors
from uvicorn import server as uvicorn_server
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.supervisors import multiprocess

from cbstop import cli
from cbstop.server import DrainingProcess, DrainingServer
from cbstop.web.protocol import EnvelopeH11Protocol, EnvelopeHttpToolsProtocol, Limits

UVICORN = f"uvicorn {version('uvicorn')}"
TYPER = f"typer {version('typer')}"


def _parameters(function: Callable[..., object]) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("theirs", "ours", "caller"),
    [
        (HttpToolsProtocol, EnvelopeHttpToolsProtocol, "data_received"),
        (H11Protocol, EnvelopeH11Protocol, "handle_events"),
    ],
)
def test_uvicorns_parser_still_answers_a_refused_request_with_send_400_response(
    theirs: type[HttpToolsProtocol | H11Protocol], ours: type, caller: str
) -> None:
    assert _parameters(theirs.send_400_response) == ["self", "msg"], UVICORN
    assert "self.send_400_response(" in inspect.getsource(getattr(theirs, caller)), UVICORN
    assert "send_400_response" in vars(ours)


def test_uvicorns_httptools_protocol_still_has_the_callbacks_and_state_the_limits_hook() -> None:
    # The behaviour: tests/reliability/test_connections.py (431, timeouts, 503 past the cap,
    # Host, upgrades), against a real `cbstop serve`.
    source = inspect.getsource(HttpToolsProtocol)
    for callback in ("on_message_begin", "on_headers_complete", "on_body", "on_message_complete"):
        assert callable(vars(HttpToolsProtocol).get(callback)), (callback, UVICORN)
    assert _parameters(HttpToolsProtocol.on_body) == ["self", "body"], UVICORN
    assert _parameters(HttpToolsProtocol.data_received) == ["self", "data"], UVICORN
    # httptools calls back on the protocol, from `data_received`, which refuses through
    # send_400_response and hands an upgrade it does not serve to the warning we silence.
    assert "httptools.HttpRequestParser(self)" in source, UVICORN
    receives = inspect.getsource(HttpToolsProtocol.data_received)
    assert "self.parser.feed_data(data)" in receives, UVICORN
    assert "self._unsupported_upgrade_warning()" in receives, UVICORN
    assert _parameters(HttpToolsProtocol._unsupported_upgrade_warning) == ["self"], UVICORN
    # The state read at on_headers_complete, and a cycle that closes when not kept alive.
    assert "self.connections = server_state.connections" in source, UVICORN
    assert "self.url += url" in source, UVICORN
    assert "self.headers.append((name, value))" in source, UVICORN
    sends = inspect.getsource(RequestResponseCycle.send)
    assert "if not self.keep_alive:" in sends, UVICORN
    assert "read_paused" in vars(FlowControl(transport=None)), UVICORN  # type: ignore[arg-type]
    # With ws="none" an upgrade goes on as plain HTTP through on_headers_complete.
    assert "if self.ws_protocol_class is None:" in source, UVICORN


def test_uvicorns_server_still_makes_each_connections_protocol_by_keywords() -> None:
    # `serve` passes a partial of the protocol with its `limits`; uvicorn must call it with
    # keywords only, and may not require it to be a class.
    starts = inspect.getsource(uvicorn_server.Server.startup)
    assert "config.http_protocol_class(" in starts, UVICORN
    for keyword in ("config=config", "server_state=self.server_state", "app_state="):
        assert keyword in starts, (keyword, UVICORN)
    assert _parameters(EnvelopeHttpToolsProtocol.__init__)[-1] == "limits"
    assert EnvelopeHttpToolsProtocol.__init__.__defaults__ == (None, Limits())


def test_uvicorns_server_still_re_raises_the_signals_in_captured_signals() -> None:
    server = DrainingServer(Config(app=lambda *_: None))
    assert server._captured_signals == [], UVICORN
    assert "self._captured_signals" in inspect.getsource(uvicorn_server.Server.capture_signals)
    assert _parameters(uvicorn_server.Server.handle_exit) == ["self", "sig", "frame"], UVICORN


def test_uvicorns_supervisor_still_makes_workers_by_its_module_level_names() -> None:
    # It makes each worker by the name `Process`, and the worker's server by `Server`,
    # looked up in the module at the time.
    assert multiprocess.Process.__module__ == multiprocess.__name__, UVICORN
    assert vars(multiprocess)["Server"] is uvicorn_server.Server, UVICORN
    made = inspect.getsource(multiprocess.Multiprocess)
    assert made.count("Process(self.config, self.sockets)") >= 2, UVICORN
    builds = inspect.getsource(multiprocess.Process)
    assert "Server(config=self.config)" in builds, UVICORN
    # A worker's entry point is `target(sockets)`, what DrainingProcess overrides.
    assert _parameters(multiprocess.Process.target) == ["self", "sockets"], UVICORN
    assert "self.server.run(" in inspect.getsource(multiprocess.Process.target), UVICORN
    assert issubclass(DrainingProcess, multiprocess.Process)
    assert callable(multiprocess.Multiprocess.terminate_all), UVICORN


def test_uvicorns_supervisor_still_replaces_a_dead_worker_in_its_list() -> None:
    # DrainingMultiprocess.keep_subprocess_alive: a dead worker is replaced at its index in
    # `processes` (its metrics' live gauges are then dropped), and a worker that exited with
    # STARTUP_FAILURE is left in the list while the supervisor stops (serve then exits 3).
    # The behaviour: tests/observability/test_metrics_workers.py and test_serving.py.
    keeps = inspect.getsource(multiprocess.Multiprocess.keep_subprocess_alive)
    assert "self.processes[idx] = process" in keeps, UVICORN
    assert "process.exitcode == STARTUP_FAILURE" in keeps, UVICORN
    assert "self.keep_subprocess_alive()" in inspect.getsource(multiprocess.Multiprocess.run)
    assert _parameters(multiprocess.Multiprocess.keep_subprocess_alive) == ["self"], UVICORN


def test_typer_still_raises_its_vendored_click_exceptions() -> None:
    assert issubclass(click_errors.NoArgsIsHelpError, click_errors.UsageError), TYPER
    assert issubclass(click_errors.UsageError, click_errors.ClickException), TYPER
    with pytest.raises(click_errors.NoArgsIsHelpError):
        cli.app([], prog_name="cbstop", standalone_mode=False)
    with pytest.raises(click_errors.UsageError) as mistake:
        cli.app(["bogus"], prog_name="cbstop", standalone_mode=False)
    assert mistake.value.ctx is not None, TYPER
    assert (mistake.value.exit_code, mistake.value.ctx.command_path) == (2, "cbstop"), TYPER
