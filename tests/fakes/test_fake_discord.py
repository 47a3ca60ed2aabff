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
    ROUTE_CHANNEL_MESSAGE_DELETE,
    ROUTE_ORIGINAL_DELETE,
    ROUTE_ORIGINAL_PATCH,
    FakeDiscord,
    InteractionRefused,
    Problem,
    check_commands,
    check_components,
    check_message,
    check_modal,
    schema_problems,
)

with warnings.catch_warnings():
    # discord.py 2.7.1 imports the stdlib `audioop` for voice, deprecated since Python 3.11;
    # with pyproject's filterwarnings=error that warning would make the import itself fail.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands, ui
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


# ---------------------------------------------------------------------------------------------
# Message components, component interactions and modals
# ---------------------------------------------------------------------------------------------

ACTIONS: dict[str, tuple[str, discord.ButtonStyle]] = {
    "reroll": ("🔁", discord.ButtonStyle.secondary),
    "edit": ("✏️", discord.ButtonStyle.secondary),
    "details": ("ℹ️", discord.ButtonStyle.secondary),  # noqa: RUF001 - the emoji
    "delete": ("🗑️", discord.ButtonStyle.danger),
}


class Seen:
    """What the bot's component and modal callbacks received."""

    def __init__(self) -> None:
        self.presses: list[tuple[str, int, discord.Interaction]] = []
        self.prompts: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []


class EditPrompt(ui.Modal, title="Edit the prompt"):
    """discord.py 2.7's modal: a TextInput in a Label, and a classic (action-row) TextInput."""

    def __init__(self, gen: int, current: str, seen: Seen) -> None:
        super().__init__(custom_id=f"gen-edit:{gen}")
        self.seen = seen
        self.prompt: ui.TextInput[Any] = ui.TextInput(
            custom_id="prompt", style=discord.TextStyle.paragraph, max_length=1000, default=current
        )
        self.note: ui.TextInput[Any] = ui.TextInput(label="Note", custom_id="note", required=False)
        self.add_item(ui.Label(text="New prompt", component=self.prompt))
        self.add_item(self.note)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.seen.prompts.append((self.prompt.value, self.note.value))
        await interaction.response.edit_message(content=f"edited: {self.prompt.value}")


