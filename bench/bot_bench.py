"""The whole bot as users feel it: `python -m bench.bot_bench [--runs 3] [--smoke]`.

Starts `python -m bot` as a subprocess against the loopback fakes (tests/fakes: Discord's REST
and gateway, CometAPI with a set upstream latency), fires /imagine and measures:

1. acknowledgement: INTERACTION_CREATE sent to the initial callback received, one at a time
   and during the burst;
2. added latency: final message received minus the upstream time the fake measured for that
   call, for one ~1 MiB and one ~4 MiB b64_json image and a ~1 MiB url image, with no upstream
   wait ("hot") and with 0.25 s; beside it, from the same run, the floor (base64-decode, or
   download, then one multipart post to the fake with a plain aiohttp client) and the full
   floor (the same plain client also asking the fake CometAPI first, with the same upstream
   wait, so it pays every cost of the machine the bot pays);
3. a burst of 200 simultaneous /imagine from 50 users, 2 s upstream, 200 concurrent
   generations: wall time to the last final message (beside the fake Discord's own floor for
   that many uploads), the worst event-loop lag the bot logs (LOOP_LAG_LOG_S), errors; and
   the same burst acknowledged by a bare discord.py bot (bench/baseline_bot.py: /imagine only
   defers) against its own fake, just before and just after ours, with the ratio ours / bare
   bot;
4. peak RSS of the bot during 50 concurrent ~4 MiB images, and per image in flight;
5. start-up: process start to the `ready as` log line (every bot process started);
6. client CPU per upstream call, ours (`CometAPIClient.generate`) against the official `openai`
   SDK (`AsyncOpenAI.images.generate`, with and without b64decode of its answer), the fake
   CometAPI in a child process so that `time.process_time()` counts the clients only.

Prints a Markdown table (medians of `--runs`), the targets met or missed, and writes
bench/results/bot_bench.json. `--bot-root` measures a scratch copy of the package instead and
`--bot-env NAME=VALUE` passes settings to it. Only loopback addresses; every wait is bounded;
a full run takes about a minute and a half on two cores. `--smoke` runs every phase once at
tiny sizes, prints the figures and judges no target (and writes no JSON): CI runs it so that
the benchmark cannot silently stop working; any error still fails it.

The helpers here (bot processes, bursts, acknowledgements) are shared by bench/contention.py
and bench/speed_extra.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import psutil  # type: ignore[import-untyped]

from tests.fakes.fake_cometapi import DEFAULT_USAGE, FakeCometAPI, RecordedCall, Reply
from tests.fakes.fake_discord import FINAL_ROUTES, FakeDiscord, RecordedRequest
from tests.fakes.images import make_image_of_size

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS_PATH: Final = ROOT / "bench" / "results" / "bot_bench.json"
COMET_KEY: Final = "sk-bench-comet-key-0123456789"
MODEL: Final = "gpt-image-1"
MIB: Final = 1024 * 1024
USER_BASE: Final = 1_180_000_000_000_100_000

READY_RE: Final = re.compile(r"ready as .+ in \d+ guilds with \d+ shard")
LAG_RE: Final = re.compile(
    r"event loop lag window_s=([\d.]+) max_ms=([\d.]+) worst_since_start_ms=([\d.]+)"
)
LAG_WINDOW_S: Final = 0.5

# Hard limits so a broken bot cannot hang the benchmark.
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 20.0
CALLBACK_TIMEOUT_S: Final = 10.0
CHILD_LIFETIME_S: Final = 300.0
MAX_LOG_LINES: Final = 200_000


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(samples_s: Sequence[float], *quantiles: float) -> dict[str, float]:
    """Milliseconds at the given percentiles, plus the maximum and the count."""
    ms = [s * 1000 for s in samples_s]
    out = {f"p{q:g}_ms": percentile(ms, q) for q in quantiles}
    out["max_ms"] = max(ms) if ms else math.nan
    out["n"] = len(ms)
    return out


# --------------------------------------------------------------------------------------------
# The fakes, with the two timestamps the benchmark needs
# --------------------------------------------------------------------------------------------


class BenchDiscord(FakeDiscord):
    """FakeDiscord that notes when each INTERACTION_CREATE left and each request was handled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent_at: dict[str, float] = {}
        self.done_at: dict[int, float] = {}

    async def _send(self, conn: Any, payload: dict[str, Any]) -> None:
        await super()._send(conn, payload)
        if payload.get("t") == "INTERACTION_CREATE":
            self.sent_at[str(payload["d"]["token"])] = time.monotonic()

    def _notify(self, request: RecordedRequest) -> None:
        # Called once the request is fully read and handled: "the message was received".
        self.done_at[id(request)] = time.monotonic()
        super()._notify(request)

    async def __aenter__(self) -> BenchDiscord:
        await self.start()
        return self

    def forget(self) -> None:
        """Drop what earlier phases recorded (uploaded images included) to bound memory."""
        self.requests.clear()
        self.done_at.clear()
        self.sent_at.clear()
        self.gateway_frames.clear()
        self._cdn.clear()
        for session in self._sessions.values():
            session.sent.clear()


def b64_reply_body(image: bytes) -> bytes:
    """The JSON CometAPI answers for one b64_json image, encoded once and served verbatim."""
    document = {
        "created": 1_700_000_000,
        "data": [{"b64_json": base64.b64encode(image).decode("ascii")}],
        "usage": dict(DEFAULT_USAGE),
    }
    return json.dumps(document).encode()


def url_reply_body(url: str) -> bytes:
    """The JSON CometAPI answers for one image given as a link."""
    return json.dumps({"created": 1_700_000_000, "data": [{"url": url}]}).encode()


def raw_json(body: bytes, latency: float) -> Reply:
    """A prebuilt 200 body after `latency` seconds: the fake spends no CPU per call on it."""
    return Reply.raw(200, body, "application/json", latency=latency)


def forget_comet(comet: FakeCometAPI) -> None:
    """Drop the fake CometAPI's records of earlier phases."""
    comet.calls.clear()
    comet.requests.clear()


# --------------------------------------------------------------------------------------------
# The bot process
# --------------------------------------------------------------------------------------------


