"""What an operator installs and runs: the version, `python -m cbstop`, shell completion, the
settings file and its example, the systemd unit, `make run PORT=...`, and the wheel itself —
built, installed into a fresh virtualenv from the runtime lock alone, and serving the demo
from a directory that holds no source."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import venv
import zipfile
from pathlib import Path

import httpx
import pytest
import typer

from cbstop import __version__
from cbstop.cli import app
from cbstop.settings import Settings
from tests.reliability.processes import CBSTOP, free_port

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def _run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def test_version_is_the_packages_own_from_the_command_and_python_m() -> None:
    assert __version__ == VERSION
    for argv in (
        [CBSTOP, "--version"],
        [CBSTOP, "-V"],
        [sys.executable, "-m", "cbstop", "--version"],
    ):
        done = _run(argv)
        assert (done.returncode, done.stdout, done.stderr) == (0, f"cbstop {VERSION}\n", ""), argv


def test_python_m_cbstop_is_the_cbstop_command() -> None:
    done = _run([sys.executable, "-m", "cbstop", "keys", "--help"])
    assert done.returncode == 0
    assert "Usage: cbstop keys" in done.stdout
    assert "create" in done.stdout


def test_shell_completion_completes_commands_and_options() -> None:
    words = _run([CBSTOP], _CBSTOP_COMPLETE="complete_bash", COMP_WORDS="cbstop ke", COMP_CWORD="1")
    assert (words.returncode, words.stdout.split()) == (0, ["keys"])
    options = _run(
        [CBSTOP], _CBSTOP_COMPLETE="complete_bash", COMP_WORDS="cbstop serve --wo", COMP_CWORD="2"
    )
    assert (options.returncode, options.stdout.split()) == (0, ["--workers"])
    script = _run([CBSTOP, "--show-completion", "bash"])
    assert script.returncode == 0
    assert "_CBSTOP_COMPLETE=complete_bash" in script.stdout


def _example_values() -> dict[str, str]:
    """Every `# CBSTOP_NAME=value` line of .env.example, as name -> value."""
    text = (REPO / ".env.example").read_text()
    return dict(re.findall(r"^# CBSTOP_([A-Z_]+)=(.*)$", text, flags=re.MULTILINE))


def test_env_example_lists_every_setting_once_at_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = _example_values()
    assert sorted(name.lower() for name in values) == sorted(Settings.model_fields)
    for name in list(os.environ):
        if name.startswith("CBSTOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    defaults = Settings()
    # Uncommented, the example changes nothing: every value shown is the default.
    (tmp_path / ".env").write_text(
        "".join(f"CBSTOP_{name}={value}\n" for name, value in values.items())
    )
    assert Settings() == defaults


def test_the_settings_table_of_production_md_has_every_setting() -> None:
    text = (REPO / "docs" / "production.md").read_text()
    table = text.split("\n## Settings", 1)[1]
    rows = set(re.findall(r"^\| `CBSTOP_([A-Z_]+)`", table, flags=re.MULTILINE))
    assert sorted(name.lower() for name in rows) == sorted(Settings.model_fields)


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("CBSTOP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "CBSTOP_POOL_MAX_SIZE=3\nCBSTOP_KEY_SECRET=from-the-file-0123456789,older-one-0123456789\n"
        "SOMETHING_ELSE=ignored\n"
    )
    from_file = Settings()
    assert from_file.pool_max_size == 3
    assert from_file.key_secrets == ("from-the-file-0123456789", "older-one-0123456789")
    # A secret never shows in the settings' text (logs, tracebacks, reprs).
    assert "from-the-file" not in repr(from_file)
    assert "from-the-file" not in str(from_file)
    monkeypatch.setenv("CBSTOP_POOL_MAX_SIZE", "4")
    assert Settings().pool_max_size == 4


def test_the_systemd_unit_runs_a_serve_command_the_cli_accepts() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy" / "cbstop.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/cbstop/bin/cbstop"
    assert argv[1] == "serve"
    # The options parse as `cbstop serve` options (a typo would be a usage error at boot).
    command = typer.main.get_command(app)
    ctx = command.make_context("cbstop", argv[1:], resilient_parsing=False)
    sub = command.get_command(ctx, "serve")  # type: ignore[attr-defined]
    assert sub is not None
    params = sub.make_context("serve", argv[2:]).params
    assert params["workers"] == 4
    assert service["KillSignal"] == "SIGTERM"
    # systemd waits longer than the drain before it kills.
    assert float(service["TimeoutStopSec"]) > Settings().drain_timeout
    assert service["EnvironmentFile"].startswith("/etc/cbstop/")


def test_make_run_takes_a_port_and_a_host() -> None:
    done = _run(["make", "-s", "-n", "run", "PORT=8123", "HOST=0.0.0.0"])
    assert done.returncode == 0, done.stderr
    assert "cbstop serve --demo --host 0.0.0.0 --port 8123" in done.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_the_wheel_installs_into_a_fresh_venv_and_serves_the_demo(tmp_path: Path) -> None:
    """What a user of the package gets: the wheel alone (no source tree on the path) and the
    runtime lock's pins, nothing from the development lock."""
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("cbstop-*.whl")
    assert wheel.name.startswith(f"cbstop-{VERSION}-")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "cbstop/demo/world.json",
        "cbstop/db/migrations/env.py",
        "cbstop/db/migrations/script.py.mako",
        "cbstop/py.typed",
        f"cbstop-{VERSION}.dist-info/licenses/LICENSE",
    ):
        assert needed in names, needed
    assert any(n.startswith("cbstop/web/static/") for n in names), "the docs page's files"
    migrations = {p.name for p in (REPO / "cbstop/db/migrations/versions").glob("*.py")}
    assert {n.rsplit("/", 1)[1] for n in names if "/migrations/versions/" in n} == migrations
    assert not any(n.startswith("tests/") or n.startswith("bench/") for n in names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    locked = _run([*pip, "--require-hashes", "-r", str(REPO / "requirements.lock")])
    assert locked.returncode == 0, locked.stderr
    installed = _run([*pip, "--no-deps", str(wheel)])
    assert installed.returncode == 0, installed.stderr

    command = str(env_dir / "bin" / "cbstop")
    version = _run([str(env_dir / "bin" / "python"), "-m", "cbstop", "--version"])
    assert (version.returncode, version.stdout) == (0, f"cbstop {VERSION}\n")
    port = free_port()
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}
    server = subprocess.Popen(
        [command, "serve", "--demo", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as client:
            _wait_healthy(client, server)
            page = client.get("/v1/docs")
            assert page.status_code == 200
            assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            assert assets, page.text
            for asset in assets:
                if asset.startswith("data:"):
                    continue  # inline: no request at all
                assert asset.startswith("/") and not asset.startswith("//"), (
                    f"the docs page loads {asset} from elsewhere"
                )
                assert client.get(asset).status_code == 200, asset
            key = "cbs_demo_org_xyz456_key"
            listed = client.get("/v1/integrations", headers={"Authorization": f"Bearer {key}"})
            assert listed.status_code == 200
            assert {i["id"] for i in listed.json()["items"]} >= {"int_abc123"}
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Demo keys:" in out


def _wait_healthy(client: httpx.Client, server: subprocess.Popen[str]) -> None:
    for _ in range(300):
        if server.poll() is not None:
            raise AssertionError(f"cbstop serve --demo exited {server.returncode}")
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("cbstop serve --demo never became healthy")
