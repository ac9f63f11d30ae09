"""The client's files: served by the gateway itself with the right caching and headers;
every page loads scripts and styles from its own origin only, nothing inline; the
vendored Socket.IO client is exactly the pinned, checked file."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from gateway.web.static import CLIENT_ROOT, client_assets
from tests.gateway_harness import Browser, RunningGateway

pytestmark = pytest.mark.timeout(20)

VENDOR = CLIENT_ROOT / "vendor"


class _Resources(HTMLParser):
    """What a page loads, and anything inline that the CSP would block."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.inline.append(f"<{tag} {name}={value!r}>")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            if values.get("src"):
                self.loads.append(str(values["src"]))
            else:
                self.inline.append("<script> without src")
            self._in_script = True
        if tag == "link" and values.get("href"):
            self.loads.append(str(values["href"]))
        if tag in ("img", "iframe", "video", "audio", "source") and values.get("src"):
            self.loads.append(str(values["src"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline script text")


async def _pages(gateway: RunningGateway) -> dict[str, str]:
    """Every kind of page a browser can be shown, by name."""
    seeded = await gateway.seed()
    pages: dict[str, str] = {}
    _, pages["link"] = await gateway.browser().get(seeded.client_path)
    client = gateway.browser()
    assert await client.open_link(seeded.client_path) == 303
    _, pages["join"] = await client.get("/join")
    _, pages["no session"] = await gateway.browser().get("/join")
    _, pages["link refused"] = await gateway.browser().get(seeded.client_path)
    _, pages["not found"] = await gateway.browser().get("/nothing-here")
    host = gateway.browser()
    assert await host.open_link(seeded.host_path) == 303
    _, pages["host enrol offer"] = await host.get("/host")
    _, pages["host enrol"] = await host.post_form("/host/enrol", {"csrf": host.csrf()})
    _, pages["host sign-in error"] = await host.post_form(
        "/host/sign-in", {"csrf": host.csrf(), "code": "x"}
    )
    _, pages["host sign-in"] = await host.get("/host")
    signed_in = await gateway.signed_in_host(await gateway.seed())
    _, pages["host console"] = await signed_in.get("/host")
    return pages


async def test_every_page_loads_only_its_own_files_and_nothing_inline(
    gateway: RunningGateway,
) -> None:
    version = client_assets().version
    pages = await _pages(gateway)
    async with aiohttp.ClientSession() as http:
        for name, page in pages.items():
            parsed = _Resources()
            parsed.feed(page)
            assert parsed.inline == [], name
            assert f"/static/{version}/quietroom.css" in parsed.loads, name
            for url in parsed.loads:
                # Same origin: a path of ours, never a scheme or another host.
                assert url.startswith(f"/static/{version}/"), (name, url)
                async with http.get(gateway.url + url) as resp:
                    assert resp.status == 200, (name, url)
    assert f"/static/{version}/join.js" in _loads_of(pages["join"])
    assert f"/static/{version}/open-link.js" in _loads_of(pages["link"])
    assert f"/static/{version}/host.js" in _loads_of(pages["host console"])


def _loads_of(page: str) -> list[str]:
    parsed = _Resources()
    parsed.feed(page)
    return parsed.loads


def test_the_client_code_imports_only_its_own_files() -> None:
    files = client_assets().files
    for relative, path in files.items():
        text = path.read_text("utf-8")
        if relative.endswith(".css"):
            assert "@import" not in text, relative
            assert "url(" not in text, relative
        if not relative.endswith(".js") or relative.startswith("vendor/"):
            continue
        for specifier in re.findall(r"""^\s*import\b[^'"]*['"]([^'"]+)['"]""", text, re.M):
            assert specifier.startswith(("./", "../")), (relative, specifier)
            target = (path.parent / specifier).resolve().relative_to(CLIENT_ROOT).as_posix()
            assert target in files, (relative, specifier)
        # No other origin: no absolute URL outside comments and examples.
        code = re.sub(r"/\*.*?\*/|^\s*//.*$", "", text, flags=re.S | re.M)
        assert not re.search(r"""['"`](https?:)?//""", code), relative


def _readme_pin() -> tuple[str, str]:
    readme = (VENDOR / "README.md").read_text("utf-8")
    row = re.search(
        r"^\| `socket\.io\.esm\.min\.js` \|[^|]*\| ([0-9.]+) \| `([0-9a-f]{64})` \|$", readme, re.M
    )
    assert row is not None, "the vendor README names the file, its version and sha256"
    return row.group(1), row.group(2)


def test_the_vendored_socketio_client_is_the_pinned_file() -> None:
    version, sha256 = _readme_pin()
    vendored = VENDOR / "socket.io.esm.min.js"
    assert hashlib.sha256(vendored.read_bytes()).hexdigest() == sha256
    header = vendored.read_text("utf-8")[:200]
    assert f"Socket.IO v{version}" in header
    # socket.io-client 4.x speaks Engine.IO 4 / Socket.IO 5, as python-socketio 5 does.
    assert version.split(".")[0] == "4"
    licence = (VENDOR / "LICENSE.socket.io-client").read_text("utf-8")
    assert "MIT License" in licence
    assert "Guillermo Rauch" in licence


async def test_versioned_files_are_cached_for_a_year_the_rest_revalidated(
    gateway: RunningGateway,
) -> None:
    version = client_assets().version
    old = "0" * len(version)
    async with aiohttp.ClientSession() as http:
        for path, cache_control, kind in (
            (f"/static/{version}/join.js", "public, max-age=31536000, immutable", "javascript"),
            (f"/static/{version}/quietroom.css", "public, max-age=31536000, immutable", "css"),
            (f"/static/{old}/join.js", "no-cache", "javascript"),
            ("/static/embed/quietroom-embed.js", "no-cache", "javascript"),
        ):
            async with http.get(gateway.url + path) as resp:
                assert resp.status == 200, path
                assert resp.headers["Cache-Control"] == cache_control, path
                assert kind in resp.headers["Content-Type"], path
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert resp.headers["Referrer-Policy"] == "no-referrer"
        for path in (
            "/static/vendor/README.md",
            "/static/vendor/LICENSE.socket.io-client",
            f"/static/{version}/../pyproject.toml",
            "/static/%2e%2e/gateway/settings.py",
            f"/static/{version}/nothing.js",
        ):
            async with http.get(gateway.url + path) as resp:
                assert resp.status == 404, path


async def test_a_form_posted_by_a_browser_under_no_referrer_is_accepted(
    gateway: RunningGateway,
) -> None:
    """Browsers send "Origin: null" on a form post from a no-referrer page; the browser's
    own Sec-Fetch-Site decides; from another site it is refused."""
    seeded = await gateway.seed()
    host: Browser = gateway.browser()
    assert await host.open_link(seeded.host_path) == 303
    for site in ("cross-site", "same-site", "none"):
        status, _ = await host.post_form(
            "/host/enrol",
            {"csrf": host.csrf()},
            origin="null",
            headers={"Sec-Fetch-Site": site},
        )
        assert status == 403, site
    status, _ = await host.post_form("/host/enrol", {"csrf": host.csrf()}, origin="null")
    assert status == 403  # no Sec-Fetch-Site: a null Origin proves nothing
    status, _ = await host.post_form(
        "/host/enrol",
        {"csrf": host.csrf()},
        origin="null",
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert status == 200


def test_the_client_root_is_in_the_source_tree() -> None:
    assert Path(CLIENT_ROOT, "join.js").is_file()
