"""`/v1/docs` renders the document offline: Swagger UI is served from the package itself.

The fast tests read the page and its two files over the real app. The browser test starts a
real `cbstop serve --demo` and loads the page in Debian's headless Chromium with every host but
127.0.0.1 unresolvable, so a file or font fetched from elsewhere would leave it blank; it
reads the rendered DOM, keeps a screenshot in test-artifacts/, and checks Chromium's own
network log: every request the page made went to the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from cbstop.web import endpoints
from tests.reliability.processes import CBSTOP, REPO, Server, started
from tests.support import IN_CI, DatabaseMaker, api_client

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
VENDORED = Path(str(resources.files("cbstop.web").joinpath("static", "swagger-ui")))
FILES = {
    endpoints.SWAGGER_UI_JS: ("swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    endpoints.SWAGGER_UI_CSS: ("swagger-ui.css", "text/css; charset=utf-8"),
}
# What the page must show: the API's operations by tag, as (method, path, summary).
OPERATIONS = {
    "Integrations": {
        ("GET", "/v1/integrations", "List integrations"),
        ("POST", "/v1/integrations", "Create integration"),
        ("GET", "/v1/integrations/{integration_id}", "Get integration by ID"),
        ("PATCH", "/v1/integrations/{integration_id}", "Update integration"),
    },
    "Events": {
        ("GET", "/v1/events", "List events"),
        ("GET", "/v1/events/{event_id}", "Get event by ID"),
    },
}


@dataclass
class Node:
    """An element of a parsed page: enough of a DOM to find Swagger UI's blocks."""

    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find(self, *classes: str) -> list[Node]:
        """Every element below this one that has all these classes, in document order."""
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                if set(classes) <= child.classes:
                    found.append(child)
                found += child.find(*classes)
        return found

    def elements(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.elements()


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
_VOID |= {"track", "wbr"}


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def references(page: Node) -> list[str]:
    """Every URL the page itself names (src, href)."""
    return [
        element.attrs[name]
        for element in page.elements()
        for name in ("src", "href")
        if name in element.attrs
    ]


@pytest.fixture(scope="module")
def client(database_maker: DatabaseMaker) -> Iterator[TestClient]:
    """The real app (the page needs no database, so one SQLite database does)."""
    with database_maker.database("sqlite") as url, api_client(url) as test_client:
        yield test_client


def test_the_page_names_only_its_own_server_and_forbids_anything_else(client: TestClient) -> None:
    response = client.get(endpoints.DOCS_PATH)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    version = endpoints.SWAGGER_UI_VERSION
    assert references(parse(response.text)) == [
        "data:,",
        f"{endpoints.SWAGGER_UI_CSS}?v={version}",
        f"{endpoints.SWAGGER_UI_JS}?v={version}",
    ]
    # No absolute or protocol-relative URL anywhere, script included.
    assert "http:" not in response.text and "https:" not in response.text
    assert "//" not in response.text
    assert "validatorUrl: null" in response.text
    assert f'url: "{endpoints.OPENAPI_PATH}"' in response.text
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; connect-src 'self'; img-src 'self' data:;")
    assert "script-src 'self' 'sha256-" in policy


@pytest.mark.parametrize("path", sorted(FILES))
def test_swagger_uis_files_are_served_from_the_package_with_get_and_head(
    client: TestClient, path: str
) -> None:
    name, content_type = FILES[path]
    vendored = (VENDORED / name).read_bytes()

    got = client.get(f"{path}?v={endpoints.SWAGGER_UI_VERSION}")
    head = client.head(path)

    assert got.status_code == 200
    assert got.content == vendored
    assert got.headers["content-type"] == content_type
    assert got.headers["cache-control"] == "public, max-age=86400"
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(vendored))
    assert head.headers["cache-control"] == "public, max-age=86400"
    refused = client.post(path)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert refused.headers["cache-control"] == "no-store"


def test_the_vendored_files_are_the_version_and_bytes_their_readme_names() -> None:
    readme = (VENDORED / "README.md").read_text()
    version = (VENDORED / "VERSION").read_text().strip()

    assert re.fullmatch(r"5\.\d+\.\d+", version)
    assert version == endpoints.SWAGGER_UI_VERSION
    assert f"swagger-ui-dist **{version}**" in readme
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        digest = hashlib.sha256((VENDORED / name).read_bytes()).hexdigest()
        assert re.search(rf"^\s+{re.escape(name)}\s+sha256 {digest}$", readme, re.M), name
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
    assert (VENDORED / "NOTICE").read_text().startswith("swagger-ui")


