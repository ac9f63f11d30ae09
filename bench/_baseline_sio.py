"""The baseline for the waiting-room benchmark: a bare python-socketio server on aiohttp
that accepts every connection and echoes one event. What the gateway costs beyond this
is Quietroom's own cost."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import socketio
from aiohttp import web


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
    app = web.Application()
    sio.attach(app)

    @sio.on("echo", namespace="/client")  # type: ignore[misc]
    async def echo(sid: str, data: Any = None) -> Any:
        return data

    @sio.on("connect", namespace="/client")  # type: ignore[misc]
    async def connect(sid: str, environ: Any, auth: Any = None) -> None:
        await sio.enter_room(sid, f"p:{sid}", namespace="/client")

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
