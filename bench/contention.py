"""Acknowledgement while the database is contended: `python -m bench.contention [--runs 3]`.

Starts `python -m bot` against the loopback fakes (as bench/bot_bench.py does) on a database
seeded with bench/reports.py's builder, and measures two things, each beside a floor from
the same run and as a ratio to it:

1. lock: another process (plain `sqlite3`) holds the bot database's write lock
   (`BEGIN IMMEDIATE`) for `--hold` seconds while /imagine arrive one by one, evenly spread
   over the first half of the hold, so each meets at least half the hold of lock: more than
   Discord's 3 s unless the bot stops waiting. Reported: acknowledgement p50 / p99 / max, how
   many got a response within 3 s (later ones Discord would drop; the fake answers them 404),
   how they were answered (deferred, a message at once, nothing) and the errors the bot
   logged; the floor is the same interactions with no lock held.
2. report: an admin's `/usage-admin server period:all` (and, apart, `export period:all`) on a
   guild of `--report-rows` generations, fired together with a burst of /imagine from
   members. Reported: the burst's acknowledgement p50 / p99 / max with and without the
   concurrent report, and how long the report took.

Errors the locked database provokes are counted and shown, not fatal: the bench reports what
it sees. Every other error (a failed interaction outside the lock, a bot error outside it, a
protocol violation) fails the run. `--smoke` runs both at tiny sizes once (figures mean
nothing); CI runs it so that the benchmark cannot silently stop working.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from bench import reports
from bench.bot_bench import (
    COMET_KEY,
    LAG_WINDOW_S,
    ROOT,
    USER_BASE,
    BenchDiscord,
    BotProcess,
    Outcome,
    acknowledge,
    b64_reply_body,
    bot_process,
    errors_of,
    fmt,
    forget_comet,
    imagine_many,
    imagine_payload,
    is_final,
    median_of,
    progress,
    ratios,
    raw_json,
    runs_label,
    spread,
)
from tests.fakes.discord_payloads import MANAGER_PERMISSIONS
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.fakes.fake_discord import FINAL_ROUTES
from tests.fakes.images import make_image_of_size

# Discord drops an interaction not answered within this many seconds.
DISCORD_LIMIT_S: Final = 3.0
# The guild every seeded row and every interaction is in.
GUILD_ID: Final = reports.guild_ids(1)[0]
ADMIN_ID: Final = USER_BASE - 7
LOCK_START_TIMEOUT_S: Final = 30.0
REPORT_CONDITIONS: Final = ("alone", "server", "export")


@dataclass(frozen=True)
class Config:
    """What one run does."""

    hold_s: float = 8.0
    lock_interactions: int = 20
    report_rows: int = 200_000
    report_users: int = 1_000
    burst: int = 200
    burst_users: int = 50
    burst_upstream_s: float = 1.0
    bot_root: Path = ROOT
    smoke: bool = False

    def smoke_sized(self) -> Config:
        """Seconds instead of minutes: each phase once, the lock still longer than 3 s."""
        return replace(
            self,
            hold_s=4.0,
            lock_interactions=6,
            report_rows=5_000,
            report_users=50,
            burst=20,
            burst_users=5,
            burst_upstream_s=0.3,
            smoke=True,
        )


# --------------------------------------------------------------------------------------------
# The database: seeded once, copied for each run
# --------------------------------------------------------------------------------------------


def seed(folder: Path, config: Config) -> Path:
    """A database of `report_rows` generations over a year, all in GUILD_ID."""
    path = folder / "seed.db"
    reports.build(path, config.report_rows, config.report_users, [GUILD_ID], 365)
    return path


def copy_database(seed_path: Path, target: Path) -> None:
    """The seeded file (and its WAL, if one is left) as the bot's database."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal"):
        source = Path(f"{seed_path}{suffix}")
        if source.exists():
            shutil.copyfile(source, Path(f"{target}{suffix}"))


# --------------------------------------------------------------------------------------------
# 1. Another process holds the write lock
# --------------------------------------------------------------------------------------------