@dataclass
class BotProcess:
    """A running `python -m bot` and its stderr, line by line with arrival times."""

    process: asyncio.subprocess.Process
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    ready_at: float | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The bot's process id."""
        return self.process.pid

    @property
    def startup_s(self) -> float:
        """Process start to the ready line."""
        assert self.ready_at is not None
        return self.ready_at - self.started

    async def read_stderr(self) -> None:
        """Keep the pipe drained; note the ready line."""
        stream = self.process.stderr
        assert stream is not None
        while True:
            raw = await stream.readline()
            if not raw:
                return
            now = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if len(self.lines) < MAX_LOG_LINES:
                self.lines.append((now, line))
            if self.ready_at is None and READY_RE.search(line):
                self.ready_at = now
                self.ready.set()

    def lag_between(self, start: float, end: float) -> float | None:
        """Worst loop lag (ms) of the lag windows overlapping [start, end]; None if not logged."""
        worst: float | None = None
        for at, line in self.lines:
            match = LAG_RE.search(line)
            if match is None:
                continue
            window = float(match[1])
            if start < at <= end + window + 0.25:
                worst = max(worst or 0.0, float(match[2]))
        return worst

    def problems(self, excused: Sequence[tuple[float, float]] = ()) -> list[str]:
        """Log lines that show something went wrong, outside the `excused` spans of time.

        A phase that provokes errors on purpose (a locked database) reports its own and
        excuses its span, so that every other error still fails the run.
        """
        return [
            line
            for at, line in self.lines
            if (" ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"))
            and not any(start <= at <= end for start, end in excused)
        ]

    def log_text(self) -> str:
        """The whole captured stderr."""
        return "\n".join(line for _, line in self.lines)


# How each kind of bot process is started: the real bot, and the bare discord.py baseline.
BOT_COMMAND: Final = ("-m", "bot")
BASELINE_COMMAND: Final = ("-m", "bench.baseline_bot")


def bot_env(
    fake: FakeDiscord,
    comet: FakeCometAPI | None,
    workdir: Path,
    root: Path,
    settings: dict[str, str],
) -> dict[str, str]:
    """The process's whole environment: nothing inherited but PATH, so runs compare."""
    # The bot package from `root` first; the benchmark's own helpers (bench/) from this tree.
    path = str(root) if root == ROOT else os.pathsep.join((str(root), str(ROOT)))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": path,
        "DISCORD_TOKEN": fake.token,
        "DISCORD_API_BASE_URL": fake.api_base_url,
        "DATABASE_PATH": str(workdir / "usage.db"),
        "DEFAULT_MODEL": MODEL,
        "COMETAPI_TIMEOUT_S": "60",
        "SHUTDOWN_GRACE_S": "5",
        "LOG_LEVEL": "INFO",
        "LOOP_LAG_LOG_S": f"{LAG_WINDOW_S}",
    }
    if comet is not None:
        env |= {"COMETAPI_KEY": COMET_KEY, "COMETAPI_BASE_URL": comet.base_url}
    return env | settings


