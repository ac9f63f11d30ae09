"""A gateway process for benchmarks: serves, and (with --seed) creates one appointment
with N clients and writes their link paths and the host's TOTP secret to a file.

Not a product entry point: benchmarks only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

from aiohttp import web

from gateway.domain.links import LinkPurpose
from gateway.domain.model import RoomPolicy
from gateway.settings import Settings
from gateway.web import SERVICES, create_app


async def seed(app: web.Application, clients: int, out: Path) -> None:
    services = app[SERVICES]
    prov = services.provisioning
    platform = await prov.create_platform(name="Bench", actor="bench")
    platform_id = platform[0].id if isinstance(platform, tuple) else platform.id
    host = await prov.create_host(display_name="Bench host", platform_id=platform_id, actor="bench")
    room = await prov.create_room(
        host_id=host.id, policy=RoomPolicy(client_totp_required=False), actor="bench"
    )
    appointment, host_participant = await prov.create_appointment(room_id=room.id, actor="bench")
    paths = []
    for n in range(clients):
        client = await prov.add_client(
            appointment_id=appointment.id, display_name=f"Client {n}", actor="bench"
        )
        link = await services.links.issue(
            LinkPurpose.CLIENT_JOIN, participant_id=client.id, actor="bench"
        )
        paths.append((client.id, "/j/" + link.url.rsplit("/j/", 1)[1]))
    host_link = await services.links.issue(
        LinkPurpose.HOST_SIGN_IN, participant_id=host_participant.id, actor="bench"
    )
    enrolment = await services.identity.enrol(host_participant.id, actor="bench")
    out.write_text(  # noqa: ASYNC240 - once, before serving
        json.dumps(
            {
                "clients": paths,
                "host_path": "/h/" + host_link.url.rsplit("/h/", 1)[1],
                "host_secret": enrolment.secret,
            }
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = Settings.load()
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
    if args.seed:
        await seed(app, args.seed, args.out)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
