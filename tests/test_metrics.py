"""The metrics registry and the /metrics and /healthz server, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import HealthCheck, HealthChecks, Metrics, MetricsServer


def passing(detail: str = "fine") -> HealthCheck:
    async def check() -> tuple[bool, str]:
        return True, detail

    return check


def failing(detail: str) -> HealthCheck:
    async def check() -> tuple[bool, str]:
        return False, detail

    return check


async def hanging() -> tuple[bool, str]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def raising() -> tuple[bool, str]:
    raise RuntimeError("could not connect to https://api.example/?key=sk-SECRET-123")


ALL_OK = HealthChecks(
    gateway=passing("connected"), database=passing("answered"), image_api=passing("key accepted")
)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def scrape(http: aiohttp.ClientSession, server: MetricsServer) -> str:
    async with http.get(f"http://127.0.0.1:{server.port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.text()


async def test_metrics_lists_every_metric_with_the_right_values(
    http: aiohttp.ClientSession,
) -> None:
    metrics = Metrics()
    depth = [3.0]
    metrics.track(queue_depth=lambda: depth[0], in_flight=lambda: 2)
    metrics.generation_finished(
        "dall-e-3",
        "generation",
        "delivered",
        queue_s=0.5,
        upstream_s=12.0,
        upload_s=0.3,
        cost_usd=0.04,
        attempts=3,
    )
    metrics.generation_finished(
        "gpt-image-1",
        "edit",
        "failed",
        queue_s=0.02,
        upstream_s=200.0,
        upload_s=None,
        cost_usd=None,
        attempts=1,
    )
    metrics.generation_finished(
        "dall-e-3",
        "generation",
        "delivered",
        queue_s=None,
        upstream_s=None,
        upload_s=None,
        cost_usd=0.08,
        attempts=None,
    )
    metrics.upstream_error("rate_limited")
    metrics.upstream_error("rate_limited")
    metrics.upstream_error("timeout")
    metrics.observe_loop_lag(0.25)
    metrics.observe_loop_lag(0.125)  # the latest window's worst, not the worst ever

    async with MetricsServer(metrics, ALL_OK, port=0) as server:
        first = samples(await scrape(http, server))
        depth[0] = 7.0
        second = samples(await scrape(http, server))

    names = {name for name, _ in first}
    for expected in (
        "imagine_generations_total",
        "imagine_queue_wait_seconds_count",
        "imagine_upstream_seconds_count",
        "imagine_upload_seconds_count",
        "imagine_upstream_errors_total",
        "imagine_upstream_retries_total",
        "imagine_queue_depth",
        "imagine_generations_in_flight",
        "imagine_event_loop_lag_seconds",
        "imagine_estimated_spend_usd_total",
    ):
        assert expected in names, expected

    gen = "imagine_generations_total"
    assert first[key(gen, model="dall-e-3", kind="generation", outcome="delivered")] == 2
    assert first[key(gen, model="gpt-image-1", kind="edit", outcome="failed")] == 1

    assert first[key("imagine_queue_wait_seconds_count")] == 2
    assert first[key("imagine_queue_wait_seconds_sum")] == pytest.approx(0.52)
    assert first[key("imagine_queue_wait_seconds_bucket", le="0.025")] == 1
    assert first[key("imagine_queue_wait_seconds_bucket", le="0.01")] == 0
    assert first[key("imagine_queue_wait_seconds_bucket", le="300.0")] == 2

    up = "imagine_upstream_seconds"
    assert first[key(f"{up}_count", model="dall-e-3")] == 1
    assert first[key(f"{up}_sum", model="dall-e-3")] == 12.0
    assert first[key(f"{up}_count", model="gpt-image-1")] == 1
    assert first[key(f"{up}_bucket", model="gpt-image-1", le="120.0")] == 0
    assert first[key(f"{up}_bucket", model="gpt-image-1", le="300.0")] == 1

    assert first[key("imagine_upload_seconds_count")] == 1
    assert first[key("imagine_upload_seconds_sum")] == pytest.approx(0.3)

    assert first[key("imagine_upstream_errors_total", kind="rate_limited")] == 2
    assert first[key("imagine_upstream_errors_total", kind="timeout")] == 1
    assert first[key("imagine_upstream_retries_total")] == 2  # attempts 3, 1 and None

    assert first[key("imagine_estimated_spend_usd_total", model="dall-e-3")] == pytest.approx(0.12)
    assert key("imagine_estimated_spend_usd_total", model="gpt-image-1") not in first

    assert first[key("imagine_event_loop_lag_seconds")] == 0.125
    assert first[key("imagine_queue_depth")] == 3
    assert second[key("imagine_queue_depth")] == 7  # read at scrape time
    assert first[key("imagine_generations_in_flight")] == 2


def test_render_gives_the_prometheus_content_type() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain; version=")
    assert b"# HELP imagine_generations_total" in body


def test_nonsense_values_are_not_observed() -> None:
    """Negative or non-finite durations and costs are skipped; the outcome still counts."""
    metrics = Metrics()
    metrics.generation_finished(
        "dall-e-2",
        "generation",
        "interrupted",
        queue_s=-1.0,
        upstream_s=math.nan,
        upload_s=math.inf,
        cost_usd=-0.5,
        attempts=0,
    )
    metrics.observe_loop_lag(math.nan)
    got = samples(metrics.render()[0].decode())
    interrupted = key(
        "imagine_generations_total", model="dall-e-2", kind="generation", outcome="interrupted"
    )
    assert got[interrupted] == 1
    assert got[key("imagine_queue_wait_seconds_count")] == 0
    assert got[key("imagine_upload_seconds_count")] == 0
    assert not any(name.startswith("imagine_upstream_seconds") for name, _ in got)
    assert not any(name == "imagine_estimated_spend_usd_total" for name, _ in got)
    assert got[key("imagine_upstream_retries_total")] == 0
    assert got[key("imagine_event_loop_lag_seconds")] == 0


def test_a_failing_gauge_source_does_not_break_the_scrape() -> None:
    metrics = Metrics()

    def broken() -> float:
        raise ZeroDivisionError

    metrics.track(queue_depth=broken, in_flight=lambda: 1)
    got = samples(metrics.render()[0].decode())
    assert math.isnan(got[key("imagine_queue_depth")])
    assert got[key("imagine_generations_in_flight")] == 1


def test_two_instances_do_not_share_state() -> None:
    a, b = Metrics(), Metrics()
    a.generation_finished(
        "dall-e-3",
        "generation",
        "delivered",
        queue_s=1.0,
        upstream_s=1.0,
        upload_s=1.0,
        cost_usd=1.0,
        attempts=2,
    )
    a.upstream_error("timeout")
    a.observe_loop_lag(1.0)
    a.track(queue_depth=lambda: 5, in_flight=lambda: 5)
    got_a = samples(a.render()[0].decode())
    got_b = samples(b.render()[0].decode())
    assert got_a[key("imagine_upstream_retries_total")] == 1
    assert got_b[key("imagine_upstream_retries_total")] == 0
    assert got_b[key("imagine_queue_wait_seconds_count")] == 0
    assert got_b[key("imagine_event_loop_lag_seconds")] == 0
    assert got_b[key("imagine_queue_depth")] == 0
    assert not any(name == "imagine_generations_total" for name, _ in got_b)
    assert not any(name == "imagine_upstream_errors_total" for name, _ in got_b)


async def healthz(
    http: aiohttp.ClientSession, checks: HealthChecks, check_timeout_s: float = 2.0
) -> tuple[int, str, dict[str, Any]]:
    async with (
        MetricsServer(Metrics(), checks, check_timeout_s=check_timeout_s) as server,
        http.get(f"http://127.0.0.1:{server.port}/healthz") as response,
    ):
        assert response.content_type == "application/json"
        text = await response.text()
        return response.status, text, await response.json()


async def test_healthz_is_200_when_every_check_passes(http: aiohttp.ClientSession) -> None:
    status, _, body = await healthz(http, ALL_OK)
    assert status == 200
    assert body == {
        "ok": True,
        "checks": {
            "gateway": {"ok": True, "detail": "connected"},
            "database": {"ok": True, "detail": "answered"},
            "image_api": {"ok": True, "detail": "key accepted"},
        },
    }


async def test_healthz_is_503_naming_the_failing_check(http: aiohttp.ClientSession) -> None:
    checks = HealthChecks(
        gateway=passing("connected"),
        database=failing("database is locked"),
        image_api=passing("key accepted"),
    )
    status, _, body = await healthz(http, checks)
    assert status == 503
    assert body == {
        "ok": False,
        "checks": {
            "gateway": {"ok": True, "detail": "connected"},
            "database": {"ok": False, "detail": "database is locked"},
            "image_api": {"ok": True, "detail": "key accepted"},
        },
    }


async def test_a_hanging_check_times_out(http: aiohttp.ClientSession) -> None:
    checks = HealthChecks(gateway=passing(), database=passing(), image_api=hanging)
    started = time.perf_counter()
    status, _, body = await healthz(http, checks, check_timeout_s=0.2)
    assert time.perf_counter() - started < 2
    assert status == 503
    assert body["checks"] == {
        "gateway": {"ok": True, "detail": "fine"},
        "database": {"ok": True, "detail": "fine"},
        "image_api": {"ok": False, "detail": "timed out"},
    }


async def test_checks_run_concurrently_each_with_its_own_timeout(
    http: aiohttp.ClientSession,
) -> None:
    checks = HealthChecks(gateway=hanging, database=hanging, image_api=hanging)
    started = time.perf_counter()
    status, _, body = await healthz(http, checks, check_timeout_s=0.3)
    assert time.perf_counter() - started < 0.8  # not 3 x 0.3 s one after another
    assert status == 503
    assert body["checks"] == {
        name: {"ok": False, "detail": "timed out"} for name in ("gateway", "database", "image_api")
    }


async def test_an_exception_is_named_by_class_never_by_its_text(
    http: aiohttp.ClientSession,
) -> None:
    checks = HealthChecks(gateway=passing(), database=raising, image_api=passing())
    status, text, body = await healthz(http, checks)
    assert status == 503
    assert body["checks"] == {
        "gateway": {"ok": True, "detail": "fine"},
        "database": {"ok": False, "detail": "RuntimeError"},
        "image_api": {"ok": True, "detail": "fine"},
    }
    assert "SECRET" not in text
    assert "api.example" not in text


async def test_a_timeout_error_raised_by_a_check_is_not_reported_as_timed_out(
    http: aiohttp.ClientSession,
) -> None:
    async def raises_timeout() -> tuple[bool, str]:
        raise TimeoutError("read timed out from 10.0.0.1")

    checks = HealthChecks(gateway=raises_timeout, database=passing(), image_api=passing())
    status, text, body = await healthz(http, checks)
    assert status == 503
    assert body["checks"]["gateway"] == {"ok": False, "detail": "TimeoutError"}
    assert "10.0.0.1" not in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/metrics/extra"),
        ("GET", "/health"),
        ("POST", "/metrics"),
        ("DELETE", "/healthz"),
    ],
)
async def test_anything_else_is_404(http: aiohttp.ClientSession, method: str, path: str) -> None:
    async with (
        MetricsServer(Metrics(), ALL_OK) as server,
        http.request(method, f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        assert response.status == 404


async def test_the_server_closes_cleanly(http: aiohttp.ClientSession) -> None:
    server = MetricsServer(Metrics(), ALL_OK, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    async with server:
        port = server.port
        assert port > 0
        await scrape(http, server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{port}/metrics"):
            pass
    # The port is free again: a new server can take it.
    async with MetricsServer(Metrics(), ALL_OK, port=port) as again:
        assert again.port == port
        await scrape(http, again)
