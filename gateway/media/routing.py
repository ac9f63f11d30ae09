"""Which process carries a session's media, and how the others reach it.

Signaling may land on any gateway process, but a session's media lives on one: every
peer of the session must feed the same forwarder. With one process (MemoryStore)
:class:`LocalRouter` sends everything to this process's :class:`MediaRooms`. With Redis,
:class:`RedisRouter` keeps the map in Redis:

* every process is a media node: it beats every second (a key that expires after
  ``NODE_TTL`` seconds) and publishes its load (its peers; a full node, see
  ``QUIETROOM_MEDIA_MAX_SESSIONS``, adds ``FULL_LOAD`` so it is picked last);
* a session is placed on the least loaded live node when its media is first needed,
  in one Lua script, so two processes never place it twice;
* offers, candidates and closes for a session on another node travel as requests over
  Redis pub/sub to that node, and its replies come back the same way;
* when a node stops beating, any other node moves its sessions (the script again, which
  moves a session only from the node it was seen on) and calls the ``on_moved``
  subscribers: signaling tells the browsers to offer again, and the new offers build the
  session afresh on its new node. Participants stay admitted throughout.

Requests carry SDP (addresses, never names) through Redis, which is internal; they are
never logged. Redis Cluster is not supported (the scripts touch keys they compute).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.errors import MediaError, PeerClosed, SdpRejected, StoreUnavailable
from gateway.media.reasons import MediaCloseReason
from gateway.media.rooms import MediaRooms

__all__ = ["NODE_TTL", "LocalRouter", "MediaRouter", "Moved", "RedisRouter"]

log = logging.getLogger(__name__)

#: A node that has not beaten for this long is gone, seconds.
NODE_TTL = 3.0
BEAT_INTERVAL = 1.0
#: Added to a full node's published load (its peers), so placement picks it last.
FULL_LOAD = 1_000_000
#: How long a request to another node may take (an answer gathers candidates).
REQUEST_TIMEOUT = 10.0

#: Called with the session id when a session's media moved to another node.
Moved = Callable[[str], Awaitable[None]]


class MediaRouter(Protocol):
    """What signaling asks of the media plane, wherever the session's media lives."""

    async def answer(
        self,
        *,
        session_id: str,
        participant_id: str,
        sdp: object,
        sdp_type: object,
        featured: bool = False,
    ) -> str: ...

    async def add_candidate(
        self,
        *,
        session_id: str,
        participant_id: str,
        candidate: object,
        sdp_mid: object,
        sdp_mline_index: object,
    ) -> bool: ...

    async def close_participant(
        self, *, session_id: str, participant_id: str, reason: MediaCloseReason
    ) -> None: ...

    async def close_session(self, *, session_id: str, reason: MediaCloseReason) -> None: ...

    def on_moved(self, callback: Moved) -> None: ...


class LocalRouter:
    """Every session's media on this process (one process, the embedded store)."""

    def __init__(self, rooms: MediaRooms) -> None:
        self.rooms = rooms

    async def answer(
        self,
        *,
        session_id: str,
        participant_id: str,
        sdp: object,
        sdp_type: object,
        featured: bool = False,
    ) -> str:
        return await self.rooms.answer(
            session_id=session_id,
            participant_id=participant_id,
            sdp=sdp,
            sdp_type=sdp_type,
            featured=featured,
        )

    async def add_candidate(
        self,
        *,
        session_id: str,
        participant_id: str,
        candidate: object,
        sdp_mid: object,
        sdp_mline_index: object,
    ) -> bool:
        return await self.rooms.add_candidate(
            participant_id, candidate=candidate, sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index
        )

    async def close_participant(
        self, *, session_id: str, participant_id: str, reason: MediaCloseReason
    ) -> None:
        await self.rooms.close_participant(participant_id, reason)

    async def close_session(self, *, session_id: str, reason: MediaCloseReason) -> None:
        await self.rooms.close_session(session_id, reason)

    def on_moved(self, callback: Moved) -> None:
        """Sessions never move on one process."""


# KEYS: the session map, the load map. ARGV: session id, node key prefix, the node the
# caller saw (move only from that one; "" = place if unplaced or its node is gone).
# Returns {node or false, 1 if it moved from a gone node}.
_PLACE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and redis.call('EXISTS', ARGV[2] .. current) == 1 then
  return {current, 0}
end
if ARGV[3] ~= '' and current ~= ARGV[3] then
  return {current or false, 0}
end
local best, best_load = false, nil
local loads = redis.call('HGETALL', KEYS[2])
for i = 1, #loads, 2 do
  local node, load = loads[i], tonumber(loads[i + 1])
  if redis.call('EXISTS', ARGV[2] .. node) == 1 then
    if best_load == nil or load < best_load or (load == best_load and node < best) then
      best, best_load = node, load
    end
  else
    redis.call('HDEL', KEYS[2], node)
  end
end
if not best then
  return {false, 0}
