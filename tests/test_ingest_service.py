"""The push endpoint (jobs.ingest) served by uvicorn on loopback, against a real DuckDB file: what a logger or a
webhook sender gets for each kind of request, and what reaches the file."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from core.catalog import catalog as cat
from core.catalog.connections import new_draft, save_connections
from core.catalog.push_sources import make_token, revoke_token
from core.collect.push_auth import signature_of
from core.config import Settings
from core.models import Category, MeterIn, SiteIn
from core.runtime import Runtime, open_runtime
from core.store.change_marks import ChangeMarks
from jobs.ingest import IngestService, create_app
from tests.fakes.server import serve
from tests.holder import held

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@dataclass
class Pushing:
    runtime: Runtime
    url: str
    source_id: int
    token: str
    service: IngestService

    def post(self, body: object = None, *, token: str | None = None, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"} | dict(kwargs.pop("headers", {}))  # type: ignore[arg-type]
        target = f"{self.url}/api/v1/sources/{kwargs.pop('source_id', self.source_id)}/readings"
        if body is not None:
            kwargs["json"] = body
        return httpx.post(target, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def rows(self) -> list[tuple[datetime, int, float | None, bool]]:
        with self.runtime.store.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT ts, interval_s, value, is_final FROM readings WHERE source_id = ? ORDER BY ts", [self.source_id]
            ).fetchall()
        return [(r[0], int(r[1]), r[2], bool(r[3])) for r in rows]


def push_source(runtime: Runtime, name: str = "Building load") -> int:
    site = cat.create_site(
        runtime.store, SiteIn(name=f"{name} site", latitude=48.1, longitude=11.6, timezone="Europe/Berlin")
    )
    meter = cat.create_meter(runtime.store, site.id, MeterIn(name="Main", category=Category.CONS))
    draft = new_draft("new", meter.id, Category.CONS)
    draft.values |= {"name": name, "capacity_kw": "50", "use_api": True, "api_provider": "push", "source_type": "load"}
    save_connections(runtime.store, runtime.box, site.id, [draft], set())
    return next(s.id for s in cat.load_catalog(runtime.store).sources if s.name == name)


def start(tmp_path: Path, **settings: object) -> tuple[Runtime, IngestService]:
    runtime = open_runtime(
        Settings(db_path=tmp_path / "d.duckdb", key_file=tmp_path / "k.key", seed_demo=False, **settings)  # type: ignore[arg-type]
    )
    return runtime, IngestService(runtime)


@pytest.fixture
def pushing(tmp_path: Path) -> Iterator[Pushing]:
    runtime, _ = start(tmp_path)
    source_id = push_source(runtime)
    token = make_token(runtime.store, runtime.box, source_id, NOW)
    service = IngestService(runtime)
    with serve(create_app(service)) as url:
        yield Pushing(runtime, url, source_id, token, service)
    service.close()


def readings(*values: float | None, start: datetime = NOW - timedelta(hours=1), step_s: int = 300) -> dict:
    return {
        "readings": [
            {"ts": (start + timedelta(seconds=i * step_s)).isoformat(), "value": v, "interval_s": step_s}
            for i, v in enumerate(values)
        ]
    }


def test_readings_are_stored_once_however_often_they_are_sent(pushing: Pushing) -> None:
    body = readings(1000.0, None, 1500.5)
    first = pushing.post(body)
    assert first.status_code == 200 and first.json() == {"readings": 3, "status": "stored"}
    assert pushing.post(body).status_code == 200  # a sender's retry
    rows = pushing.rows()
    assert [(r[1], r[2], r[3]) for r in rows] == [(300, 1000.0, True), (300, None, True), (300, 1500.5, True)]
    assert rows[0][0] == NOW - timedelta(hours=1)
    with pushing.runtime.store.connect(read_only=True) as con:
        runs = con.sql("SELECT provider, outcome, rows_written FROM collector_runs ORDER BY id").fetchall()
        daily = con.execute("SELECT count(*) FROM readings_15min WHERE source_id = ?", [pushing.source_id]).fetchall()
    assert runs == [("push", "ok", 3), ("push", "ok", 0)]
    assert daily[0][0] >= 1  # rollups follow, as for polled readings
    assert ChangeMarks(pushing.runtime.store.path).newest([pushing.source_id]) is not None


def test_energy_in_wh_becomes_average_power_and_a_running_interval_stays_open(pushing: Pushing) -> None:
    body = readings(250.0, start=NOW - timedelta(minutes=15), step_s=900) | {"unit": "Wh"}
    assert pushing.post(body).status_code == 200
    running = {"readings": [{"ts": datetime.now(UTC).isoformat(), "value": 10, "interval_s": 3600}]}
    assert pushing.post(running).status_code == 200
    (closed, still_open) = pushing.rows()
    assert closed[1:] == (900, 1000.0, True)
    assert still_open[3] is False  # its hour is not over: the next value sent replaces it
    running["readings"][0]["value"] = 20
    pushing.post(running)
    assert pushing.rows()[-1][2] == 20.0


def test_csv_bodies_follow_the_import_rules(pushing: Pushing) -> None:
    day = (NOW - timedelta(days=1)).date()
    text = f"timestamp;value\n{day}T10:00:00+01:00;1,5\n{day}T10:15:00+01:00;2,5\n"
    answer = pushing.post(None, content=text.encode(), headers={"Content-Type": "text/csv"}, params={"unit": "kW"})
    assert answer.status_code == 200, answer.text
    assert [r[2] for r in pushing.rows()] == [1500.0, 2500.0]
    refused = pushing.post(None, content=b"timestamp,value\nyesterday,1\n", headers={"Content-Type": "text/csv"})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    assert "row 2" in refused.json()["errors"][0]["detail"]


def test_one_bad_row_refuses_the_whole_request_with_every_problem_listed(pushing: Pushing) -> None:
    body = readings(1.0, 2.0)
    body["readings"] += [
        {"ts": "2026-12-03T10:00:00", "value": 1, "interval_s": 60},
        {"ts": "2026-12-03T10:00:00Z", "value": "12", "interval_s": 0},
        {"ts": body["readings"][0]["ts"], "value": 3, "interval_s": 300},
        "not an object",
    ]
    answer = pushing.post(body)
    problem = answer.json()
    assert answer.status_code == 422 and problem["status"] == 422 and problem["title"] == "Unprocessable Content"
    assert [e["pointer"] for e in problem["errors"]] == [
        "/readings/2/ts",
        "/readings/3/interval_s",
        "/readings/3/value",
        "/readings/4/ts",
        "/readings/5",
    ]
    assert "no UTC offset" in problem["errors"][0]["detail"]
    assert pushing.rows() == []  # all or nothing


@pytest.mark.parametrize(
    ("content", "content_type", "status", "words"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'{"values": []}', "application/json", 400, '"readings" list'),
        (b"<xml/>", "application/xml", 415, "application/json or text/csv"),
        (b'{"readings": [], "unit": "MW"}', "application/json", 422, "not a unit"),
    ],
)
def test_bodies_that_are_not_readings_are_refused_in_words(
    pushing: Pushing, content: bytes, content_type: str, status: int, words: str
) -> None:
    answer = pushing.post(None, content=content, headers={"Content-Type": content_type})
    assert answer.status_code == status
    assert words in answer.json()["detail"] + " ".join(e["detail"] for e in answer.json().get("errors", []))


def test_curls_default_content_type_with_a_json_body_is_taken_as_json(pushing: Pushing) -> None:
    body = (
        b'{"readings": [{"ts": "%s", "value": 5, "interval_s": 60}]}'
        % (NOW - timedelta(minutes=5)).isoformat().encode()
    )
    answer = pushing.post(None, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200


def test_tokens_open_only_their_own_source_and_revoking_shuts_it(pushing: Pushing) -> None:
    other = push_source(pushing.runtime, "Other building")
    other_token = make_token(pushing.runtime.store, pushing.runtime.box, other, NOW)
    time.sleep(1.1)  # an unknown token re-reads the directory at most once a second
    assert pushing.post(readings(1.0), token=other_token).status_code == 401  # another source's token
    assert pushing.post(readings(1.0), token="dcp_guessed").status_code == 401
    assert pushing.post(readings(1.0), source_id=other).status_code == 401
    assert httpx.post(f"{pushing.url}/api/v1/sources/{other}/readings", json=readings(1.0)).status_code == 401
    assert pushing.post(readings(1.0), token=other_token, source_id=other).status_code == 200
    revoke_token(pushing.runtime.store, other)
    time.sleep(5.1)  # the directory is re-read every 5 s
    refused = pushing.post(readings(2.0), token=other_token, source_id=other)
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_limits_answer_413_and_429_with_retry_after(tmp_path: Path) -> None:
    runtime, _ = start(tmp_path, ingest_max_body_kb=1, ingest_max_readings=3, ingest_requests_per_minute=4)
    source_id = push_source(runtime)
    token = make_token(runtime.store, runtime.box, source_id, NOW)
    service = IngestService(runtime)
    with serve(create_app(service)) as url:
        pushing = Pushing(runtime, url, source_id, token, service)
        assert pushing.post(readings(*range(4))).status_code == 413  # four readings
        assert pushing.post(None, content=b"{" + b" " * 2000 + b"}").status_code == 413  # 2 KB
        assert pushing.post(readings(1.0)).status_code == 200
        assert pushing.post(readings(1.0)).status_code == 200
        refused = pushing.post(readings(1.0))
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    service.close()


def test_signed_requests_are_checked_and_replays_refused(tmp_path: Path) -> None:
    runtime, _ = start(tmp_path)
    source_id = push_source(runtime)
    secret = make_token(runtime.store, runtime.box, source_id, NOW, signed=True)
    service = IngestService(runtime)
    body = httpx.Request("POST", "http://x", json=readings(7.0)).content
    with serve(create_app(service)) as url:
        pushing = Pushing(runtime, url, source_id, secret, service)

        def signed(stamp: int, signature: str | None = None) -> httpx.Response:
            headers = {"Content-Type": "application/json", "X-Timestamp": str(stamp)}
            headers["X-Signature"] = signature or signature_of(secret, str(stamp), body)
            return pushing.post(None, content=body, headers=headers)

        now = int(time.time())
        assert pushing.post(None, content=body, headers={"Content-Type": "application/json"}).status_code == 401
        assert "X-Signature" in signed(now, "sha256=" + "0" * 64).json()["detail"]
        assert "minutes from the server's clock" in signed(now - 400).json()["detail"]
        assert signed(now).status_code == 200
        replay = signed(now)
        assert replay.status_code == 401 and "replay" in replay.json()["detail"]
    service.close()
    assert [r[2] for r in pushing.rows()] == [7.0]


def test_a_held_file_gives_202_and_the_readings_are_written_later(
    pushing: Pushing, caplog: pytest.LogCaptureFixture
) -> None:
    pushing.post(readings())  # the directory is read before the file is held
    with held(pushing.runtime.store.path), caplog.at_level(logging.WARNING):
        answer = pushing.post(readings(42.0))
        assert any("pushed readings are still taken" in r.getMessage() for r in caplog.records)
        assert answer.status_code == 202 and answer.json()["status"] == "spooled"
        assert list(pushing.runtime.store.path.with_name("d.duckdb.spool").glob("pass-*"))  # durable before answering
    assert pushing.post(readings(None, 43.0)).status_code == 200  # the spool is written out first, in order
    assert [r[2] for r in pushing.rows()] == [42.0, 43.0]


def test_no_token_reaches_a_log_and_no_traceback_reaches_a_client(
    pushing: Pushing, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        pushing.post(readings(1.0))
        pushing.post(readings(1.0), token=pushing.token + "x")
        pushing.post({"readings": [{"ts": "bad", "value": 1, "interval_s": 60}]})
        gone = httpx.get(f"{pushing.url}/api/v1/sources/{pushing.source_id}/readings")
    assert gone.status_code == 405 and gone.headers["Allow"] == "POST"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert pushing.token[4:] not in logged
    assert "Traceback" not in gone.text


def test_api_health_shows_what_the_service_took_and_refused(pushing: Pushing) -> None:
    from core.analytics.api_health import load_health

    before = load_health(pushing.runtime.store, pushing.runtime.box, datetime.now(UTC))
    row = before.sources.row(by_predicate=pl.col("source_id") == pushing.source_id, named=True)
    assert (row["status"], row["account"]) == ("waiting", None)  # pushed: no vendor account, no poll
    pushing.post(readings(1.0, 2.0))
    pushing.post({"readings": [{"ts": "yesterday", "value": 1, "interval_s": 60}]})
    pushing.post(readings(1.0), token="dcp_wrong")
    assert pushing.service.activity.publish(pushing.runtime.store, force=True)

    health = load_health(pushing.runtime.store, pushing.runtime.box, datetime.now(UTC))
    assert health.pushed is not None
    pushed = health.pushed.row(by_predicate=pl.col("source_id") == pushing.source_id, named=True)
    assert (pushed["readings"], pushed["refused"], pushed["service_running"]) == (2, 2, True)
    assert pushed["last_refusal"].startswith("401: This token does not open this source")
    assert "dcp_" not in pushed["last_refusal"]
    row = health.sources.row(by_predicate=pl.col("source_id") == pushing.source_id, named=True)
    assert row["status"] == "ok" and row["next_poll_note"].startswith("pushed by its sender")
