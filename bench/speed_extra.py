"""discord.py's `speed` extra, measured: `python -m bench.speed_extra [--runs 3] [--smoke]`.

`pip install "discord.py[speed]"` brings orjson (discord.py then parses every gateway event
and REST answer, and writes every request body, with it instead of the standard json),
zstandard (discord.py then asks the gateway for zstd-stream instead of zlib-stream), aiodns
and Brotli (aiohttp's resolver and decoder; nothing on loopback uses them). This starts the
real bot three times per run against the loopback fakes, side by side, each process with a
different set made unimportable by bench/without_modules.py, so one environment and one run
compare:

- `plain`: none of them, what the bot runs with today;
- `orjson`: orjson alone;
- `speed`: the whole extra.

Each process gets a warm-up, then `--bursts` rounds (4) send one burst of 200 /imagine from
50 users (2 s upstream, as bench/bot_bench.py's burst) to each process in turn (the order
turns with each round and each run), so that a slow moment of the shared machine weighs on
all three alike. Each process's acknowledgements are pooled: p50 / p99 / max, and each as a
ratio to `plain` of the same run; beside them the bot process's CPU time per /imagine (from
the burst's start to its last image), which the machine's other load disturbs far less.
What each process could import is checked from the line bench/without_modules.py prints; a
package that is not installed shows as such (the variants then measure the same thing).
`--smoke` runs it once at tiny sizes: figures mean nothing, CI runs it so that the
benchmark cannot silently stop working.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import psutil  # type: ignore[import-untyped]

from bench.bot_bench import (
    COMET_KEY,
    LAG_WINDOW_S,
    ROOT,
    BenchDiscord,
    BotProcess,
    b64_reply_body,
    bot_process,
    errors_of,
    fmt,
    forget_comet,
    imagine_many,
    median_of,
    progress,
    ratios,
    raw_json,
    runs_label,
    spread,
)
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.fakes.images import make_image_of_size

# The speed extra's packages by import name (Brotli imports as brotli).
EXTRA: Final = ("orjson", "zstandard", "aiodns", "brotli")
VARIANTS: Final[dict[str, tuple[str, ...]]] = {
    "plain": EXTRA,
    "orjson": tuple(name for name in EXTRA if name != "orjson"),
    "speed": (),
}
IMPORTS_RE: Final = re.compile(r"bench-imports blocked=(\S+) orjson=(\S+) zstd=(\S+)")


@dataclass(frozen=True)
class Config:
    """What one run does."""

    burst: int = 200
    burst_users: int = 50
    bursts: int = 4
    upstream_s: float = 2.0
    image_bytes: int = 16 * 1024
    bot_root: Path = ROOT
    smoke: bool = False

    def smoke_sized(self) -> Config:
        """Every variant once, at a size that takes seconds."""
        return replace(self, burst=20, burst_users=5, bursts=1, upstream_s=0.3, smoke=True)


def installed() -> dict[str, bool]:
    """Which of the extra's packages this environment has."""
    return {name: importlib.util.find_spec(name) is not None for name in EXTRA}


def imports_of(bot: BotProcess) -> dict[str, str]:
    """What the process says discord.py used (from bench/without_modules.py's line)."""
    for _, line in bot.lines:
        match = IMPORTS_RE.search(line)
        if match:
            return {"blocked": match[1], "orjson": match[2], "zstd": match[3]}
    return {}


@dataclass
class Variant:
    """One bot process with its own two fakes, and the bursts it was sent."""

    name: str
    fake: BenchDiscord
    comet: FakeCometAPI
    bot: BotProcess
    bursts: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def variant_process(name: str, config: Config, workdir: Path) -> AsyncIterator[Variant]:
    """The bot, with the variant's packages blocked, against fakes of its own."""
    image = make_image_of_size("png", config.image_bytes, seed=8)
    blocked = ",".join(VARIANTS[name])
    async with BenchDiscord() as fake, FakeCometAPI(api_key=COMET_KEY) as comet:
        comet.default = raw_json(b64_reply_body(image), config.upstream_s)
        async with bot_process(
            fake,
            comet,
            workdir,
            config.bot_root,
            command=("-m", "bench.without_modules", blocked, "-m", "bot"),
            MAX_CONCURRENT_GENERATIONS=str(config.burst),
        ) as bot:
            yield Variant(name, fake, comet, bot)


