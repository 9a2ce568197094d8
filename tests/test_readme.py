"""The README and docs/ work for a stranger with a fresh clone: every link stays inside the
repository, every shell block of the README runs as printed, and the world-file examples load.

The README's shell blocks are run with `bash` under `set -euo pipefail`, from a scratch
directory holding the clone's `.venv` and `docs` (symlinks), so a `.env` a block writes never
touches the working tree. What the test changes in a block, and nothing else:

- every block: `127.0.0.1:8000` and `--port 8000` become a free port P;
- the demo blocks run, in README order and in one shell (as a reader runs them one after the
  other), against `cbstop serve --demo --port P`, which stands in for `make run`; the blocks
  after the first run a second time, since retrying is what they show;
- the PostgreSQL block: its `createdb ... cbstop` line is left out and the test creates a
  database of its own instead (where `CBSTOP_TEST_POSTGRES` points), and
  `postgresql://postgres@127.0.0.1:5432/cbstop` becomes that database's URL.

What a block promises is read from the comment that ends each `curl -si` command: the status
first (`# 201 Created`), then any of `Header: value`, an error code (`IDEMPOTENCY_KEY_REUSED`)
and `count N`; each is asserted on that command's answer, in order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from cbstop import errors
from cbstop.world.errors import WorldError
from cbstop.world.loader import load_world, load_world_file
from tests.reliability.processes import free_port
from tests.support import (
    IN_CI,
    POSTGRES_SERVER,
    TEST_KEY_SECRET,
    postgres_unavailable_reason,
    query,
)

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
BIN = Path(sys.executable).parent
CBSTOP = str(BIN / "cbstop")

# Blocks no test can run, by their first command, and why.
NOT_RUN = {
    "make run": "installs into ./.venv and serves until stopped; the demo blocks run against "
    "`cbstop serve --demo`, which is what it serves",
    "make test": "runs this very suite",
}
PG_README_URL = "postgresql://postgres@127.0.0.1:5432/cbstop"
README_PORT = "8000"
ERROR_CODES = {
    cls.code
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.ApiError)
}
PROMISED_HEADERS = (
    "ETag",
    "Location",
    "Idempotent-Replayed",
    "Retry-After",
    "Allow",
    "WWW-Authenticate",
)


# --- reading the markdown -----------------------------------------------------------------------


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def fenced_blocks(text: str, language: str) -> list[str]:
    """The contents of the ```language blocks of a markdown text, in order."""
    pattern = re.compile(rf"^```{language}\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return pattern.findall(text)


def links(text: str) -> list[str]:
    """The targets of the inline links and images of a markdown text, outside code."""
    prose = re.sub(r"^```.*?^```$", "", text, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose)


@dataclass
class Command:
    """One command of a shell block (continuation lines joined) and its trailing comment."""

    text: str
    comment: str

    @property
    def shows_answer(self) -> bool:
        """Whether the command prints an HTTP answer with its status line (`curl -si`)."""
        return bool(re.match(r"curl\s+-si\b", self.text))