def hold_lock_child(database: Path, seconds: float) -> None:
    """In the child: take the write lock as any sqlite3 client would, hold it, let it go."""
    db = sqlite3.connect(database, isolation_level=None, timeout=LOCK_START_TIMEOUT_S)
    try:
        db.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        time.sleep(seconds)
        db.execute("ROLLBACK")
        print("released", flush=True)
    finally:
        db.close()


async def start_lock_holder(database: Path, seconds: float) -> asyncio.subprocess.Process:
    """Start the child and return once it holds the lock."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.contention",
        "--hold-lock-child",
        str(database),
        str(seconds),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), LOCK_START_TIMEOUT_S)
    if line.strip() != b"locked":
        child.kill()
        await child.wait()
        raise RuntimeError(f"the lock holder did not take the lock: {line!r}")
    return child


def in_time(outcome: Outcome) -> bool:
    """Whether Discord would have taken the acknowledgement."""
    return outcome.ack_s is not None and outcome.ack_s <= DISCORD_LIMIT_S


async def one_under_lock(fake: BenchDiscord, payload: dict[str, Any], wait_s: float) -> Outcome:
    """One /imagine: its acknowledgement, whatever it is, then its final message if deferred.

    A deferral later than 3 s was refused (404), so no final message follows it.
    """
    outcome = Outcome(str(payload["data"]["options"][0]["value"]))
    try:
        handle = await acknowledge(fake, payload, outcome, timeout=wait_s)
        if outcome.callback_type == 5 and in_time(outcome):
            final = await handle.wait_for(is_final, timeout=wait_s)
            outcome.final_at = fake.done_at[id(final)]
            if not final.files:
                outcome.error = str((final.json or {}).get("content"))[:200]
    except TimeoutError as error:
        outcome.error = f"timeout: {str(error).splitlines()[0]}"
    return outcome


async def spaced_imagines(
    fake: BenchDiscord, count: int, over_s: float, tag: str, wait_s: float
) -> list[Outcome]:
    """`count` /imagine from distinct users, one every over_s / count seconds."""
    spacing = over_s / count
    payloads = [imagine_payload(fake, 1000 + i, f"{tag} {i}") for i in range(count)]

    async def fire(index: int) -> Outcome:
        await asyncio.sleep(index * spacing)
        return await one_under_lock(fake, payloads[index], wait_s)

    return list(await asyncio.gather(*(fire(i) for i in range(count))))


def lock_figures(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Acknowledgement times and how each interaction was answered."""
    acks = [o.ack_s for o in outcomes if o.ack_s is not None]
    answers = Counter(
        (o.callback_content or "")[:90] for o in outcomes if o.callback_type not in (None, 5)
    )
    timely = [o for o in outcomes if in_time(o)]
    return {
        "ack": spread(acks, 50, 99),
        "count": len(outcomes),
        "within_3s": len(timely),
        "deferred": sum(1 for o in timely if o.callback_type == 5),
        "message_at_once": sum(1 for o in timely if o.callback_type == 4),
        "late": sum(1 for o in outcomes if o.ack_s is not None and not in_time(o)),
        "no_callback": sum(1 for o in outcomes if o.ack_s is None),
        "delivered": sum(1 for o in outcomes if o.final_at is not None and not o.error),
        "answers": dict(answers),
    }


def logged_errors(bot: BotProcess, start: float, end: float) -> list[str]:
    """The bot's ERROR lines between two moments."""
    return [line for at, line in bot.lines if start <= at <= end and " ERROR " in line]


