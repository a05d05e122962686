"""The fake Discord gateway: websocket sessions, IDENTIFY/RESUME, heartbeats and dispatch."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import zlib
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_models import GatewayEvent, Intent

if TYPE_CHECKING:
    from tests.fakes.discord import FakeDiscord

__all__ = ["Gateway", "GatewayConnection", "GatewaySession", "NotConnectedError"]

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_VOICE_STATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

_BUFFER_LIMIT = 5000

# Events that only reach a bot with the given intent; (guild intent, DM intent).
_EVENT_INTENTS: dict[str, tuple[int, int]] = {
    "MESSAGE_CREATE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_UPDATE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_DELETE": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_DELETE_BULK": (Intent.GUILD_MESSAGES, Intent.DIRECT_MESSAGES),
    "MESSAGE_REACTION_ADD": (Intent.GUILD_MESSAGE_REACTIONS, Intent.DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE": (Intent.GUILD_MESSAGE_REACTIONS, Intent.DIRECT_MESSAGE_REACTIONS),
    "MESSAGE_REACTION_REMOVE_ALL": (
        Intent.GUILD_MESSAGE_REACTIONS,
        Intent.DIRECT_MESSAGE_REACTIONS,
    ),
    "MESSAGE_REACTION_REMOVE_EMOJI": (
        Intent.GUILD_MESSAGE_REACTIONS,
        Intent.DIRECT_MESSAGE_REACTIONS,
    ),
    "TYPING_START": (Intent.GUILD_MESSAGE_TYPING, Intent.DIRECT_MESSAGE_TYPING),
    "GUILD_CREATE": (Intent.GUILDS, Intent.GUILDS),
    "GUILD_DELETE": (Intent.GUILDS, Intent.GUILDS),
    "CHANNEL_CREATE": (Intent.GUILDS, Intent.GUILDS),
    "CHANNEL_DELETE": (Intent.GUILDS, Intent.GUILDS),
    "GUILD_ROLE_CREATE": (Intent.GUILDS, Intent.GUILDS),
    "GUILD_MEMBER_ADD": (Intent.GUILD_MEMBERS, Intent.GUILD_MEMBERS),
    "THREAD_CREATE": (Intent.GUILDS, Intent.GUILDS),
    "THREAD_UPDATE": (Intent.GUILDS, Intent.GUILDS),
    "THREAD_DELETE": (Intent.GUILDS, Intent.GUILDS),
    "THREAD_LIST_SYNC": (Intent.GUILDS, Intent.GUILDS),
    "THREAD_MEMBER_UPDATE": (Intent.GUILDS, Intent.GUILDS),
}
_CONTENT_KEYS = ("content", "embeds", "attachments", "components", "poll")


class NotConnectedError(RuntimeError):
    """No gateway session is connected for the shard an event belongs to."""


def _encode(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class GatewayConnection:
    """One websocket connection; compresses with zlib-stream when the client asked for it."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self.compress = compress if compress == "zlib-stream" else None
        self._zlib = zlib.compressobj() if self.compress else None
        self.lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        self.heartbeats = 0
        self.received: list[dict[str, Any]] = []

    @property
    def open(self) -> bool:
        """True until the socket closes."""
        return not self.ws.closed

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one gateway payload (compression and send are one step, in order)."""
        text = _encode(payload)
        async with self.lock:
            if self.ws.closed:
                raise ConnectionResetError("gateway websocket closed")
            if self._zlib is not None:
                data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)


class GatewaySession:
    """A gateway session (one shard): sequence numbers and the events sent, for RESUME."""

    def __init__(
        self, session_id: str, shard_id: int, shard_count: int, identify: dict[str, Any]
    ) -> None:
        self.session_id = session_id
        self.shard_id = shard_id
        self.shard_count = shard_count
        self.identify = identify
        self.intents = int(identify.get("intents") or 0)
        self.seq = 0
        self.buffer: list[tuple[int, str, dict[str, Any]]] = []
        self.conn: GatewayConnection | None = None
        self.ready = False
        self.t_ready: float | None = None
        self.resumes = 0
        self.lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True while a live connection carries this session."""
        return self.conn is not None and self.conn.open

    async def dispatch(self, name: str, data: dict[str, Any]) -> int:
        """Give the event the next sequence number and send it if connected."""
        async with self.lock:
            self.seq += 1
            self.buffer.append((self.seq, name, data))
            del self.buffer[:-_BUFFER_LIMIT]
            conn = self.conn
            if conn is not None and conn.open:
                try:
                    await conn.send({"op": OP_DISPATCH, "d": data, "s": self.seq, "t": name})
                except ConnectionResetError:
                    pass
            return self.seq

    async def replay(self, conn: GatewayConnection, after: int) -> int:
        """Send every buffered event after sequence ``after`` on ``conn``; returns the count."""
        async with self.lock:
            missed = [entry for entry in self.buffer if entry[0] > after]
            for seq, name, data in missed:
                await conn.send({"op": OP_DISPATCH, "d": data, "s": seq, "t": name})
            return len(missed)