async def one_burst(variant: Variant, config: Config, tag: str) -> dict[str, Any]:
    """One burst to the variant's bot: acknowledgements, loop lag, errors."""
    fake, comet, bot = variant.fake, variant.comet, variant.bot
    fake.forget()
    forget_comet(comet)
    cpu_before = cpu_seconds(bot.pid)
    started = time.monotonic()
    outcomes = await imagine_many(
        fake, config.burst, config.burst_users, config.upstream_s + 60, f"{variant.name} {tag}"
    )
    finished = time.monotonic()
    # Up to the last final message: every /imagine's whole work in the bot, JSON included.
    cpu_s = cpu_seconds(bot.pid) - cpu_before
    # The last lag window's line comes up to a window later; the machine settles meanwhile.
    await asyncio.sleep(LAG_WINDOW_S + 0.3)
    result = {
        "acks": [o.ack_s for o in outcomes if o.ack_s is not None],
        "cpu_s": cpu_s,
        "interactions": len(outcomes),
        "lag_ms": bot.lag_between(started, finished),
        "errors": errors_of(outcomes, fake, comet),
    }
    fake.forget()
    return result


def cpu_seconds(pid: int) -> float:
    """User and system CPU the process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def workdirs(folder: Path, names: Sequence[str]) -> dict[str, Path]:
    """An empty working folder per process."""
    paths = {name: folder / name for name in names}
    for path in paths.values():
        path.mkdir()
    return paths


def turned(names: Sequence[str], by: int) -> list[str]:
    """The names in order, starting at index `by` (modulo their count)."""
    start = by % len(names)
    return [*names[start:], *names[:start]]


def figures_of(variant: Variant) -> dict[str, Any]:
    """The variant's bursts pooled, with what its process imported and how it ended."""
    lags = [b["lag_ms"] for b in variant.bursts if b["lag_ms"] is not None]
    interactions = sum(b["interactions"] for b in variant.bursts)
    return {
        "ack": spread([a for b in variant.bursts for a in b["acks"]], 50, 99),
        "cpu_ms": sum(b["cpu_s"] for b in variant.bursts) * 1000 / max(interactions, 1),
        "lag_ms": max(lags) if lags else None,
        "errors": [e for b in variant.bursts for e in b["errors"]],
        "imports": imports_of(variant.bot),
        "log_problems": variant.bot.problems(),
        "exit": variant.bot.process.returncode,
    }