@asynccontextmanager
async def bot_process(
    fake: FakeDiscord,
    comet: FakeCometAPI | None,
    workdir: Path,
    root: Path = ROOT,
    *,
    command: Sequence[str] = BOT_COMMAND,
    **settings: str,
) -> AsyncIterator[BotProcess]:
    """Start `python <command>` (the package in `root`) against the fakes; SIGTERM it on exit.

    `comet` is None for a process that calls no upstream (the baseline bot).
    """
    env = bot_env(fake, comet, workdir, root, settings)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        limit=1024 * 1024,
    )
    bot = BotProcess(process, started)
    bot.reader = asyncio.create_task(bot.read_stderr())
    try:
        ready = asyncio.create_task(bot.ready.wait())
        done, _ = await asyncio.wait(
            {ready, bot.reader}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            raise RuntimeError("the bot did not log its ready line:\n" + bot.log_text()[-4000:])
        yield bot
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        with suppress(TimeoutError):
            await asyncio.wait_for(bot.reader, 5)


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One /imagine as the fake Discord saw it."""

    prompt: str
    ack_s: float | None = None
    final_s: float | None = None
    final_at: float | None = None
    error: str | None = None
    callback_type: int | None = None
    """4: answered at once with a message (a refusal), 5: deferred."""
    callback_content: str | None = None


def is_final(request: RecordedRequest) -> bool:
    """The message that ends the wait: images attached, or an error shown instead."""
    if request.route not in FINAL_ROUTES:
        return False
    if request.files:
        return True
    body = request.json if isinstance(request.json, dict) else {}
    content = str(body.get("content") or "")
    return content.startswith(("\u274c", "\u26a0"))


def imagine_payload(fake: FakeDiscord, user: int, prompt: str) -> dict[str, Any]:
    """An INTERACTION_CREATE for /imagine from user number `user`."""
    return fake.command_interaction(
        "imagine", {"prompt": prompt}, user_id=USER_BASE + user, username=f"user{user}"
    )


def _prompt_of(payload: dict[str, Any]) -> str:
    return str(payload["data"]["options"][0]["value"])


async def acknowledge(
    fake: BenchDiscord,
    payload: dict[str, Any],
    outcome: Outcome,
    timeout: float = CALLBACK_TIMEOUT_S,  # noqa: ASYNC109
) -> Any:
    """Send one interaction, note its acknowledgement in `outcome`; its handle.

    The acknowledgement is the time from the INTERACTION_CREATE frame leaving the fake to the
    callback request arriving there, whatever the callback says, and even when it came too
    late for Discord (which the fake answers with 404 and records as a violation).
    """
    handle = await fake.dispatch(payload)
    callback = await handle.wait_for_callback(timeout=timeout)
    outcome.ack_s = callback.at - fake.sent_at[handle.token]
    body = callback.json if isinstance(callback.json, dict) else {}
    outcome.callback_type = body.get("type")
    data = body.get("data")
    if isinstance(data, dict) and data.get("content"):
        outcome.callback_content = str(data["content"])[:200]
    return handle


async def acknowledge_only(fake: BenchDiscord, payload: dict[str, Any]) -> Outcome:
    """One interaction's acknowledgement, which must be a deferral; nothing after it."""
    outcome = Outcome(_prompt_of(payload))
    try:
        await acknowledge(fake, payload, outcome)
    except TimeoutError as error:
        outcome.error = f"timeout: {str(error).splitlines()[0]}"
        return outcome
    if outcome.callback_type != 5:
        outcome.error = f"answered with callback type {outcome.callback_type}"
    return outcome


async def acknowledge_many(fake: BenchDiscord, count: int, users: int, tag: str) -> list[Outcome]:
    """`count` simultaneous /imagine from `users` users; only their acknowledgements."""
    payloads = [imagine_payload(fake, i % users, f"{tag} {i}") for i in range(count)]
    return list(await asyncio.gather(*(acknowledge_only(fake, p) for p in payloads)))


async def imagine(fake: BenchDiscord, payload: dict[str, Any], wait_s: float) -> Outcome:
    """Send one /imagine and wait for its acknowledgement and its final message."""
    outcome = Outcome(_prompt_of(payload))
    try:
        handle = await acknowledge(fake, payload, outcome)
        if outcome.callback_type != 5:
            outcome.error = f"answered with callback type {outcome.callback_type}"
            return outcome
        final = await handle.wait_for(is_final, timeout=wait_s)
        outcome.final_at = fake.done_at[id(final)]
        outcome.final_s = outcome.final_at - fake.sent_at[handle.token]
        if not final.files:
            outcome.error = str(final.json.get("content"))[:200]
    except TimeoutError as error:
        outcome.error = f"timeout: {str(error).splitlines()[0]}"
    return outcome


async def imagine_many(
    fake: BenchDiscord, count: int, users: int, wait_s: float, tag: str
) -> list[Outcome]:
    """`count` simultaneous /imagine from `users` distinct users.

    The payloads are built first: the fake Discord shares this process's event loop, and
    building them while sending would delay both the sending and the noting of callbacks.
    """
    payloads = [imagine_payload(fake, i % users, f"{tag} {i}") for i in range(count)]
    return list(await asyncio.gather(*(imagine(fake, p, wait_s) for p in payloads)))


def errors_of(
    outcomes: Sequence[Outcome], fake: FakeDiscord, comet: FakeCometAPI | None
) -> list[str]:
    """Every failed interaction and every protocol violation either fake recorded."""
    found = [o.error for o in outcomes if o.error]
    found += [f"discord: {v}" for v in fake.violations]
    found += [f"cometapi: {v}" for v in comet.violations] if comet is not None else []
    return found


# --------------------------------------------------------------------------------------------
# The floor: what a plain aiohttp client needs for the same bytes
# --------------------------------------------------------------------------------------------


async def _deferred_edit_url(fake: FakeDiscord, session: aiohttp.ClientSession) -> str:
    """A fresh interaction acknowledged with a plain type-5 callback; its @original URL."""
    handle = fake.register(
        fake.command_interaction("imagine", {"prompt": "floor"}, user_id=USER_BASE - 1)
    )
    api = fake.api_base_url
    async with session.post(
        f"{api}/interactions/{handle.id}/{handle.token}/callback", json={"type": 5}
    ) as response:
        if response.status != 204:
            raise RuntimeError(f"floor: callback answered {response.status}")
    return f"{api}/webhooks/{fake.application_id}/{handle.token}/messages/@original"


async def _post_image(session: aiohttp.ClientSession, edit_url: str, data: bytes) -> None:
    """One multipart edit carrying the image, as the final message."""
    form = aiohttp.FormData(quote_fields=False)
    form.add_field(
        "payload_json",
        json.dumps({"attachments": [{"id": 0, "filename": "image.png"}]}),
        content_type="application/json",
    )
    form.add_field("files[0]", io.BytesIO(data), filename="image.png", content_type="image/png")
    async with session.patch(edit_url, data=form) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"floor: edit answered {response.status}")


async def floor_sample(
    fake: FakeDiscord,
    session: aiohttp.ClientSession,
    *,
    b64_text: str | None = None,
    url: str | None = None,
) -> float:
    """Decode (or download) the image, then post it once as the final message; seconds."""
    edit_url = await _deferred_edit_url(fake, session)
    started = time.perf_counter()
    if url is None:
        assert b64_text is not None
        data = base64.b64decode(b64_text, validate=True)
    else:
        async with session.get(url) as response:
            data = await response.read()
    await _post_image(session, edit_url, data)
    return time.perf_counter() - started


async def full_floor_sample(
    fake: FakeDiscord, comet: FakeCometAPI, session: aiohttp.ClientSession
) -> float:
    """The whole path a plain client needs outside the model, timed like the bot's.

    Ask the fake CometAPI (with its upstream latency), parse, decode or download, post to
    the fake Discord; minus the time the fake spent answering, as for the bot.
    """
    edit_url = await _deferred_edit_url(fake, session)
    started = time.perf_counter()
    async with session.post(
        f"{comet.base_url}/images/generations",
        json={"model": MODEL, "prompt": "full floor"},
        headers={"Authorization": f"Bearer {COMET_KEY}"},
    ) as response:
        body = await response.read()
    item = json.loads(body)["data"][0]
    if "b64_json" in item:
        data = base64.b64decode(item["b64_json"], validate=True)
    else:
        async with session.get(item["url"]) as response:
            data = await response.read()
    await _post_image(session, edit_url, data)
    upstream = comet.calls[-1].duration or 0.0
    return time.perf_counter() - started - upstream


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What one run does; the defaults are the issue's scenario."""

    ack_samples: int = 100
    latency_samples: int = 20
    added_upstream_s: float = 0.25
    burst: int = 200
    burst_users: int = 50
    burst_upstream_s: float = 2.0
    burst_image_bytes: int = 64 * 1024
    memory_images: int = 50
    memory_upstream_s: float = 1.0
    cpu_calls: int = 40
    bot_root: Path = ROOT
    bot_env: tuple[tuple[str, str], ...] = ()
    smoke: bool = False
    """Tiny sizes to prove every phase still works: figures printed, no target judged."""

    def smoke_sized(self) -> Config:
        """The same run at sizes that take seconds: every phase and every process, once."""
        return replace(
            self,
            ack_samples=5,
            latency_samples=2,
            burst=20,
            burst_users=5,
            burst_upstream_s=0.5,
            memory_images=4,
            memory_upstream_s=0.3,
            cpu_calls=min(self.cpu_calls, 4),
            smoke=True,
        )