def result_button_class(seen: Seen) -> Any:
    """A persistent button whose custom_id carries the generation id, as the bot will use."""

    class ResultButton(
        ui.DynamicItem[ui.Button[Any]], template=r"gen:(?P<action>\w+):(?P<gen>\d+)"
    ):
        def __init__(self, action: str, gen: int) -> None:
            emoji, style = ACTIONS[action]
            super().__init__(ui.Button(emoji=emoji, style=style, custom_id=f"gen:{action}:{gen}"))
            self.action, self.gen = action, gen

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction, item: ui.Item[Any], match: Any
        ) -> ResultButton:
            return cls(match["action"], int(match["gen"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            seen.presses.append((self.action, self.gen, interaction))
            try:
                if self.action == "details":
                    await interaction.response.send_message(
                        f"generation {self.gen}", ephemeral=True
                    )
                elif self.action == "reroll":
                    await interaction.response.edit_message(content=f"rerolled {self.gen}")
                elif self.action == "edit":
                    assert interaction.message is not None
                    modal = EditPrompt(self.gen, interaction.message.content, seen)
                    await interaction.response.send_modal(modal)
                else:
                    await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE
                    await interaction.delete_original_response()
            except Exception as exc:  # the test looks at what went wrong
                seen.errors.append(exc)

    return ResultButton


def add_result_buttons(bot: commands.AutoShardedBot, image: bytes, seen: Seen) -> None:
    """/imagine (classic view with buttons) and /imagine2 (a components-V2 layout)."""
    button = result_button_class(seen)
    bot.add_dynamic_items(button)

    @app_commands.command(name="imagine", description="Generate an image")
    async def imagine(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer(thinking=True)
        view = ui.View(timeout=None)
        for action in ACTIONS:
            view.add_item(button(action, 42))
        await interaction.edit_original_response(
            content=prompt,
            attachments=[discord.File(io.BytesIO(image), filename="image.png")],
            view=view,
        )

    @app_commands.command(name="imagine2", description="Generate an image (components V2)")
    async def imagine2(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer(thinking=True)
        layout = ui.LayoutView(timeout=None)
        layout.add_item(
            ui.Container(
                ui.MediaGallery(discord.MediaGalleryItem("attachment://image.png")),
                ui.TextDisplay(f"**{prompt}**"),
                ui.ActionRow(*[button(action, 7) for action in ACTIONS]),
                accent_colour=0x5865F2,
            )
        )
        await interaction.edit_original_response(
            attachments=[discord.File(io.BytesIO(image), filename="image.png")], view=layout
        )

    bot.tree.add_command(imagine)
    bot.tree.add_command(imagine2)


async def test_pressing_buttons_reply_update_and_delete(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = Seen()
    add_result_buttons(bot, png_bytes(), seen)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("imagine", {"prompt": "a paper boat"}, user_id=77)
        await command.wait_for_final()
        result = command.original
        assert result is not None
        [row] = result["components"]
        # Stored as Discord returns it: ids assigned in document order.
        assert [row["id"], *(b["id"] for b in row["components"])] == [1, 2, 3, 4, 5]
        emoji = [b["emoji"]["name"] for b in row["components"]]
        assert emoji == [e for e, _ in ACTIONS.values()]

        details = await fake.press(result, "gen:details:42")
        await details.wait_for_callback()
        reroll = await fake.press(result["id"], "gen:reroll:42", user_id=78)
        reroll_callback = await reroll.wait_for_callback()
        rerolled = reroll.original
        assert rerolled is not None
        assert rerolled is fake.message(result["id"])
        assert (rerolled["content"], rerolled["edited_timestamp"] is not None) == (
            "rerolled 42",
            True,
        )
        delete = await fake.press(result, "gen:delete:42")
        await delete.wait_for(ROUTE_ORIGINAL_DELETE)
        await eventually(lambda: len(seen.presses) == 3)

    payload = details.payload
    assert payload["type"] == p.INTERACTION_MESSAGE_COMPONENT
    assert payload["data"] == {"custom_id": "gen:details:42", "component_type": 2, "id": 4}
    assert payload["message"]["id"] == result["id"]
    assert payload["message"]["components"] == result["components"]
    assert payload["member"]["user"]["id"] == "77"  # the invoker of the public message by default
    assert (payload["version"], payload["attachment_size_limit"]) == (1, 10 * 1024 * 1024)
    assert payload["app_permissions"] == str(p.BOT_PERMISSIONS)
    # discord.py parsed it back into the message and the dynamic item.
    action, gen, interaction = seen.presses[0]
    assert (action, gen, interaction.user.id) == ("details", 42, 77)
    assert interaction.message is not None
    assert interaction.message.id == int(result["id"])
    assert [c.custom_id for c in interaction.message.components[0].children] == [  # type: ignore[union-attr]
        "gen:reroll:42",
        "gen:edit:42",
        "gen:details:42",
        "gen:delete:42",
    ]
    assert seen.errors == []

    # Type 4: a new ephemeral message, whose metadata points at the pressed message.
    assert details.response_type == 4
    assert details.original is not None
    assert details.original["flags"] == p.MESSAGE_FLAG_EPHEMERAL
    assert details.original["interaction_metadata"]["interacted_message_id"] == result["id"]
    # Type 7: the pressed message itself was edited.
    assert reroll_callback.json["type"] == 7
    assert reroll_callback.response["resource"]["message"]["id"] == result["id"]
    assert reroll_callback.response["interaction"]["response_message_id"] == result["id"]
    assert reroll.payload["member"]["user"]["id"] == "78"
    # Type 6, then DELETE @original: deletes the message the button is on, for everyone.
    assert delete.response_type == 6
    assert fake.message(result["id"]) is None
    assert command.original is None
    assert fake.deleted_messages[-1]["id"] == result["id"]
    assert fake.deleted_messages[-1]["content"] == "rerolled 42"
    with pytest.raises(InteractionRefused, match="was deleted"):
        fake.component_interaction(result, "gen:reroll:42")
    fake.assert_clean()


async def test_dynamic_buttons_still_work_after_a_restart(fake: FakeDiscord) -> None:
    seen = Seen()
    first = make_bot()
    add_result_buttons(first, png_bytes(), seen)
    async with running(first, fake):
        await first.tree.sync()
        command = await fake.invoke("imagine", {"prompt": "a paper boat"})
        await command.wait_for_final()
    assert command.original is not None

    # A new process: no view is stored, only the dynamic item template is registered.
    second = make_bot()
    add_result_buttons(second, png_bytes(), seen)
    async with running(second, fake):
        press = await fake.press(command.original, "gen:reroll:42")
        await press.wait_for_callback()
    assert [(a, g) for a, g, _ in seen.presses] == [("reroll", 42)]
    assert fake.message(command.original["id"])["content"] == "rerolled 42"  # type: ignore[index]
    fake.assert_clean()


async def test_presses_a_member_could_not_make_are_refused(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = Seen()
    add_result_buttons(bot, png_bytes(), seen)

    @app_commands.command(name="links", description="A link, a disabled and a live button")
    async def links(interaction: discord.Interaction) -> None:
        view = ui.View()
        view.add_item(ui.Button(label="Docs", url="https://example.com/docs"))
        view.add_item(ui.Button(label="Gone", custom_id="gone", disabled=True))
        view.add_item(ui.Button(label="OK", custom_id="ok"))
        await interaction.response.send_message("see", view=view, ephemeral=True)

    bot.tree.add_command(links)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("links", user_id=77)
        await command.wait_for_callback()
        public = await fake.invoke("imagine", {"prompt": "x"})
        await public.wait_for_final()
    ephemeral, result = command.original, public.original
    assert ephemeral is not None
    assert result is not None
    link = ephemeral["components"][0]["components"][0]
    assert (link["style"], link["url"], "custom_id" in link) == (
        5,
        "https://example.com/docs",
        False,
    )
    with pytest.raises(InteractionRefused, match="no component with custom_id 'nope'"):
        fake.component_interaction(ephemeral, "nope")
    with pytest.raises(InteractionRefused, match="disabled"):
        fake.component_interaction(ephemeral, "gone")
    # Ephemeral: only the user it was shown to sees it (and is the default presser).
    with pytest.raises(InteractionRefused, match="only visible to user 77"):
        fake.component_interaction(ephemeral, "ok", user_id=999)
    assert fake.component_interaction(ephemeral, "ok")["member"]["user"]["id"] == "77"
    with pytest.raises(InteractionRefused, match="VIEW_CHANNEL"):
        fake.component_interaction(
            result, "gen:details:42", permissions=p.MEMBER_PERMISSIONS & ~p.VIEW_CHANNEL
        )
    with pytest.raises(ValueError, match="is in guild"):
        fake.component_interaction(result, "gen:details:42", guild_id=123)
    fake.assert_clean()


async def test_edit_button_opens_a_modal_and_its_submit_updates_the_message(
    fake: FakeDiscord,
) -> None:
    bot = make_bot()
    seen = Seen()
    add_result_buttons(bot, png_bytes(), seen)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("imagine", {"prompt": "a paper boat"}, user_id=77)
        await command.wait_for_final()
        result = command.original
        assert result is not None
        opened = await fake.press(result, "gen:edit:42")
        callback = await opened.wait_for_callback()

        # What the Discord client would not let the user submit.
        with pytest.raises(InteractionRefused, match="'prompt' is required"):
            opened.modal_submit_interaction({"prompt": ""})
        with pytest.raises(InteractionRefused, match=r"takes 0\.\.1000 characters"):
            opened.modal_submit_interaction({"prompt": "x" * 1001})
        with pytest.raises(InteractionRefused, match="no inputs"):
            opened.modal_submit_interaction({"colour": "red"})
        with pytest.raises(InteractionRefused, match="only user 77"):
            opened.modal_submit_interaction({"prompt": "a red boat"}, user_id=5)

        submitted = await opened.submit_modal({"prompt": "a red boat"})
        answer = await submitted.wait_for_callback()
        with pytest.raises(InteractionRefused, match="already submitted"):
            opened.modal_submit_interaction({"prompt": "again"})

    # discord.py 2.7 sends the TextInput inside a Label (type 18), and a bare TextInput in an
    # action row; the fake numbers the components as Discord does.
    assert callback.json["type"] == 9
    assert opened.modal is not None
    assert [c["type"] for c in opened.modal["components"]] == [18, 1]
    assert opened.modal["components"][0]["component"]["value"] == "a paper boat"
    data = submitted.payload["data"]
    assert data == {
        "custom_id": "gen-edit:42",
        "components": [
            {
                "type": 18,
                "id": 1,
                "component": {"type": 4, "id": 2, "custom_id": "prompt", "value": "a red boat"},
            },
            {
                "type": 1,
                "id": 3,
                "components": [{"type": 4, "id": 4, "custom_id": "note", "value": ""}],
            },
        ],
    }
    assert submitted.payload["type"] == p.INTERACTION_MODAL_SUBMIT
    assert submitted.payload["message"]["id"] == result["id"]  # opened from a component
    assert submitted.payload["member"]["user"]["id"] == "77"
    assert seen.prompts == [("a red boat", "")]
    assert answer.json["type"] == 7
    assert fake.message(result["id"])["content"] == "edited: a red boat"  # type: ignore[index]
    fake.assert_clean()


async def test_modal_from_a_slash_command_has_no_message_to_update(fake: FakeDiscord) -> None:
    bot = make_bot()
    prompts: list[str] = []

    class Ask(ui.Modal, title="Describe it"):
        text: ui.TextInput[Any] = ui.TextInput(label="Prompt", custom_id="text", min_length=3)

        async def on_submit(self, interaction: discord.Interaction) -> None:
            prompts.append(self.text.value)
            if self.text.value == "update":
                await interaction.response.edit_message(content="no message to edit")
            else:
                await interaction.response.send_message(f"drawing {self.text.value}")

    @app_commands.command(name="ask", description="Asks for a prompt")
    async def ask(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(Ask())

    bot.tree.add_command(ask)
    async with running(bot, fake):
        await bot.tree.sync()
        first = await fake.invoke("ask")
        await first.wait_for_callback()
        with pytest.raises(InteractionRefused, match=r"takes 3\.\.4000 characters"):
            first.modal_submit_interaction({"text": "ab"})
        reply = await first.submit_modal({"text": "a fox"})
        await reply.wait_for_callback()
        second = await fake.invoke("ask")
        await second.wait_for_callback()
        refused = await (await second.submit_modal({"text": "update"})).wait_for_callback()
    assert "message" not in reply.payload
    assert reply.original is not None
    assert reply.original["content"] == "drawing a fox"
    metadata = reply.original["interaction_metadata"]
    assert metadata["type"] == p.INTERACTION_MODAL_SUBMIT
    assert metadata["triggering_interaction_metadata"]["id"] == str(first.id)
    assert prompts == ["a fox", "update"]
    assert refused.status == 400
    [violation] = fake.violations
    assert "UPDATE_MESSAGE needs a message" in violation


async def test_components_v2_result_stores_resolved_media_and_takes_presses(
    fake: FakeDiscord,
) -> None:
    bot = make_bot()
    seen = Seen()
    image = png_bytes(6, 5)
    add_result_buttons(bot, image, seen)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("imagine2", {"prompt": "a paper boat"})
        final = await command.wait_for_final()
        result = command.original
        assert result is not None
        details = await fake.press(result, "gen:details:7")
        await details.wait_for_callback()
    assert final.json["flags"] == p.MESSAGE_FLAG_COMPONENTS_V2
    assert result["flags"] == p.MESSAGE_FLAG_COMPONENTS_V2
    assert result["content"] == ""
    [container] = result["components"]
    gallery, text, row = container["components"]
    [attachment] = result["attachments"]
    media = gallery["items"][0]["media"]
    assert (media["url"], media["attachment_id"]) == (attachment["url"], attachment["id"])
    assert (media["width"], media["height"], media["content_type"]) == (6, 5, "image/png")
    assert text == {"type": 10, "id": 3, "content": "**a paper boat**"}
    assert [b["custom_id"] for b in row["components"]] == [f"gen:{a}:7" for a in ACTIONS]
    assert schema_problems("MessageResponse", result) == []
    # discord.py rebuilt a LayoutView from the message payload to find the dynamic item.
    [(action, gen, interaction)] = seen.presses
    assert (action, gen) == ("details", 7)
    assert interaction.message is not None
    assert interaction.message.flags.components_v2
    fake.assert_clean()


async def test_components_v2_mistakes_are_refused_through_discord_py(fake: FakeDiscord) -> None:
    bot = make_bot()
    errors: list[BaseException] = []

    @app_commands.command(name="broken", description="Sends components V2 wrongly")
    async def broken(interaction: discord.Interaction, what: str) -> None:
        await interaction.response.defer(thinking=True)
        layout = ui.LayoutView()
        if what == "missing-file":
            layout.add_item(ui.MediaGallery(discord.MediaGalleryItem("attachment://nope.png")))
            await interaction.edit_original_response(view=layout)
        elif what == "hidden-file":
            layout.add_item(ui.TextDisplay("the image is attached"))
            await interaction.edit_original_response(
                view=layout, attachments=[discord.File(io.BytesIO(png_bytes()), "image.png")]
            )
        elif what == "too-much-text":
            for _ in range(3):
                layout.add_item(ui.TextDisplay("x" * 1500))
            await interaction.edit_original_response(view=layout)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: Exception) -> None:
        errors.append(error.__cause__ or error)

    bot.tree.add_command(broken)
    async with running(bot, fake):
        await bot.tree.sync()
        missing = await (await fake.invoke("broken", {"what": "missing-file"})).wait_for_final()
        hidden = await (await fake.invoke("broken", {"what": "hidden-file"})).wait_for_final()
        long = await (await fake.invoke("broken", {"what": "too-much-text"})).wait_for_final()
        await eventually(lambda: len(errors) == 2)
    assert missing.status == 400
    errors_at = missing.response["errors"]["components"]["0"]["items"]["0"]["media"]["url"]
    assert errors_at["_errors"][0]["code"] == "UNFURLED_MEDIA_ITEM_ATTACHMENT_NOT_FOUND"
    assert hidden.status == 200  # Discord accepts it, but nobody sees the image
    assert long.status == 400
    assert long.response["errors"]["components"]["_errors"][0]["code"] == (
        "MAX_TEXT_LENGTH_EXCEEDED"
    )
    assert [type(e) for e in errors] == [discord.HTTPException, discord.HTTPException]
    assert len(fake.violations) == 3
    assert "image.png: a components-V2 message only shows attachments" in fake.violations[1]


async def test_component_defers_choose_which_message_is_original(fake: FakeDiscord) -> None:
    """Type 5 makes a new ("thinking") message; type 6 makes @original the pressed message."""
    bot = make_bot()

    class Tools(ui.View):
        @ui.button(label="More", custom_id="more")
        async def more(self, interaction: discord.Interaction, _: ui.Button[Any]) -> None:
            await interaction.response.defer(thinking=True)  # DEFERRED_CHANNEL_MESSAGE
            await interaction.edit_original_response(content="another one")

        @ui.button(label="Fix", custom_id="fix")
        async def fix(self, interaction: discord.Interaction, _: ui.Button[Any]) -> None:
            await interaction.response.defer()  # DEFERRED_UPDATE_MESSAGE
            await interaction.followup.send("fixing", ephemeral=True)
            await interaction.edit_original_response(content="fixed", view=None)

    @app_commands.command(name="tools", description="Buttons")
    async def tools(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("a boat", view=Tools())

    bot.tree.add_command(tools)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("tools")
        await command.wait_for_callback()
        source = command.original
        assert source is not None
        more = await fake.press(source, "more")
        await more.wait_for(ROUTE_ORIGINAL_PATCH)
        fix = await fake.press(source, "fix")
        await fix.wait_for(ROUTE_ORIGINAL_PATCH)
    assert more.response_type == 5
    assert more.original is not None
    assert more.original["id"] != source["id"]
    assert (more.original["content"], more.original["flags"]) == ("another one", 0)
    assert fix.response_type == 6
    [note] = fix.followups  # after type 6 a followup is a new message
    assert (note["content"], note["flags"]) == ("fixing", p.MESSAGE_FLAG_EPHEMERAL)
    assert fix.original is source
    assert (source["content"], source["components"]) == ("fixed", [])
    assert schema_problems("MessageResponse", source) == []
    fake.assert_clean()


async def test_deleting_messages_follows_discords_permissions(fake: FakeDiscord) -> None:
    bot = make_bot()
    outcomes: list[str] = []

    @app_commands.command(name="purge", description="Deletes a message")
    async def purge(interaction: discord.Interaction, message_id: str) -> None:
        assert isinstance(interaction.channel, discord.TextChannel)
        try:
            await interaction.channel.get_partial_message(int(message_id)).delete()
        except discord.HTTPException as exc:
            outcomes.append(f"{exc.status} {exc.code}")
        else:
            outcomes.append("deleted")
        await interaction.response.send_message("done", ephemeral=True)

    class Tidy(ui.View):
        @ui.button(label="Tidy", custom_id="tidy")
        async def tidy(self, interaction: discord.Interaction, _: ui.Button[Any]) -> None:
            assert interaction.message is not None
            try:
                await interaction.message.delete()  # channel endpoint: no ephemeral there
            except discord.NotFound as exc:
                outcomes.append(f"{exc.status} {exc.code}")
            await interaction.response.defer()
            await interaction.delete_original_response()  # the webhook can

    @app_commands.command(name="tidy", description="An ephemeral message with a button")
    async def tidy(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("only you", view=Tidy(), ephemeral=True)

    bot.tree.add_command(purge)
    bot.tree.add_command(tidy)
    channel_id = fake.guild().text_channel_id
    async with running(bot, fake):
        await bot.tree.sync()
        theirs = fake.user_message("hello", user_id=55)
        await (await fake.invoke("purge", {"message_id": theirs["id"]})).wait_for_callback()
        fake.bot_channel_permissions[channel_id] = p.BOT_PERMISSIONS | p.MANAGE_MESSAGES
        await (await fake.invoke("purge", {"message_id": theirs["id"]})).wait_for_callback()
        del fake.bot_channel_permissions[channel_id]
        channel = bot.get_channel(channel_id)
        assert isinstance(channel, discord.TextChannel)
        mine = await channel.send("mine")
        await (await fake.invoke("purge", {"message_id": str(mine.id)})).wait_for_callback()
        shown = await fake.invoke("tidy", user_id=77)
        await shown.wait_for_callback()
        assert shown.original is not None
        pressed = await fake.press(shown.original, "tidy")
        await pressed.wait_for(ROUTE_ORIGINAL_DELETE)
    assert outcomes == ["403 50013", "deleted", "deleted", "404 10008"]
    assert fake.message(theirs["id"]) is None
    assert fake.channel_messages[channel_id] == []
    assert shown.original is None
    deletes = [r for r in fake.requests if r.route == ROUTE_CHANNEL_MESSAGE_DELETE]
    assert [r.status for r in deletes] == [403, 204, 204, 404]
    assert len(fake.violations) == 2
    assert "needs MANAGE_MESSAGES" in fake.violations[0]
    assert "an ephemeral message" in fake.violations[1]


async def test_fake_component_replies_match_discord_response_schemas(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = Seen()
    add_result_buttons(bot, png_bytes(), seen)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("imagine", {"prompt": "a boat"})
        await command.wait_for_final()
        assert command.original is not None
        details = await fake.press(command.original, "gen:details:42")
        details_callback = await details.wait_for_callback()
        reroll = await fake.press(command.original, "gen:reroll:42")
        reroll_callback = await reroll.wait_for_callback()
        opened = await fake.press(command.original, "gen:edit:42")
        await opened.wait_for_callback()
        submitted = await opened.submit_modal({"prompt": "a red boat"})
        await submitted.wait_for_callback()
    checks = [
        ("InteractionCallbackResponse", details_callback.response),
        ("InteractionCallbackResponse", reroll_callback.response),
        ("MessageResponse", details.original),
        ("MessageResponse", command.original),
    ]
    problems = [f"{name}: {pr}" for name, body in checks for pr in schema_problems(name, body)]
    assert problems == []
    fake.assert_clean()


# -- the rules, one by one, on payloads discord.py built ----------------------------------------


def classic_components() -> list[dict[str, Any]]:
    view = ui.View()
    for action in ACTIONS:
        emoji, style = ACTIONS[action]
        view.add_item(ui.Button(emoji=emoji, style=style, custom_id=f"gen:{action}:1", row=0))
    view.add_item(ui.Button(label="Prompt guide", url="https://example.com/guide", row=1))
    view.add_item(ui.Button(label="Pick", emoji="1️⃣", custom_id="pick", row=1))
    return view.to_components()


def v2_components() -> list[dict[str, Any]]:
    layout = ui.LayoutView()
    layout.add_item(
        ui.Container(
            ui.MediaGallery(discord.MediaGalleryItem("attachment://image.png")),
            ui.Section("**a paper boat**", accessory=ui.Thumbnail("attachment://thumb.webp")),
            ui.Separator(),
            ui.File("attachment://prompt.txt"),
            ui.ActionRow(ui.Button(emoji="🔁", custom_id="gen:reroll:1")),
        )
    )
    return layout.to_components()


V2_FILES = {"image.png", "thumb.webp", "prompt.txt"}


def rule_problems(problems: list[Problem], expected: str) -> list[Problem]:
    return [pr for pr in problems if expected in pr.describe()]


def _row(components: list[dict[str, Any]], row: int = 0) -> list[dict[str, Any]]:
    return components[row]["components"]


def _button(cid: str, **extra: Any) -> dict[str, Any]:
    return {"type": 2, "style": 2, "custom_id": cid, "label": cid, **extra}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: _row(c)[0].update(custom_id="x" * 101), "[0].components[0].custom_id: Must"),
        (lambda c: _row(c)[0].update(custom_id=""), "[0].components[0].custom_id: Must"),
        (lambda c: _row(c)[1].update(custom_id="gen:reroll:1"), "cannot be duplicated"),
        (
            lambda c: c.extend({"type": 1, "components": [_button(f"r{i}")]} for i in range(4)),
            "5 or",
        ),
        (
            lambda c: _row(c).extend([_button("5th"), _button("6th")]),
            "[0].components: Must be 5 or",
        ),
        (lambda c: _row(c, 1)[0].update(custom_id="guide"), "Link buttons cannot have a custom_id"),
        (lambda c: _row(c, 1)[0].pop("url"), "Link buttons need a url"),
        (lambda c: _row(c, 1)[0].update(url="ftp://example.com"), "Scheme must be one of"),
        (lambda c: _row(c)[0].update(url="https://example.com"), "cannot have a url"),
        (lambda c: _row(c)[0].update(style=6), "Premium buttons need a sku_id"),
        (
            lambda c: _row(c)[0].update(style=6, sku_id="1"),
            "Premium buttons cannot have a custom_id",
        ),
        (lambda c: _row(c)[0].update(style=7), "[0].components[0].style"),
        (lambda c: _row(c)[0].update(label="x" * 81), "[0].components[0].label: Must"),
        (lambda c: _row(c)[0].update(emoji={"name": ":repeat:"}), "Invalid emoji"),
        (lambda c: _row(c)[0].update(emoji={"name": "repeat", "id": None}), "Invalid emoji"),
        (lambda c: _row(c)[0].update(emoji={"name": "boat", "id": "12ab"}), "Invalid emoji"),
        (
            lambda c: _row(c).append(
                {"type": 3, "custom_id": "model", "options": [{"label": "a", "value": "a"}]}
            ),
            "alone in its action row",
        ),
        (lambda c: c.append({"type": 10, "content": "hi"}), "must be one of (1,)"),
        (
            lambda c: _row(c, 1).append({"type": 4, "custom_id": "t", "style": 1, "label": "T"}),
            "text inputs only exist in modals",
        ),
        (lambda c: [b.update(id=9) for b in _row(c)[:2]], "id 9 is already used"),
    ],
)
def test_classic_component_rules(mutate: Callable[[Any], Any], expected: str) -> None:
    components = classic_components()
    assert check_components(components, v2=False) == []
    mutate(components)
    problems = check_components(components, v2=False)
    found = rule_problems(problems, expected)
    assert found, [pr.describe() for pr in problems]
    assert all(pr.reject for pr in found)


def _container(c: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return c[0]["components"]


@pytest.mark.parametrize(
    ("mutate", "expected", "reject"),
    [
        (
            lambda c: _container(c).extend({"type": 14} for _ in range(32)),
            "41 components (nested included)",
            True,
        ),
        (
            lambda c: _container(c)[0].update(items=[_container(c)[0]["items"][0]] * 11),
            "between 1 and 10 items",
            True,
        ),
        (lambda c: _container(c)[0].update(items=[]), "between 1 and 10 items", True),
        (
            lambda c: c.extend(
                [{"type": 10, "content": "x" * 2000}, {"type": 10, "content": "y" * 1999}]
            ),
            "in total; a message allows 4000",
            True,
        ),
        (lambda c: c.append({"type": 10, "content": "x" * 4001}), "[1].content: Must", True),
        (
            lambda c: _container(c)[0]["items"][0]["media"].update(url="attachment://gone.png"),
            "attachment://gone.png names no attachment",
            True,
        ),
        (
            lambda c: _container(c)[3]["file"].update(url="https://example.com/prompt.txt"),
            "only takes attachment://",
            True,
        ),
        (
            lambda c: _container(c).append({"type": 17, "components": [{"type": 14}]}),
            "inside a container",
            True,
        ),
        (
            lambda c: _container(c)[1]["components"].extend(
                {"type": 10, "content": "z"} for _ in range(3)
            ),
            "between 1 and 3 text displays",
            True,
        ),
        (lambda c: _container(c)[1].pop("accessory"), "accessory: This field is required", True),
        (lambda c: c.append(_button("loose")), "[1].type: Value of field", True),
        (
            lambda c: _container(c)[1]["accessory"]["media"].update(url="attachment://prompt.txt"),
            "thumbnails only show images",
            False,
        ),
        (lambda c: c[0].update(accent_color=0x1000000), "accent_color", True),
    ],
)
def test_components_v2_rules(mutate: Callable[[Any], Any], expected: str, reject: bool) -> None:
    components = v2_components()
    assert check_components(components, v2=True, filenames=V2_FILES) == []
    mutate(components)
    problems = check_components(components, v2=True, filenames=V2_FILES)
    found = rule_problems(problems, expected)
    assert found, [pr.describe() for pr in problems]
    assert all(pr.reject is reject for pr in found)


def test_components_v2_message_fields_and_flag() -> None:
    components = [{"type": 10, "content": "hello"}]
    v2 = p.MESSAGE_FLAG_COMPONENTS_V2

    def described(problems: list[Problem]) -> list[tuple[str, bool]]:
        return [(pr.describe(), pr.reject) for pr in problems]

    assert check_message({"flags": v2, "components": components}) == []
    assert (
        check_message({"flags": v2, "components": components, "content": None, "embeds": []}) == []
    )
    [(text, reject)] = described(
        check_message({"flags": v2, "components": components, "content": "hi"})
    )
    assert text.startswith("content: content cannot be used with the IS_COMPONENTS_V2 flag")
    assert reject
    [(text, reject)] = described(
        check_message({"flags": v2, "components": components, "embeds": [{"title": "t"}]})
    )
    assert text.startswith("embeds:")
    assert reject

    v2_message = {"flags": v2, "content": "", "embeds": [], "components": components}
    # Editing a V2 message: legacy fields stay forbidden, and the flag cannot be taken away.
    [(text, reject)] = described(check_message({"content": "x"}, create=False, stored=v2_message))
    assert text.startswith("content:")
    assert reject
    [(text, reject)] = described(check_message({"flags": 4}, create=False, stored=v2_message))
    assert "cannot be removed" in text
    assert not reject
    # Turning a classic message into V2 needs its content and embeds reset in the same edit.
    classic = {"flags": 0, "content": "a boat", "embeds": [{"title": "t"}], "components": []}
    edit: dict[str, Any] = {"flags": v2, "components": components}
    assert sorted(t for t, _ in described(check_message(edit, create=False, stored=classic))) == [
        "content: the message still has content: an edit that sets IS_COMPONENTS_V2 must reset "
        "it (content: null)",
        "embeds: the message still has embeds: an edit that sets IS_COMPONENTS_V2 must reset "
        "it (embeds: [])",
    ]
    edit.update(content=None, embeds=[])
    assert check_message(edit, create=False, stored=classic) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.update(title="t" * 46), "data.title: Must be between 1 and 45"),
        (lambda m: m.update(custom_id="c" * 101), "data.custom_id: Must be between 1 and 100"),
        (
            lambda m: m.update(components=m["components"] * 3),
            "data.components: Must be between 1 and 5",
        ),
        (
            lambda m: m["components"][0]["component"].update(label="Prompt"),
            "cannot have its own label",
        ),
        (lambda m: m["components"][0].update(label="l" * 46), "data.components[0].label: Must"),
        (lambda m: m["components"][1]["components"][0].pop("label"), "components[0].label: This"),
        (lambda m: m["components"][0]["component"].update(style=3), "one of (1, 2)"),
        (lambda m: m["components"][0]["component"].update(min_length=4001), "min_length must be"),
        (lambda m: m["components"][0]["component"].update(max_length=0), "max_length must be"),
        (
            lambda m: m["components"][0]["component"].update(min_length=1001),
            "min_length is greater",
        ),
        (
            lambda m: m["components"][0]["component"].update(value="v" * 4001),
            "component.value: Must",
        ),
        (
            lambda m: m["components"][0]["component"].update(placeholder="p" * 101),
            "placeholder: Must",
        ),
        (
            lambda m: m["components"].append({"type": 1, "components": [_button("b")]}),
            "only holds text",
        ),
        (lambda m: m["components"].append(_button("b")), "must be one of (1, 10, 18)"),
        (
            lambda m: m["components"].append(
                {
                    "type": 18,
                    "label": "Model",
                    "component": {
                        "type": 3,
                        "custom_id": "model",
                        "disabled": True,
                        "options": [{"label": "a", "value": "a"}],
                    },
                }
            ),
            "Modals can not currently have disabled components",
        ),
        (
            lambda m: m["components"][1]["components"][0].update(custom_id="prompt"),
            "cannot be duplicated",
        ),
    ],
)
def test_modal_rules(mutate: Callable[[Any], Any], expected: str) -> None:
    modal = EditPrompt(1, "a paper boat", Seen()).to_dict()
    assert check_modal(modal) == []
    mutate(modal)
    problems = check_modal(modal)
    found = rule_problems(problems, expected)
    assert found, [pr.describe() for pr in problems]
    assert all(pr.reject for pr in found)


async def test_picking_string_select_options(fake: FakeDiscord) -> None:
    bot = make_bot()
    picked: list[list[str]] = []

    class Models(ui.View):
        @ui.select(custom_id="model", options=[discord.SelectOption(label=m) for m in MODELS])
        async def model(self, interaction: discord.Interaction, select: ui.Select[Any]) -> None:
            picked.append(list(select.values))
            await interaction.response.edit_message(content=f"model: {select.values[0]}")

    @app_commands.command(name="models", description="Pick a model")
    async def models(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pick one", view=Models())

    bot.tree.add_command(models)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("models")
        await command.wait_for_callback()
        assert command.original is not None
        with pytest.raises(InteractionRefused, match="not options"):
            fake.component_interaction(command.original, "model", values=["dall-e-9"])
        with pytest.raises(InteractionRefused, match="distinct values"):
            fake.component_interaction(command.original, "model", values=MODELS[:2])
        chosen = await fake.select(command.original, "model", ["gpt-image-2"])
        await chosen.wait_for_callback()
    assert chosen.payload["data"]["values"] == ["gpt-image-2"]
    assert chosen.payload["data"]["component_type"] == p.COMPONENT_STRING_SELECT
    assert picked == [["gpt-image-2"]]
    assert command.original["content"] == "model: gpt-image-2"
    [select] = command.original["components"][0]["components"]
    assert (select["min_values"], select["max_values"]) == (1, 1)
    fake.assert_clean()


async def test_channel_endpoints_fetch_and_edit_messages(fake: FakeDiscord) -> None:
    bot = make_bot()
    outcomes: list[str] = []

    class Lock(ui.View):
        @ui.button(label="Lock", custom_id="lock")
        async def lock(self, interaction: discord.Interaction, _: ui.Button[Any]) -> None:
            assert interaction.message is not None
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.response.defer()
            fetched = await interaction.channel.fetch_message(interaction.message.id)
            outcomes.append(fetched.content)
            await interaction.message.edit(content="locked", view=None)  # PATCH /channels/...
            other = interaction.channel.get_partial_message(int(theirs["id"]))
            try:
                await other.edit(content="mine now")
            except discord.Forbidden as exc:
                outcomes.append(f"{exc.status} {exc.code}")

    @app_commands.command(name="lockable", description="A message with a lock button")
    async def lockable(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("open", view=Lock())

    bot.tree.add_command(lockable)
    theirs = fake.user_message("a user's message")
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("lockable")
        await command.wait_for_callback()
        assert command.original is not None
        press = await fake.press(command.original, "lock")
        await fake.wait_for_request(lambda r: r.status == 403)
    assert press.response_type == 6
    assert outcomes == ["open", "403 50005"]
    assert (command.original["content"], command.original["components"]) == ("locked", [])
    assert theirs["content"] == "a user's message"
    [violation] = fake.violations
    assert "written by someone else" in violation


async def test_editing_a_components_v2_message(fake: FakeDiscord) -> None:
    """Rebuilding the layout from the message works; editing in `content` is refused."""
    bot = make_bot()
    errors: list[BaseException] = []

    async def retitle(interaction: discord.Interaction) -> None:
        assert interaction.message is not None
        layout = ui.LayoutView.from_message(interaction.message)
        for item in layout.walk_children():
            if isinstance(item, ui.TextDisplay):
                item.content = "**retitled**"
        await interaction.response.edit_message(view=layout)

    async def naive(interaction: discord.Interaction) -> None:
        try:
            await interaction.response.edit_message(content="retitled")
        except discord.HTTPException as exc:
            errors.append(exc)

    @app_commands.command(name="card", description="A components-V2 card")
    async def card(interaction: discord.Interaction) -> None:
        layout = ui.LayoutView()
        retitle_button: ui.Button[Any] = ui.Button(label="Retitle", custom_id="retitle")
        retitle_button.callback = retitle  # type: ignore[method-assign]
        naive_button: ui.Button[Any] = ui.Button(label="Naive", custom_id="naive")
        naive_button.callback = naive  # type: ignore[method-assign]
        layout.add_item(
            ui.Container(
                ui.MediaGallery(discord.MediaGalleryItem("attachment://image.png")),
                ui.TextDisplay("**a paper boat**"),
                ui.ActionRow(retitle_button, naive_button),
            )
        )
        await interaction.response.send_message(
            view=layout, file=discord.File(io.BytesIO(png_bytes()), filename="image.png")
        )

    bot.tree.add_command(card)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("card")
        await command.wait_for_callback()
        message = command.original
        assert message is not None
        # (Naive first: the rebuilt layout replaces the stored view and its callbacks.)
        refused = await (await fake.press(message, "naive")).wait_for_callback()
        await eventually(lambda: len(errors) == 1)
        await (await fake.press(message, "retitle")).wait_for_callback()
    gallery, text, _ = message["components"][0]["components"]
    assert text["content"] == "**retitled**"
    assert gallery["items"][0]["media"]["url"] == message["attachments"][0]["url"]
    assert message["flags"] == p.MESSAGE_FLAG_COMPONENTS_V2
    assert refused.status == 400
    [violation] = fake.violations
    assert "data.content: content cannot be used with the IS_COMPONENTS_V2 flag" in violation


# ---------------------------------------------------------------------------------------------
# Reference images: attachment options, the loopback CDN, message context menus
# ---------------------------------------------------------------------------------------------


class SeenAttachments:
    def __init__(self) -> None:
        self.attachments: list[discord.Attachment] = []
        self.bytes: list[bytes] = []
        self.errors: list[BaseException] = []
        self.targets: list[discord.Message] = []
        self.prompts: list[str] = []


def add_reference_imagine(bot: commands.AutoShardedBot, seen: SeenAttachments) -> None:
    """/imagine with attachment options image/image2/mask, read through discord.py."""

    @app_commands.command(name="imagine", description="Generate an image from a prompt")
    async def imagine(
        interaction: discord.Interaction,
        prompt: str,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
    ) -> None:
        await interaction.response.defer(thinking=True)
        for attachment in (image, image2, mask):
            if attachment is None:
                continue
            seen.attachments.append(attachment)
            try:
                seen.bytes.append(await attachment.read())
            except discord.HTTPException as exc:
                seen.errors.append(exc)
        await interaction.edit_original_response(
            content=f"drew {prompt}",
            attachments=[discord.File(io.BytesIO(png_bytes(5, 4)), filename="image.png")],
        )

    bot.tree.add_command(imagine)


async def cdn_get(url: str, *, limit: int | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET a CDN URL; with `limit`, stop reading (and drop the connection) past that many
    bytes, as a careful downloader does."""
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = b""
        async for chunk in resp.content.iter_chunked(64 * 1024):
            body += chunk
            if limit is not None and len(body) > limit:
                resp.close()
                break
        return resp.status, dict(resp.headers), body


async def test_attachment_options_are_resolved_like_discord_and_served(
    fake: FakeDiscord,
) -> None:
    bot = make_bot()
    seen = SeenAttachments()
    add_reference_imagine(bot, seen)
    cat, mask = png_bytes(8, 6), png_bytes(8, 6)
    async with running(bot, fake):
        await bot.tree.sync()
        [stored] = fake.global_commands
        assert [o["type"] for o in stored["options"]] == [3, 11, 11, 11]
        handle = await fake.invoke(
            "imagine",
            {
                "prompt": "a cat in a hat",
                "image": p.AttachmentInput("cat.png", cat, description="my cat"),
                "mask": p.AttachmentInput("mask.png", mask),
            },
        )
        await handle.wait_for_final()
    data = handle.payload["data"]
    assert [(o["name"], o["type"]) for o in data["options"]] == [
        ("prompt", 3),
        ("image", 11),
        ("mask", 11),
    ]
    resolved = data["resolved"]["attachments"]
    image_id, mask_id = data["options"][1]["value"], data["options"][2]["value"]
    assert set(resolved) == {image_id, mask_id}
    attachment = resolved[image_id]
    assert set(attachment) == {
        "id",
        "filename",
        "size",
        "url",
        "proxy_url",
        "content_type",
        "width",
        "height",
        "ephemeral",
        "description",
        "placeholder",
        "placeholder_version",
        "content_scan_version",
    }
    assert attachment["id"] == image_id
    assert (attachment["filename"], attachment["size"]) == ("cat.png", len(cat))
    assert (attachment["content_type"], attachment["width"], attachment["height"]) == (
        "image/png",
        8,
        6,
    )
    assert attachment["ephemeral"] is True  # files attached to options are ephemeral
    assert attachment["url"].startswith(f"{fake.base_url}/cdn/attachments/")
    assert attachment["proxy_url"].startswith(f"{fake.base_url}/media/attachments/")
    assert "?ex=" in attachment["url"]  # signed URLs, as Discord hands them out
    assert schema_problems("MessageAttachmentResponse", attachment) == []
    # discord.py parsed the resolved data and downloaded the bytes from the loopback CDN.
    assert seen.errors == []
    assert seen.bytes == [cat, mask]
    parsed = seen.attachments[0]
    assert (parsed.id, parsed.filename, parsed.size) == (int(image_id), "cat.png", len(cat))
    assert (parsed.width, parsed.height, parsed.content_type) == (8, 6, "image/png")
    assert (parsed.description, parsed.ephemeral, parsed.url) == (
        "my cat",
        True,
        attachment["url"],
    )
    assert fake.cdn_attachment(attachment) == ("cat.png", cat)
    [fetch] = fake.cdn_fetches_of(attachment)
    assert (fetch.host, fetch.status, fetch.complete, fetch.bytes_sent) == (
        "cdn",
        200,
        True,
        len(cat),
    )
    status, headers, body = await cdn_get(attachment["proxy_url"])
    assert (status, headers["Content-Type"], body) == (200, "image/png", cat)
    fake.assert_clean()


async def test_slow_cdn_delays_headers_and_streams_slowly(fake: FakeDiscord) -> None:
    data = bytes(range(256)) * 4  # 1 KiB
    late = p.AttachmentInput("late.png", png_bytes()).slow(delay=0.3)
    trickle = p.AttachmentInput("trickle.bin", data).slow(chunk_size=128, chunk_delay=0.05)
    payload = fake.command_interaction("imagine", {"image": late, "image2": trickle})
    late_a, trickle_a = payload["data"]["resolved"]["attachments"].values()
    loop = asyncio.get_running_loop()

    started = loop.time()
    status, _, body = await cdn_get(late_a["url"])
    assert loop.time() - started >= 0.3
    assert (status, body) == (200, png_bytes())

    async with aiohttp.ClientSession() as session, session.get(trickle_a["url"]) as resp:
        started = loop.time()
        first = await resp.content.readany()
        first_at = loop.time() - started
        rest = await resp.content.read()
        total = loop.time() - started
    assert first + rest == data
    assert len(first) < len(data)  # the body arrives in pieces ...
    assert total >= 0.3 > first_at  # ... 8 chunks, 50 ms apart
    await eventually(lambda: [f.complete for f in fake.cdn_fetches] == [True, True])

    # A client that gives up mid-stream is recorded as such.
    async with aiohttp.ClientSession() as session, session.get(trickle_a["url"]) as resp:
        await resp.content.readany()
        resp.close()
    await eventually(lambda: fake.cdn_fetches[-1].aborted)
    assert fake.cdn_fetches[-1].bytes_sent < len(data)


@pytest.mark.parametrize("content_length", [True, False])
async def test_oversized_attachment_is_a_real_large_body(
    fake: FakeDiscord, content_length: bool
) -> None:
    size = 12 * 1024 * 1024  # over the 10 MiB a bot would accept
    huge = p.AttachmentInput.oversized(size, "huge.png", content_length=content_length)
    payload = fake.command_interaction("imagine", {"image": huge})
    [attachment] = payload["data"]["resolved"]["attachments"].values()
    assert (attachment["size"], attachment["width"], attachment["height"]) == (size, 2, 2)

    status, headers, body = await cdn_get(attachment["url"])
    assert (status, len(body)) == (200, size)
    assert Image.open(io.BytesIO(body)).size == (2, 2)  # a real, decodable PNG
    if content_length:
        assert headers["Content-Length"] == str(size)
    else:
        assert "Content-Length" not in headers
        assert headers["Transfer-Encoding"] == "chunked"

    # A downloader that stops at its cap leaves the rest unsent.
    status, _, body = await cdn_get(attachment["url"], limit=1024 * 1024)
    assert len(body) < size
    await eventually(lambda: fake.cdn_fetches[-1].aborted)
    assert fake.cdn_fetches[-1].bytes_sent < size


async def test_renamed_text_file_claims_to_be_an_image(fake: FakeDiscord) -> None:
    fake_png = p.AttachmentInput.renamed_text("photo.png", "hello, not a picture\n")
    payload = fake.command_interaction("imagine", {"image": fake_png})
    [attachment] = payload["data"]["resolved"]["attachments"].values()
    assert attachment["content_type"] == "image/png"
    assert not {"width", "height", "placeholder"} & set(attachment)
    status, headers, body = await cdn_get(attachment["url"])
    assert (status, headers["Content-Type"], body) == (200, "image/png", b"hello, not a picture\n")
    with pytest.raises(Exception, match="cannot identify image file"):
        Image.open(io.BytesIO(body))


async def test_vanished_attachment_is_404_for_discord_py(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = SeenAttachments()
    add_reference_imagine(bot, seen)
    gone = p.AttachmentInput("gone.png", png_bytes()).vanished()
    async with running(bot, fake):
        await bot.tree.sync()
        handle = await fake.invoke("imagine", {"prompt": "x", "image": gone})
        await handle.wait_for_final()
        # An attachment can also vanish later (its message deleted, its URL expired).
        later = p.AttachmentInput("later.png", png_bytes())
        payload = fake.command_interaction("imagine", {"image": later})
        [attachment] = payload["data"]["resolved"]["attachments"].values()
        assert (await cdn_get(attachment["url"]))[0] == 200
        fake.vanish_attachment(attachment["url"])
        status, _, body = await cdn_get(attachment["url"])
    [error] = seen.errors
    assert isinstance(error, discord.NotFound)
    assert seen.bytes == []
    assert handle.payload["data"]["resolved"]["attachments"]  # it was uploaded
    assert (status, body) == (404, b"This content is no longer available.")
    assert [f.status for f in fake.cdn_fetches] == [404, 200, 404]
    fake.assert_clean()


class RemixPrompt(ui.Modal, title="Remix with imagine"):
    prompt: ui.TextInput[Any] = ui.TextInput(label="Prompt", custom_id="prompt", max_length=1000)

    def __init__(self, target: discord.Message, seen: SeenAttachments) -> None:
        super().__init__(custom_id=f"remix:{target.id}")
        self.target, self.seen = target, seen

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.seen.prompts.append(self.prompt.value)
        await interaction.response.defer(thinking=True)
        for attachment in self.target.attachments:
            self.seen.bytes.append(await attachment.read())
        await interaction.edit_original_response(content=f"remixing: {self.prompt.value}")


def add_remix_menu(bot: commands.AutoShardedBot, seen: SeenAttachments) -> None:
    @app_commands.context_menu(name="Remix with imagine")
    async def remix(interaction: discord.Interaction, message: discord.Message) -> None:
        seen.targets.append(message)
        if not message.attachments and not any(e.image for e in message.embeds):
            await interaction.response.send_message("That message has no images.", ephemeral=True)
            return
        await interaction.response.send_modal(RemixPrompt(message, seen))

    bot.tree.add_command(remix)


async def test_message_context_menu_on_a_members_message_opens_a_modal(
    fake: FakeDiscord,
) -> None:
    bot = make_bot()
    seen = SeenAttachments()
    add_reference_imagine(bot, seen)
    add_remix_menu(bot, seen)
    photo, sketch = png_bytes(6, 4), png_bytes(3, 3)
    async with running(bot, fake):
        await bot.tree.sync()
        assert check_commands(fake.command_puts[0].json) == []
        menu = fake.find_command("Remix with imagine", kind=p.COMMAND_MESSAGE)
        assert menu is not None
        assert (menu["type"], menu["description"], "options" in menu) == (3, "", False)

        target = fake.user_message(
            "look at these",
            user_id=555,
            attachments=[
                p.AttachmentInput("photo.png", photo),
                p.AttachmentInput("sketch.png", sketch),
            ],
            embeds=[{"title": "sketch", "image": {"url": "attachment://sketch.png"}}],
        )
        opened = await fake.invoke_message_command("Remix with imagine", target, user_id=77)
        callback = await opened.wait_for_callback()
        submitted = await opened.submit_modal({"prompt": "in watercolour"})
        final = await submitted.wait_for_final()

        plain = fake.user_message("no pictures here", user_id=555)
        refused = await fake.invoke_message_command("Remix with imagine", plain["id"])
        await refused.wait_for_callback()

    data = opened.payload["data"]
    assert set(data) == {"id", "name", "type", "target_id", "resolved"}
    assert (data["id"], data["name"], data["type"]) == (menu["id"], "Remix with imagine", 3)
    assert data["target_id"] == target["id"]
    resolved = data["resolved"]["messages"][target["id"]]
    assert "guild_id" not in resolved  # as Discord's example shows resolved messages
    assert resolved["attachments"] == target["attachments"]
    assert "message" not in opened.payload  # only component interactions carry one
    assert schema_problems("MessageResponse", resolved) == []
    # The embed image resolved to the attachment's CDN media.
    embed_image = resolved["embeds"][0]["image"]
    sketch_attachment = target["attachments"][1]
    assert (embed_image["url"], embed_image["proxy_url"]) == (
        sketch_attachment["url"],
        sketch_attachment["proxy_url"],
    )
    assert (embed_image["width"], embed_image["height"]) == (3, 3)
    assert "ephemeral" not in target["attachments"][0]  # message attachments are not
    # discord.py handed the callback a Message built from the resolved data.
    message = seen.targets[0]
    assert (message.id, message.author.id, message.content) == (
        int(target["id"]),
        555,
        "look at these",
    )
    assert [a.filename for a in message.attachments] == ["photo.png", "sketch.png"]
    assert message.embeds[0].image.url == sketch_attachment["url"]
    # Callback type 9 on the APPLICATION_COMMAND interaction, then the submit.
    assert callback.json["type"] == 9
    assert opened.modal is not None
    assert opened.modal["custom_id"] == f"remix:{target['id']}"
    assert submitted.payload["type"] == p.INTERACTION_MODAL_SUBMIT
    assert "message" not in submitted.payload
    assert seen.prompts == ["in watercolour"]
    assert seen.bytes == [photo, sketch]
    assert final.json["content"] == "remixing: in watercolour"
    metadata = submitted.original["interaction_metadata"]  # type: ignore[index]
    assert metadata["triggering_interaction_metadata"]["target_message_id"] == target["id"]
    # A reply straight to the context-menu interaction is a CONTEXT_MENU_COMMAND message.
    reply = refused.original
    assert reply is not None
    assert (reply["type"], reply["flags"], reply["content"]) == (
        23,
        p.MESSAGE_FLAG_EPHEMERAL,
        "That message has no images.",
    )
    assert reply["interaction_metadata"]["target_message_id"] == plain["id"]
    assert schema_problems("MessageResponse", reply) == []
    fake.assert_clean()


async def test_message_context_menu_on_a_bot_result(fake: FakeDiscord) -> None:
    bot = make_bot()
    seen = SeenAttachments()
    add_reference_imagine(bot, seen)
    add_remix_menu(bot, seen)
    async with running(bot, fake):
        await bot.tree.sync()
        command = await fake.invoke("imagine", {"prompt": "a paper boat"}, user_id=77)
        await command.wait_for_final()
        result = command.original
        assert result is not None
        opened = await fake.invoke_message_command("Remix with imagine", result, user_id=78)
        await opened.wait_for_callback()
        submitted = await opened.submit_modal({"prompt": "at night"}, user_id=78)
        await submitted.wait_for_final()

        # What a member could not do: open the menu on someone else's ephemeral message.
        secret = await fake.invoke_message_command("Remix with imagine", fake.user_message())
        await secret.wait_for_callback()
        assert secret.original is not None
        with pytest.raises(InteractionRefused, match="only visible to user"):
            fake.message_command_interaction("Remix with imagine", secret.original, user_id=5)
        with pytest.raises(InteractionRefused, match="VIEW_CHANNEL"):
            fake.message_command_interaction(
                "Remix with imagine", result, permissions=p.MEMBER_PERMISSIONS & ~p.VIEW_CHANNEL
            )
    resolved = opened.payload["data"]["resolved"]["messages"][result["id"]]
    assert resolved["author"]["id"] == str(fake.bot_user_id)
    assert resolved["interaction_metadata"]["user"]["id"] == "77"
    [target] = seen.targets[:1]
    assert target.author.id == fake.bot_user_id
    assert target.interaction_metadata is not None
    assert seen.bytes == [png_bytes(5, 4)]  # the result's image, from the CDN
    assert seen.prompts == ["at night"]
    assert opened.payload["member"]["user"]["id"] == "78"
    fake.assert_clean()


MESSAGE_COMMAND: dict[str, Any] = {"name": "Remix with imagine", "type": 3}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c.update(name="R" * 33), "[0].name"),
        (lambda c: c.update(name=""), "[0].name"),
        (lambda c: c.update(description="Remixes"), "[0].description"),
        (
            lambda c: c.update(options=[{"type": 3, "name": "p", "description": "d"}]),
            "[0].options",
        ),
        (lambda c: c.update(name_localizations={"fr": "R" * 33}), "[0].name_localizations.fr"),
        (
            lambda c: c.update(description_localizations={"fr": "Remixer"}),
            "[0].description_localizations",
        ),
    ],
)
def test_message_command_rules(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    command = dict(MESSAGE_COMMAND)
    # Mixed case and spaces are fine for USER/MESSAGE commands, even with the ascii policy
    # that slash commands follow, and an empty description is what discord.py sends.
    assert check_commands([command]) == []
    assert check_commands([dict(command, description="", name="Remix! (v2)")]) == []
    assert check_commands([dict(command, name="imagine"), {"name": "imagine", **_SLASH}]) == []
    mutate(command)
    problems = [pr.describe() for pr in check_commands([command])]
    assert any(expected in text for text in problems), problems


_SLASH: dict[str, Any] = {"type": 1, "description": "Generate"}