async def phase_lock(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, database: Path, config: Config
) -> dict[str, Any]:
    """The floor (no lock), then the same interactions while another process holds the lock."""
    over_s = config.hold_s / 2
    wait_s = config.hold_s + 20
    comet.default = raw_json(b64_reply_body(make_image_of_size("png", 16 * 1024, seed=5)), 0.0)
    fake.forget()
    floor = await spaced_imagines(fake, config.lock_interactions, over_s, "free", wait_s)
    result: dict[str, Any] = {"hold_s": config.hold_s, "spread_over_s": over_s}
    result["floor"] = lock_figures(floor)
    result["errors"] = errors_of(floor, fake, comet)
    fake.forget()
    forget_comet(comet)

    violations_before = len(fake.violations)
    started = time.monotonic()
    holder = await start_lock_holder(database, config.hold_s)
    try:
        locked = await spaced_imagines(fake, config.lock_interactions, over_s, "locked", wait_s)
    finally:
        await asyncio.wait_for(holder.wait(), config.hold_s + 30)
    # Whatever the bot still logs about the interactions of the lock belongs to this phase.
    await asyncio.sleep(1.0)
    finished = time.monotonic()
    result["locked"] = lock_figures(locked)
    # What the lock provokes is the measurement: late callbacks (which the fake refuses and
    # records) and the bot's errors are reported here and excused from the run's errors.
    late = [v for v in fake.violations[violations_before:] if "initial response" in v]
    other = [v for v in fake.violations[violations_before:] if "initial response" not in v]
    del fake.violations[violations_before:]
    fake.violations.extend(other)
    result["locked"]["late_callbacks"] = len(late)
    result["locked"]["bot_errors"] = len(logged_errors(bot, started, finished))
    result["locked"]["failed"] = dict(Counter(o.error[:90] for o in locked if o.error))
    result["errors"] += [f"discord: {v}" for v in other]
    result["excused"] = (started, finished)
    result["vs_floor"] = ratios(
        result["locked"]["ack"], result["floor"]["ack"], "p50_ms", "p99_ms", "max_ms"
    )
    fake.forget()
    return result


# --------------------------------------------------------------------------------------------
# 2. A long report during a burst
# --------------------------------------------------------------------------------------------


def admin_payload(fake: BenchDiscord, subcommand: str) -> dict[str, Any]:
    """/usage-admin <subcommand> period:all from a member with Manage Server."""
    return fake.command_interaction(
        "usage-admin",
        {"period": "all"},
        subcommand=subcommand,
        user_id=ADMIN_ID,
        username="admin",
        permissions=MANAGER_PERMISSIONS,
    )


async def admin_report(fake: BenchDiscord, subcommand: str, wait_s: float) -> Outcome:
    """Fire the admin's command; seconds from dispatch to its files arriving."""
    payload = admin_payload(fake, subcommand)
    outcome = Outcome(f"/usage-admin {subcommand}")
    try:
        handle = await acknowledge(fake, payload, outcome, timeout=wait_s)
        final = await handle.wait_for(lambda r: r.route in FINAL_ROUTES, timeout=wait_s)
        outcome.final_at = fake.done_at[id(final)]
        outcome.final_s = outcome.final_at - fake.sent_at[handle.token]
        if not final.files:
            outcome.error = f"{subcommand}: {str((final.json or {}).get('content'))[:200]}"
    except TimeoutError as error:
        outcome.error = f"{subcommand}: timeout: {str(error).splitlines()[0]}"
    return outcome


async def burst_with(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, condition: str, config: Config
) -> dict[str, Any]:
    """One burst of /imagine, alone or fired right after an admin's all-time report."""
    fake.forget()
    forget_comet(comet)
    wait_s = config.burst_upstream_s + 60
    started = time.monotonic()
    report = (
        asyncio.create_task(admin_report(fake, condition, wait_s)) if condition != "alone" else None
    )
    outcomes = await imagine_many(fake, config.burst, config.burst_users, wait_s, condition)
    extra = [await report] if report is not None else []
    finished = time.monotonic()
    # The lag line of the last window comes up to a window later; the deliveries'
    # bookkeeping settles meanwhile, before the next burst.
    await asyncio.sleep(LAG_WINDOW_S + 0.3)
    acks = [o.ack_s for o in outcomes if o.ack_s is not None]
    result = {
        "ack": spread(acks, 50, 99),
        "report_s": extra[0].final_s if extra else None,
        "lag_ms": bot.lag_between(started, finished),
        "errors": errors_of([*outcomes, *extra], fake, comet),
    }
    fake.forget()
    return result


async def phase_report(
    fake: BenchDiscord, comet: FakeCometAPI, bot: BotProcess, config: Config, rotation: int
) -> dict[str, Any]:
    """A burst alone, with a server report, with an export; the order turns with each run."""
    image = make_image_of_size("png", 16 * 1024, seed=6)
    comet.default = raw_json(b64_reply_body(image), config.burst_upstream_s)
    order = [*REPORT_CONDITIONS[rotation:], *REPORT_CONDITIONS[:rotation]]
    result: dict[str, Any] = {"order": order}
    for condition in order:
        progress(f"burst of {config.burst}, {condition}")
        result[condition] = await burst_with(fake, comet, bot, condition, config)
    for condition in ("server", "export"):
        result[condition]["vs_alone"] = ratios(
            result[condition]["ack"], result["alone"]["ack"], "p50_ms", "p99_ms", "max_ms"
        )
    result["errors"] = [e for c in REPORT_CONDITIONS for e in result[c]["errors"]]
    return result


