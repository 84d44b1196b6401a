"""A fast, single-threaded WebSocket peer that generates load: the fake engine and a bare caller.

The peer must never be the bottleneck of a measurement, so it does as little per call as Python
allows: one ``selectors`` loop over non-blocking sockets, WebSocket framing written by hand (the
frames it sends are prebuilt up to the invocation id, and frames it receives are parsed with a few
byte reads and the C ``apply_mask`` of websockets), orjson for JSON, and everything queued for a
socket during one loop turn written with a single ``send``.

Server mode (:meth:`Peer.listen`) speaks enough of the engine protocol for a worker to connect,
register and serve: it accepts the upgrade on ``/`` (and ``/otel``, whose telemetry frames it
drops), sends ``workerregistered`` first, answers ``engine::workers::register`` when the worker
asks with an ``invocation_id``, records every ``registerfunction`` with its arrival time, and
routes invocations a worker makes to whichever connection registered the target (so a handler
that calls another function works, as through the real engine).

Calls to a function named with :meth:`Peer.hold` are not routed: the peer keeps them unanswered
until :meth:`Peer.release_held` answers them all with their own payload, which lets a caller be
measured while many of its calls wait.

Client mode (:meth:`Peer.connect`) connects to an engine as a caller, for the end-to-end figures
through the dev engine. Its frames carry an all-zero masking key, which keeps the masking cost out
of the caller: the key is legal on the wire, and on loopback there is no proxy to protect.

:meth:`Peer.run_load` keeps N invocations in flight on one connection for a warm-up and a
measurement window and reports throughput, latency percentiles and the CPU time of the processes
it is given. Latency runs from the moment a call's frame is handed to the kernel to the moment the
chunk holding its result is read, so the peer's own parsing time is not charged to the worker.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import selectors
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson


def _load_c_apply_mask() -> Callable[[bytes, bytes], bytes] | None:
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # websockets built without its C extension
        return None
    return apply_mask


__all__ = ["LoadResult", "Peer", "PeerConnection", "PeerError", "frame"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_KEY = b"\0\0\0\0"
_RECV_SIZE = 1 << 18
_TELEMETRY_PREFIXES = (b"OTLP", b"MTRC", b"LOGS")
_WORKERS_REGISTER = "engine::workers::register"
_perf_ns = time.perf_counter_ns
_c_apply_mask = _load_c_apply_mask()


class PeerError(Exception):
    """The peer could not do what it was asked (connection lost, handshake refused, ...)."""


def _unmask(data: bytes, key: bytes) -> bytes:
    if key == _ZERO_KEY:
        return data
    if _c_apply_mask is not None:
        return _c_apply_mask(data, key)
    n = len(data)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def _header(opcode: int, length: int, *, masked: bool) -> bytes:
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = bytes((0x80 | opcode, mask_bit | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, mask_bit | 127)) + length.to_bytes(8, "big")
    return head + _ZERO_KEY if masked else head


def frame(payload: bytes, *, opcode: int = 1, masked: bool = False) -> bytes:
    """One final WebSocket frame (text by default) carrying ``payload``."""
    return _header(opcode, len(payload), masked=masked) + payload


class PeerConnection:
    """One WebSocket connection of the peer, and what the peer learned about its other end."""

    def __init__(self, sock: socket.socket, *, client: bool, accepted_ns: int) -> None:
        self.sock = sock
        self.client = client
        #: When the TCP connection was accepted (server) or established (client).
        self.accepted_ns = accepted_ns
        self.path = ""
        self.open = False
        self.closed = False
        self.closing = False
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.out: list[bytes] = []
        self.fragments: list[bytes] | None = None
        self.fragment_opcode = 0
        #: Function id -> arrival time of its first ``registerfunction`` frame.
        self.functions: dict[str, int] = {}
        #: Arrival time of every ``registerfunction`` frame, in order.
        self.registration_times: list[int] = []
        self.worker_id: str | None = None
        self.registered_worker = False

    def send_json(self, obj: Any) -> None:
        self.out.append(frame(orjson.dumps(obj), masked=self.client))


class LoadResult(dict[str, Any]):
    """Numbers from one :meth:`Peer.run_load` (a plain dict with a readable repr)."""


class Peer:
    """The load-generating peer. Not thread-safe; drive it from one thread with :meth:`poll`."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self.connections: list[PeerConnection] = []
        self._routes: dict[str, PeerConnection] = {}
        self._forwarded: dict[str, tuple[PeerConnection, str]] = {}
        #: Function id -> the calls of it kept unanswered: (caller, invocation id, payload).
        self._held: dict[str, list[tuple[PeerConnection, Any, Any]]] = {}
        # Load state, kept on the peer so the hot path reads plain attributes.
        self._pending: dict[Any, int] = {}
        self._queued: list[str] = []
        self._load_conn: PeerConnection | None = None
        self._head = b""
        self._tail = b""
        self._id_prefix = ""
        self._counter = 0
        self._sending = False
        self._measuring = False
        self._latencies: list[int] = []
        self._done = 0
        self._errors = 0
        self._mismatches = 0
        self._expected: Any = None
        self._strip_caller = False
        self._recv_ns = 0
        self.last_error: Any = None

    # ------------------------------------------------------------------ lifecycle

    def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start accepting workers; returns the port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
        self._listener = sock
        self._sel.register(sock, selectors.EVENT_READ, None)
        return int(sock.getsockname()[1])

    def connect(self, url: str, timeout: float = 5.0) -> PeerConnection:
        """Open a client connection to ``url`` (``ws://host:port/path``) and finish the upgrade."""
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 80
        path = parts.path or "/"
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        sock.sendall(request)
        data = bytearray()
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(_RECV_SIZE)
            if not chunk:
                sock.close()
                raise PeerError(f"{url}: connection closed during the upgrade")
            data += chunk
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = _parse_headers(header_lines)
        expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
        if status_line.split(" ", 2)[1:2] != ["101"] or headers.get("sec-websocket-accept") != (
            expected
        ):
            sock.close()
            raise PeerError(f"{url}: upgrade refused: {status_line!r}")
        sock.setblocking(False)
        conn = PeerConnection(sock, client=True, accepted_ns=_perf_ns())
        conn.path = path
        conn.open = True
        self.connections.append(conn)
        self._sel.register(sock, selectors.EVENT_READ, conn)
        if rest:
            conn.rbuf += rest
            self._parse(conn)
            self._flush()
        return conn

    def close(self) -> None:
        for conn in list(self.connections):
            self._drop(conn)
        if self._listener is not None:
            self._sel.unregister(self._listener)
            self._listener.close()
            self._listener = None
        self._sel.close()

    def drop(self, conn: PeerConnection) -> None:
        """Close one connection (best effort, without a closing handshake)."""
        self._drop(conn)

    # ------------------------------------------------------------------ event loop

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for socket events, handle them, write what is queued."""
        for key, events in self._sel.select(timeout):
            conn = key.data
            if conn is None:
                self._accept()
                continue
            if events & selectors.EVENT_READ:
                self._read(conn)
            if events & selectors.EVENT_WRITE and not conn.closed:
                self._write(conn)
        self._flush()

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        *,
        alive: Callable[[], bool] | None = None,
    ) -> bool:
        """Poll until ``predicate()`` holds; False on timeout or when ``alive()`` turns False."""
        deadline = time.perf_counter() + timeout
        while not predicate():
            if alive is not None and not alive():
                return False
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return False
            self.poll(min(remaining, 0.005))
        return True

    def find_registration(self, function_id: str) -> PeerConnection | None:
        """The open main connection that registered ``function_id``, if any."""
        for conn in self.connections:
            if conn.open and conn.path == "/" and function_id in conn.functions:
                return conn
        return None

    # ------------------------------------------------------------------ I/O

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = PeerConnection(sock, client=False, accepted_ns=_perf_ns())
            self.connections.append(conn)
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: PeerConnection) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        self._recv_ns = _perf_ns()
        conn.rbuf += data
        if conn.open:
            self._parse(conn)
        else:
            self._server_handshake(conn)

    def _write(self, conn: PeerConnection) -> None:
        try:
            sent = conn.sock.send(conn.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        del conn.wbuf[:sent]
        if not conn.wbuf:
            self._sel.modify(conn.sock, selectors.EVENT_READ, conn)
            if conn.closing:
                self._drop(conn)

    def _flush(self) -> None:
        for conn in list(self.connections) if len(self.connections) > 1 else self.connections:
            if not conn.out:
                if conn.closing and not conn.wbuf:
                    self._drop(conn)
                continue
            data = b"".join(conn.out)
            conn.out.clear()
            if conn is self._load_conn and self._queued:
                stamp = _perf_ns()
                pending = self._pending
                for iid in self._queued:
                    pending[iid] = stamp
                self._queued.clear()
            if conn.wbuf:
                conn.wbuf += data
                continue
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                continue
            if sent < len(data):
                conn.wbuf += data[sent:]
                self._sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            elif conn.closing:
                self._drop(conn)

    def _drop(self, conn: PeerConnection) -> None:
        if conn.closed:
            return
        conn.closed = True
        conn.open = False
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(conn.sock)
        conn.sock.close()
        if conn in self.connections:
            self.connections.remove(conn)
        for function_id in [f for f, c in self._routes.items() if c is conn]:
            del self._routes[function_id]

    def _server_handshake(self, conn: PeerConnection) -> None:
        end = conn.rbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.rbuf) > 65536:
                self._drop(conn)
            return
        head = bytes(conn.rbuf[:end]).decode("latin-1")
        del conn.rbuf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        method, _, rest = request_line.partition(" ")
        target = rest.partition(" ")[0]
        path = target.partition("?")[0]
        headers = _parse_headers(header_lines)
        key = headers.get("sec-websocket-key")
        if method != "GET" or key is None or path not in ("/", "/otel"):
            conn.out.append(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            conn.closing = True
            return
        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest())
        conn.out.append(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        conn.path = path
        conn.open = True
        if path == "/":
            conn.send_json(
                {
                    "type": "workerregistered",
                    "worker_id": str(uuid.uuid4()),
                    "reattach_token": str(uuid.uuid4()),
                }
            )
        if conn.rbuf:
            self._parse(conn)

    def _parse(self, conn: PeerConnection) -> None:
        buf = conn.rbuf
        n = len(buf)
        pos = 0
        main = conn.path == "/"
        on_message = self._on_message
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:
                end = start + 4 + length
                if end > n:
                    break
                payload = _unmask(bytes(buf[start + 4 : end]), bytes(buf[start : start + 4]))
            else:
                end = start + length
                if end > n:
                    break
                payload = bytes(buf[start:end])
            pos = end
            if b0 == 0x81 and main:
                on_message(conn, payload)
            else:
                self._on_frame(conn, b0, payload)
            if conn.closed:
                return
        if pos:
            del buf[:pos]

    def _on_frame(self, conn: PeerConnection, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode == 0x8:
            if not conn.closing:
                conn.out.append(frame(payload[:2], opcode=0x8, masked=conn.client))
                conn.closing = True
            return
        if opcode == 0x9:
            conn.out.append(frame(payload, opcode=0xA, masked=conn.client))
            return
        if opcode == 0xA:
            return
        if opcode == 0x0:
            if conn.fragments is None:
                return
            conn.fragments.append(payload)
            if not fin:
                return
            payload = b"".join(conn.fragments)
            opcode = conn.fragment_opcode
            conn.fragments = None
        elif not fin:
            conn.fragments = [payload]
            conn.fragment_opcode = opcode
            return
        if conn.path != "/" or (opcode == 0x2 and payload[:4] in _TELEMETRY_PREFIXES):
            return
        self._on_message(conn, payload)

    # ------------------------------------------------------------------ protocol

    def _on_message(self, conn: PeerConnection, data: bytes) -> None:
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if type(msg) is not dict:
            return
        kind = msg.get("type")
        if kind == "invocationresult":
            iid = msg.get("invocation_id")
            start = self._pending.pop(iid, None)
            if start is None:
                self._on_foreign_result(iid, msg)
                return
            if self._measuring:
                self._latencies.append(self._recv_ns - start)
                self._done += 1
            if "error" in msg:
                self._errors += 1
                self.last_error = msg["error"]
            else:
                result = msg.get("result")
                if result != self._expected:
                    if self._strip_caller and type(result) is dict:
                        result.pop("_caller_worker_id", None)
                    if result != self._expected:
                        self._mismatches += 1
            if self._sending:
                self._counter += 1
                iid = f"{self._id_prefix}{self._counter:012x}"
                self._load_conn.out.append(self._head + iid.encode() + self._tail)  # type: ignore[union-attr]
                self._queued.append(iid)
        elif kind == "invokefunction":
            self._on_invoke(conn, msg)
        elif kind == "registerfunction":
            now = _perf_ns()
            function_id = msg.get("id")
            conn.registration_times.append(now)
            if isinstance(function_id, str):
                conn.functions.setdefault(function_id, now)
                self._routes[function_id] = conn
        elif kind == "workerregistered":
            conn.worker_id = msg.get("worker_id")

    def _on_invoke(self, conn: PeerConnection, msg: dict[str, Any]) -> None:
        function_id = msg.get("function_id")
        iid = msg.get("invocation_id")
        if function_id == _WORKERS_REGISTER:
            conn.registered_worker = True
            if iid is not None:
                conn.send_json(
                    {
                        "type": "invocationresult",
                        "invocation_id": iid,
                        "function_id": function_id,
                        "result": {"success": True},
                    }
                )
            return
        held = self._held.get(function_id) if isinstance(function_id, str) else None
        if held is not None:
            if iid is not None:
                held.append((conn, iid, msg.get("data")))
            return
        target = self._routes.get(function_id) if isinstance(function_id, str) else None
        if target is None or not target.open:
            if iid is not None:
                conn.send_json(
                    {
                        "type": "invocationresult",
                        "invocation_id": iid,
                        "function_id": function_id,
                        "error": {
                            "code": "function_not_found",
                            "message": f"Function {function_id} not found in namespace default.",
                        },
                    }
                )
            return
        if iid is None:
            iid = str(uuid.uuid4())
        else:
            self._forwarded[iid] = (conn, function_id)  # type: ignore[assignment]
        target.send_json(
            {
                "type": "invokefunction",
                "invocation_id": iid,
                "function_id": function_id,
                "data": msg.get("data"),
            }
        )

    def _on_foreign_result(self, iid: Any, msg: dict[str, Any]) -> None:
        forwarded = self._forwarded.pop(iid, None)
        if forwarded is None:
            return
        caller, function_id = forwarded
        if caller.closed:
            return
        reply: dict[str, Any] = {
            "type": "invocationresult",
            "invocation_id": iid,
            "function_id": function_id,
        }
        if "error" in msg:
            reply["error"] = msg["error"]
        elif msg.get("result") is not None:
            reply["result"] = msg["result"]
        caller.send_json(reply)

    # ------------------------------------------------------------------ held calls

    def hold(self, function_id: str) -> None:
        """Keep every call of ``function_id`` unanswered from now on, until released."""
        self._held.setdefault(function_id, [])

    def held_count(self, function_id: str) -> int:
        return len(self._held.get(function_id, ()))

    def release_held(self, function_id: str) -> int:
        """Answer every held call of ``function_id`` with its own payload and stop holding it.

        Returns how many calls were answered (calls of a closed connection are dropped).
        """
        answered = 0
        for conn, iid, data in self._held.pop(function_id, []):
            if conn.closed:
                continue
            conn.send_json(
                {
                    "type": "invocationresult",
                    "invocation_id": iid,
                    "function_id": function_id,
                    "result": data,
                }
            )
            answered += 1
        self._flush()
        return answered

    # ------------------------------------------------------------------ load

    def call_once(
        self, conn: PeerConnection, function_id: str, data: Any, timeout: float
    ) -> dict[str, Any] | None:
        """One synchronous invocation outside any load; returns the result message or None."""
        iid = str(uuid.uuid4())
        box: dict[str, Any] = {}
        self._forwarded[iid] = (_Catcher(box), function_id)  # type: ignore[assignment]
        request = {"type": "invokefunction", "invocation_id": iid, "function_id": function_id}
        request["data"] = data
        conn.send_json(request)
        ok = self.wait_until(lambda: bool(box) or conn.closed, timeout)
        self._forwarded.pop(iid, None)
        return box.get("msg") if ok else None

    def run_load(
        self,
        conn: PeerConnection,
        function_id: str,
        payload: Any,
        *,
        inflight: int,
        warmup: float,
        duration: float,
        drain_timeout: float = 5.0,
        cpu_probes: Mapping[str, Callable[[], float]] | None = None,
        strip_caller_id: bool = False,
    ) -> LoadResult:
        """Keep ``inflight`` calls of ``function_id`` going on ``conn``; measure one window.

        Calls run for ``warmup`` seconds, then for ``duration`` seconds with counting on, then no
        new calls are sent and the ones in flight get up to ``drain_timeout`` seconds to finish.
        ``cpu_probes`` map a name to a callable returning a process's CPU seconds; each is read at
        both edges of the window. Calls still unanswered after the drain are reported as
        ``stuck`` (a deadlocked or dead worker).
        """
        prefix = b'{"type":"invokefunction","invocation_id":"'
        suffix = (
            b'","function_id":' + orjson.dumps(function_id) + b',"data":' + orjson.dumps(payload)
        )
        suffix += b"}"
        self._id_prefix = str(uuid.uuid4())[:24]
        length = len(prefix) + len(self._id_prefix) + 12 + len(suffix)
        self._head = _header(0x1, length, masked=conn.client) + prefix
        self._tail = suffix
        self._counter = 0
        self._pending.clear()
        self._queued.clear()
        self._load_conn = conn
        self._expected = orjson.loads(orjson.dumps(payload))
        self._strip_caller = strip_caller_id
        self._latencies = []
        self._done = self._errors = self._mismatches = 0
        self.last_error = None
        self._measuring = False
        self._sending = True
        probes = dict(cpu_probes or {})

        for _ in range(inflight):
            self._counter += 1
            iid = f"{self._id_prefix}{self._counter:012x}"
            conn.out.append(self._head + iid.encode() + self._tail)
            self._queued.append(iid)
        self._flush()

        clock = time.perf_counter
        measure_at = clock() + warmup
        stop_at = measure_at + duration
        t0 = t1 = 0
        cpu0: dict[str, float] = {}
        cpu1: dict[str, float] = {}
        own0 = own1 = 0.0
        phase = 0  # 0 warm-up, 1 measuring, 2 draining
        drain_until = 0.0
        lost = False
        try:
            while True:
                now = clock()
                if phase == 0 and now >= measure_at:
                    cpu0 = {name: probe() for name, probe in probes.items()}
                    own0 = time.process_time()
                    t0 = _perf_ns()
                    self._measuring = True
                    phase = 1
                elif phase == 1 and now >= stop_at:
                    t1 = _perf_ns()
                    self._measuring = False
                    self._sending = False
                    own1 = time.process_time()
                    cpu1 = {name: probe() for name, probe in probes.items()}
                    phase = 2
                    drain_until = now + drain_timeout
                elif phase == 2 and (not self._pending or now >= drain_until):
                    break
                if conn.closed:
                    lost = True
                    if phase == 1:
                        t1 = _perf_ns()
                        own1 = time.process_time()
                    break
                if phase == 0:
                    timeout = measure_at - now
                elif phase == 1:
                    timeout = stop_at - now
                else:
                    timeout = drain_until - now
                self.poll(max(0.0, min(timeout, 0.05)))
        finally:
            self._measuring = False
            self._sending = False
            self._load_conn = None
            stuck = len(self._pending)
            self._pending.clear()
            self._queued.clear()

        seconds = (t1 - t0) / 1e9 if t1 > t0 else 0.0
        lat = sorted(self._latencies)
        result = LoadResult(
            calls=self._done,
            seconds=seconds,
            calls_per_s=self._done / seconds if seconds else 0.0,
            p50_us=_percentile(lat, 0.50) / 1e3,
            p99_us=_percentile(lat, 0.99) / 1e3,
            errors=self._errors,
            mismatches=self._mismatches,
            stuck=stuck,
            lost=lost,
            peer_cpu_pct=100.0 * (own1 - own0) / seconds if seconds else 0.0,
            last_error=self.last_error,
        )
        for name in probes:
            if name in cpu0 and name in cpu1:
                used = cpu1[name] - cpu0[name]
                result[f"{name}_cpu_pct"] = 100.0 * used / seconds if seconds else 0.0
                result[f"{name}_cpu_us_per_call"] = 1e6 * used / self._done if self._done else 0.0
        return result


class _Catcher:
    """Stands in for a caller connection in :meth:`Peer.call_once`: keeps the reply."""

    closed = False

    def __init__(self, box: dict[str, Any]) -> None:
        self._box = box

    def send_json(self, obj: Any) -> None:
        self._box["msg"] = obj


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[index])