end
redis.call('HSET', KEYS[1], ARGV[1], best)
-- Count the placement now, so a burst of new sessions spreads before the next beat.
redis.call('HINCRBY', KEYS[2], best, 1)
if current then
  return {best, 1}
end
return {best, 0}
"""

# KEYS: the session map. ARGV: session id, node. Forget the placement if still that node.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

_ERRORS: dict[str, Callable[[str], Exception]] = {
    "sdp_rejected": lambda reason: SdpRejected(reason=reason),
    "peer_closed": lambda reason: PeerClosed(reason=reason),
}


class RedisRouter:
    """Sessions placed on media nodes through Redis; see the module's docstring."""

    def __init__(
        self,
        rooms: MediaRooms,
        client: Redis,
        *,
        prefix: str = "qr:",
        node_id: str | None = None,
        owns_client: bool = False,
    ) -> None:
        self.rooms = rooms
        self._owns_client = owns_client
        self.node_id = node_id or secrets.token_hex(8)
        self._client = client
        self._sessions_key = f"{prefix}media:sessions"
        self._load_key = f"{prefix}media:load"
        self._node_prefix = f"{prefix}media:node:"
        self._requests_prefix = f"{prefix}media:requests:"
        self._requests_channel = self._requests_prefix + self.node_id
        self._replies_prefix = f"{prefix}media:replies:"
        self._place = client.register_script(_PLACE)
        self._release = client.register_script(_RELEASE)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._moved: list[Moved] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._pubsub: PubSub | None = None
        self._loops: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"RedisRouter(node={self.node_id})"

    # --- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for requests and replies, and beat; this node takes sessions from now."""
        pubsub = self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._requests_channel, self._replies_prefix + self.node_id)
        await self._beat()
        self._loops = [
            asyncio.create_task(self._listen(pubsub), name=f"media-node-{self.node_id}-listen"),
            asyncio.create_task(self._beat_and_watch(), name=f"media-node-{self.node_id}-beat"),
        ]
        log.info("media node %s up", self.node_id)

    async def stop(self) -> None:
        """Stop taking sessions and hand this node's sessions back. Safe to call twice."""
        loops, self._loops = self._loops, []
        for task in (*loops, *self._tasks):
            task.cancel()
        for task in (*loops, *self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        with contextlib.suppress(RedisError):
            await self._client.delete(self._node_prefix + self.node_id)
            await self._client.hdel(self._load_key, self.node_id)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        if self._owns_client:
            self._owns_client = False
            await self._client.aclose(close_connection_pool=True)

    def on_moved(self, callback: Moved) -> None:
        self._moved.append(callback)

    # --- what signaling calls ----------------------------------------------------------------

    async def answer(
        self,
        *,
        session_id: str,
        participant_id: str,
        sdp: object,
        sdp_type: object,
        featured: bool = False,
    ) -> str:
        node = await self._node_of(session_id)
        args = {
            "participant_id": participant_id,
            "sdp": sdp,
            "sdp_type": sdp_type,
            "featured": featured,
        }
        result = await self._call(node, "answer", session_id, args)
        if not isinstance(result, str):
            raise MediaError("a media node sent a malformed answer")
        return result

    async def add_candidate(
        self,
        *,
        session_id: str,
        participant_id: str,
        candidate: object,
        sdp_mid: object,
        sdp_mline_index: object,
    ) -> bool:
        node = await self._node_of(session_id)
        args = {
            "participant_id": participant_id,
            "candidate": candidate,
            "sdp_mid": sdp_mid,
            "sdp_mline_index": sdp_mline_index,
        }
        return bool(await self._call(node, "candidate", session_id, args))

    async def close_participant(
        self, *, session_id: str, participant_id: str, reason: MediaCloseReason
    ) -> None:
        node = await self._placed(session_id)
        if node is not None:
            args = {"participant_id": participant_id, "reason": reason.value}
            await self._call(node, "close_participant", session_id, args)

    async def close_session(self, *, session_id: str, reason: MediaCloseReason) -> None:
        node = await self._placed(session_id)
        if node is not None:
            await self._call(node, "close_session", session_id, {"reason": reason.value})

    # --- placement ----------------------------------------------------------------------------

    async def _node_of(self, session_id: str) -> str:
        """The live node of the session, placing (or moving) it there if needed."""
        try:
            node, moved = await self._place(
                keys=[self._sessions_key, self._load_key],
                args=[session_id, self._node_prefix, ""],
            )
        except RedisError:
            raise StoreUnavailable() from None
        if not node:
            raise MediaError("no media node is up")
        node_id = node.decode() if isinstance(node, bytes) else str(node)
        if moved:
            await self._tell_moved(session_id)
        return node_id

    async def _placed(self, session_id: str) -> str | None:
        try:
            node = await self._client.hget(self._sessions_key, session_id)
        except RedisError:
            raise StoreUnavailable() from None
        if node is None:
            return None
        return node.decode() if isinstance(node, bytes) else str(node)

    async def _beat(self) -> None:
        load = self.rooms.peer_count
        if self.rooms.full:
            # Last choice for placement: only when every node is full does it get (and
            # refuse) a new session.
            load += FULL_LOAD
        await self._client.set(self._node_prefix + self.node_id, load, px=int(NODE_TTL * 1000))
        await self._client.hset(self._load_key, self.node_id, load)

    async def _beat_and_watch(self) -> None:
        while True:
            await asyncio.sleep(BEAT_INTERVAL)
            try:
                await self._beat()
                await self._move_from_gone_nodes()
            except RedisError as exc:
                log.warning("media node %s: Redis unreachable (%s)", self.node_id, exc)

    async def _move_from_gone_nodes(self) -> None:
        placements = await self._client.hgetall(self._sessions_key)
        for raw_session, raw_node in placements.items():
            session_id = raw_session.decode() if isinstance(raw_session, bytes) else raw_session
            node = raw_node.decode() if isinstance(raw_node, bytes) else raw_node
            if await self._client.exists(self._node_prefix + node):
                continue
            new_node, moved = await self._place(
                keys=[self._sessions_key, self._load_key],
                args=[session_id, self._node_prefix, node],
            )
            if new_node and moved:
                log.info("media of %s moved off gone node %s", session_id, node)
                await self._tell_moved(session_id)

    async def _tell_moved(self, session_id: str) -> None:
        for callback in self._moved:
            try:
                await callback(session_id)
            except Exception:
                log.exception("a media-moved subscriber failed")

    # --- requests between nodes ------------------------------------------------------------------

    async def _call(self, node: str, op: str, session_id: str, args: dict[str, Any]) -> Any:
        if node == self.node_id:
            return await self._perform(op, session_id, args)
        request_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        message = {
            "id": request_id,
            "reply_to": self.node_id,
            "op": op,
            "session_id": session_id,
            "args": args,
        }
        try:
            receivers = await self._client.publish(
                self._requests_prefix + node, json.dumps(message)
            )
            if not receivers:
                raise MediaError("the session's media node is not listening")
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except TimeoutError:
            raise MediaError("the session's media node did not answer") from None
        except RedisError:
            raise StoreUnavailable() from None
        finally:
            self._pending.pop(request_id, None)
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        make = _ERRORS.get(str(error.get("code")))
        if make is not None:
            raise make(str(error.get("reason", "")))
        raise MediaError("the session's media node could not do it")

    async def _perform(self, op: str, session_id: str, args: dict[str, Any]) -> Any:
        rooms = self.rooms
        if op == "answer":
            try:
                return await rooms.answer(
                    session_id=session_id,
                    participant_id=str(args["participant_id"]),
                    sdp=args["sdp"],
                    sdp_type=args["sdp_type"],
                    featured=args.get("featured") is True,
                )
            except MediaError:
                if rooms.full and rooms.forwarder(session_id) is None:
                    # Turned away at capacity (placed here on a load figure from before
                    # it filled up): let the next offer be placed again, elsewhere if
                    # another node has room, instead of sending every retry here.
                    await self._release(keys=[self._sessions_key], args=[session_id, self.node_id])
                raise
        if op == "candidate":
            return await rooms.add_candidate(
                str(args["participant_id"]),
                candidate=args["candidate"],
                sdp_mid=args["sdp_mid"],
                sdp_mline_index=args["sdp_mline_index"],
            )
        if op == "close_participant":
            reason = MediaCloseReason(args["reason"])
            return await rooms.close_participant(str(args["participant_id"]), reason)
        if op == "close_session":
            await rooms.close_session(session_id, MediaCloseReason(args["reason"]))
            await self._release(keys=[self._sessions_key], args=[session_id, self.node_id])
            return None
        raise MediaError("unknown media request")

    async def _listen(self, pubsub: PubSub) -> None:
        replies = self._replies_prefix + self.node_id
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except RedisError as exc:
                log.warning("media node %s: Redis unreachable (%s)", self.node_id, exc)
                await asyncio.sleep(BEAT_INTERVAL)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            try:
                body = json.loads(message["data"])
            except (TypeError, ValueError):
                continue
            if not isinstance(body, dict):
                continue
            if channel == replies:
                future = self._pending.get(str(body.get("id")))
                if future is not None and not future.done():
                    future.set_result(body)
            else:
                task = asyncio.create_task(self._serve(body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": request.get("id")}
        try:
            reply["result"] = await self._perform(
                str(request.get("op")), str(request.get("session_id")), request.get("args") or {}
            )
            reply["ok"] = True
        except SdpRejected as exc:
            reply.update(ok=False, error={"code": exc.code, "reason": exc.reason})
        except PeerClosed as exc:
            reply.update(ok=False, error={"code": exc.code, "reason": exc.reason})
        except (MediaError, KeyError, TypeError, ValueError) as exc:
            log.warning("media node %s: request failed (%s)", self.node_id, type(exc).__name__)
            reply.update(ok=False, error={"code": "media_error"})
        with contextlib.suppress(RedisError):
            await self._client.publish(
                self._replies_prefix + str(request.get("reply_to")), json.dumps(reply)
            )
