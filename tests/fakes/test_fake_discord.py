"""Tests of the Discord fake, driven by a real discord.py AutoShardedBot (and raw clients where
the point is to misbehave in ways discord.py refuses to)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import warnings
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import yarl
from PIL import Image

from tests.fakes import discord_payloads as p
from tests.fakes.fake_discord import (
    ROUTE_CALLBACK,
    ROUTE_ORIGINAL_PATCH,
    FakeDiscord,
    check_commands,
    schema_problems,
)

with warnings.catch_warnings():
    # discord.py 2.7.1 imports the stdlib `audioop` for voice, deprecated since Python 3.11;
    # with pyproject's filterwarnings=error that warning would make the import itself fail.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

MODELS = ["dall-e-3", "gpt-image-1", "gpt-image-2", "qwen-image"]


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


class NoIdentifyDelayBot(commands.AutoShardedBot):
    """discord.py waits 5 s before IDENTIFYing every shard but the first (Discord's identify
    rate limit); the fake has no such limit, so tests skip the wait."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


def make_bot(*, shard_count: int | None = None) -> commands.AutoShardedBot:
    # guild_ready_timeout: discord.py waits this long after the last GUILD_CREATE before
    # on_ready; its 2 s default would make every test slow.
    return NoIdentifyDelayBot(
        command_prefix=commands.when_mentioned,
        intents=discord.Intents.default(),
        guild_ready_timeout=0.05,
        shard_count=shard_count,
    )


def add_imagine(bot: commands.AutoShardedBot, image: bytes) -> None:
    """A miniature /imagine: defer, then put the result on the original response."""

    @app_commands.command(name="imagine", description="Generate an image from a prompt")
    @app_commands.describe(prompt="What to draw", model="Image model", count="How many")
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        model: str = "dall-e-3",
        count: app_commands.Range[int, 1, 4] = 1,
    ) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(
            content=f"{prompt} ({model}, {count})",
            attachments=[discord.File(io.BytesIO(image), filename="image.png")],
        )

    @imagine.autocomplete("model")
    async def model_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=m, value=m) for m in MODELS if current in m]

    bot.tree.add_command(imagine)


def point_discord_py_at(monkeypatch: pytest.MonkeyPatch, fake: FakeDiscord) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base_url)
    # After INVALID_SESSION(false), or a reconnect that cannot resume, discord.py dials
    # DiscordWebSocket.DEFAULT_GATEWAY (wss://gateway.discord.gg) instead of the URL that
    # /gateway/bot gave it; without this a test could reach the real Discord.
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url)
    )


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        point_discord_py_at(monkeypatch, server)
        yield server


@contextlib.asynccontextmanager
async def running(bot: commands.AutoShardedBot, fake: FakeDiscord) -> AsyncIterator[None]:
    """Log in, connect every shard, wait for on_ready; always close cleanly."""
    await bot.login(fake.token)
    task = asyncio.create_task(bot.connect())
    try:
        async with asyncio.timeout(5):
            await bot.wait_until_ready()
        yield
    finally:
        await bot.close()
        await task


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:  # noqa: ASYNC109
    """Until the bot's side of an exchange (e.g. its error handler) has caught up."""
    async with asyncio.timeout(timeout):
        # Polling: the condition is set by discord.py callbacks that expose no event to await.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def raw_post(
    url: str, body: dict[str, Any], *, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def test_bot_syncs_answers_a_command_and_autocompletes(fake: FakeDiscord) -> None:
    bot = make_bot()
    image = png_bytes(4, 3)
    add_imagine(bot, image)
    async with running(bot, fake):
        synced = await bot.tree.sync()

        assert [r.route for r in fake.requests] == [
            "GET /users/@me",
            "GET /oauth2/applications/@me",
            "GET /gateway/bot",
            "PUT /applications/{app}/commands",
        ]
        assert len(fake.command_puts) == 1
        [stored] = fake.global_commands
        assert stored["name"] == "imagine"
        assert synced[0].id == int(stored["id"])
        assert [o["name"] for o in stored["options"]] == ["prompt", "model", "count"]
        assert bot.get_guild(fake.guild_id) is not None

        handle = await fake.invoke("imagine", {"prompt": "a paper boat", "count": 2})
        assert handle.payload["data"]["id"] == stored["id"]
        # Types come from the synced definition: count is an INTEGER option.
        assert handle.payload["data"]["options"][1] == {"type": 4, "name": "count", "value": 2}

        callback = await handle.wait_for_callback()
        assert callback.json == {"type": 5}
        assert callback.query == {"with_response": "1"}
        assert callback.status == 200
        assert callback.response["interaction"]["response_message_loading"] is True

        final = await handle.wait_for_final()
        assert final.route == ROUTE_ORIGINAL_PATCH
        assert final.json["content"] == "a paper boat (dall-e-3, 2)"
        assert final.json["attachments"] == [{"id": 0, "filename": "image.png"}]
        [upload] = final.files
        assert (upload.field, upload.filename, upload.data) == ("files[0]", "image.png", image)
        assert handle.original is not None
        [attachment] = handle.original["attachments"]
        assert (attachment["width"], attachment["height"]) == (4, 3)
        assert handle.original["flags"] == 0  # no longer "thinking"

        # The attachment URL the fake hands out serves the uploaded bytes.
        async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as resp:
            assert await resp.read() == image

        typing = await fake.autocomplete(
            "imagine", {"prompt": "a paper boat", "model": "gpt"}, focused="model"
        )
        choices = await typing.wait_for_choices()
        assert choices == [
            {"name": "gpt-image-1", "value": "gpt-image-1"},
            {"name": "gpt-image-2", "value": "gpt-image-2"},
        ]
        assert typing.response_type == 8
        assert [r.route for r in typing.requests] == [ROUTE_CALLBACK]
    fake.assert_clean()