@dataclass
class Promise:
    """What a comment says a command's answer is."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    codes: list[str] = field(default_factory=list)
    count: int | None = None


def commands(block: str) -> list[Command]:
    """The block's commands; a trailing `# ...` on a command's last line is its comment."""
    out: list[Command] = []
    pending = ""
    for line in block.splitlines():
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        if not whole.strip() or whole.lstrip().startswith("#"):
            continue
        # A comment starts at " # " outside quotes; the README's commands quote no " # ".
        text, _, comment = whole.partition("   # ")
        out.append(Command(text.strip(), comment.strip()))
    return out


def promise(comment: str) -> Promise:
    """The status, headers, codes and count a command's comment promises."""
    found = re.match(r"(\d{3})\b", comment)
    assert found, f"a `curl -si` command's comment must start with its status: {comment!r}"
    said = Promise(int(found.group(1)))
    names = "|".join(re.escape(h) for h in PROMISED_HEADERS)
    for name, value in re.findall(rf"\b({names}): (\"[^\"]*\"|[^\s,;]+)", comment):
        said.headers[name.lower()] = value
    said.codes = [c for c in re.findall(r"\b[A-Z][A-Z_]+\b", comment) if c in ERROR_CODES]
    count = re.search(r"\bcount (\d+)\b", comment)
    said.count = int(count.group(1)) if count else None
    return said


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def answers(output: str) -> list[Answer]:
    """The HTTP answers `curl -si` printed, in order (a body has no trailing newline, so the
    next status line may follow it on the same line)."""
    out = []
    for part in re.split(r"(?=HTTP/1\.1 \d{3} )", output):
        if not part.startswith("HTTP/1.1 "):
            continue
        # bash's output is read as text, so curl's CRLFs arrive as newlines.
        head, _, body = part.partition("\n\n")
        lines = head.split("\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        out.append(Answer(int(lines[0].split()[1]), headers, body))
    return out


def check_promises(block: str, output: str) -> int:
    """Assert every `curl -si` command's answer is what its comment promises; how many."""
    promised = [promise(c.comment) for c in commands(block) if c.shows_answer]
    got = answers(output)
    assert len(got) == len(promised), f"{len(promised)} answers promised, got:\n{output}"
    for index, (said, answer) in enumerate(zip(promised, got, strict=True)):
        where = f"answer {index + 1} of:\n{block}\n--- output:\n{output}"
        assert answer.status == said.status, where
        for name, value in said.headers.items():
            assert answer.headers.get(name) == value, f"{name}: {where}"
        for code in said.codes:
            assert json.loads(answer.body)["errors"][0]["code"] == code, where
        if said.count is not None:
            assert json.loads(answer.body)["count"] == said.count, where
    return len(promised)


def readme_blocks() -> list[str]:
    return fenced_blocks(README.read_text(encoding="utf-8"), "sh")


def classify(blocks: list[str]) -> tuple[list[str], list[str], list[str]]:
    """The README's blocks as (not run, demo, PostgreSQL); any other block fails the test."""
    not_run, demo, pg = [], [], []
    for block in blocks:
        first = block.strip().splitlines()[0]
        if all(any(line.startswith(n) for n in NOT_RUN) for line in block.strip().splitlines()):
            not_run.append(block)
        elif "createdb" in block:
            pg.append(block)
        elif "127.0.0.1:8000" in block:
            demo.append(block)
        else:
            raise AssertionError(f"a README block this test does not know how to run: {first}")
    return not_run, demo, pg


def on_port(block: str, port: int) -> str:
    return block.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}").replace(
        f"--port {README_PORT}", f"--port {port}"
    )


# --- running the blocks -------------------------------------------------------------------------


def need_curl() -> None:
    if shutil.which("curl") is None:
        if IN_CI:
            pytest.fail("CI=true needs curl to run the README's blocks")
        pytest.skip("curl is not on PATH: the README's blocks cannot run")