async def one_run(config: Config, index: int) -> dict[str, Any]:
    """The three processes side by side; rounds of one burst to each, in turning order.

    Bursts to the three alternate, a few seconds apart, so that what else the machine does
    weighs on each alike (the idle two cost next to nothing meanwhile).
    """
    names = turned(list(VARIANTS), index)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as folder:
        paths = workdirs(Path(folder), names)
        async with AsyncExitStack() as stack:
            variants = [
                await stack.enter_async_context(variant_process(n, config, paths[n])) for n in names
            ]
            for variant in variants:
                await imagine_many(
                    variant.fake, 3, 3, config.upstream_s + 30, f"{variant.name} warm-up"
                )
            for round_index in range(config.bursts):
                progress(f"round {round_index + 1}/{config.bursts}: a burst of {config.burst} each")
                for variant in turned(variants, round_index):
                    variant.bursts.append(await one_burst(variant, config, str(round_index)))
    result: dict[str, Any] = {"order": names}
    result |= {variant.name: figures_of(variant) for variant in variants}
    for name in ("orjson", "speed"):
        result[name]["vs_plain"] = ratios(
            result[name]["ack"], result["plain"]["ack"], "p50_ms", "p99_ms", "max_ms"
        )
        result[name]["cpu_vs_plain"] = result[name]["cpu_ms"] / result["plain"]["cpu_ms"]
    return result


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians across runs; each ratio compares two processes of one run."""
    m: dict[str, Any] = {}
    for name in VARIANTS:
        for q in ("p50_ms", "p99_ms", "max_ms"):
            m[f"{name}_{q}"] = median_of(runs, name, "ack", q)
            if name != "plain":
                m[f"{name}_vs_plain_{q}"] = median_of(runs, name, "vs_plain", q)
        m[f"{name}_lag_ms"] = median_of(runs, name, "lag_ms")
        m[f"{name}_cpu_ms"] = median_of(runs, name, "cpu_ms")
        if name != "plain":
            m[f"{name}_cpu_vs_plain"] = median_of(runs, name, "cpu_vs_plain")
        m[f"{name}_imports"] = runs[-1][name]["imports"]
    return m


def table(m: dict[str, Any], runs: int, config: Config) -> str:
    """The figures as a Markdown table."""
    what = (
        f"{config.bursts} round(s) of a burst of {config.burst} /imagine from "
        f"{config.burst_users} users to each, pooled"
    )
    rows = [
        f"| bot process ({runs_label(runs)}); {what} | ack p50 / p99 / max | "
        "ratio to plain: p50 / p99 / max | bot CPU per /imagine (ratio to plain) | "
        "worst loop lag | discord.py used |",
        "|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        used = m[f"{name}_imports"]
        ratio = (
            "-"
            if name == "plain"
            else f"{fmt(m[f'{name}_vs_plain_p50_ms'], 3)}x / "
            f"{fmt(m[f'{name}_vs_plain_p99_ms'], 3)}x / {fmt(m[f'{name}_vs_plain_max_ms'], 3)}x"
        )
        cpu = f"{fmt(m[f'{name}_cpu_ms'], 2)} ms" + (
            "" if name == "plain" else f" ({fmt(m[f'{name}_cpu_vs_plain'], 3)}x)"
        )
        rows.append(
            f"| {name} | {fmt(m[f'{name}_p50_ms'])} / {fmt(m[f'{name}_p99_ms'])} / "
            f"{fmt(m[f'{name}_max_ms'])} ms | {ratio} | {cpu} | {fmt(m[f'{name}_lag_ms'])} ms | "
            f"orjson={used.get('orjson')}, zstd={used.get('zstd')} |"
        )
    return "\n".join(rows)


def per_run(results: Sequence[dict[str, Any]]) -> list[str]:
    """Each run's ratios, to see whether a difference holds from run to run."""
    lines = []
    for index, run in enumerate(results):
        parts = [
            f"{name} / plain p50 {fmt(run[name]['vs_plain']['p50_ms'], 3)}x "
            f"p99 {fmt(run[name]['vs_plain']['p99_ms'], 3)}x "
            f"CPU {fmt(run[name]['cpu_vs_plain'], 3)}x"
            for name in ("orjson", "speed")
        ]
        lines.append(f"  run {index + 1} ({', '.join(run['order'])}): {'; '.join(parts)}")
    return lines


def problems_of(results: Sequence[dict[str, Any]]) -> list[str]:
    """Every error: failed interactions, bot errors, bad exits, a process that used the wrong
    json (orjson where it was blocked, or none where it was wanted and installed)."""
    problems: list[str] = []
    has_orjson = installed()["orjson"]
    for run in results:
        for name in VARIANTS:
            part = run[name]
            problems += part["errors"] + part["log_problems"]
            if part["exit"] != 0:
                problems.append(f"{name}: bot exited with status {part['exit']}")
            expected = str(has_orjson and "orjson" not in VARIANTS[name])
            if part["imports"].get("orjson") != expected:
                problems.append(f"{name}: discord.py used {part['imports']}, expected {expected}")
    return problems


async def run_all(config: Config, runs: int) -> int:
    """Run `runs` times; print the table; 1 if anything went wrong."""
    results = []
    for index in range(runs):
        started = time.monotonic()
        results.append(await one_run(config, index))
        print(f"run {index + 1}/{runs} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(table(summarise(results), runs, config))
    print()
    print("\n".join(per_run(results)))
    have = installed()
    print("  installed: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in have.items()))
    if not have["orjson"]:
        print('  orjson is not installed (pip install "discord.py[speed]"): the variants match')
    if config.smoke:
        print("  smoke run: tiny sizes, figures mean nothing")
    problems = problems_of(results)
    for problem in problems[:20]:
        print(f"  error: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed_extra",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat and print medians")
    parser.add_argument(
        "--bursts", type=int, default=Config.bursts, help="rounds of one burst to each process"
    )
    parser.add_argument("--smoke", action="store_true", help="one tiny run; judges nothing")
    parser.add_argument(
        "--bot-root", type=Path, default=ROOT, help="run the bot package found here"
    )
    args = parser.parse_args(argv)
    config = Config(bursts=max(1, args.bursts), bot_root=args.bot_root)
    runs = max(1, min(args.runs, 10))
    if args.smoke:
        config, runs = config.smoke_sized(), 1
    return asyncio.run(run_all(config, runs))


if __name__ == "__main__":
    sys.exit(main())
