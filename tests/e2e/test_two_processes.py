"""Two real bot processes, one shard each, one PostgreSQL, one fake Discord.

The fake routes each guild's interactions to the shard Discord would ((guild_id >> 22) %
shards), so a member using /imagine in two guilds is served by both processes at once.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.e2e.harness import COMET_KEY, process_env
from tests.fakes.fake_cometapi import FakeCometAPI, Reply
from tests.fakes.fake_discord import FakeDiscord

# One guild on each of two shards: (id >> 22) % 2 is 0 and 1.
GUILD_ON_0 = 4 << 22
GUILD_ON_1 = (5 << 22) + 7
DAILY_LIMIT = 3


@dataclass
class BotProcess:
    process: asyncio.subprocess.Process
    lines: list[str]

    async def read_until(self, marker: str, timeout: float = 30) -> None:  # noqa: ASYNC109
        assert self.process.stderr is not None

        async def read() -> None:
            assert self.process.stderr is not None
            while not any(marker in line for line in self.lines):
                line = (await self.process.stderr.readline()).decode()
                if not line:
                    raise AssertionError(f"bot ended before {marker!r}:\n" + "".join(self.lines))
                self.lines.append(line)

        await asyncio.wait_for(read(), timeout)

    def log(self) -> str:
        return "".join(self.lines)


@asynccontextmanager
async def bot_process(
    fake: FakeDiscord, comet: FakeCometAPI, url: str, shard: int, folder: Path
) -> AsyncIterator[BotProcess]:
    """`python -m bot` running shard `shard` of 2 on the database at `url`, until ready."""
    env = process_env(
        fake,
        comet,
        DATABASE_URL=url,
        SHARD_COUNT="2",
        SHARD_IDS=str(shard),
        USER_DAILY_IMAGE_LIMIT=str(DAILY_LIMIT),
        SHUTDOWN_GRACE_S="0.5",
    )
    await asyncio.to_thread(folder.mkdir, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=folder, env=env, stderr=asyncio.subprocess.PIPE
    )
    running = BotProcess(process, [])
    try:
        await running.read_until("ready as")
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def statuses(url: str) -> dict[str, str]:
    """Each row's status by the prompt's request id order: request_id -> status."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT instance_id, status FROM generations ORDER BY id")
    finally:
        await connection.close()
    return {f"{index}:{row[0]}": str(row[1]) for index, row in enumerate(rows)}


async def images_counted(url: str, user_id: int) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(
            await connection.fetchval(
                "SELECT COALESCE(SUM(quota_images), 0) FROM generations WHERE user_id = $1",
                user_id,
            )
        )
    finally:
        await connection.close()


async def test_two_processes_share_exact_quotas_and_survive_a_kill(
    pg_url: str, tmp_path: Path
) -> None:
    """Concurrent requests over both processes stop at the limit; kill -9 one, the other
    serves on; the restarted one closes its own pending row and not the other's."""
    member, other, third = 501, 502, 503
    async with (
        FakeDiscord(shards=2, guilds=[GUILD_ON_0, GUILD_ON_1]) as fake,
        FakeCometAPI(api_key=COMET_KEY) as comet,
    ):
        assert (fake.shard_for(GUILD_ON_0), fake.shard_for(GUILD_ON_1)) == (0, 1)
        comet.default = Reply.auto(latency=0.3)
        async with (
            bot_process(fake, comet, pg_url, 0, tmp_path / "a") as first,
            bot_process(fake, comet, pg_url, 1, tmp_path / "b") as second,
        ):
            await fake.wait_until_identified(shards=[0, 1])
            # Eight at once from one member, half through each process (the fake sends each
            # guild's interactions to its shard's process only).
            handles = await asyncio.gather(
                *(
                    fake.invoke(
                        "imagine",
                        {"prompt": f"cat {index}"},
                        user_id=member,
                        guild_id=(GUILD_ON_0, GUILD_ON_1)[index % 2],
                    )
                    for index in range(8)
                )
            )
            refusals: list[str] = []
            for handle in handles:
                callback = await handle.wait_for_callback(timeout=20)
                if handle.deferred:  # reserved: the images follow (maybe after a queue notice)
                    await handle.wait_for(lambda r: bool(r.files), timeout=20)
                else:  # refused at once, privately, with the reason
                    refusals.append(str(callback.data))
            delivered = [handle for handle in handles if handle.files]
            assert len(delivered) == DAILY_LIMIT
            assert len(refusals) == 8 - DAILY_LIMIT
            assert all("daily limit reached" in text.lower() for text in refusals), refusals
            assert await images_counted(pg_url, member) == DAILY_LIMIT
            # One generation in flight on each process, then kill -9 the second.
            comet.queue(Reply.hang(), Reply.hang())
            calls = len(comet.calls)
            await fake.invoke("imagine", {"prompt": "on a"}, user_id=other, guild_id=GUILD_ON_0)
            await fake.invoke("imagine", {"prompt": "on b"}, user_id=other, guild_id=GUILD_ON_1)
            await comet.wait_for_calls(calls + 2, timeout=10)
            second.process.send_signal(signal.SIGKILL)
            await second.process.wait()

            # The first keeps serving.
            alive = await fake.invoke(
                "imagine", {"prompt": "still here"}, user_id=third, guild_id=GUILD_ON_0
            )
            assert (await alive.wait_for(lambda r: bool(r.files), timeout=20)).files

            before = await statuses(pg_url)
            assert sorted(before.values()).count("pending") == 2

            async with bot_process(fake, comet, pg_url, 1, tmp_path / "b") as restarted:
                assert "closed 1 generation(s) an earlier run left pending" in restarted.log()
                after = await statuses(pg_url)
                mine = [key for key in after if key.endswith(":shards-1")]
                theirs = [key for key in after if key.endswith(":shards-0")]
                assert after[mine[-1]] == "interrupted"
                # The first process's row is still in flight, untouched.
                assert after[theirs[-2]] == "pending"
                assert after[theirs[-1]] == "delivered"
            assert "Traceback" not in first.log()
