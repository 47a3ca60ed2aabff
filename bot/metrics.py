"""Prometheus metrics and a health endpoint, served over HTTP by aiohttp.

`Metrics` owns its own `CollectorRegistry` (nothing is registered globally, so several can
live side by side, as the tests do) and takes plain values only: it knows nothing of
Discord, the ledger or the API client. `MetricsServer` serves `GET /metrics` (the registry
in Prometheus' text format) and `GET /healthz` (the three `HealthChecks`, run concurrently,
each bounded by a timeout); every other request is a 404.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TypeGuard

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

log = logging.getLogger(__name__)

PREFIX: Final = "imagine_"

DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    180.0,
    300.0,
)
"""Seconds, from a quick queue hand-off (10 ms) to the slowest image model (5 min)."""

DEFAULT_CHECK_TIMEOUT_S: Final = 2.0
_DETAIL_LIMIT: Final = 200


class Metrics:
    """The bot's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.generations = Counter(
            f"{PREFIX}generations_total",
            "Generations and edits finished, by model, kind and final status.",
            ["model", "kind", "outcome"],
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}queue_wait_seconds",
            "Time a request waited for a generation slot.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream = Histogram(
            f"{PREFIX}upstream_seconds",
            "Time the image API took to answer, retries included, by model.",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upload = Histogram(
            f"{PREFIX}upload_seconds",
            "Time taken to deliver the images to Discord.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            f"{PREFIX}upstream_errors_total",
            "Failed calls to the image API, by error kind.",
            ["kind"],
            registry=r,
        )
        self.upstream_retries = Counter(
            f"{PREFIX}upstream_retries_total",
            "Extra attempts made at the image API after a first attempt failed.",
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}queue_depth",
            "Requests waiting for a generation slot.",
            registry=r,
        )
        self.in_flight = Gauge(
            f"{PREFIX}generations_in_flight",
            "Generations holding a slot right now.",
            registry=r,
        )
        self.loop_lag = Gauge(
            f"{PREFIX}event_loop_lag_seconds",
            "The worst event-loop wake-up delay of the last reporting window.",
            registry=r,
        )
        self.spend = Counter(
            f"{PREFIX}estimated_spend_usd_total",
            "Estimated spend at the image API in US dollars, by model.",
            ["model"],
            registry=r,
        )

    def generation_finished(
        self,
        model: str,
        kind: str,
        outcome: str,
        *,
        queue_s: float | None,
        upstream_s: float | None,
        upload_s: float | None,
        cost_usd: float | None,
        attempts: int | None,
    ) -> None:
        """Record one finished generation; a None (or nonsense) value is simply not observed."""
        self.generations.labels(model=model, kind=kind, outcome=outcome).inc()
        if _usable(queue_s):
            self.queue_wait.observe(queue_s)
        if _usable(upstream_s):
            self.upstream.labels(model=model).observe(upstream_s)
        if _usable(upload_s):
            self.upload.observe(upload_s)
        if _usable(cost_usd) and cost_usd > 0:
            self.spend.labels(model=model).inc(cost_usd)
        if attempts is not None and attempts > 1:
            self.upstream_retries.inc(attempts - 1)

    def upstream_error(self, kind: str) -> None:
        """Count one failed call to the image API (`kind` is an ErrorKind value)."""
        self.upstream_errors.labels(kind=kind).inc()

    def observe_loop_lag(self, seconds: float) -> None:
        """Set the event-loop lag gauge to the latest window's worst lag."""
        if _usable(seconds):
            self.loop_lag.set(seconds)

    def track(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        """Read the queue depth and in-flight count from these callables at each scrape."""
        self.queue_depth.set_function(_guarded(queue_depth, "queue_depth"))
        self.in_flight.set_function(_guarded(in_flight, "generations_in_flight"))

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and the content type to serve it with."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _usable(value: float | None) -> TypeGuard[float]:
    """Whether a measurement can be observed: present, finite and not negative."""
    return value is not None and math.isfinite(value) and value >= 0


def _guarded(source: Callable[[], float], name: str) -> Callable[[], float]:
    """`source`, but a failure reads as NaN instead of failing the whole scrape."""

    def read() -> float:
        try:
            return float(source())
        except Exception:
            log.exception("metrics: reading %s failed", name)
            return math.nan

    return read


HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]
"""An async check returning (ok, detail); the detail must not carry secrets."""


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """What /healthz asks; the callers provide the checks."""

    gateway: HealthCheck
    """Whether the Discord gateway is connected."""
    database: HealthCheck
    """Whether the usage database answers."""
    image_api: HealthCheck
    """Whether the image API is not refusing the key."""


async def run_check(check: HealthCheck, timeout_s: float) -> tuple[bool, str]:
    """Run one check within `timeout_s`.

    Running over the time is a failure with the detail "timed out"; an exception is a
    failure whose detail is the exception's class name only, since its text could carry
    secrets (a key in a URL, a connection string).
    """
    try:
        async with asyncio.timeout(timeout_s) as scope:
            ok, detail = await check()
    except TimeoutError:
        if scope.expired():
            return False, "timed out"
        return False, "TimeoutError"
    except Exception as exc:
        log.warning("health check failed with %s", type(exc).__name__)
        return False, type(exc).__name__
    return bool(ok), str(detail)[:_DETAIL_LIMIT]


class MetricsServer:
    """Serves /metrics and /healthz on `host`:`port` for as long as the context is open.

    `port=0` picks a free port; `.port` tells which, once started.
    """

    def __init__(
        self,
        metrics: Metrics,
        checks: HealthChecks,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        check_timeout_s: float = DEFAULT_CHECK_TIMEOUT_S,
    ) -> None:
        self._metrics = metrics
        self._checks = checks
        self._host = host
        self._requested_port = port
        self._check_timeout_s = check_timeout_s
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("MetricsServer is not started; use `async with MetricsServer(...)`")
        return self._port

    async def __aenter__(self) -> MetricsServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("metrics server listening host=%s port=%d", self._host, self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            if request.path == "/metrics":
                return self._serve_metrics()
            if request.path == "/healthz":
                return await self._serve_health()
        return web.Response(status=404, text="not found\n")

    def _serve_metrics(self) -> web.Response:
        body, content_type = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _serve_health(self) -> web.Response:
        named = (
            ("gateway", self._checks.gateway),
            ("database", self._checks.database),
            ("image_api", self._checks.image_api),
        )
        results = await asyncio.gather(
            *(run_check(check, self._check_timeout_s) for _, check in named)
        )
        checks = {
            name: {"ok": ok, "detail": detail}
            for (name, _), (ok, detail) in zip(named, results, strict=True)
        }
        all_ok = all(ok for ok, _ in results)
        return web.Response(
            status=200 if all_ok else 503,
            text=json.dumps({"ok": all_ok, "checks": checks}),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
