"""The ``quietroom`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web

from gateway import __version__
from gateway.clock import SystemClock
from gateway.domain.apikeys import Scope
from gateway.domain.links import LinkPurpose
from gateway.domain.model import RoomPolicy
from gateway.errors import (
    AuditChainBroken,
    ConfigError,
    InvalidInput,
    NotFound,
    RecordingError,
    StoreError,
    StoreUnavailable,
)
from gateway.media.event_loop import loop_factory
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_recording_key, new_secret_key
from gateway.web import SERVICES, create_app, open_store
from gateway.web.access_log import RedactingAccessLogger
from turn.coturn_config import coturn_config
from turn.urls import parse_ice_url

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
        choices=("signing", "data", "recording"),
        default="signing",
        help="signing: for QUIETROOM_SECRET_KEYS; data: for QUIETROOM_DATA_KEYS; "
        "recording: for QUIETROOM_RECORDING_KEYS",
    )
    keys_new.set_defaults(run=_keys_new)
    keys_reseal = keys_commands.add_parser(
        "reseal",
        help="seal every stored secret under the newest data key, so an old one can be "
        "dropped (needs QUIETROOM_REDIS_URL)",
    )
    keys_reseal.set_defaults(run=_shared_state(_keys_reseal))

    recordings = commands.add_parser("recordings", help="sealed (encrypted) recordings")
    recordings_commands = recordings.add_subparsers(required=True, metavar="ACTION")
    recordings_export = recordings_commands.add_parser(
        "export", help="decrypt a sealed recording to a plain file (never overwrites)"
    )
    recordings_export.add_argument("sealed", metavar="SEALED", help="the sealed recording")
    recordings_export.add_argument("out", metavar="OUT", help="the plain file to create")
    recordings_export.set_defaults(run=_recordings_export)
    recordings_verify = recordings_commands.add_parser(
        "verify", help="check a sealed recording's integrity, writing no plaintext"
    )
    recordings_verify.add_argument("sealed", metavar="SEALED", help="the sealed recording")
    recordings_verify.set_defaults(run=_recordings_verify)

    audit = commands.add_parser("audit", help="audit log tools")
    audit_commands = audit.add_subparsers(required=True, metavar="ACTION")
    verify = audit_commands.add_parser("verify", help="check the audit log's hash chain")
    verify.set_defaults(run=_audit_verify)

    retention = commands.add_parser("retention", help="data retention")
    retention_commands = retention.add_subparsers(required=True, metavar="ACTION")
    retention_run = retention_commands.add_parser(
        "run", help="run one retention pass now and print what it removed"
    )
    retention_run.set_defaults(run=_retention_run)

    platforms = commands.add_parser("platforms", help="platforms (needs QUIETROOM_REDIS_URL)")
    platforms_commands = platforms.add_subparsers(required=True, metavar="ACTION")
    platforms_create = platforms_commands.add_parser("create", help="create a platform")
    platforms_create.add_argument("--name", required=True, help="the organisation's name")
    platforms_create.add_argument("--webhook-url", default=None, help="where webhooks go")
    platforms_create.set_defaults(run=_shared_state(_platforms_create))

    apikeys = commands.add_parser("apikeys", help="platform API keys (needs QUIETROOM_REDIS_URL)")
    apikeys_commands = apikeys.add_subparsers(required=True, metavar="ACTION")
    apikeys_create = apikeys_commands.add_parser(
        "create", help="create a key and print it (shown this once)"
    )
    apikeys_create.add_argument("--platform", required=True, help="the platform's id")
    apikeys_create.add_argument("--name", required=True, help="a label such as billing-sync")
    apikeys_create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        metavar="SCOPE",
        help=f"repeat for each scope: {', '.join(scope.value for scope in Scope)}",
    )
    apikeys_create.set_defaults(run=_shared_state(_apikeys_create))
    apikeys_revoke = apikeys_commands.add_parser("revoke", help="revoke a key for good")
    apikeys_revoke.add_argument("key_id", metavar="KEY_ID")
    apikeys_revoke.set_defaults(run=_shared_state(_apikeys_revoke))
    apikeys_list = apikeys_commands.add_parser("list", help="list a platform's keys")
    apikeys_list.add_argument("--platform", required=True, help="the platform's id")
    apikeys_list.set_defaults(run=_shared_state(_apikeys_list))

    turn = commands.add_parser("turn", help="TURN (coturn) tools")
    turn_commands = turn.add_subparsers(required=True, metavar="ACTION")
    turn_config = turn_commands.add_parser(
        "config", help="print a production coturn config holding QUIETROOM_TURN_SECRETS"
    )
    turn_config.add_argument("--realm", help="coturn realm (default: the first TURN URL's host)")
    for option, metavar, what in (
        ("--listen-ip", "IP", "an address coturn listens on (repeat; default: all)"),
        ("--relay-ip", "IP", "an address coturn relays from (repeat; default: the listeners)"),
        ("--external-ip", "IP[/PRIVATE]", "the public address when coturn is behind NAT"),
    ):
        turn_config.add_argument(option, action="append", default=[], metavar=metavar, help=what)
    turn_config.add_argument(
        "--allow-peer",
        action="extend",
        nargs="+",
        default=[],
        metavar="IP",
        help="a peer reachable despite the denied private ranges: the gateway's media address",
    )
    turn_config.add_argument("--min-port", type=_port, help="lowest relay port (with --max-port)")
    turn_config.add_argument("--max-port", type=_port, help="highest relay port")
    turn_config.add_argument("--port", type=_port, default=3478, help="turn: port (3478)")
    turn_config.add_argument("--tls-port", type=_port, default=5349, help="turns: port (5349)")
    turn_config.add_argument("--tls-cert", metavar="FILE", help="certificate chain for turns:")
    turn_config.add_argument("--tls-key", metavar="FILE", help="its private key")
    turn_config.set_defaults(run=_turn_config)
    return parser


def _port(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (0 to 65535)")
    return int(value)


def _turn_config(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if not settings.turn_secrets:
        raise ConfigError("QUIETROOM_TURN_SECRETS is empty: there is no TURN to configure")
    if (args.min_port is None) != (args.max_port is None):
        raise ConfigError("give --min-port and --max-port together")
    ports = {} if args.min_port is None else {"min_port": args.min_port, "max_port": args.max_port}
    realm = args.realm
    if realm is None:
        realm = next(url for url in map(parse_ice_url, settings.turn_urls) if url.is_turn).host
    print(
        coturn_config(
            settings.turn_secrets,
            realm=realm,
            listening_port=args.port,
            tls_listening_port=args.tls_port,
            listening_ips=args.listen_ip,
            relay_ips=args.relay_ip,
            external_ips=args.external_ip,
            allowed_peer_ips=args.allow_peer,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            **ports,
        ),
        end="",
    )
    return 0


def _keys_new(args: argparse.Namespace) -> int:
    makers = {"signing": new_secret_key, "data": new_data_key, "recording": new_recording_key}
    print(makers[args.kind]())
    return 0


def _recordings_export(args: argparse.Namespace) -> int:
    # Imported here so that other commands do not load PyAV.
    from gateway.media.sealed import RecordingKeyring, export_plaintext

    keyring = RecordingKeyring.from_settings(Settings.load())
    try:
        report = export_plaintext(args.sealed, args.out, keyring=keyring)
    except FileExistsError:
        print(f"quietroom: {args.out} exists; refusing to overwrite it", file=sys.stderr)
        return 1
    except (RecordingError, OSError) as exc:
        print(f"quietroom: {args.sealed}: {exc}", file=sys.stderr)
        return 1
    print(f"recording {report.recording_id} exported to {args.out}: {report.plaintext_size} bytes")
    print(f"sealed sha256: {report.sealed_hash}")
    return 0


def _recordings_verify(args: argparse.Namespace) -> int:
    from gateway.media.sealed import RecordingKeyring, verify_sealed

    keyring = RecordingKeyring.from_settings(Settings.load())
    try:
        report = verify_sealed(args.sealed, keyring=keyring)
    except (RecordingError, OSError) as exc:
        print(f"quietroom: {args.sealed} does NOT verify: {exc}", file=sys.stderr)
        return 1
    print(
        f"recording {report.recording_id} verifies: {report.chunks} chunks, "
        f"{report.plaintext_size} bytes, master key {report.key_id}"
    )
    print(f"sealed sha256: {report.sealed_hash}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.logs import configure_logging
    from gateway.web.serve import serve

    settings = Settings.load()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    return serve(settings)


def _audit_verify(args: argparse.Namespace) -> int:
    settings = Settings.load()
    return asyncio.run(_verify(settings))


async def _verify(settings: Settings) -> int:
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
    if report.pruned_through:
        print(f"(entries 1 to {report.pruned_through} were removed by the retention)")
    return 0


#: How ``quietroom retention run`` names each count of a pass (it ends no appointment, so
#: ``abandoned_appointments`` is not among them).
_RETENTION_LINES = {
    "audit_entries": "audit entries pruned",
    "appointments": "ended appointments purged",
    "participants": "participant records purged with them",
    "appointment_records": "purged appointments forgotten",
    "recordings": "sealed recordings deleted",
    "links": "expired link ids forgotten",
    "sessions": "expired browser sessions forgotten",
}


def _retention_run(args: argparse.Namespace) -> int:
    settings = Settings.load()
    if not settings.redis_url:
        print(
            "quietroom: QUIETROOM_REDIS_URL is empty: only the recording folder is swept "
            "(in-memory state lives in the running gateway, whose own sweeper handles it)",
            file=sys.stderr,
        )
    return asyncio.run(_retention(settings))


async def _retention(settings: Settings) -> int:
    store = open_store(settings)
    try:
        services = Services.build(settings=settings, store=store, clock=SystemClock())
        # Ending an appointment tells its platform by webhook, which only a running
        # gateway delivers: that part of the pass is left to the gateways' sweepers.
        report = await services.retention.run_once(end_abandoned=False)
    except StoreUnavailable as exc:
        print(f"cannot reach the store: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"quietroom: the retention pass stopped: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"quietroom: the recording folder: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    for kind, line in _RETENTION_LINES.items():
        print(f"{line}: {report.counts()[kind]}")
    return 0


# --- platforms and API keys: shared state only ------------------------------------------

_CLI_ACTOR = "cli"

SharedCommand = Callable[[Services, argparse.Namespace], Awaitable[int]]


def _shared_state(command: SharedCommand) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` against the gateway's Redis; refuse without one, since the
    in-memory store would forget everything when this process exits."""

    def run(args: argparse.Namespace) -> int:
        if not os.environ.get("QUIETROOM_REDIS_URL") and not os.environ.get("QUIETROOM_CONFIG"):
            return _no_shared_state()
        settings = Settings.load()
        if not settings.redis_url:
            return _no_shared_state()
        return asyncio.run(_with_services(settings, command, args))

    return run