@dataclass
class Images:
    """The image bytes and the prebuilt upstream answers every phase serves."""

    small: bytes
    burst: bytes
    one: bytes
    four: bytes

    @classmethod
    def make(cls, config: Config) -> Images:
        """Noise PNGs (incompressible, so their sizes are what they say)."""
        return cls(
            small=make_image_of_size("png", 16 * 1024, seed=1),
            burst=make_image_of_size("png", config.burst_image_bytes, seed=2),
            one=make_image_of_size("png", MIB, seed=3),
            four=make_image_of_size("png", 4 * MIB, seed=4),
        )


async def phase_ack(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, images: Images, config: Config
) -> dict[str, Any]:
    """Acknowledgement latency with the bot otherwise idle: one /imagine at a time."""
    comet.default = raw_json(b64_reply_body(images.small), 0.0)
    outcomes = []
    started = time.monotonic()
    for i in range(config.ack_samples):
        payload = imagine_payload(fake, i % 50, f"ack {i}")
        outcomes.append(await imagine(fake, payload, wait_s=30))
    acks = [o.ack_s for o in outcomes if o.ack_s is not None]
    result: dict[str, Any] = dict(spread(acks, 50, 99))
    result["lag_ms"] = bot.lag_between(started, time.monotonic())
    result["errors"] = errors_of(outcomes, fake, comet)
    return result


ADDED_MODES: Final = ("hot", "idle")


async def phase_added(
    fake: BenchDiscord,
    comet: FakeCometAPI,
    session: aiohttp.ClientSession,
    images: Images,
    config: Config,
) -> dict[str, Any]:
    """Added latency per kind of answer, one at a time, beside two floors for the same bytes.

    Floor: decode (or download) and one post to the fake, back to back, as the issue
    defines it. Full floor: the same plus asking the fake CometAPI first, with the same
    upstream latency, as a plain aiohttp client; it shares every cost of this machine with
    the bot (notably: after ~0.1 s or more idle, the first work here runs several times
    slower, and the fake's own answer of a large body takes ms longer to arrive).
    Modes: "hot" with no upstream wait, "idle" with `added_upstream_s`. The upstream latency
    subtracted is the time the fake spent on that call (its sleep and any overshoot).
    """
    url = comet.cdn.put(images.one)
    kinds: dict[str, tuple[bytes, str | None]] = {
        "b64_1mib": (b64_reply_body(images.one), None),
        "b64_4mib": (b64_reply_body(images.four), None),
        "url_1mib": (url_reply_body(url), url),
    }
    result: dict[str, Any] = {}
    errors: list[str] = []
    for kind, (body, image_url) in kinds.items():
        result[kind] = {}
        text = None if image_url else json.loads(body)["data"][0]["b64_json"]
        for mode in ADDED_MODES:
            upstream = config.added_upstream_s if mode == "idle" else 0.0
            fake.forget()
            forget_comet(comet)
            comet.default = raw_json(body, upstream)
            outcomes = [
                await imagine(fake, imagine_payload(fake, i % 50, f"{kind} {mode} {i}"), 30)
                for i in range(config.latency_samples)
            ]
            errors += errors_of(outcomes, fake, comet)
            served = {
                call.json.get("prompt"): call.duration
                for call in comet.calls
                if isinstance(call.json, dict) and call.duration is not None
            }
            added = [
                o.final_s - served[o.prompt]
                for o in outcomes
                if o.final_s is not None and not o.error and o.prompt in served
            ]
            fake.forget()
            floors = [
                await floor_sample(fake, session, b64_text=text, url=image_url)
                for _ in range(config.latency_samples)
            ]
            fake.forget()
            full = [
                await full_floor_sample(fake, comet, session) for _ in range(config.latency_samples)
            ]
            bot = spread(added, 50, 95)
            floor = spread(floors, 50, 95)
            full_floor = spread(full, 50, 95)
            result[kind][mode] = {
                "upstream_s": upstream,
                "bot": bot,
                "floor": floor,
                "full_floor": full_floor,
                "ratio_p50": bot["p50_ms"] / floor["p50_ms"],
                "ratio_full_p50": bot["p50_ms"] / full_floor["p50_ms"],
            }
    result["errors"] = errors
    return result


async def burst_floor(fake: FakeDiscord, image: bytes, count: int) -> float:
    """Seconds for a plain client (another process) to get `count` images accepted at once.

    Each: decode the base64, then one multipart edit of an acknowledged interaction. The
    fake Discord parses every upload in Python in this process, so this bounds the burst.
    """
    tokens = []
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            edit_url = await _deferred_edit_url(fake, session)
            tokens.append(edit_url)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bot_bench",
        "--upload-child",
        str(len(image)),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(child.communicate("\n".join(tokens).encode()), 120)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return float(out.decode().strip() or "nan")


async def upload_child(image_bytes: int) -> None:
    """In the child: decode and post one image to each edit URL on stdin, all at once."""
    text = base64.b64encode(make_image_of_size("png", image_bytes, seed=2)).decode("ascii")
    urls = sys.stdin.read().split()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(url: str) -> float:
            await _post_image(session, url, base64.b64decode(text, validate=True))
            return time.monotonic()

        started = time.monotonic()
        ends = await asyncio.wait_for(asyncio.gather(*(one(url) for url in urls)), 110)
    print(f"{max(ends) - started:.4f}")


async def phase_burst(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, images: Images, config: Config
) -> dict[str, Any]:
    """200 simultaneous /imagine from 50 users against a 2 s upstream, and its floor."""
    fake.forget()
    forget_comet(comet)
    comet.default = raw_json(b64_reply_body(images.burst), config.burst_upstream_s)
    started = time.monotonic()
    outcomes = await imagine_many(
        fake, config.burst, config.burst_users, config.burst_upstream_s + 60, "burst"
    )
    finished = time.monotonic()
    finals = [o.final_at for o in outcomes if o.final_at is not None]
    result = {
        "count": config.burst,
        "users": config.burst_users,
        "image_bytes": len(images.burst),
        "upstream_s": config.burst_upstream_s,
        # From firing the first interaction to the last final message received.
        "wall_s": max(finals) - started if finals else math.nan,
        "ack": spread([o.ack_s for o in outcomes if o.ack_s is not None], 50, 99),
        "lag_ms": bot.lag_between(started, finished),
        "max_upstream_in_flight": comet.max_in_flight,
        "errors": errors_of(outcomes, fake, comet),
    }
    fake.forget()
    result["floor_s"] = await burst_floor(fake, images.burst, config.burst)
    fake.forget()
    return result