def clean_env() -> dict[str, str]:
    """This environment without any CBSTOP_ setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CBSTOP_")}


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A working directory like the clone's root: `.venv` and `docs`, nothing to overwrite."""
    where = Path(tempfile.mkdtemp(prefix="cbstop-readme-"))
    (where / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    (where / "docs").symlink_to(DOCS, target_is_directory=True)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def bash(script: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    """Run `script` under `set -euo pipefail`; its output, after asserting it succeeded. Its
    process group is killed afterwards, so nothing it started in the background survives."""
    proc = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{script}\n--- out:\n{out}\n--- err:\n{err}"
    )
    return out


@contextmanager
def demo_server(cwd: Path) -> Iterator[int]:
    """`cbstop serve --demo` on a free port, as `make run` serves it; its port."""
    port = free_port()
    log = cwd / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [CBSTOP, "serve", "--demo", "--port", str(port)],
            cwd=cwd,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert proc.poll() is None, log.read_text(errors="replace")
                try:
                    if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.05)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database named after this test, dropped afterwards."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true needs PostgreSQL: {reason}")
        pytest.skip(reason)
    name = f"cbstop_test_readme_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the tests ----------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a markdown page's headings (lower case, punctuation dropped,
    spaces to hyphens)."""
    text = re.sub(r"^```.*?^```$", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    titles = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}


def test_every_link_in_the_readme_and_docs_is_a_file_inside_the_repository() -> None:
    checked = 0
    for page in markdown_files():
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            assert not path.startswith("/"), f"{page.name}: absolute link {target!r}"
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.is_relative_to(REPO), f"{page.name}: {target!r} leaves the repository"
            assert resolved.is_file(), f"{page.name}: {target!r} is not a file of the repository"
            if anchor:
                assert anchor in anchors(resolved), f"{page.name}: no heading for {target!r}"
            checked += 1
    assert checked >= 10  # the README alone links the docs, the demo world and more


def test_the_readme_links_no_web_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert [t for t in links(text) if re.match(r"https?://", t)] == []


def test_every_readme_shell_block_is_run_here_or_listed_with_its_reason() -> None:
    not_run, demo, pg = classify(readme_blocks())
    firsts = [line for block in not_run for line in block.strip().splitlines()]
    assert [line.split("#")[0].strip() for line in firsts] == list(NOT_RUN)
    assert len(demo) >= 3 and len(pg) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_the_readme_demo_blocks_answer_as_their_comments_say(scratch: Path) -> None:
    need_curl()
    _, demo, _ = classify(readme_blocks())
    # The first block's comments describe a fresh demo; the later ones (safe retries) must
    # hold however often they are run, so they run twice.
    blocks = [*demo, *demo[1:]]
    with demo_server(scratch) as port:
        output = bash("\n".join(on_port(block, port) for block in blocks), scratch, clean_env())
    assert check_promises("\n".join(blocks), output) >= 10


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_the_readme_postgresql_block_runs_as_printed_on_a_fresh_database(scratch: Path) -> None:
    need_curl()
    _, _, (block,) = classify(readme_blocks())
    createdb = [line for line in block.splitlines() if line.startswith("createdb ")]
    assert len(createdb) == 1 and PG_README_URL in block
    with postgres_database() as url:
        script = on_port(block.replace(createdb[0], "").replace(PG_README_URL, url), free_port())
        output = bash(script, scratch, clean_env())
        assert check_promises(block, output) == 1
        # The secret went to ./.env once; the world loaded; `keys create` made one key, and
        # the server stopped cleanly (`wait` returned its exit status 0 under `set -e`).
        env_lines = (scratch / ".env").read_text().splitlines()
        assert [line.split("=")[0] for line in env_lines] == ["CBSTOP_KEY_SECRET"]
        assert query(url, "SELECT id FROM integrations ORDER BY id") == [
            ("int_abc123",),
            ("int_def789",),
        ]
        assert len(query(url, "SELECT id FROM api_keys")) == 1
        # Run again, in the same directory: the secret is kept, the load changes nothing, and
        # a second key works just as the first.
        bash(script, scratch, clean_env())
        assert (scratch / ".env").read_text().splitlines() == env_lines
        assert len(query(url, "SELECT id FROM api_keys")) == 2
        assert len(query(url, "SELECT id FROM integrations")) == 2


def world_file_examples() -> list[dict[str, object]]:
    text = (DOCS / "world-files.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in fenced_blocks(text, "json")]


def test_the_world_file_reference_shows_the_example_file_exactly() -> None:
    example = world_file_examples()[0]
    assert example == json.loads((DOCS / "examples" / "world.json").read_text(encoding="utf-8"))


def test_the_world_file_examples_load_and_load_again_unchanged(database_url: str) -> None:
    _, keys, _ = world_file_examples()
    path = DOCS / "examples" / "world.json"
    first = load_world_file(database_url, path, key_secret=TEST_KEY_SECRET)
    assert first.added["integrations"] == 2 and first.added["merchants"] == 3
    assert load_world(database_url, keys, key_secret=TEST_KEY_SECRET).added["api_keys"] == 3
    again = [
        load_world_file(database_url, path, key_secret=TEST_KEY_SECRET),
        load_world(database_url, keys, key_secret=TEST_KEY_SECRET),
    ]
    assert [s.describe().split(" (")[0] for s in again] == [
        "nothing new; 10 entries already present",
        "nothing new; 3 entries already present",
    ]
    assert query(database_url, "SELECT id, abilities, revoked FROM api_keys ORDER BY id") == [
        ("key_eu_desk_ro", "integrations:read", False),
        ("key_fitness", "integrations:read integrations:write", False),
        ("key_retired", "integrations:read integrations:write", True),
    ]


def test_the_world_file_reference_error_line_is_the_loaders(database_url: str) -> None:
    text = (DOCS / "world-files.md").read_text(encoding="utf-8")
    shown = re.search(r"cbstop: error: (merchants\[0\] .*)", text)
    assert shown is not None
    bad = {"merchants": [{"id": "mrch_777", "organisation_id": "org_nowhere", "name": "Lost shop"}]}
    with pytest.raises(WorldError) as refused:
        load_world(database_url, bad, key_secret=TEST_KEY_SECRET)
    assert str(refused.value) == shown.group(1)
    assert query(database_url, "SELECT id FROM merchants") == []