def _no_shared_state() -> int:
    print(
        "quietroom: this command works on the gateway's shared state (platforms, API "
        "keys, stored secrets): set QUIETROOM_REDIS_URL to its Redis (the in-memory store "
        "lives only inside a running gateway)",
        file=sys.stderr,
    )
    return 2


async def _with_services(
    settings: Settings, command: SharedCommand, args: argparse.Namespace
) -> int:
    store = open_store(settings)
    try:
        return await command(
            Services.build(settings=settings, store=store, clock=SystemClock()), args
        )
    except StoreUnavailable as exc:
        print(f"cannot reach the store: {exc}", file=sys.stderr)
        return 2
    except (InvalidInput, NotFound) as exc:
        print(f"quietroom: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()


async def _keys_reseal(services: Services, args: argparse.Namespace) -> int:
    report = await services.store.reseal_secrets()
    await services.audit.record(
        "keys.resealed",
        actor=_CLI_ACTOR,
        subjects={
            "resealed": str(report.resealed),
            "current": str(report.current),
            "changed": str(report.changed),
            "unreadable": str(report.unreadable),
        },
    )
    print(f"secrets sealed anew under the newest data key: {report.resealed}")
    print(f"already under it: {report.current}")
    if report.changed:
        print(
            f"written by a gateway meanwhile, left as written: {report.changed} "
            "(run again once every gateway runs with the new key first)"
        )
    if report.unreadable:
        print(
            f"quietroom: {report.unreadable} stored secrets open with no data key; left "
            "as they are. Do not drop a key until you know which one sealed them",
            file=sys.stderr,
        )
        return 1
    return 0


async def _platforms_create(services: Services, args: argparse.Namespace) -> int:
    platform, webhook_secret = await services.provisioning.create_platform(
        name=args.name, webhook_url=args.webhook_url, actor=_CLI_ACTOR
    )
    lines = [("Platform id", platform.id)]
    if webhook_secret is not None:
        lines.append(("Webhook signing secret (shown this once)", webhook_secret))
    _print_labelled(lines)
    return 0


async def _apikeys_create(services: Services, args: argparse.Namespace) -> int:
    issued = await services.apikeys.create(
        platform_id=args.platform, name=args.name, scopes=args.scope, actor=_CLI_ACTOR
    )
    _print_labelled(
        [
            ("API key id", issued.key.id),
            ("API key (shown this once; keep it in the platform's secret store)", issued.plaintext),
        ]
    )
    return 0


async def _apikeys_revoke(services: Services, args: argparse.Namespace) -> int:
    key = await services.apikeys.revoke(args.key_id, actor=_CLI_ACTOR)
    print(f"{key.id} revoked at {_when(key.revoked_at)}")
    return 0


async def _apikeys_list(services: Services, args: argparse.Namespace) -> int:
    for key in await services.apikeys.list_keys(args.platform):
        state = "live" if key.revoked_at is None else f"revoked {_when(key.revoked_at)}"
        scopes = ",".join(sorted(scope.value for scope in key.scopes))
        print(f"{key.id}  {key.name}  created {_when(key.created_at)}  {state}  {scopes}")
    return 0


def _when(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_labelled(lines: Sequence[tuple[str, str]]) -> None:
    for label, value in lines:
        print(f"{label}:")
        print(f"  {value}")


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
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=loop_factory(settings.media_poll_interval_us)) as runner,
    ):
        runner.run(_run_demo(settings, sock))
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
    platform, _ = await services.provisioning.create_platform(name="Demo platform", actor=actor)
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
    api_key = await services.apikeys.create(
        platform_id=platform.id, name="demo", scopes=list(Scope), actor=actor
    )
    return [
        ("Host sign-in link (open it first, in one browser)", host_link.url),
        ("Host TOTP enrolment (add to an authenticator app)", enrolment.otpauth_uri),
        ("Client link (open it in another browser or a private window)", client_link.url),
        ("Platform API key (all scopes; see docs/openapi.yaml)", api_key.plaintext),
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
