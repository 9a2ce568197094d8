"""The benchmark's scenarios and the checks they pass before they are timed, against a fake API
(httpx.MockTransport); nothing here is timed and no server is started."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import jobs
from bench.jobs import REPLAYS, SAFE_WRITE_SCENARIOS, Job, build_jobs, probe
from bench.procs import BenchError
from bench.report import BASELINE, CBSTOP
from tests.bench.support import run_args, servers, world


def _jobs(tmp_path: Path, *kinds: str, **over: Any) -> dict[tuple[str, str], Job]:
    built = build_jobs(servers(tmp_path, *kinds), world(), tmp_path, run_args(**over))
    return {(job.server_kind, job.scenario): job for job in built}


def test_the_safe_write_scenarios_run_on_postgresql_with_their_scripts(tmp_path: Path) -> None:
    built = _jobs(tmp_path, CBSTOP)
    assert built[(CBSTOP, "post_keyed")].script == "post_keyed.lua"
    replay = built[(CBSTOP, "post_replay")]
    assert replay.script == "post_replay.lua" and replay.prepare is not None
    assert replay.unchanged_count == (world().org_key, "/v1/integrations?limit=1")
    if_match = built[(CBSTOP, "patch_if_match")]
    assert if_match.script == "patch_if_match.lua" and if_match.args[-1] == "1"
    assert built[(CBSTOP, "create")].unchanged_count is None


def test_if_match_is_skipped_when_threads_cannot_each_own_an_id_per_connection(
    tmp_path: Path,
) -> None:
    custom = len(world().org_key_custom_integrations)
    assert (CBSTOP, "patch_if_match") in _jobs(tmp_path, CBSTOP, connections=custom - 1)
    assert (CBSTOP, "patch_if_match") not in _jobs(tmp_path, CBSTOP, connections=custom)
    assert (CBSTOP, "patch_if_match") in _jobs(tmp_path, CBSTOP, connections=32, threads=2)


class FakeApi:
    """Enough of CONTRACT 3.1/3.2 for the checks: keyed POSTs replay, PATCH honours If-Match."""

    def __init__(self, *, replays: bool = True, etags: bool = True) -> None:
        self.replays, self.etags = replays, etags
        self.stored: dict[str, tuple[bytes, str]] = {}
        self.versions: dict[str, int] = {}
        self.created = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if request.method == "POST":
            if self.replays and key in self.stored:
                body, location = self.stored[key]
                headers = {"location": location, "idempotent-replayed": "true"}
                return httpx.Response(201, content=body, headers=self._tag(headers, 1))
            self.created += 1
            created = {"id": f"int_new{self.created}", **json.loads(request.content)}
            content = json.dumps(created).encode()
            location = f"/v1/integrations/int_new{self.created}"
            if key is not None:
                self.stored[key] = (content, location)
            headers = {"location": location}
            return httpx.Response(201, content=content, headers=self._tag(headers, 1))
        if request.method == "PATCH":
            iid = request.url.path.rsplit("/", 1)[1]
            version = self.versions.get(iid, 1)
            if_match = request.headers.get("if-match")
            if self.etags and if_match not in (None, "*", f'"{version}"'):
                return httpx.Response(412, json={}, headers=self._tag({}, version))
            self.versions[iid] = version + 1
            return httpx.Response(200, json={"id": iid}, headers=self._tag({}, version + 1))
        return httpx.Response(200, json={"count": 1000 + self.created})

    def _tag(self, headers: dict[str, str], version: int) -> dict[str, str]:
        return {**headers, "etag": f'"{version}"'} if self.etags else headers


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeApi], None]:
    def install(api: FakeApi) -> None:
        def client() -> httpx.Client:
            return httpx.Client(transport=httpx.MockTransport(api))

        monkeypatch.setattr(jobs, "client_for_checks", client)

    return install


def _safe_writes(tmp_path: Path, *kinds: str) -> list[Job]:
    only = set(SAFE_WRITE_SCENARIOS)
    return build_jobs(servers(tmp_path, *kinds), world(), tmp_path, run_args(only=only))


def test_checks_pass_on_an_api_that_replays_and_tags(
    tmp_path: Path, fake_client: Callable[[FakeApi], None]
) -> None:
    api = FakeApi()
    fake_client(api)
    kept = probe(_safe_writes(tmp_path, CBSTOP))
    assert [job.scenario for job in kept] == [
        "post_keyed",
        "post_replay",
        "patch_if_match",
        "patch_keyed",
    ]
    # The keyed probe, then every replay key once: the probe's replays created nothing.
    assert api.created == 1 + REPLAYS
    lines = (tmp_path / f"{CBSTOP}_replays.txt").read_text().splitlines()
    assert len(lines) == len({line.split("\t")[0] for line in lines}) == REPLAYS
    key, body = lines[0].split("\t")
    assert api.stored[key][0] == json.dumps({"id": "int_new2", **json.loads(body)}).encode()


@pytest.mark.parametrize(
    ("api", "scenario", "said"),
    [
        (FakeApi(replays=False), "post_replay", "Idempotent-Replayed is [], expected ['true']"),
        (FakeApi(etags=False), "post_keyed", "no ETag in the 201 answer"),
        (FakeApi(etags=False), "patch_if_match", "no ETag in the 200 answer"),
    ],
)
def test_an_api_without_the_feature_fails_the_current_build_loudly(
    tmp_path: Path, fake_client: Callable[[FakeApi], None], api: FakeApi, scenario: str, said: str
) -> None:
    fake_client(api)
    job = next(job for job in _safe_writes(tmp_path, CBSTOP) if job.scenario == scenario)
    with pytest.raises(BenchError, match=said.replace("[", r"\[").replace("]", r"\]")):
        probe([job])


def test_a_stale_tag_must_be_refused(
    tmp_path: Path, fake_client: Callable[[FakeApi], None]
) -> None:
    class IgnoresIfMatch(FakeApi):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            request.headers.pop("if-match", None)
            return super().__call__(request)

    fake_client(IgnoresIfMatch())
    job = next(job for job in _safe_writes(tmp_path, CBSTOP) if job.scenario == "patch_if_match")
    with pytest.raises(BenchError, match="answered 200, expected 412"):
        probe([job])


def test_a_baseline_build_without_the_feature_only_loses_those_scenarios(
    tmp_path: Path, fake_client: Callable[[FakeApi], None]
) -> None:
    fake_client(FakeApi(replays=False, etags=False))
    baseline = servers(tmp_path, BASELINE)
    built = build_jobs(
        baseline, world(), tmp_path, run_args(only={"get_one", *SAFE_WRITE_SCENARIOS})
    )
    assert [job.scenario for job in probe(built)] == ["get_one"]


def test_a_count_is_read_once_the_last_run_s_writes_have_landed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _jobs(tmp_path, CBSTOP)[(CBSTOP, "post_replay")]
    reads = iter([1324, 1340, 1348, 1348, 9999])
    monkeypatch.setattr(jobs, "scope_count", lambda _: next(reads))
    assert jobs.settled_count(job, interval=0) == 1348
    assert next(reads) == 9999  # it stopped reading once two reads agreed
    monkeypatch.setattr(jobs, "scope_count", lambda _: None)
    assert jobs.settled_count(job, interval=0) is None  # a job that may write: no count