# --------------------------------------------------------------------------------------------
# Runs and the table
# --------------------------------------------------------------------------------------------


async def one_run(config: Config, seed_path: Path, index: int) -> dict[str, Any]:
    """One bot process on a fresh copy of the seeded database: the lock, then the reports."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-contention-") as folder:
        workdir = Path(folder)
        database = workdir / "usage.db"
        copy_database(seed_path, database)
        async with (
            BenchDiscord(guilds=[GUILD_ID]) as fake,
            FakeCometAPI(api_key=COMET_KEY) as comet,
        ):
            async with bot_process(
                fake,
                comet,
                workdir,
                config.bot_root,
                MAX_CONCURRENT_GENERATIONS=str(config.burst),
            ) as bot:
                progress(f"lock held {config.hold_s:g} s by another process")
                result["lock"] = await phase_lock(fake, comet, bot, database, config)
                result["report"] = await phase_report(fake, comet, bot, config, index % 3)
            result["log_problems"] = bot.problems([result["lock"]["excused"]])
            result["exit"] = bot.process.returncode
    return result


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians across runs of every figure the table shows."""
    m: dict[str, Any] = {}
    for q in ("p50_ms", "p99_ms", "max_ms"):
        for part in ("floor", "locked"):
            m[f"lock_{part}_{q}"] = median_of(runs, "lock", part, "ack", q)
        m[f"lock_vs_floor_{q}"] = median_of(runs, "lock", "vs_floor", q)
        for condition in REPORT_CONDITIONS:
            m[f"{condition}_{q}"] = median_of(runs, "report", condition, "ack", q)
        for condition in ("server", "export"):
            m[f"{condition}_vs_alone_{q}"] = median_of(runs, "report", condition, "vs_alone", q)
    for key in ("within_3s", "deferred", "message_at_once", "late", "no_callback", "delivered"):
        for part in ("floor", "locked"):
            m[f"lock_{part}_{key}"] = median_of(runs, "lock", part, key)
    for key in ("late_callbacks", "bot_errors"):
        m[f"lock_{key}"] = median_of(runs, "lock", "locked", key)
    for condition in REPORT_CONDITIONS:
        m[f"{condition}_lag_ms"] = median_of(runs, "report", condition, "lag_ms")
    for condition in ("server", "export"):
        m[f"{condition}_report_s"] = median_of(runs, "report", condition, "report_s")
    return m


