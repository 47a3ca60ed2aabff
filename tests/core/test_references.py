"""bot.core.references: fetching reference images over real HTTP from a loopback server."""

from __future__ import annotations

import asyncio
import io
import socket
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot.core.images import GIF, JPEG, PNG, WEBP
from bot.core.references import (
    DISCORD_CDN_HOSTS,
    AttachmentInfo,
    ReferenceImage,
    ReferenceRefused,
    fetch_reference,
    pick_references,
    read_reference,
)

CAP = 64 * 1024
QUICK = 5.0


def image_bytes(kind: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA" if kind == "PNG" else "RGB", size, (200, 40, 40)).save(buffer, kind)
    return buffer.getvalue()


@dataclass
class Server:
    base: str
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    hits: list[str] = []
    cat = image_bytes("PNG")

    async def count(request: web.Request) -> None:
        hits.append(request.path)

    async def png(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(body=cat, content_type="image/png")

    async def jpeg(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(body=image_bytes("JPEG", (30, 20)), content_type="image/jpeg")

    async def webp(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(body=image_bytes("WEBP", (17, 9)), content_type="image/webp")

    async def gif(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(body=image_bytes("GIF"), content_type="image/gif")

    async def notes(request: web.Request) -> web.Response:
        # Named .png and served as image/png, but the bytes are text.
        await count(request)
        return web.Response(body=b"shopping: eggs, milk\n" * 20, content_type="image/png")

    async def damaged(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, content_type="image/png")

    async def slow(request: web.Request) -> web.StreamResponse:
        await count(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(cat[:100])
        await asyncio.sleep(30)
        return response

    async def declared_big(request: web.Request) -> web.StreamResponse:
        # Declares more than the cap, then stalls: only the header can refuse it quickly.
        await count(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = CAP * 10
        await response.prepare(request)
        await response.write(cat[:100])
        await asyncio.sleep(30)
        return response

    async def chunked_big(request: web.Request) -> web.StreamResponse:
        # No Content-Length, and an endless body: only counting while streaming can stop it.
        await count(request)
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(cat)
        while True:
            await response.write(b"\x00" * 8192)
            await asyncio.sleep(0)

    async def gone(request: web.Request) -> web.Response:
        await count(request)
        return web.Response(status=404, text="404: Not Found")

    async def redirect(request: web.Request) -> web.Response:
        await count(request)
        raise web.HTTPFound("/cat.png")

    async def redirect_loop(request: web.Request) -> web.Response:
        await count(request)
        raise web.HTTPFound("/loop")

    async def redirect_ftp(request: web.Request) -> web.Response:
        await count(request)
        raise web.HTTPFound("ftp://example.com/cat.png")

    app = web.Application()
    app.router.add_get("/cat.png", png)
    app.router.add_get("/photo.jpg", jpeg)
    app.router.add_get("/pic.webp", webp)
    app.router.add_get("/anim.gif", gif)
    app.router.add_get("/notes.png", notes)
    app.router.add_get("/damaged.png", damaged)
    app.router.add_get("/slow.png", slow)
    app.router.add_get("/declared.png", declared_big)
    app.router.add_get("/chunked.png", chunked_big)
    app.router.add_get("/gone.png", gone)
    app.router.add_get("/moved.png", redirect)
    app.router.add_get("/loop", redirect_loop)
    app.router.add_get("/to-ftp", redirect_ftp)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(base=f"http://127.0.0.1:{port}", hits=hits)
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def fetch(
    session: aiohttp.ClientSession,
    url: str,
    name: str,
    *,
    max_bytes: int = CAP,
    timeout_s: float = QUICK,
    allowed_hosts: frozenset[str] | None = None,
) -> ReferenceImage:
    return await fetch_reference(
        session,
        url,
        name,
        max_bytes=max_bytes,
        timeout_s=timeout_s,
        allowed_hosts=allowed_hosts,
    )


@pytest.mark.parametrize(
    ("path", "image_format", "size"),
    [
        ("/cat.png", PNG, (64, 48)),
        ("/photo.jpg", JPEG, (30, 20)),
        ("/pic.webp", WEBP, (17, 9)),
        ("/anim.gif", GIF, (64, 48)),
    ],
)
async def test_an_image_is_fetched_sniffed_and_measured(
    server: Server,
    session: aiohttp.ClientSession,
    path: str,
    image_format: object,
    size: tuple[int, int],
) -> None:
    """The bytes, the format the bytes say, and the dimensions from the header."""
    reference = await fetch(session, server.base + path, path.lstrip("/"))
    assert reference.name == path.lstrip("/")
    assert reference.format == image_format
    assert (reference.width, reference.height) == size
    assert len(reference.data) > 0


async def test_a_redirect_is_followed(server: Server, session: aiohttp.ClientSession) -> None:
    """Discord's CDN may redirect; the image at the end is fetched."""
    reference = await fetch(session, server.base + "/moved.png", "moved.png")
    assert reference.format == PNG
    assert server.hits == ["/moved.png", "/cat.png"]


async def refusal(coro: Awaitable[object]) -> ReferenceRefused:
    with pytest.raises(ReferenceRefused) as caught:
        await coro
    return caught.value


async def test_a_non_image_renamed_png_is_refused(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """The name and the content type say PNG; the bytes decide."""
    refused = await refusal(fetch(session, server.base + "/notes.png", "notes.png"))
    assert str(refused) == "`notes.png` is not an image"
    assert refused.name == "notes.png"


async def test_a_damaged_image_is_refused(server: Server, session: aiohttp.ClientSession) -> None:
    """PNG's magic bytes and nothing readable after them."""
    refused = await refusal(fetch(session, server.base + "/damaged.png", "damaged.png"))
    assert str(refused).startswith("`damaged.png` is damaged")


async def test_a_vanished_attachment_is_refused(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A 404 (the message was deleted) says so in plain words."""
    refused = await refusal(fetch(session, server.base + "/gone.png", "x.png"))
    assert str(refused) == "`x.png` could not be downloaded (it may have been deleted)"


async def test_a_slow_download_is_cut_off_at_the_time_limit(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """The limit covers the whole download, not each read."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    refused = await refusal(fetch(session, server.base + "/slow.png", "slow.png", timeout_s=0.3))
    assert loop.time() - started < 3
    assert "took too long" in str(refused)
    assert str(refused).startswith("`slow.png` ")


async def test_a_declared_oversized_file_is_refused_from_its_header(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Content-Length over the cap: refused at once, although the body stalls."""
    refused = await refusal(
        fetch(session, server.base + "/declared.png", "cat.png", max_bytes=CAP, timeout_s=10)
    )
    assert str(refused) == f"`cat.png` is larger than {CAP / 1_000_000:g} MB"


async def test_an_undeclared_oversized_file_is_stopped_while_streaming(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """No Content-Length and an endless body: the cap stops it long before the time limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    refused = await refusal(
        fetch(session, server.base + "/chunked.png", "cat.png", max_bytes=CAP, timeout_s=10)
    )
    assert loop.time() - started < 5
    assert "is larger than" in str(refused)


async def test_the_cap_in_megabytes_is_worded_plainly(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """A body just over the cap (declared and small) is refused with the cap in MB."""
    refused = await refusal(fetch(session, server.base + "/cat.png", "cat.png", max_bytes=100))
    assert str(refused) == "`cat.png` is larger than 0.0001 MB"


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/cat.png", "file:///etc/passwd", "attachment://cat.png", "cat.png"]
)
async def test_only_http_links_are_fetched(session: aiohttp.ClientSession, url: str) -> None:
    """Anything but http(s) is refused before any request."""
    refused = await refusal(fetch(session, url, "cat.png"))
    assert "http or https only" in str(refused)


async def test_a_redirect_away_from_http_is_refused(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """Each hop is checked like the first."""
    refused = await refusal(fetch(session, server.base + "/to-ftp", "cat.png"))
    assert "http or https only" in str(refused)


async def test_a_redirect_loop_ends(server: Server, session: aiohttp.ClientSession) -> None:
    """A few hops, then a refusal, well within the time limit."""
    refused = await refusal(fetch(session, server.base + "/loop", "cat.png"))
    assert "too many redirects" in str(refused)
    assert len(server.hits) == 4


async def test_hosts_outside_the_allowed_ones_are_not_contacted(
    server: Server, session: aiohttp.ClientSession
) -> None:
    """With Discord's CDN hosts as the allowed ones, a loopback URL is refused unrequested."""
    refused = await refusal(
        fetch(session, server.base + "/cat.png", "cat.png", allowed_hosts=DISCORD_CDN_HOSTS)
    )
    assert "is not on Discord's CDN" in str(refused)
    assert server.hits == []


async def test_a_closed_port_is_a_failed_download(session: aiohttp.ClientSession) -> None:
    """Connection refused reads like any other failed download."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = await refusal(fetch(session, f"http://127.0.0.1:{port}/cat.png", "x.png"))
    assert "could not be downloaded" in str(refused)


def test_read_reference_measures_without_the_network() -> None:
    """The same checks for bytes the glue already holds."""
    reference = read_reference("a.png", image_bytes("PNG", (5, 7)))
    assert (reference.format, reference.width, reference.height) == (PNG, 5, 7)
    with pytest.raises(ReferenceRefused, match="is not an image"):
        read_reference("a.png", b"")


def test_refusals_quote_the_name_safely() -> None:
    """A name with backticks or a huge length cannot break the message's formatting."""
    refused = ReferenceRefused("a`b" + "c" * 500 + ".png", "is not an image")
    assert str(refused).count("`") == 2
    assert len(str(refused)) < 120


ITEMS = [
    AttachmentInfo("https://cdn.discordapp.com/a/notes.txt", "notes.txt", "text/plain", 10),
    AttachmentInfo("https://cdn.discordapp.com/a/1.png", "1.png", "image/png", 100),
    AttachmentInfo("https://cdn.discordapp.com/a/clip.mp4", "clip.mp4", "video/mp4", 100),
    AttachmentInfo("https://cdn.discordapp.com/a/2.jpg", "2.jpg", None, None),
    AttachmentInfo("https://cdn.discordapp.com/a/3", "3", "image/webp; charset=binary", 5),
    AttachmentInfo("https://cdn.discordapp.com/a/4.webp", "4.webp", "image/webp", 5),
]


def test_pick_references_takes_the_first_images_within_the_limit() -> None:
    """Images in message order; other files skipped; no more than the model's limit."""
    assert [item.filename for item in pick_references(ITEMS, 3)] == ["1.png", "2.jpg", "3"]
    assert [item.filename for item in pick_references(ITEMS, 1)] == ["1.png"]
    assert pick_references(ITEMS, 0) == []
    assert pick_references(ITEMS[:1], 3) == []


def test_an_embed_image_is_named_after_its_url() -> None:
    """Embeds have only a URL; the name shown in refusals is its last path segment."""
    info = AttachmentInfo.from_url("https://media.discordapp.net/external/x/cat.png?width=10")
    assert info.filename == "cat.png"
    assert pick_references([info], 3) == [info]