# --- In a real browser -------------------------------------------------------------------------


class DemoServer(Server):
    """`cbstop serve --demo`, as a new user starts it."""

    def __init__(self) -> None:
        super().__init__("unused")
        self.argv = [CBSTOP, "serve", "--demo", "--host", "127.0.0.1", "--port", str(self.port)]


@contextmanager
def demo_server() -> Iterator[DemoServer]:
    with started(DemoServer()) as server:
        yield server


@dataclass
class Rendered:
    dom: Node
    screenshot: Path
    # (initiator, URL) of every request Chromium's network stack started.
    requests: list[tuple[str, str]]


def render_in_chromium(url: str, screenshot: Path) -> Rendered:
    """Load `url` in headless Chromium that can resolve 127.0.0.1 and nothing else."""
    profile = Path(tempfile.mkdtemp(prefix="cbstop-chromium-"))
    netlog = profile / "netlog.json"
    try:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile / 'profile'}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=20000",
                "--window-size=1280,2200",
                f"--screenshot={screenshot}",
                f"--log-net-log={netlog}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return Rendered(parse(done.stdout), screenshot, _requests(netlog))
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _requests(netlog: Path) -> list[tuple[str, str]]:
    text = netlog.read_text()
    try:
        log: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        # A log cut short at exit lacks its closing brackets (Chromium documents this).
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        (event["params"].get("initiator", ""), event["params"]["url"])
        for event in log["events"]
        # The job's start (its end carries no URL).
        if event["type"] == start and "url" in event.get("params", {})
    ]


@pytest.mark.slow
@pytest.mark.xdist_group("servers")
def test_the_docs_page_renders_the_api_operations_and_authorize_offline_in_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} is missing: apt-get install chromium (CI installs it in .ci/run)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "docs-page.png"
    screenshot.unlink(missing_ok=True)

    with demo_server() as server:
        rendered = render_in_chromium(server.url + endpoints.DOCS_PATH, screenshot)
        access_lines = [
            json.loads(line) for line in server.stderr.splitlines() if '"route"' in line
        ]

    for tag, operations in OPERATIONS.items():
        blocks = {
            (
                block.find("opblock-summary-method")[0].text,
                block.find("opblock-summary-path")[0].attrs["data-path"],
                block.find("opblock-summary-description")[0].text,
            )
            for block in rendered.dom.find("opblock")
            if block.attrs.get("id", "").startswith(f"operations-{tag}-")
        }
        assert blocks == operations, tag
    authorize = rendered.dom.find("btn", "authorize")
    assert [button.text.strip() for button in authorize] == ["Authorize"]
    # Each of the operations shows its lock (it needs the bearer key).
    assert len(rendered.dom.find("authorization__btn")) == sum(map(len, OPERATIONS.values()))

    # Every request the page made went to the server, and these are all of them; Chromium's
    # own background requests (no initiator) went nowhere: no host resolves but 127.0.0.1.
    origin = server.url
    by_page = sorted(url for initiator, url in rendered.requests if initiator == origin)
    version = endpoints.SWAGGER_UI_VERSION
    assert by_page == [
        f"{origin}{endpoints.SWAGGER_UI_JS}?v={version}",
        f"{origin}{endpoints.SWAGGER_UI_CSS}?v={version}",
        f"{origin}{endpoints.OPENAPI_PATH}",
    ]
    assert all(
        urlsplit(url).hostname != "127.0.0.1" or url.startswith(origin)
        for _, url in rendered.requests
    )
    served = {(line["route"], line["status"]) for line in access_lines}
    assert {
        (endpoints.DOCS_PATH, 200),
        (endpoints.SWAGGER_UI_JS, 200),
        (endpoints.SWAGGER_UI_CSS, 200),
        (endpoints.OPENAPI_PATH, 200),
    } <= served

    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 2200)
    # A blank page compresses to a few kilobytes; the rendered one is far larger.
    assert len(png) > 50_000