def table(m: dict[str, Any], runs: int, config: Config) -> str:
    """The figures as a Markdown table."""
    n = config.lock_interactions

    def acks(prefix: str) -> str:
        return (
            f"{fmt(m[f'{prefix}_p50_ms'])} / {fmt(m[f'{prefix}_p99_ms'])} / "
            f"{fmt(m[f'{prefix}_max_ms'])} ms"
        )

    def times(prefix: str) -> str:
        return (
            f"{fmt(m[f'{prefix}_p50_ms'], 2)}x / {fmt(m[f'{prefix}_p99_ms'], 2)}x / "
            f"{fmt(m[f'{prefix}_max_ms'], 2)}x"
        )

    def answered(part: str) -> str:
        def count(key: str) -> str:
            return fmt(m[f"lock_{part}_{key}"], 0)

        return (
            f"{count('within_3s')} / {n} ({count('deferred')} deferred, "
            f"{count('message_at_once')} answered with a message); {count('late')} later, "
            f"{count('no_callback')} never; {count('delivered')} got their image"
        )

    lock = f"write lock held {config.hold_s:g} s by another process"
    spread_s = config.hold_s / 2
    rows = [
        f"| measure ({runs_label(runs)}) | value |",
        "|---|---|",
        f"| {n} /imagine over {spread_s:g} s, no lock (floor): ack p50 / p99 / max | "
        f"{acks('lock_floor')} |",
        f"| the same, no lock: acknowledged within 3 s | {answered('floor')} |",
        f"| the same, {lock}: ack p50 / p99 / max | {acks('lock_locked')} |",
        f"| the same, {lock}: acknowledged within 3 s | {answered('locked')} |",
        f"| the same, {lock}: callbacks too late for Discord / bot errors logged | "
        f"{fmt(m['lock_late_callbacks'], 0)} / {fmt(m['lock_bot_errors'], 0)} |",
        f"| lock / floor: p50 / p99 / max | {times('lock_vs_floor')} |",
        f"| burst of {config.burst} /imagine from {config.burst_users} members, alone: "
        f"ack p50 / p99 / max; worst loop lag | {acks('alone')}; {fmt(m['alone_lag_ms'])} ms |",
    ]
    for condition, what in (
        ("server", "/usage-admin server period:all"),
        ("export", "/usage-admin export period:all"),
    ):
        rows += [
            f"| the same burst with {what} ({config.report_rows:,} rows) fired with it: ack "
            f"p50 / p99 / max; worst loop lag; the report's time | {acks(condition)}; "
            f"{fmt(m[f'{condition}_lag_ms'])} ms; {fmt(m[f'{condition}_report_s'], 2)} s |",
            f"| with {what} / alone: p50 / p99 / max | {times(f'{condition}_vs_alone')} |",
        ]
    return "\n".join(rows)


def problems_of(results: Sequence[dict[str, Any]]) -> list[str]:
    """Every error outside what the lock provokes."""
    problems = [e for run in results for key in ("lock", "report") for e in run[key]["errors"]]
    problems += [line for run in results for line in run["log_problems"]]
    problems += [f"bot exited with status {r['exit']}" for r in results if r["exit"] != 0]
    return problems


def describe_answers(results: Sequence[dict[str, Any]]) -> list[str]:
    """What the bot said and what went wrong under the lock, once per distinct text."""
    said: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for run in results:
        said.update(run["lock"]["locked"]["answers"])
        failed.update(run["lock"]["locked"]["failed"])
    lines = [f"  under the lock, answered {count}x: {text!r}" for text, count in said.items()]
    lines += [f"  under the lock, failed {count}x: {text}" for text, count in failed.items()]
    return lines


async def run_all(config: Config, runs: int, seed_path: Path) -> int:
    """Run `runs` times; print the table; 1 if any error outside the lock's occurred."""
    results = []
    for index in range(runs):
        started = time.monotonic()
        results.append(await one_run(config, seed_path, index))
        print(f"run {index + 1}/{runs} took {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(table(summarise(results), runs, config))
    print()
    print("\n".join(describe_answers(results)))
    if config.smoke:
        print("  smoke run: tiny sizes, figures mean nothing")
    problems = problems_of(results)
    for problem in problems[:20]:
        print(f"  error: {problem}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; seed the database; run (or be the lock-holding child)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.contention",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat and print medians")
    parser.add_argument("--smoke", action="store_true", help="one tiny run; judges nothing")
    parser.add_argument("--hold", type=float, default=Config.hold_s, help="lock seconds")
    parser.add_argument("--report-rows", type=int, default=Config.report_rows)
    parser.add_argument(
        "--bot-root",
        type=Path,
        default=ROOT,
        help="run the bot package found here (the database is seeded by this tree's migrations)",
    )
    parser.add_argument("--hold-lock-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hold_lock_child:
        hold_lock_child(Path(args.hold_lock_child[0]), float(args.hold_lock_child[1]))
        return 0
    config = Config(hold_s=args.hold, report_rows=args.report_rows, bot_root=args.bot_root)
    runs = max(1, min(args.runs, 10))
    if args.smoke:
        config, runs = config.smoke_sized(), 1
    with tempfile.TemporaryDirectory(prefix="bench-contention-seed-") as folder:
        started = time.monotonic()
        seed_path = seed(Path(folder), config)
        progress(f"seeded {config.report_rows:,} rows in {time.monotonic() - started:.1f} s")
        return asyncio.run(run_all(config, runs, seed_path))


if __name__ == "__main__":
    sys.exit(main())
