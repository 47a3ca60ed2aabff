"""Shards split across processes: each runs its slice; only shard 0's registers commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import COMET_KEY, run_bot
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.fakes.fake_discord import FakeDiscord


def identified_shards(fake: FakeDiscord) -> list[list[int]]:
    """The `shard` field of every IDENTIFY the fake received."""
    return [
        frame.payload["d"]["shard"]
        for frame in fake.gateway_frames
        if frame.op == 2 and "shard" in frame.payload.get("d", {})
    ]


async def test_two_processes_each_run_their_shard_and_one_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHARD_COUNT=2: shard 0's process registers the commands, shard 1's does not."""
    async with FakeDiscord(shards=2) as fake, FakeCometAPI(api_key=COMET_KEY) as comet:
        async with run_bot(
            fake, comet, tmp_path / "a.db", monkeypatch, shard_count=2, shard_ids=(1,)
        ):
            await fake.wait_until_identified(1)
            assert fake.command_puts == []
        async with run_bot(
            fake, comet, tmp_path / "b.db", monkeypatch, shard_count=2, shard_ids=(0,)
        ) as bot:
            await fake.wait_until_identified(0)
            assert len(fake.command_puts) == 1
            handle = await bot.imagine(prompt="a cat")
            assert (await handle.wait_for(lambda r: bool(r.files))).files
    assert sorted(identified_shards(fake)) == [[0, 2], [1, 2]]


def test_shard_ids_must_fit_the_count() -> None:
    """SHARD_IDS without SHARD_COUNT, or beyond it, is refused naming the rule."""
    from pydantic import ValidationError

    from bot.settings import Settings

    base = {"discord_token": "t" * 20, "cometapi_key": "k" * 20}
    with pytest.raises(ValidationError, match="SHARD_IDS needs SHARD_COUNT"):
        Settings(_env_file=None, shard_ids="0", **base)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="between 0 and SHARD_COUNT-1"):
        Settings(_env_file=None, shard_count=2, shard_ids="2", **base)  # type: ignore[call-arg]
    assert Settings(_env_file=None, shard_count=2, shard_ids="1", **base).syncs_commands is False  # type: ignore[call-arg]