async def baseline_burst(
    fake: BenchDiscord, bot: BotProcess, config: Config, tag: str
) -> dict[str, Any]:
    """The burst's payloads to the bare discord.py bot: acknowledgements, lag, errors."""
    fake.forget()
    started = time.monotonic()
    outcomes = await acknowledge_many(fake, config.burst, config.burst_users, f"baseline {tag}")
    finished = time.monotonic()
    # The lag line of the window holding the burst's end is logged up to a window later.
    await asyncio.sleep(LAG_WINDOW_S + 0.3)
    result = {
        "acks": [o.ack_s for o in outcomes if o.ack_s is not None],
        "lag_ms": bot.lag_between(started, finished),
        "errors": errors_of(outcomes, fake, None),
    }
    fake.forget()
    return result


def pooled(*bursts: dict[str, Any]) -> dict[str, Any]:
    """Several bursts' acknowledgements as one sample; the worst lag; every error."""
    lags = [b["lag_ms"] for b in bursts if b["lag_ms"] is not None]
    return {
        "ack": spread([a for b in bursts for a in b["acks"]], 50, 99),
        "lag_ms": max(lags) if lags else None,
        "errors": [e for b in bursts for e in b["errors"]],
        "bursts": len(bursts),
    }


def ratios(ours: dict[str, float], floor: dict[str, float], *keys: str) -> dict[str, float]:
    """ours / floor for each key (NaN where the floor is missing or zero)."""
    return {
        key: ours[key] / floor[key] if floor.get(key) else math.nan for key in keys if key in ours
    }


def rss_of(pid: int) -> int:
    """Resident bytes of a process now."""
    return int(psutil.Process(pid).memory_info().rss)


def peak_rss_of(pid: int) -> int | None:
    """VmHWM: the process's resident high-water mark since the last reset."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def phase_memory(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, images: Images, config: Config
) -> dict[str, Any]:
    """Peak RSS while `memory_images` ~4 MiB images are in flight at once."""
    comet.default = raw_json(b64_reply_body(images.small), 0.0)
    warm = await imagine_many(fake, 4, 4, 30, "warm")
    fake.forget()
    body = b64_reply_body(images.four)
    comet.default = raw_json(body, config.memory_upstream_s)
    await asyncio.sleep(0.5)
    baseline = rss_of(bot.pid)
    hwm_reset = reset_peak_rss(bot.pid)
    sampled = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal sampled
        while not stop.is_set():
            with suppress(psutil.Error):
                sampled = max(sampled, rss_of(bot.pid))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    try:
        outcomes = await imagine_many(
            fake, config.memory_images, config.memory_images, config.memory_upstream_s + 60, "mem"
        )
    finally:
        stop.set()
        await sampler
    lag = bot.lag_between(started, time.monotonic())
    hwm = peak_rss_of(bot.pid) if hwm_reset else None
    peak = max(sampled, hwm or 0)
    per_image = (peak - baseline) / config.memory_images
    return {
        "images": config.memory_images,
        "image_bytes": len(images.four),
        "baseline_mib": baseline / MIB,
        "peak_mib": peak / MIB,
        "peak_source": "VmHWM" if hwm is not None and hwm >= sampled else "sampled every 5 ms",
        "per_image_mib": per_image / MIB,
        "per_image_x": per_image / len(images.four),
        "lag_ms": lag,
        "errors": errors_of([*warm, *outcomes], fake, comet),
    }


# --------------------------------------------------------------------------------------------
# Client CPU: ours against the openai SDK
# --------------------------------------------------------------------------------------------


async def serve_comet_child(sizes: Sequence[int]) -> None:
    """In the child: serve one prebuilt b64 answer per size (chosen by the prompt)."""
    bodies = {
        f"cpu {size}": b64_reply_body(make_image_of_size("png", size, seed=9)) for size in sizes
    }

    def answer(call: RecordedCall) -> Reply:
        prompt = call.json.get("prompt") if isinstance(call.json, dict) else None
        return raw_json(bodies[str(prompt)], 0.0)

    async with FakeCometAPI(api_key=COMET_KEY) as comet:
        comet.default = answer
        print(comet.base_url, flush=True)
        ticks = 0
        while ticks < CHILD_LIFETIME_S * 10:
            # Records would grow with every call; the benchmark reads none of them here.
            forget_comet(comet)
            await asyncio.sleep(0.1)
            ticks += 1


async def cpu_per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Process CPU seconds per call, over `count` sequential calls."""
    started = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - started) / count


