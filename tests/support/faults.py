"""Faults a generated service meets in production, sent over real sockets.

Shared by tests/test_faults.py (the quick cases) and benchmarks/load_faults.py (the measured run):
a uvicorn process on a project, hostile request bodies written byte by byte, a load loop, and the
process facts (RSS, worker pids) read from /proc.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .notebooks import Service, wait_for  # noqa: F401  (wait_for: re-exported for the fault tests)


class Uvicorn(Service):
    """`uvicorn app.main:app` on a project with the Dockerfile CMD's flags.

    ``wait_ready=False`` waits for /healthz only: a service that refuses its model must still be alive."""

    def __init__(self, project: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                 wait_ready: bool = True, start_timeout: float = 120) -> None:
        super().__init__(project, env=env, args=("--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "75", *args),
                         ready_path="/readyz" if wait_ready else "/healthz", ready_timeout=start_timeout,
                         stop_timeout=30)

    def log(self) -> str:  # type: ignore[override]  # tests read it as a call
        return self.output()


# --- process facts ------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (clock ticks: 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return sorted(int(p) for p in children.read_text().split()) if children.exists() else []


def worker_pids(supervisor: int) -> list[int]:
    """uvicorn --workers N: the supervisor's children that run the app (not its multiprocessing helpers)."""
    workers = []
    for pid in child_pids(supervisor):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmdline:
            workers.append(pid)
    return workers


# --- raw HTTP: hostile bodies written by hand ---------------------------------------------------------


@dataclass
class RawAnswer:
    status: int | None  # None: the server closed without an answer
    seconds: float
    head: str = ""
    body: bytes = b""


def _head(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *[f"{k}: {v}" for k, v in headers.items()]]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_answer(sock: socket.socket, started: float, timeout: float) -> RawAnswer:
    sock.settimeout(timeout)
    data = b""
    try:  # every request here says Connection: close, so the answer ends where the stream does
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    if not data:
        return RawAnswer(None, time.monotonic() - started)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return RawAnswer(status, time.monotonic() - started, head.decode("latin-1"), body)


def send_body(port: int, body: bytes, content_type: str = "application/json", path: str = "/predict",
              timeout: float = 30) -> RawAnswer:
    """One request with a complete body; the answer's status and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_head(port, path, {"Content-Type": content_type, "Content-Length": str(len(body)),
                                        "Connection": "close"}) + body)
        return _read_answer(sock, started, timeout)


def one_at_a_time(port: int, body: bytes, requests: int, path: str = "/predict", timeout: float = 30) -> list[int]:
    """``requests`` POSTs on one keep-alive connection, each sent the moment the previous answer is in
    (a few microseconds of Python between them, where an HTTP client library takes hundreds); the statuses."""
    request = _head(port, path, {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body
    statuses = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        buffer = b""
        for _ in range(requests):
            sock.sendall(request)
            while b"\r\n\r\n" not in buffer:
                buffer += sock.recv(65536) or _closed()
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(buffer) < length:
                buffer += sock.recv(65536) or _closed()
            buffer = buffer[length:]
            statuses.append(int(head.split(b" ", 2)[1]))
    return statuses


def _closed() -> bytes:
    raise AssertionError("the server closed the connection")


def send_endless_body(port: int, declared: int | None, chunk: int = 1 << 20, timeout: float = 30,
                      path: str = "/predict") -> RawAnswer:
    """Stream zeros (up to 100 MB, or chunked without a length) until the server answers or hangs up."""
    headers = {"Content-Type": "application/json", "Connection": "close"}
    headers.update({"Content-Length": str(declared)} if declared is not None else {"Transfer-Encoding": "chunked"})
    started = time.monotonic()
    limit = declared if declared is not None else 100 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_head(port, path, headers))
        sent, block = 0, b"0" * chunk
        while sent < limit and time.monotonic() - started < timeout:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:  # the server answered before the body ended
                break
            if writable:
                piece = block if declared is not None else f"{len(block):x}\r\n".encode() + block + b"\r\n"
                try:
                    sock.sendall(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(block)
        return _read_answer(sock, started, timeout)


def send_slowly(port: int, body: bytes, every: float, timeout: float = 60, path: str = "/predict") -> RawAnswer:
    """Slow-loris: the headers at once, then the body one byte every ``every`` seconds."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(_head(port, path, {"Content-Type": "application/json", "Content-Length": str(len(body)),
                                        "Connection": "close"}))
        for byte in body:
            readable, _, _ = select.select([sock], [], [], every)
            if readable or time.monotonic() - started > timeout:
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
        return _read_answer(sock, started, max(1.0, timeout - (time.monotonic() - started)))


def nested_json(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"


HOSTILE_BODIES: dict[str, tuple[bytes, str]] = {
    # name: (body, content type)
    "nested 100,000 deep": (nested_json(100_000), "application/json"),
    "nested objects 5,000 deep": (b'{"instances": [' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"]}",
                                  "application/json"),
    "text/plain": (b'{"instances": []}', "text/plain"),
    "form-urlencoded": (b"instances=1", "application/x-www-form-urlencoded"),
    "multipart": (b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
                  "multipart/form-data; boundary=x"),
    "non-UTF-8 bytes": (b'\xff\xfe{"instances": [1]}', "application/json"),
    "Latin-1 text": ('{"instances": ["caf\xe9"]}'.encode("latin-1"), "application/json"),
    "not JSON": (b"{instances: [1,", "application/json"),
}


# --- load ---------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


async def _load(url: str, body: dict, requests: int, connections: int, stop: threading.Event | None) -> LoadResult:
    result, issued = LoadResult(), 0
    payload = json.dumps(body).encode()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal issued
            while issued < requests and not (stop is not None and stop.is_set()):
                issued += 1
                started = time.perf_counter()
                try:
                    response = await client.post("/predict", content=payload,
                                                 headers={"Content-Type": "application/json"})
                    result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
                except httpx.HTTPError as exc:
                    name = type(exc).__name__
                    result.errors[name] = result.errors.get(name, 0) + 1
                result.latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        result.seconds = time.perf_counter() - started
    return result


def load(url: str, body: dict, requests: int, connections: int, stop: threading.Event | None = None) -> LoadResult:
    """``requests`` POSTs of ``body`` to /predict over ``connections`` keep-alive connections (or until ``stop``)."""
    return asyncio.run(_load(url, body, requests, connections, stop))


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False