async def test_upper_case_option_name_is_refused_and_recorded(fake: FakeDiscord) -> None:
    bot = make_bot()

    # discord.py validates command names but not parameter names, so this reaches Discord.
    @app_commands.command(name="shout", description="Says it loudly")
    async def shout(interaction: discord.Interaction, Text: str) -> None:
        await interaction.response.send_message(Text)

    bot.tree.add_command(shout)
    await bot.login(fake.token)
    try:
        with pytest.raises(app_commands.CommandSyncFailure) as failure:
            await bot.tree.sync()
    finally:
        await bot.close()
    assert (failure.value.status, failure.value.code) == (400, 50035)
    assert "In parameter 'Text'" in str(failure.value)
    assert fake.global_commands == []
    assert fake.command_puts == []
    assert any("[0].options[0].name" in v and "'Text'" in v for v in fake.violations)


async def test_second_initial_response_gets_40060(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_imagine(bot, png_bytes())
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("imagine", {"prompt": "x"})
        await handle.wait_for_callback()
        # A second process answering the same interaction (discord.py itself refuses to).
        url = f"{fake.api_base_url}/interactions/{handle.id}/{handle.token}/callback"
        status, body = await raw_post(url, {"type": 4, "data": {"content": "me too"}})
        await handle.wait_for_final()
    assert (status, body) == (
        400,
        {"code": 40060, "message": "Interaction has already been acknowledged."},
    )
    assert any("acknowledged twice" in v for v in fake.violations)


async def test_unexpected_route_is_404_and_recorded(fake: FakeDiscord) -> None:
    bot = make_bot()
    await bot.login(fake.token)
    try:
        with pytest.raises(discord.NotFound) as missing:
            await bot.fetch_channel(1234)
    finally:
        await bot.close()
    assert missing.value.code == 0
    [call] = fake.unexpected
    assert (call.method, call.path, call.route, call.status) == ("GET", "/channels/1234", None, 404)
    assert call.response == {"message": "404: Not Found", "code": 0}


async def test_wrong_token_is_401(fake: FakeDiscord) -> None:
    bot = make_bot()
    try:
        with pytest.raises(discord.LoginFailure):
            await bot.login("not-the-token")
    finally:
        await bot.close()
    [call] = fake.requests
    assert (call.status, call.response) == (401, {"message": "401: Unauthorized", "code": 0})


async def test_zlib_stream_frames_decode() -> None:
    # Split into 7-byte frames: clients must buffer until the 00 00 ff ff flush marker.
    async with FakeDiscord(zlib_split=7, heartbeat_interval=1234) as fake:
        inflate = zlib.decompressobj()
        buffer = bytearray()
        frames = 0

        async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
            nonlocal buffer, frames
            while True:
                msg = await ws.receive(timeout=2)
                assert msg.type is aiohttp.WSMsgType.BINARY
                frames += 1
                buffer.extend(msg.data)
                if bytes(buffer[-4:]) == b"\x00\x00\xff\xff":
                    text = inflate.decompress(bytes(buffer))
                    buffer = bytearray()
                    return dict(json.loads(text))

        url = f"{fake.gateway_url}?v=10&encoding=json&compress=zlib-stream"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            hello = await receive(ws)
            assert hello["op"] == 10
            assert hello["d"]["heartbeat_interval"] == 1234
            await ws.send_json({"op": 1, "d": None})
            assert (await receive(ws))["op"] == 11
            await ws.send_json(
                {
                    "op": 2,
                    "d": {
                        "token": fake.token,
                        "intents": 1,
                        "properties": {"os": "linux", "browser": "t", "device": "t"},
                    },
                }
            )
            ready = await receive(ws)
            guild = await receive(ws)
        assert frames > 4
        assert (ready["t"], ready["s"], ready["d"]["shard"]) == ("READY", 1, [0, 1])
        assert ready["d"]["resume_gateway_url"] == fake.gateway_url
        assert (guild["t"], guild["s"], guild["d"]["id"]) == ("GUILD_CREATE", 2, str(fake.guild_id))


async def test_plain_json_gateway_and_privileged_intents() -> None:
    async with (
        FakeDiscord() as fake,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws,
    ):
        hello = await ws.receive_json(timeout=2)
        assert hello["op"] == 10
        message_content = 1 << 15
        await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": message_content}})
        closed = await ws.receive(timeout=2)
    assert closed.type is aiohttp.WSMsgType.CLOSE
    assert closed.data == 4014


async def test_shards_get_their_own_guilds(monkeypatch: pytest.MonkeyPatch) -> None:
    guilds = [p.guild_id_for_shard(0, 2), p.guild_id_for_shard(1, 2)]
    async with FakeDiscord(guilds=guilds, shards=2) as fake:
        point_discord_py_at(monkeypatch, fake)
        bot = make_bot()
        add_imagine(bot, png_bytes())
        async with running(bot, fake):
            assert fake.connected_shards == {0: 1, 1: 1}
            assert sorted(g.id for g in bot.guilds) == sorted(guilds)
            assert {g.id: g.shard_id for g in bot.guilds} == {guilds[0]: 0, guilds[1]: 1}
            bot.tree.copy_global_to(guild=discord.Object(guilds[1]))
            await bot.tree.sync(guild=discord.Object(guilds[1]))
            assert list(fake.guild_commands) == [guilds[1]]
            assert [c["name"] for c in fake.guild_commands[guilds[1]]] == ["imagine"]

            handle = await fake.invoke("imagine", {"prompt": "x"}, guild_id=guilds[1])
            await handle.wait_for_final()
            assert handle.payload["data"]["guild_id"] == str(guilds[1])
        sent = [f for f in fake.gateway_frames if f.event == "INTERACTION_CREATE"]
        assert [f.shard_id for f in sent] == [1]
        fake.assert_clean()


async def test_resume_after_reconnect_request(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_imagine(bot, png_bytes())
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    async with running(bot, fake):
        await bot.tree.sync()
        await fake.send_reconnect(0)
        async with asyncio.timeout(3):
            await resumed.wait()
        await fake.wait_until_identified()
        handle = await fake.invoke("imagine", {"prompt": "after resume"})
        await handle.wait_for_final()
    ops_in = [f.op for f in fake.gateway_frames if f.direction == "in"]
    assert ops_in.count(2) == 1  # one IDENTIFY, then a RESUME instead of a second one
    assert 6 in ops_in
    fake.assert_clean()


async def test_webhook_errors_match_discord(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_imagine(bot, png_bytes())
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.dispatch(fake.command_interaction("imagine", {"prompt": "x"}))
        await handle.wait_for_final()
    base = f"{fake.api_base_url}/webhooks/{fake.application_id}"

    # A token Discord never issued.
    status, body = await raw_post(f"{base}/not-a-token?wait=1", {"content": "hi"})
    assert (status, body) == (404, {"message": "Unknown Webhook", "code": 10015})

    # Editing @original of an interaction nobody answered yet.
    fresh = fake.command_interaction("imagine", {"prompt": "y"})
    fake.register(fresh)
    async with (
        aiohttp.ClientSession() as session,
        session.patch(
            f"{base}/{fresh['token']}/messages/@original", json={"content": "too early"}
        ) as resp,
    ):
        assert (resp.status, await resp.json()) == (
            404,
            {"message": "Unknown Message", "code": 10008},
        )

    # After the 15 minutes.
    handle.expire()
    status, body = await raw_post(f"{base}/{handle.token}?wait=1", {"content": "late"})
    assert (status, body) == (401, {"message": "Invalid Webhook Token", "code": 50027})


async def test_late_initial_response_is_unknown_interaction(fake: FakeDiscord) -> None:
    fake.initial_response_timeout = 0.1
    bot = make_bot()
    errors: list[Exception] = []

    @app_commands.command(name="slow", description="Thinks before answering")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.2)  # e.g. calling an API before deferring
        await interaction.response.defer()

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        errors.append(error)

    bot.tree.add_command(slow)
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("slow")
        callback = await handle.wait_for_callback()
        await eventually(lambda: len(errors) == 1)
    assert callback.response == {"message": "Unknown interaction", "code": 10062}
    assert isinstance(errors[0].__cause__, discord.NotFound)
    assert any("initial response" in v for v in fake.violations)


async def test_oversized_file_and_content_are_refused(fake: FakeDiscord) -> None:
    bot = make_bot()
    errors: list[BaseException] = []

    @app_commands.command(name="big", description="Sends too much")
    async def big(interaction: discord.Interaction, what: str) -> None:
        if what == "file":
            await interaction.response.send_message(
                file=discord.File(io.BytesIO(b"x" * 2048), filename="big.png")
            )
        else:
            await interaction.response.send_message("y" * 2001)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        errors.append(error.__cause__ or error)

    bot.tree.add_command(big)
    async with running(bot, fake):
        await bot.tree.sync()
        # The user's upload limit is in the interaction, as discord.py reads it.
        too_big = await fake.invoke("big", {"what": "file"}, attachment_size_limit=1024)
        first = await too_big.wait_for_callback()
        too_long = await fake.invoke("big", {"what": "text"})
        second = await too_long.wait_for_callback()
        await eventually(lambda: len(errors) == 2)
    assert first.response == {"code": 40005, "message": "Request entity too large"}
    assert second.status == 400
    assert second.response["errors"]["data"]["content"]["_errors"][0]["code"] == (
        "BASE_TYPE_MAX_LENGTH"
    )
    assert [type(e) for e in errors] == [discord.HTTPException, discord.HTTPException]
    assert len(fake.violations) == 2


REQUEST_LIMIT_VIOLATION = "request limit"


async def test_files_under_the_file_limit_but_over_the_request_limit_are_refused(
    fake: FakeDiscord,
) -> None:
    """Three 9 MB files each fit 10 MiB, but their 27 MB request is refused like Discord does."""
    bot = make_bot()
    errors: list[BaseException] = []

    @app_commands.command(name="many", description="Sends several large files")
    async def many(interaction: discord.Interaction, count: int) -> None:
        await interaction.response.defer(thinking=True)
        files = [
            discord.File(io.BytesIO(bytes([i]) * 9_000_000), filename=f"part{i}.bin")
            for i in range(count)
        ]
        await interaction.edit_original_response(attachments=files)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        errors.append(error.__cause__ or error)

    bot.tree.add_command(many)
    async with running(bot, fake):
        await bot.tree.sync()
        fits = await (await fake.invoke("many", {"count": 2})).wait_for_final(timeout=30)
        too_big = await (await fake.invoke("many", {"count": 3})).wait_for_final(timeout=30)
        await eventually(lambda: len(errors) == 1, timeout=10)
    assert fits.status == 200
    assert len(fits.files) == 2
    assert too_big.status == 413
    assert too_big.response == {"code": 40005, "message": "Request entity too large"}
    [error] = errors
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (413, 40005)
    # Refused for the request, not for a file: only the request-limit rule fired.
    [violation] = fake.violations
    assert REQUEST_LIMIT_VIOLATION in violation
    assert f"{too_big.size} bytes" in violation


async def test_request_size_counts_the_multipart_framing(fake: FakeDiscord) -> None:
    """A file of exactly 25,000,000 bytes is over the limit once boundaries and headers count."""
    url = f"{fake.api_base_url}/webhooks/{fake.application_id}/no-such-token?wait=1"
    data = b"\0" * 25_000_000
    form = aiohttp.FormData()
    form.add_field("payload_json", json.dumps({"attachments": [{"id": 0}]}))
    form.add_field("files[0]", io.BytesIO(data), filename="big.bin", content_type="image/png")
    async with aiohttp.ClientSession() as session, session.post(url, data=form) as resp:
        status, body = resp.status, await resp.json(content_type=None)
    assert (status, body) == (413, {"code": 40005, "message": "Request entity too large"})
    [record] = fake.requests
    [upload] = record.files
    assert len(upload.data) == 25_000_000
    assert record.size > len(upload.data)
    [violation] = fake.violations
    assert REQUEST_LIMIT_VIOLATION in violation


@pytest.mark.parametrize(
    ("size", "status"),
    [
        # At the limit the body is read and handled: the made-up token is Unknown Webhook.
        pytest.param(25_000_000, 404, id="at-the-limit"),
        pytest.param(25_000_001, 413, id="one-byte-over"),
    ],
)
async def test_json_body_limit_is_exactly_25_000_000_bytes(
    fake: FakeDiscord, size: int, status: int
) -> None:
    """The limit holds for plain JSON bodies too, and aiohttp's own limit does not cut in first."""
    url = f"{fake.api_base_url}/webhooks/{fake.application_id}/no-such-token?wait=1"
    prefix, suffix = b'{"content":"', b'"}'
    body = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
    headers = {"Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=io.BytesIO(body), headers=headers) as resp,
    ):
        answer = (resp.status, await resp.json(content_type=None))
    [record] = fake.requests
    assert record.size == size
    assert answer[0] == status
    over = [v for v in fake.violations if REQUEST_LIMIT_VIOLATION in v]
    if status == 413:
        assert answer[1] == {"code": 40005, "message": "Request entity too large"}
        assert len(over) == 1
    else:
        assert over == []


async def test_dm_interaction_and_too_many_choices(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen: list[discord.Interaction] = []

    @app_commands.command(name="pick", description="Pick a word")
    async def pick(interaction: discord.Interaction, word: str) -> None:
        seen.append(interaction)
        await interaction.response.send_message(word, ephemeral=True)

    @pick.autocomplete("word")
    async def word_autocomplete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f"w{i}", value=f"w{i}") for i in range(30)]

    bot.tree.add_command(pick)
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("pick", {"word": "hello"}, dm=True, user_id=42)
        callback = await handle.wait_for_callback()
        typing = await fake.autocomplete("pick", {"word": "w"}, focused="word")
        refused = await typing.wait_for_callback()
    assert "member" not in handle.payload
    assert handle.payload["context"] == p.CONTEXT_BOT_DM
    assert isinstance(seen[0].channel, discord.DMChannel)
    assert seen[0].user.id == 42
    assert callback.status == 200
    assert handle.ephemeral
    assert handle.original is not None
    assert handle.original["content"] == "hello"
    assert refused.status == 400
    assert fake.violations == [
        "POST /interactions/{id}/{token}/callback: data.choices: Must be 25 or fewer in length."
    ]


async def test_admin_and_member_permissions_reach_the_bot(fake: FakeDiscord) -> None:
    bot = make_bot()
    manage: list[bool] = []

    @app_commands.command(name="whoami", description="Tells if you may manage the server")
    async def whoami(interaction: discord.Interaction) -> None:
        manage.append(interaction.permissions.manage_guild)
        await interaction.response.send_message("ok", ephemeral=True)

    bot.tree.add_command(whoami)
    async with running(bot, fake):
        await bot.tree.sync()
        for permissions in (p.MEMBER_PERMISSIONS, p.MANAGER_PERMISSIONS, p.ADMIN_PERMISSIONS):
            handle = await fake.invoke("whoami", permissions=permissions)
            await handle.wait_for_callback()
    assert manage == [False, True, True]
    fake.assert_clean()


async def test_fake_replies_match_discord_response_schemas(fake: FakeDiscord) -> None:
    bot = make_bot()
    add_imagine(bot, png_bytes())
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("imagine", {"prompt": "x"})
        await handle.wait_for_final()
        await bot.get_channel(fake.guild().text_channel_id).send(  # type: ignore[union-attr]
            "hello", file=discord.File(io.BytesIO(png_bytes()), filename="a.png")
        )
    by_route: dict[str, Any] = {r.route or "": r.response for r in fake.requests}
    checks: list[tuple[str, Any]] = [
        ("UserPIIResponse", by_route["GET /users/@me"]),
        ("PrivateApplicationResponse", by_route["GET /oauth2/applications/@me"]),
        ("GatewayBotResponse", by_route["GET /gateway/bot"]),
        ("InteractionCallbackResponse", by_route[ROUTE_CALLBACK]),
        ("MessageResponse", by_route[ROUTE_ORIGINAL_PATCH]),
        ("MessageResponse", by_route["POST /channels/{channel}/messages"]),
        *(("ApplicationCommandResponse", c) for c in fake.global_commands),
    ]
    problems = [f"{name}: {pr}" for name, body in checks for pr in schema_problems(name, body)]
    assert problems == []
    fake.assert_clean()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(name="Imagine"), "[0].name"),
        (lambda c: c.update(description=""), "[0].description"),
        (lambda c: c["options"].reverse(), "[0].options[1].required"),
        (lambda c: c["options"][1].update(choices=[{"name": "a", "value": "a"}]), "autocomplete"),
        (lambda c: c["options"][0].update(type=12), "[0].options[0].type"),
        (
            lambda c: c.update(options=[dict(c["options"][0], name=f"o{i}") for i in range(26)]),
            "25",
        ),
        (
            lambda c: c["options"][0].update(
                autocomplete=False, choices=[{"name": "n", "value": "v" * 101}]
            ),
            "choices[0].value",
        ),
    ],
)
def test_command_rules(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    command: dict[str, Any] = {
        "name": "imagine",
        "description": "Generate an image",
        "type": 1,
        "options": [
            {"type": 3, "name": "prompt", "description": "What", "required": True},
            {"type": 3, "name": "model", "description": "Which", "autocomplete": True},
        ],
    }
    assert check_commands([command]) == []
    mutate(command)
    problems = [pr.describe() for pr in check_commands([command])]
    assert any(expected in text for text in problems), problems


async def test_subcommand_attachment_option_and_followups(fake: FakeDiscord) -> None:
    bot = make_bot()
    received: list[bytes] = []
    source = png_bytes(8, 8)

    image = app_commands.Group(name="image", description="Image tools")

    @image.command(name="edit", description="Edit an image")
    async def edit(
        interaction: discord.Interaction, picture: discord.Attachment, prompt: str
    ) -> None:
        await interaction.response.defer(thinking=True)
        received.append(await picture.read())
        result = discord.File(io.BytesIO(source), filename="edited.png")
        await interaction.followup.send(f"edited: {prompt}", file=result)
        await interaction.followup.send("only you can see this", ephemeral=True)

    bot.tree.add_command(image)
    async with running(bot, fake):
        await bot.tree.sync()
        upload = p.AttachmentInput("cat.png", source)
        handle = await fake.invoke(
            "image", {"picture": upload, "prompt": "add a hat"}, subcommand="edit"
        )
        final = await handle.wait_for_final()
        second = await handle.wait_for(lambda r: r.route == final.route and r is not final)
    [sub] = handle.payload["data"]["options"]
    assert (sub["type"], sub["name"]) == (p.OPTION_SUB_COMMAND, "edit")
    assert [o["type"] for o in sub["options"]] == [p.OPTION_ATTACHMENT, p.OPTION_STRING]
    assert received == [source]
    assert final.query == {"wait": "1", "with_components": "0"}
    # The first followup after a defer *is* the deferred message, not a new one.
    assert final.response["id"] == handle.original["id"]  # type: ignore[index]
    assert handle.original["content"] == "edited: add a hat"  # type: ignore[index]
    assert [m["flags"] for m in handle.followups] == [p.MESSAGE_FLAG_EPHEMERAL]
    assert second.response["id"] == handle.followups[0]["id"]
    fake.assert_clean()


async def test_ephemeral_followup_after_public_defer_is_flagged(fake: FakeDiscord) -> None:
    bot = make_bot()

    @app_commands.command(name="secret", description="Meant to be private")
    async def secret(interaction: discord.Interaction) -> None:
        await interaction.response.defer()  # public "thinking..."
        await interaction.followup.send("your API key is ...", ephemeral=True)

    bot.tree.add_command(secret)
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("secret")
        final = await handle.wait_for_final()
    assert final.status == 200  # Discord accepts it...
    assert handle.original is not None
    assert handle.original["flags"] & p.MESSAGE_FLAG_EPHEMERAL == 0  # ...and shows it to all
    [violation] = fake.violations
    assert "shows it to everyone" in violation


async def test_latency_and_fault_knobs(fake: FakeDiscord) -> None:
    bot = make_bot()
    errors: list[BaseException] = []
    took: list[float] = []

    @app_commands.command(name="ping", description="Answers slowly")
    async def ping(interaction: discord.Interaction) -> None:
        started = asyncio.get_running_loop().time()
        await interaction.response.defer()
        took.append(asyncio.get_running_loop().time() - started)
        await interaction.edit_original_response(content="pong")

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        errors.append(error.__cause__ or error)

    bot.tree.add_command(ping)
    fake.callback_delay = 0.2
    fake.fail_next(ROUTE_ORIGINAL_PATCH, 403, {"message": "Missing Access", "code": 50001})
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("ping")
        final = await handle.wait_for_final()
        await eventually(lambda: len(errors) == 1)
    assert took[0] >= 0.2
    assert final.status == 403
    assert [type(e) for e in errors] == [discord.Forbidden]


def test_nested_subcommand_group_options() -> None:
    definitions: list[dict[str, Any]] = [
        {
            "type": p.OPTION_SUB_COMMAND_GROUP,
            "name": "style",
            "description": "Styles",
            "options": [
                {
                    "type": p.OPTION_SUB_COMMAND,
                    "name": "set",
                    "description": "Set a style",
                    "options": [{"type": p.OPTION_NUMBER, "name": "strength", "description": "s"}],
                }
            ],
        }
    ]
    options = p.build_options({"strength": 1}, definitions=definitions, subcommand="style set")
    assert options == [
        {
            "type": p.OPTION_SUB_COMMAND_GROUP,
            "name": "style",
            "options": [
                {
                    "type": p.OPTION_SUB_COMMAND,
                    "name": "set",
                    "options": [{"type": p.OPTION_NUMBER, "name": "strength", "value": 1.0}],
                }
            ],
        }
    ]
    focused = p.build_options(
        {"strength": 1}, definitions=definitions, subcommand=["style", "set"], focused="strength"
    )
    leaf = focused[0]["options"][0]["options"][0]
    assert leaf == {"type": p.OPTION_NUMBER, "name": "strength", "value": "1", "focused": True}


async def test_user_role_and_channel_options_are_resolved(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen: list[tuple[Any, ...]] = []

    @app_commands.command(name="credit", description="Give image credits")
    async def credit(
        interaction: discord.Interaction,
        member: discord.Member,
        role: discord.Role,
        channel: discord.TextChannel,
    ) -> None:
        seen.append((member.id, member.name, role.id, channel.id))
        await interaction.response.send_message("done", ephemeral=True)

    bot.tree.add_command(credit)
    async with running(bot, fake):
        await bot.tree.sync()
        guild = fake.guild()
        handle = await fake.invoke(
            "credit", {"member": 77, "role": guild.id, "channel": guild.text_channel_id}
        )
        await handle.wait_for_callback()
    assert seen == [(77, "user77", guild.id, guild.text_channel_id)]
    resolved = handle.payload["data"]["resolved"]
    assert sorted(resolved) == ["channels", "members", "roles", "users"]
    assert "user" not in resolved["members"]["77"]
    fake.assert_clean()


@pytest.mark.parametrize(
    ("disrupt", "identifies", "resumes"),
    [
        (lambda fake: fake.invalidate_session(0), 2, 0),
        (lambda fake: fake.close_gateway(0, code=4000), 1, 1),
    ],
)
async def test_bot_recovers_from_gateway_disruptions(
    fake: FakeDiscord,
    disrupt: Callable[[FakeDiscord], Any],
    identifies: int,
    resumes: int,
) -> None:
    bot = make_bot()
    add_imagine(bot, png_bytes())
    async with running(bot, fake):
        await bot.tree.sync()
        await disrupt(fake)
        await fake.wait_until_identified(timeout=3)
        handle = await fake.invoke("imagine", {"prompt": "still here"})
        await handle.wait_for_final()
    ops_in = [f.op for f in fake.gateway_frames if f.direction == "in"]
    assert (ops_in.count(2), ops_in.count(6)) == (identifies, resumes)
    fake.assert_clean()