async def phase_cpu(config: Config) -> dict[str, Any]:
    """CPU per generation call of our client and of the openai SDK, against the same fake."""
    from openai import AsyncOpenAI
    from pydantic import SecretStr

    from bot.core.cometapi import CometAPIClient
    from bot.core.validation import ImagineOptions, validate

    sizes = {"64kib": 64 * 1024, "1mib": MIB}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bot_bench",
        "--serve-comet",
        ",".join(str(size) for size in sizes.values()),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        base_url = (await asyncio.wait_for(child.stdout.readline(), 60)).decode().strip()
        if not base_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"fake CometAPI child did not start: {base_url!r}")
        result: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            ours = CometAPIClient(
                session, base_url=base_url, api_key=SecretStr(COMET_KEY), timeout_s=60
            )
            sdk = AsyncOpenAI(base_url=base_url, api_key=COMET_KEY, max_retries=0)
            try:
                for name, size in sizes.items():
                    prompt = f"cpu {size}"
                    request = validate(ImagineOptions(prompt=prompt), MODEL)

                    async def call_ours(request: Any = request) -> object:
                        # A fresh id per call, as the service makes one per generation.
                        return await ours.generate(request, request_id=uuid.uuid4().hex[:12])

                    async def call_sdk(prompt: str = prompt) -> object:
                        return await sdk.images.generate(model=MODEL, prompt=prompt)

                    async def call_sdk_decoded(prompt: str = prompt) -> object:
                        answer = await sdk.images.generate(model=MODEL, prompt=prompt)
                        return [base64.b64decode(item.b64_json or "") for item in answer.data or []]

                    calls = {"ours": call_ours, "sdk": call_sdk, "sdk_decoded": call_sdk_decoded}
                    totals = dict.fromkeys(calls, 0.0)
                    for call in calls.values():
                        await cpu_per_call(call, 3)  # warm-up: connections, imports, caches
                    rounds = 4
                    for _ in range(rounds):
                        for key, call in calls.items():
                            totals[key] += await cpu_per_call(call, config.cpu_calls // rounds)
                    per_call = {key: total / rounds * 1000 for key, total in totals.items()}
                    result[name] = {
                        "ours_ms": per_call["ours"],
                        "sdk_ms": per_call["sdk"],
                        "sdk_decoded_ms": per_call["sdk_decoded"],
                        "ratio_vs_sdk_decoded": per_call["ours"] / per_call["sdk_decoded"],
                        "ratio_vs_sdk": per_call["ours"] / per_call["sdk"],
                        "calls": config.cpu_calls,
                    }
            finally:
                await sdk.close()
        return result
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


async def one_run(config: Config, images: Images) -> dict[str, Any]:
    """Every measurement once: two bot processes (and the bare one beside the first), the CPU."""
    result: dict[str, Any] = {"startup_s": []}
    with tempfile.TemporaryDirectory(prefix="bot-bench-") as folder:
        workdir = Path(folder)
        for name in ("base", "a", "b"):
            (workdir / name).mkdir()
        await latency_and_burst(config, images, workdir, result)
        async with (
            BenchDiscord() as fake,
            FakeCometAPI(api_key=COMET_KEY) as comet,
        ):
            async with bot_process(
                fake,
                comet,
                workdir / "b",
                config.bot_root,
                **dict(config.bot_env),
                MAX_CONCURRENT_GENERATIONS=str(config.memory_images),
            ) as bot:
                result["startup_s"].append(bot.startup_s)
                progress(f"memory: {config.memory_images} images of 4 MiB at once")
                result["memory"] = await phase_memory(fake, comet, bot, images, config)
            result["log_problems_b"] = bot.problems()
            result["exit_b"] = bot.process.returncode
    if config.cpu_calls:
        progress("client CPU: ours and the openai SDK")
    result["cpu"] = await phase_cpu(config) if config.cpu_calls else {}
    return result


async def latency_and_burst(
    config: Config, images: Images, workdir: Path, result: dict[str, Any]
) -> None:
    """Process a: acknowledgements, added latency, the burst; beside it, the bare bot.

    The bare bot's process runs (idle) beside ours, and gets the burst's payloads just before
    and just after our burst: what else the machine is doing then weighs on both alike, so
    their ratio holds where their absolute times drift from run to run.
    """
    async with (
        BenchDiscord() as base_fake,
        bot_process(base_fake, None, workdir / "base", ROOT, command=BASELINE_COMMAND) as baseline,
    ):
        await acknowledge_many(base_fake, 3, 3, "warm-up")
        async with (
            BenchDiscord() as fake,
            FakeCometAPI(api_key=COMET_KEY) as comet,
            aiohttp.ClientSession() as session,
        ):
            async with bot_process(
                fake,
                comet,
                workdir / "a",
                config.bot_root,
                **dict(config.bot_env),
                MAX_CONCURRENT_GENERATIONS=str(config.burst),
            ) as bot:
                result["startup_s"].append(bot.startup_s)
                comet.default = raw_json(b64_reply_body(images.small), 0.0)
                await imagine_many(fake, 3, 3, 30, "warm-up")
                progress("acknowledgement, one at a time")
                result["ack_idle"] = await phase_ack(fake, comet, bot, images, config)
                progress("added latency and floors")
                result["added"] = await phase_added(fake, comet, session, images, config)
                progress(f"burst of {config.burst}, the bare bot's just before and after")
                before = await baseline_burst(base_fake, baseline, config, "before")
                result["burst"] = await phase_burst(fake, comet, bot, images, config)
                after = await baseline_burst(base_fake, baseline, config, "after")
                result["baseline"] = pooled(before, after)
                result["burst"]["vs_baseline"] = ratios(
                    result["burst"]["ack"], result["baseline"]["ack"], "p50_ms", "p99_ms", "max_ms"
                )
                result["lag_logged"] = any(LAG_RE.search(line) for _, line in bot.lines)
            result["log_problems_a"] = bot.problems()
            result["exit_a"] = bot.process.returncode
    result["log_problems_base"] = baseline.problems()
    result["exit_base"] = baseline.process.returncode


def progress(what: str) -> None:
    """One line on stderr, so a long run shows where it is."""
    print(f"  ... {what}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def median_of(runs: Sequence[dict[str, Any]], *path: str) -> float | None:
    """The median across runs of the number at `path` (lists are flattened: start-up)."""
    values: list[float | None] = []
    for run in runs:
        node: Any = run
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, list):
            values.extend(node)
        else:
            values.append(node)
    return _median(values)


# The phases whose errors fail the run, and each bot process's log problems and exit status.
PHASES: Final = ("baseline", "ack_idle", "added", "burst", "memory")
LOG_KEYS: Final = ("log_problems_base", "log_problems_a", "log_problems_b")
EXIT_KEYS: Final = ("exit_base", "exit_a", "exit_b")


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians of every figure the table shows, and the targets checked against them."""
    m: dict[str, Any] = {}

    def put(name: str, *path: str) -> None:
        m[name] = median_of(runs, *path)

    for q in ("p50_ms", "p99_ms", "max_ms"):
        put(f"ack_idle_{q}", "ack_idle", q)
        put(f"ack_burst_{q}", "burst", "ack", q)
        put(f"ack_baseline_{q}", "baseline", "ack", q)
        # The median of the runs' ratios: each ratio compares two bursts of one run.
        put(f"ack_burst_vs_baseline_{q}", "burst", "vs_baseline", q)
    put("baseline_lag_ms", "baseline", "lag_ms")
    for kind in ("b64_1mib", "b64_4mib", "url_1mib"):
        for mode in ADDED_MODES:
            for q in ("p50_ms", "p95_ms"):
                for part in ("bot", "floor", "full_floor"):
                    put(f"{kind}_{mode}_{part}_{q}", "added", kind, mode, part, q)
            for ratio in ("ratio_p50", "ratio_full_p50"):
                put(f"{kind}_{mode}_{ratio}", "added", kind, mode, ratio)
    put("burst_wall_s", "burst", "wall_s")
    put("burst_floor_s", "burst", "floor_s")
    put("burst_lag_ms", "burst", "lag_ms")
    put("idle_lag_ms", "ack_idle", "lag_ms")
    m["burst_errors"] = max(len(run["burst"]["errors"]) for run in runs)
    m["all_errors"] = sum(len(run[k]["errors"]) for run in runs for k in PHASES) + sum(
        len(run[key]) for run in runs for key in LOG_KEYS
    )
    put("memory_baseline_mib", "memory", "baseline_mib")
    put("memory_peak_mib", "memory", "peak_mib")
    put("memory_per_image_mib", "memory", "per_image_mib")
    put("memory_per_image_x", "memory", "per_image_x")
    put("memory_lag_ms", "memory", "lag_ms")
    put("startup_s", "startup_s")
    for size in ("64kib", "1mib"):
        for key in ("ours_ms", "sdk_ms", "sdk_decoded_ms", "ratio_vs_sdk_decoded", "ratio_vs_sdk"):
            put(f"cpu_{size}_{key}", "cpu", size, key)

    upstream = runs[0]["burst"]["upstream_s"]

    def below(value: float | None, bound: float) -> bool | None:
        return None if value is None else value < bound

    both_acks = [m["ack_idle_p99_ms"], m["ack_burst_p99_ms"]]
    m["targets"] = {
        "ack p99 < 100 ms, idle and in the burst": below(
            max(v for v in both_acks if v is not None), 100
        ),
        "1 MiB added p50 <= 2x floor and < 30 ms": (
            None
            if m["b64_1mib_idle_ratio_p50"] is None
            else m["b64_1mib_idle_ratio_p50"] <= 2 and m["b64_1mib_idle_bot_p50_ms"] < 30
        ),
        "1 MiB added p50 <= 2x floor and < 30 ms, hot (no upstream wait)": (
            None
            if m["b64_1mib_hot_ratio_p50"] is None
            else m["b64_1mib_hot_ratio_p50"] <= 2 and m["b64_1mib_hot_bot_p50_ms"] < 30
        ),
        "burst within upstream + 2 s, 0 errors": (
            None
            if m["burst_wall_s"] is None
            else m["burst_wall_s"] <= upstream + 2 and m["burst_errors"] == 0
        ),
        "burst loop lag < 50 ms": below(m["burst_lag_ms"], 50),
        "peak memory per in-flight 4 MiB image < 3x": below(m["memory_per_image_x"], 3),
        "start-up to ready < 2 s": below(m["startup_s"], 2),
        "client CPU per call <= openai SDK (decoded), 1 MiB": (
            None
            if m["cpu_1mib_ratio_vs_sdk_decoded"] is None
            else m["cpu_1mib_ratio_vs_sdk_decoded"] <= 1
        ),
    }
    return m


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for a table cell; n/a when it was not measured."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(m: dict[str, Any], runs: int, config: Config) -> str:
    """The figures as a Markdown table (medians of `runs` runs)."""
    rows = [
        f"| measure ({runs_label(runs)}) | value | target |",
        "|---|---|---|",
        (
            f"| ack, idle ({config.ack_samples} one at a time): p50 / p99 / max | "
            f"{fmt(m['ack_idle_p50_ms'])} / {fmt(m['ack_idle_p99_ms'])} / "
            f"{fmt(m['ack_idle_max_ms'])} ms | p99 < 100 ms |"
        ),
        (
            f"| ack, during the {config.burst}-burst: p50 / p99 / max | "
            f"{fmt(m['ack_burst_p50_ms'])} / {fmt(m['ack_burst_p99_ms'])} / "
            f"{fmt(m['ack_burst_max_ms'])} ms | p99 < 100 ms |"
        ),
        (
            f"| ack, the same burst to a bare discord.py bot (only defers; just before and "
            f"just after ours, pooled): p50 / p99 / max; its worst loop lag | "
            f"{fmt(m['ack_baseline_p50_ms'])} / "
            f"{fmt(m['ack_baseline_p99_ms'])} / {fmt(m['ack_baseline_max_ms'])} ms; "
            f"{fmt(m['baseline_lag_ms'])} ms | - |"
        ),
        (
            f"| ack in the burst, ours / bare bot (same run): p50 / p99 / max | "
            f"{fmt(m['ack_burst_vs_baseline_p50_ms'], 2)}x / "
            f"{fmt(m['ack_burst_vs_baseline_p99_ms'], 2)}x / "
            f"{fmt(m['ack_burst_vs_baseline_max_ms'], 2)}x | - |"
        ),
    ]
    labels = {
        "b64_1mib": "1 MiB b64_json",
        "b64_4mib": "4 MiB b64_json",
        "url_1mib": "1 MiB url",
    }
    modes = {
        "hot": "no upstream wait",
        "idle": f"{config.added_upstream_s:g} s upstream",
    }
    for kind, label in labels.items():
        target = "p50 <= 2x floor, < 30 ms" if kind == "b64_1mib" else "-"
        for mode, how in modes.items():
            key = f"{kind}_{mode}"
            rows.append(
                f"| added latency, {label}, {how}: p50 / p95 (floor p50; full floor p50; "
                f"bot/floor; bot/full floor) | {fmt(m[f'{key}_bot_p50_ms'])} / "
                f"{fmt(m[f'{key}_bot_p95_ms'])} ms ({fmt(m[f'{key}_floor_p50_ms'])} ms; "
                f"{fmt(m[f'{key}_full_floor_p50_ms'])} ms; {fmt(m[f'{key}_ratio_p50'], 2)}x; "
                f"{fmt(m[f'{key}_ratio_full_p50'], 2)}x) | {target} |"
            )
    rows += [
        (
            f"| burst: {config.burst} /imagine, {config.burst_users} users, "
            f"{config.burst_upstream_s:g} s upstream, "
            f"{config.burst_image_bytes // 1024} KiB images: wall time to last image "
            f"(floor: the same uploads from a plain client, after the upstream) | "
            f"{fmt(m['burst_wall_s'], 2)} s ({config.burst_upstream_s:g} + "
            f"{fmt(m['burst_floor_s'], 2)} s) | <= {config.burst_upstream_s + 2:g} s |"
        ),
        (
            f"| burst: worst event-loop lag / errors | {fmt(m['burst_lag_ms'])} ms / "
            f"{m['burst_errors']} | < 50 ms / 0 |"
        ),
        (
            f"| memory: {config.memory_images} x 4 MiB in flight: baseline / peak RSS | "
            f"{fmt(m['memory_baseline_mib'])} / {fmt(m['memory_peak_mib'])} MiB | - |"
        ),
        (
            f"| memory per in-flight 4 MiB image | {fmt(m['memory_per_image_mib'])} MiB "
            f"({fmt(m['memory_per_image_x'], 2)}x the image) | < 3x |"
        ),
        (f"| memory burst: worst event-loop lag | {fmt(m['memory_lag_ms'])} ms | - |"),
        f"| start-up to ready | {fmt(m['startup_s'], 2)} s | < 2 s |",
    ]
    for size, label in (("64kib", "64 KiB"), ("1mib", "1 MiB")):
        if m[f"cpu_{size}_ours_ms"] is None:
            continue
        rows.append(
            f"| client CPU per call, {label} b64: ours / SDK / SDK+b64decode "
            f"(ours / SDK+decode) | {fmt(m[f'cpu_{size}_ours_ms'], 2)} / "
            f"{fmt(m[f'cpu_{size}_sdk_ms'], 2)} / {fmt(m[f'cpu_{size}_sdk_decoded_ms'], 2)} ms "
            f"({fmt(m[f'cpu_{size}_ratio_vs_sdk_decoded'], 2)}x) | <= 1x |"
        )
    return "\n".join(rows)


def runs_label(runs: int) -> str:
    """What a table's figures are: one run's, or medians."""
    return f"median of {runs} runs" if runs > 1 else "one run"


def verdicts(m: dict[str, Any]) -> str:
    """One line per target: met, missed, or not measurable in this run."""
    words = {True: "met", False: "MISSED", None: "n/a"}
    return "\n".join(f"  {words[ok]:>6}  {name}" for name, ok in m["targets"].items())


async def run_all(config: Config, runs: int) -> int:
    """Run the benchmark `runs` times; print and save the figures; 1 if any error occurred."""
    images = Images.make(config)
    results = []
    for index in range(runs):
        started = time.monotonic()
        results.append(await one_run(config, images))
        print(f"run {index + 1}/{runs} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    summary = summarise(results)
    print(table(summary, runs, config))
    print()
    if config.smoke:
        print("  smoke run: tiny sizes, figures mean nothing, no target judged")
    else:
        print(verdicts(summary))
    if not results[-1]["lag_logged"]:
        print("  (the bot logged no event-loop lag line: LOOP_LAG_LOG_S is not supported yet)")
    problems = problems_of(results)
    for problem in problems[:20]:
        print(f"  error: {problem}")
    if config.smoke:
        return 1 if problems else 0
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "command": " ".join(["python -m bench.bot_bench", *sys.argv[1:]]),
        "config": {key: str(value) for key, value in config.__dict__.items()},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "revision": revision(config.bot_root),
        "median": summary,
        "runs": results,
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS_PATH.relative_to(ROOT)}")
    return 1 if problems else 0


def problems_of(results: Sequence[dict[str, Any]]) -> list[str]:
    """Every error of every run: failed interactions, bot log errors, bad exit statuses."""
    problems = [error for run in results for key in PHASES for error in run[key]["errors"]]
    problems += [line for run in results for key in LOG_KEYS for line in run[key]]
    problems += [
        f"bot exited with status {run[key]}"
        for run in results
        for key in EXIT_KEYS
        if run[key] != 0
    ]
    return problems


def revision(root: Path) -> str:
    """The commit of the measured tree, with "+changes" when it differs (read-only git)."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        head = subprocess.run(
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [git, "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the benchmark (or the fake CometAPI child)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bot_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat and print medians")
    parser.add_argument(
        "--burst-image-kib",
        type=int,
        default=Config.burst_image_bytes // 1024,
        help="size of each image in the 200-burst",
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples, still judged")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="one run at tiny sizes: proves every phase works; prints figures, judges nothing",
    )
    parser.add_argument(
        "--bot-root",
        type=Path,
        default=ROOT,
        help="run the bot package found here (a scratch copy with a change to try)",
    )
    parser.add_argument(
        "--bot-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra environment variable for the bot process (repeatable)",
    )
    parser.add_argument("--skip-cpu", action="store_true", help="leave out the client CPU part")
    parser.add_argument("--serve-comet", help=argparse.SUPPRESS)
    parser.add_argument("--upload-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upload_child:
        asyncio.run(upload_child(args.upload_child))
        return 0
    if args.serve_comet:
        asyncio.run(serve_comet_child([int(size) for size in args.serve_comet.split(",")]))
        return 0
    config = Config(
        burst_image_bytes=args.burst_image_kib * 1024,
        bot_root=args.bot_root.resolve(),
        bot_env=tuple(tuple(item.split("=", 1)) for item in args.bot_env if "=" in item),
        cpu_calls=0 if args.skip_cpu else Config.cpu_calls,
    )
    if args.quick:
        config = replace(
            config,
            ack_samples=20,
            latency_samples=5,
            burst=40,
            burst_users=10,
            memory_images=10,
            cpu_calls=min(config.cpu_calls, 8),
        )
    if args.smoke:
        return asyncio.run(run_all(config.smoke_sized(), 1))
    return asyncio.run(run_all(config, max(1, min(args.runs, 10))))


if __name__ == "__main__":
    sys.exit(main())
