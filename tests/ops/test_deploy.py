"""deploy/ as shipped: the compose file validates, nginx accepts its config and carries
pages and Socket.IO over TLS to a real gateway, and the systemd units verify."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from gateway.web import SERVICES, create_app
from gateway.web.access_log import RedactingAccessLogger
from tests.factories import make_settings, seed
from tests.fixtures.servers import free_port
from tests.ops.support import REPO, WebBrowser

pytestmark = pytest.mark.integration

DEPLOY = REPO / "deploy"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not on PATH: install it (Debian: apt-get install "
            f"--no-install-recommends {package}); deploy/ tests are never skipped",
            pytrace=False,
        )
    return path


# --- the compose file --------------------------------------------------------------------


def test_the_compose_file_validates() -> None:
    compose = _tool("docker-compose", "docker-compose")
    checked = subprocess.run(
        [compose, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    services = subprocess.run(
        [compose, "-f", str(DEPLOY / "compose.yaml"), "config", "--services"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(services) == ["coturn", "gateway", "nginx", "redis"]


def test_the_validator_would_catch_a_broken_compose_file(tmp_path: Path) -> None:
    compose = _tool("docker-compose", "docker-compose")
    broken = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    broken["services"]["gateway"]["stop_grace_periodx"] = "40s"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    checked = subprocess.run(
        [compose, "-f", str(path), "config", "--quiet"], capture_output=True, text=True, check=False
    )
    assert checked.returncode != 0
    assert "stop_grace_periodx" in checked.stderr


def test_the_compose_file_keeps_state_and_secrets_where_they_belong() -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = spec["services"]
    # Only nginx faces the network; the gateway and Redis are on the compose network.
    assert "ports" not in services["gateway"]
    assert "ports" not in services["redis"]
    assert services["nginx"]["ports"] == ["80:80", "443:443"]
    assert services["coturn"]["network_mode"] == "host"
    # The gateway's settings (secrets) come from a secret file, never the environment.
    environment = services["gateway"]["environment"]
    assert environment["QUIETROOM_CONFIG"] == "/run/secrets/quietroom.toml"
    assert not any("KEYS" in name or "SECRET" in name for name in environment)
    assert services["gateway"]["stop_grace_period"] == "40s"
    # Redis persists: AOF and RDB, on a volume, and never evicts.
    assert "redis-data:/data" in services["redis"]["volumes"]
    redis_conf = (DEPLOY / "redis" / "redis.conf").read_text().splitlines()
    for directive in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"):
        assert directive in redis_conf


def test_the_dockerfile_builds_a_non_root_image_with_a_healthcheck() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim AS build"
    assert "FROM python:3.11-slim" in lines
    assert any("-c constraints.txt" in line for line in lines)
    assert "USER quietroom:quietroom" in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert 'CMD ["serve"]' in lines
    # The compiled forwarding path is built in the build stage, and the image needs it.
    build_stage = lines[: lines.index("FROM python:3.11-slim")]
    assert any("gcc" in line for line in build_stage)
    assert any("from gateway.media import _native" in line for line in build_stage)


# --- systemd --------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["quietroom.service", "quietroom-turn.service"])
def test_the_systemd_units_verify(unit: str, tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    text = (DEPLOY / "systemd" / unit).read_text()
    # The unit as installed, but pointing at programs that exist on this machine.
    text = text.replace("/opt/quietroom/venv/bin/quietroom", str(REPO / ".venv/bin/quietroom"))
    text = text.replace("/usr/bin/turnserver", shutil.which("turnserver") or "/usr/bin/turnserver")
    path = tmp_path / unit
    path.write_text(text)
    checked = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "Unknown key" not in checked.stderr
    assert "Unknown lvalue" not in checked.stderr


def test_the_gateway_unit_is_hardened() -> None:
    text = (DEPLOY / "systemd" / "quietroom.service").read_text().splitlines()
    for option in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "User=quietroom",
        "KillSignal=SIGTERM",
    ):
        assert option in text


# --- nginx ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this self-signed certificate only."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    openssl = _tool("openssl", "openssl")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return Certificate(cert=cert, key=key)


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the nginx config exactly once"
    return text.replace(old, new)


def render_nginx(
    directory: Path, certificate: Certificate, *, https_port: int, http_port: int, upstream: str
) -> Path:
    """deploy/nginx/quietroom.conf with only what must differ here changed (ports,
    upstream, file paths), inside a main config of its own; returns the main config."""
    site = (DEPLOY / "nginx" / "quietroom.conf").read_text()
    for old, new in (
        ("    server gateway:8080;", f"    server {upstream};"),
        ("    listen 443 ssl http2;", f"    listen 127.0.0.1:{https_port} ssl http2;"),
        ("    listen [::]:443 ssl http2;\n", ""),
        ("    listen 80;", f"    listen 127.0.0.1:{http_port};"),
        ("    listen [::]:80;\n", ""),
        ("/etc/quietroom/tls/fullchain.pem", str(certificate.cert)),
        ("/etc/quietroom/tls/privkey.pem", str(certificate.key)),
        ("/var/log/nginx/quietroom.access.log", str(directory / "access.log")),
        ("/var/log/nginx/quietroom.error.log crit", f"{directory / 'error.log'} info"),
    ):
        site = _replace_once(site, old, new)
    (directory / "quietroom.conf").write_text(site)
    temp = directory / "temp"
    temp.mkdir()
    main = directory / "nginx.conf"
    main.write_text(
        f"""
