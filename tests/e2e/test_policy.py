"""Community policy through the real bot: blocked words and the channels /imagine works in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, admin, fakes, private_text, run_bot

MEMBER = 6000


async def private_refusal(bot: Harness, **options: object) -> str:
    return await private_text(await bot.imagine(user_id=MEMBER, **options))


@pytest.mark.parametrize(
    "prompt",
    ["a SPIDER on a wall", "a spíder!", "Spider-man", "\uff53\uff50\uff49\uff44\uff45\uff52 web"],
    ids=["upper", "accent", "hyphen-word", "full-width"],
)
async def test_a_blocked_word_is_refused_in_any_spelling_without_echoing_it(
    bot: Harness, prompt: str
) -> None:
    """Case, accents and full-width forms all match; the refusal never repeats the word."""
    await admin(bot, ["limits", "block-word"], {"term": "Spider"})
    text = await private_refusal(bot, prompt=prompt)
    assert "does not allow" in text
    assert "spider" not in text.lower()
    assert bot.comet.calls == []
    with sqlite3.connect(bot.app.settings.database_path) as db:
        assert db.execute("SELECT count(*) FROM generations").fetchone() == (0,)
        logged = db.execute("SELECT user_id, reason, detail FROM refused_attempts").fetchall()
    assert logged == [(MEMBER, "blocked_term", "spider")]


async def test_a_blocked_word_inside_another_word_is_not_refused(bot: Harness) -> None:
    """Whole words only: blocking "cat" leaves "category" alone."""
    await admin(bot, ["limits", "block-word"], {"term": "cat"})
    handle = await bot.imagine(prompt="a category chart", user_id=MEMBER)
    assert (await handle.wait_for(lambda r: bool(r.files))).files


async def test_imagine_outside_the_allowed_channels_names_where_it_works(bot: Harness) -> None:
    """One channel allowed: elsewhere a private refusal naming it; in it, images."""
    allowed = bot.discord.guild().text_channel_id
    shown = await admin(bot, ["limits", "channel-allow"], {"channel": allowed})
    assert f"<#{allowed}>" in shown
    text = await private_refusal(bot, prompt="a cat", channel_id=allowed + 100)
    assert f"<#{allowed}>" in text
    assert bot.comet.calls == []
    handle = await bot.imagine(prompt="a cat", user_id=MEMBER, channel_id=allowed)
    assert (await handle.wait_for(lambda r: bool(r.files))).files


def roles(bot: Harness) -> tuple[int, int]:
    """Two plain roles of the fake guild (Discord sends them in GUILD_CREATE)."""
    first, second, _ = bot.discord.guild().member_role_ids
    return first, second


async def _images_until_refused(bot: Harness, limit: int, roles: list[int]) -> int:
    """dall-e-2 n=1 requests until refused (at most `limit` + 1): how many went through."""
    made = 0
    for _ in range(limit + 1):
        handle = await bot.imagine(prompt="a dot", model="dall-e-2", user_id=MEMBER, roles=roles)
        callback = await handle.wait_for_callback()
        if callback.json["type"] == 4:
            return made
        await handle.wait_for(lambda r: bool(r.files))
        made += 1
    return made


async def test_a_member_gets_their_best_roles_allowance(bot: Harness) -> None:
    """Roles giving 5 and 7 images: the member may make 7, not 5, and the 8th is refused."""
    five, twenty = roles(bot)
    await admin(bot, ["limits", "role-images"], {"role": five, "images": 5})
    shown = await admin(bot, ["limits", "role-images"], {"role": twenty, "images": 7})
    assert f"<@&{twenty}>: 7" in shown
    assert await _images_until_refused(bot, 7, [five, twenty]) == 7


async def test_a_roles_allowance_never_passes_the_operators_ceiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USER_DAILY_IMAGE_LIMIT=2 and a role worth 20: two images, then the bot's limit."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=2) as bot,
    ):
        _, twenty = roles(bot)
        await admin(bot, ["limits", "role-images"], {"role": twenty, "images": 20})
        assert await _images_until_refused(bot, 3, [twenty]) == 2


async def test_only_allowed_roles_may_imagine(bot: Harness) -> None:
    """roles-allow one role: a member without it is refused privately, one with it is served."""
    allowed, other = roles(bot)
    await admin(bot, ["limits", "roles-allow"], {"role": allowed})
    text = await private_refusal(bot, prompt="a cat", roles=[other])
    assert f"<@&{allowed}>" in text
    handle = await bot.imagine(prompt="a cat", user_id=MEMBER, roles=[allowed])
    assert (await handle.wait_for(lambda r: bool(r.files))).files


async def test_moderation_low_needs_the_servers_switch_and_an_age_restricted_channel(
    bot: Harness,
) -> None:
    """Off: refused; on in a normal channel: refused; on in an NSFW channel: sent upstream."""
    guild = bot.discord.guild()
    text = await private_refusal(bot, prompt="x", model="gpt-image-1", moderation="low")
    assert "does not allow `moderation` low" in text
    await admin(bot, ["limits", "moderation-low"], {"allowed": True})
    text = await private_refusal(
        bot, prompt="x", model="gpt-image-1", moderation="low", channel_id=guild.text_channel_id
    )
    assert "age-restricted" in text
    assert bot.comet.calls == []
    handle = await bot.imagine(
        prompt="x",
        model="gpt-image-1",
        moderation="low",
        user_id=MEMBER,
        channel_id=guild.nsfw_channel_id,
    )
    assert (await handle.wait_for(lambda r: bool(r.files))).files
    assert bot.comet.calls[-1].json["moderation"] == "low"


async def test_moderation_is_refused_for_models_that_do_not_take_it(bot: Harness) -> None:
    """dall-e-3 has no moderation parameter: the refusal names the option."""
    text = await private_refusal(bot, prompt="x", model="dall-e-3", moderation="auto")
    assert "`moderation` works only with the gpt-image models" in text


def _stored(bot: Harness) -> list[tuple[object, ...]]:
    with sqlite3.connect(bot.app.settings.database_path) as db:
        return db.execute(
            "SELECT user_id, options_json IS NOT NULL, images_delivered FROM generations "
            "ORDER BY id"
        ).fetchall()


async def test_forget_removes_a_members_prompts_here_and_keeps_the_counts(bot: Harness) -> None:
    """/usage-admin forget: the member's prompts go, another member's stay, counts stay."""
    for user in (MEMBER, MEMBER + 1):
        handle = await bot.imagine(prompt="a private thought", user_id=user)
        await handle.wait_for(lambda r: bool(r.files))
    await bot.settled()
    text = await admin(bot, "forget", {"member": MEMBER})
    assert "from 1 generation(s)" in text
    assert _stored(bot) == [(MEMBER, 0, 1), (MEMBER + 1, 1, 1)]
    with sqlite3.connect(bot.app.settings.database_path) as db:
        kept = db.execute("SELECT options_json FROM generations").fetchall()
    assert not any("private thought" in (value or "") for (value,) in kept[:1])


async def test_a_server_that_keeps_no_prompts_stores_none(bot: Harness) -> None:
    """keep-prompts off: the row has no prompt, and its Reroll says why it cannot run."""
    await admin(bot, ["limits", "keep-prompts"], {"keep": False})
    handle = await bot.imagine(prompt="not kept", user_id=MEMBER)
    await handle.wait_for(lambda r: bool(r.files))
    await bot.settled()
    assert _stored(bot) == [(MEMBER, 0, 1)]