class Gateway:
    """Accepts gateway websockets for a :class:`FakeDiscord` and routes its dispatches."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.connections: list[GatewayConnection] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.by_shard: dict[int, GatewaySession] = {}
        self.events: list[GatewayEvent] = []
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.down = False
        """While set, the gateway refuses connections (503), as during a Discord outage."""

    # -- websocket endpoint ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The ``/gateway`` websocket endpoint."""
        if self.down:
            raise web.HTTPServiceUnavailable(text="gateway unavailable")
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = GatewayConnection(ws, request.query.get("compress"))
        self.connections.append(conn)
        try:
            await conn.send(
                {
                    "op": OP_HELLO,
                    "d": {
                        "heartbeat_interval": self.fake.heartbeat_interval_ms,
                        "_trace": ['["gateway-fake",{"micros":0}]'],
                    },
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    raw = msg.data if isinstance(msg.data, str) else msg.data.decode()
                    try:
                        payload = json.loads(raw)
                    except ValueError:
                        await ws.close(code=4002, message=b"Error while decoding payload.")
                        break
                    await self._on_payload(conn, payload)
                elif msg.type == WSMsgType.ERROR:
                    break
        except ConnectionResetError:
            pass
        finally:
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            if conn in self.connections:
                self.connections.remove(conn)
        return ws

    async def _on_payload(self, conn: GatewayConnection, payload: dict[str, Any]) -> None:
        self.received.append((time.monotonic(), payload))
        conn.received.append(payload)
        op = payload.get("op")
        data = payload.get("d")
        if op == OP_HEARTBEAT:
            conn.heartbeats += 1
            await conn.send({"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(conn, data or {})
        elif op == OP_RESUME:
            await self._resume(conn, data or {})
        elif conn.session is None:
            await conn.ws.close(code=4003, message=b"Not authenticated.")
        elif op == OP_REQUEST_MEMBERS:
            await self._request_members(conn.session, data or {})
        elif op in (OP_PRESENCE, OP_VOICE_STATE):
            pass
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        if not isinstance(token, str):
            return False
        token = token.removeprefix("Bot ")
        return secrets.compare_digest(token, self.fake.token)

    async def _identify(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents >= 1 << 26:
            await conn.ws.close(code=4013, message=b"Invalid intent(s).")
            return
        if intents & Intent.privileged() & ~self.fake.privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard") or [0, 1]
        shard_id, shard_count = int(shard[0]), int(shard[1])
        if shard_count != self.fake.shard_count or not 0 <= shard_id < shard_count:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = GatewaySession(secrets.token_hex(16), shard_id, shard_count, data)
        session.conn = conn
        conn.session = session
        old = self.by_shard.get(shard_id)
        if old is not None and old.conn is not None and old.conn is not conn:
            old.conn = None
        self.sessions[session.session_id] = session
        self.by_shard[shard_id] = session
        guilds = [g for g in self.fake.guilds.values() if self.shard_of(g.id) == shard_id]
        await session.dispatch("READY", self.fake._ready_payload(session, guilds))
        for guild in guilds:
            await session.dispatch("GUILD_CREATE", self.fake._guild_create_payload(guild))
        session.ready = True
        session.t_ready = time.monotonic()

    async def _resume(self, conn: GatewayConnection, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        session = self.sessions.get(str(data.get("session_id")))
        if not self._token_ok(data.get("token")):
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None:
            await conn.send({"op": OP_INVALID_SESSION, "d": False})
            return
        if session.conn is not None and session.conn is not conn and session.conn.open:
            await session.conn.ws.close(code=4000, message=b"Session resumed elsewhere.")
        session.conn = conn
        conn.session = session
        session.resumes += 1
        seq = data.get("seq")
        await session.replay(conn, int(seq) if seq is not None else 0)
        await session.dispatch("RESUMED", {"_trace": ['["gateway-fake",{"micros":0}]']})

    async def _request_members(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.fake.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        members = list(guild.members.values())
        user_ids = {int(u) for u in data.get("user_ids") or []}
        if user_ids:
            members = [m for m in members if m.user_id in user_ids]
        query = data.get("query")
        if query:
            members = [
                m for m in members if self.fake.users[m.user_id].username.startswith(str(query))
            ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        payload: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": [m.payload(self.fake.users[m.user_id]) for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce"):
            payload["nonce"] = data["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", payload)

    # -- dispatch ---------------------------------------------------------------------------

    def shard_of(self, guild_id: int | None) -> int:
        """The shard a guild's events travel on (DMs: shard 0)."""
        if not guild_id:
            return 0
        return (guild_id >> 22) % self.fake.shard_count

    def ready(self) -> bool:
        """True when every shard has a connected session that received READY."""
        for shard_id in range(self.fake.shard_count):
            session = self.by_shard.get(shard_id)
            if session is None or not session.ready or not session.connected:
                return False
        return True

    async def dispatch(
        self,
        name: str,
        data: dict[str, Any],
        *,
        guild_id: int | None,
        require_connection: bool = True,
        content_visible: bool = True,
    ) -> bool:
        """Send a dispatch to the shard of ``guild_id``; returns False if intents filter it.

        ``content_visible=False`` marks a guild message whose content the bot may only see
        with the MESSAGE_CONTENT intent (it neither wrote the message nor is mentioned in it).
        """
        shard_id = self.shard_of(guild_id)
        session = self.by_shard.get(shard_id)
        now = time.monotonic()
        if session is None or not session.ready:
            if require_connection:
                raise NotConnectedError(
                    f"no gateway session for shard {shard_id}: await fake.wait_until_ready() first"
                )
            self.events.append(GatewayEvent(now, shard_id, None, name, data, False))
            return False
        needed = _EVENT_INTENTS.get(name)
        if needed is not None:
            bit = needed[0] if guild_id else needed[1]
            if not session.intents & bit:
                self.events.append(GatewayEvent(now, shard_id, None, name, data, False))
                return False
        if (
            name in ("MESSAGE_CREATE", "MESSAGE_UPDATE")
            and guild_id
            and not content_visible
            and not session.intents & Intent.MESSAGE_CONTENT
        ):
            data = dict(data)
            for key in _CONTENT_KEYS:
                if key in data:
                    data[key] = "" if key == "content" else []
        if require_connection and not session.connected:
            raise NotConnectedError(f"gateway session of shard {shard_id} is disconnected")
        seq = await session.dispatch(name, data)
        self.events.append(GatewayEvent(now, shard_id, seq, name, data, True))
        return True

    async def disconnect(self, shard_id: int = 0, code: int = 4000) -> None:
        """Close the shard's websocket with ``code`` (4000: the client resumes)."""
        session = self.by_shard.get(shard_id)
        if session is not None and session.conn is not None:
            conn = session.conn
            session.conn = None
            await conn.ws.close(code=code, message=b"Closed by the fake.")

    async def go_down(self) -> None:
        """An outage: every connection drops and no new one is accepted until `down` is
        cleared."""
        self.down = True
        for conn in list(self.connections):
            if conn.open:
                await conn.ws.close(code=1001, message=b"Gateway unavailable.")

    async def close_all(self) -> None:
        """Close every websocket (server shutdown)."""
        for conn in list(self.connections):
            if conn.open:
                await conn.ws.close(code=1001, message=b"Server shutting down.")
        self.connections.clear()
