"""METRICS_PORT: /healthz and /metrics of the running bot, as an operator's probe sees them."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import fakes, run_bot
from tests.fakes.fake_cometapi import Reply

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


async def test_health_and_metrics_follow_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Healthy when ready; a delivered image counts; a refused key turns the probe to 503."""
    port = free_port()
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, metrics_port=port) as bot,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{port}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            body = await response.json()
        assert set(body["checks"]) == {"gateway", "database", "image_api"}
        handle = await bot.imagine(prompt="a cat", model="dall-e-3")
        await handle.wait_for(lambda r: bool(r.files))
        await bot.settled()
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        assert (
            sample(text, "imagine_generations_total", model="dall-e-3", outcome="delivered") == 1.0
        )
        assert sample(text, "imagine_estimated_spend_usd_total", model="dall-e-3") == pytest.approx(
            0.04
        )
        comet.queue(Reply.error(401, "invalid key"))
        refused = await bot.imagine(prompt="again")
        await refused.wait_for_final()
        await bot.settled()
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["checks"]["image_api"]["ok"] is False
        assert body["checks"]["gateway"]["ok"] is True
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
        assert sample(text, "imagine_upstream_errors_total", kind="configuration") == 1.0


async def _probe(port: int | None, cwd: Path) -> tuple[int, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    if port is not None:
        env["METRICS_PORT"] = str(port)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "healthcheck",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), out.decode()


async def test_the_container_probe_follows_healthz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m bot healthcheck` (the Dockerfile's HEALTHCHECK): 0 healthy, 1 unreachable."""
    port = free_port()
    assert (await _probe(None, tmp_path))[0] == 0
    assert (await _probe(port, tmp_path))[0] == 1
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, metrics_port=port),
    ):
        code, out = await _probe(port, tmp_path)
    assert code == 0, out
    assert '"ok": true' in out