daemon off;
master_process off;
pid {directory / "nginx.pid"};
error_log {directory / "main-error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {directory / "default-access.log"};
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    include {directory / "quietroom.conf"};
}}
"""
    )
    return main


def _nginx_command(main: Path) -> list[str]:
    nginx = _tool("nginx", "nginx")
    return [nginx, "-p", str(main.parent), "-c", str(main), "-e", str(main.parent / "start.log")]


def test_nginx_accepts_the_config(tmp_path: Path, certificate: Certificate) -> None:
    main = render_nginx(
        tmp_path, certificate, https_port=free_port(), http_port=free_port(), upstream="127.0.0.1:1"
    )
    checked = subprocess.run(
        [*_nginx_command(main), "-t"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


@contextmanager
def running_nginx(main: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground (never the system service), until the block ends."""
    with (main.parent / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            _nginx_command(main), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (main.parent / "main-error.log").read_text(errors="replace")
                    raise AssertionError(f"nginx did not start:\n{log}") from None
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@asynccontextmanager
async def gateway_behind(public_url: str, port: int) -> AsyncIterator[web.Application]:
    """A real gateway on 127.0.0.1:``port`` whose public origin is nginx's."""
    app = create_app(make_settings(public_url=public_url, port=port))
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield app
    finally:
        await runner.cleanup()


async def test_nginx_serves_pages_over_https_and_socket_io_over_wss(
    tmp_path: Path, certificate: Certificate
) -> None:
    https_port, http_port, gateway_port = free_port(), free_port(), free_port()
    public_url = f"https://127.0.0.1:{https_port}"
    main = render_nginx(
        tmp_path,
        certificate,
        https_port=https_port,
        http_port=http_port,
        upstream=f"127.0.0.1:{gateway_port}",
    )
    async with gateway_behind(public_url, gateway_port) as app:
        seeded = await seed(app[SERVICES])
        token_path = seeded.client_path
        with running_nginx(main, https_port):
            browser = WebBrowser(
                public_url, cookie_name="__Host-qr_session", ssl_context=certificate.context()
            )
            try:
                # The link over HTTPS: a Secure, host-only cookie, then the page.
                status, headers = await browser.open_link(token_path)
                assert status == 303
                assert headers["Location"] == "/join"
                assert browser.cookie is not None
                status, page, headers = await browser.get("/join")
                assert status == 200
                assert "<html" in page.lower()
                assert headers["Strict-Transport-Security"].startswith("max-age=")
                assert headers["Referrer-Policy"] == "no-referrer"
                # Socket.IO through nginx: connect with the cookie, and a round trip.
                sock = await browser.socket("/client", transport="websocket")
                status_ack = await sock.call("status")
                assert status_ack["ok"] is True
                assert status_ack["state"] == "knocking"
                # Metrics never leave the machine through the proxy.
                assert (await browser.get("/metrics"))[0] == 404
                # Plain HTTP is sent to HTTPS.
                plain = WebBrowser(f"http://127.0.0.1:{http_port}")
                status, _, headers = await plain.get("/join")
                assert status == 301
                assert headers["Location"].startswith("https://")
            finally:
                await browser.close()
    access_log = (tmp_path / "access.log").read_text()
    assert "GET /j/- 200" in access_log
    assert "POST /j/- 303" in access_log
    assert "/socket.io/" in access_log
    token = token_path.rsplit("/", 1)[1]
    assert token not in access_log
    assert "?" not in access_log  # no query strings: Socket.IO session ids are in them
    assert "127.0.0.1" not in access_log  # no client addresses
