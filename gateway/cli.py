"""The ``quietroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway import __version__
from gateway.domain.links import LinkPurpose
from gateway.domain.model import RoomPolicy
from gateway.errors import AuditChainBroken, ConfigError, StoreUnavailable
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.web import SERVICES, create_app, open_store
from gateway.web.access_log import RedactingAccessLogger

__all__ = ["main"]

log = logging.getLogger("gateway")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if not getattr(args, "verbose", False) else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"quietroom: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quietroom", description="Quietroom video gateway")
    parser.add_argument("--version", action="version", version=f"quietroom {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run on embedded defaults with a demo host, room and appointment"
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on")
    demo.add_argument("--port", type=_port, default=8080, help="port (0 picks a free one)")
    demo.set_defaults(run=_demo)

    serve = commands.add_parser("serve", help="run from settings (QUIETROOM_* variables)")
    serve.set_defaults(run=_serve)

    keys = commands.add_parser("keys", help="key management")
    keys_commands = keys.add_subparsers(required=True, metavar="ACTION")
    keys_new = keys_commands.add_parser("new", help="print a fresh secret")
    keys_new.add_argument(
        "--kind",
        choices=("signing", "data"),
        default="signing",
        help="signing: for QUIETROOM_SECRET_KEYS; data: for QUIETROOM_DATA_KEYS",
    )
    keys_new.set_defaults(run=_keys_new)

    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(required=True, metavar="ACTION")
    verify = audit_commands.add_parser("verify", help="check the audit log's hash chain")
    verify.set_defaults(run=_audit_verify)
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0 to 65535)")
    return int(value)


def _keys_new(args: argparse.Namespace) -> int:
    print(new_data_key() if args.kind == "data" else new_secret_key())
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.load()
    web.run_app(
        create_app(settings),
        host=settings.bind_host,
        port=settings.port,
        print=None,
        handle_signals=True,
        access_log_class=RedactingAccessLogger,
    )
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    settings = Settings.load()
    return asyncio.run(_verify(settings))


async def _verify(settings: Settings) -> int:
    from gateway.clock import SystemClock

    store = open_store(settings)
    try:
        services = Services.build(settings=settings, store=store, clock=SystemClock())
        report = await services.audit.verify()
    except AuditChainBroken as exc:
        print(f"audit log does NOT verify: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"cannot reach the store: {exc}", file=sys.stderr)
        return 2
    finally:
        await store.close()
    print(
        f"audit log verifies: {report.entries} entries, head {report.head_seq} {report.head_hash}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        print(
            f"quietroom: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 2
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    settings = Settings.load(
        {},
        dev_mode=True,
        overrides={
            "bind_host": args.host,
            "port": str(port),
            "public_url": f"http://{shown}:{port}",
        },
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_demo(settings, sock))
    return 0


async def _run_demo(settings: Settings, sock: socket.socket) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log_class=RedactingAccessLogger)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        services = app[SERVICES]
        lines = await _provision_demo(services)
        print("Quietroom demo: development mode, ephemeral secrets, in-memory state.")
        print("Nothing here is kept when you stop it (Ctrl+C).")
        print()
        for label, value in lines:
            print(f"{label}:")
            print(f"  {value}")
        print(flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _provision_demo(services: Services) -> list[tuple[str, str]]:
    actor = "demo"
    platform = await services.provisioning.create_platform(name="Demo platform", actor=actor)
    host = await services.provisioning.create_host(
        display_name="Demo therapist", platform_id=platform.id, actor=actor
    )
    room = await services.provisioning.create_room(
        host_id=host.id, policy=RoomPolicy(client_totp_required=True), actor=actor
    )
    appointment, host_participant = await services.provisioning.create_appointment(
        room_id=room.id, actor=actor
    )
    client = await services.provisioning.add_client(
        appointment_id=appointment.id, display_name="Demo client", actor=actor
    )
    enrolment = await services.identity.enrol(host_participant.id, actor=actor)
    host_link = await services.links.issue(
        LinkPurpose.HOST_SIGN_IN, participant_id=host_participant.id, actor=actor
    )
    client_link = await services.links.issue(
        LinkPurpose.CLIENT_JOIN, participant_id=client.id, actor=actor
    )
    return [
        ("Host sign-in link (open it first, in one browser)", host_link.url),
        ("Host TOTP enrolment (add to an authenticator app)", enrolment.otpauth_uri),
        ("Client link (open it in another browser or a private window)", client_link.url),
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
