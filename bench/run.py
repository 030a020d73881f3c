"""Load benchmark: the gateway's HTTP and gRPC doors against the fake upstream called directly.

    .venv/bin/python bench/run.py                 # all workloads, 10 s each
    .venv/bin/python bench/run.py --quick         # smoke run
    .venv/bin/python bench/run.py --only W1,L1 --targets direct,http

See bench/README.md. Everything runs on 127.0.0.1; every process started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_load import METHOD_PATH  # a sibling script: bench/ is sys.path[0] when run.py runs

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.testing.fake_upstream import png_image

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
MODEL = "bench-image"
UPSTREAM_MODEL = "openai/gpt-image-1"
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
TARGETS = ("direct", "http", "grpc", "scale")
# The scale target: this many gateway replicas (default) behind HAProxy, on PostgreSQL and Redis.
SCALE_REPLICAS = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclasses.dataclass(frozen=True)
class Workload:
    """One load: the size and delay of the fake's images and the number of connections."""

    name: str
    description: str
    image_bytes: int
    delay: float
    connections: int
    # Edits: input images uploaded with each request (multipart), and their size.
    upload_images: int = 0
    upload_bytes: int = 0

    @property
    def path(self) -> str:
        """The Images API route the workload posts to."""
        return "/v1/images/edits" if self.upload_images else "/v1/images/generations"


WORKLOADS = {
    w.name: w
    for w in (
        Workload("W1", "~1 KB images, 16 connections", 1_000, 0.0, 16),
        Workload("W2", "~1.5 MB images, 8 connections", 1_500_000, 0.0, 8),
        Workload("W3", "upstream delay 5 s, 1,000 connections", 1_000, 5.0, 1000),
        Workload("L1", "one connection: latency the gateway adds", 1_000, 0.0, 1),
        Workload("C64", "~1 KB images, 64 connections: commits under load", 1_000, 0.0, 64),
        Workload("E1", "edits of 2 ~1.5 MB uploads, 8 connections", 1_000, 0.0, 8, 2, 1_500_000),
        Workload(
            "E2", "edits of one 10 MB upload, 16 connections: memory", 1_000, 0.0, 16, 1, 10_000_000
        ),
    )
}


# -- processes -------------------------------------------------------------------------------


class Processes:
    """Starts children in their own process groups and kills every group on close."""

    def __init__(self, log_dir: Path, cwd: Path) -> None:
        """Start with no children.

        Args:
            log_dir: The folder for each child's stderr (``<name>.log``).
            cwd: The working directory of every child; not the repository, so that a
                ``python -m`` child imports what its interpreter has installed.
        """
        self.log_dir = log_dir
        # Not the repository: a `python -m` child (the fake, the gateway's HTTP door) would
        # import the working tree from its cwd instead of what its interpreter has installed,
        # so a --gateway-cmd from another checkout would run this checkout's HTTP door.
        self.cwd = cwd
        self.children: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own process group, stderr to ``<name>.log``, stdout piped."""
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            child = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the child's process group, then SIGKILL it if still there after timeout."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        # Grandchildren that left the group's leader behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        if child.stdout is not None:
            child.stdout.close()
        if child in self.children:
            self.children.remove(child)

    def close(self) -> None:
        """Stop every child still running, the last started first."""
        for child in reversed(list(self.children)):
            self.stop(child, timeout=5.0)


def free_port() -> int:
    """A port the OS says is free now (the gateway's CLI takes explicit ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log_tail(log_dir: Path, name: str, lines: int = 30) -> str:
    """The last ``lines`` lines of the child ``name``'s log, or "" when there is no log."""
    path = log_dir / f"{name}.log"
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def read_line(child: subprocess.Popen[bytes], timeout: float) -> str:
    """The child's next stdout line, or an error if it does not come in time."""
    assert child.stdout is not None
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(child.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not result:
        raise RuntimeError(f"no output from {child.args!r} within {timeout} s")
    return result[0].decode().strip()


# -- /proc sampling --------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a live process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = stat[0]
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return [pid for pid in tree if pid == root or pid in parents]


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [Path(a.decode(errors="replace")).name for a in argv[:3] if a]
    return f"{pid} {' '.join(words)}"


class TreeMonitor:
    """Samples peak RSS (VmHWM) and CPU time of a process and its descendants in a thread."""

    def __init__(self, roots: dict[str, int], interval: float = 0.25) -> None:
        """Prepare the sampling thread (it starts on ``__enter__``).

        Args:
            roots: The pids to watch, by name; each pid's tree is counted under its name.
            interval: Seconds between two samples.
        """
        self.roots = roots
        self.interval = interval
        self.peak_kb: dict[str, dict[str, int]] = {name: {} for name in roots}
        self.cpu_start: dict[str, dict[int, float]] = {name: {} for name in roots}
        self.cpu_last: dict[str, dict[int, float]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, root in self.roots.items():
            for pid in process_tree(root):
                hwm = _status_kb(pid, "VmHWM")
                label = _describe(pid)
                if hwm > self.peak_kb[name].get(label, 0):
                    self.peak_kb[name][label] = hwm
                stat = _proc_stat(pid)
                if stat is not None:
                    self.cpu_start[name].setdefault(pid, stat[1])
                    self.cpu_last[name][pid] = stat[1]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> TreeMonitor:
        """Take a first sample, then keep sampling in the thread."""
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the thread and take a last sample."""
        self._stop.set()
        self._thread.join()
        self._sample()

    def cpu_seconds(self, name: str) -> float:
        """CPU seconds the processes of ``name`` used between their first and last samples."""
        start, last = self.cpu_start[name], self.cpu_last[name]
        return sum(last[pid] - start[pid] for pid in last)

    def peak_mb(self, name: str) -> float:
        """The sum of the peak RSS of the processes of ``name``, in MB."""
        return sum(self.peak_kb[name].values()) / 1024

    def peak_detail(self, name: str) -> dict[str, float]:
        """The peak RSS in MB of each process of ``name``, by pid and command."""
        return {label: round(kb / 1024, 1) for label, kb in self.peak_kb[name].items()}


# -- load drivers ----------------------------------------------------------------------------


@dataclasses.dataclass
class LoadResult:
    """What one load run measured: requests, successes, latencies, errors and bytes."""

    requests: int  # completed responses, errors included
    ok: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: dict[str, int]
    driver_cpu_s: float = 0.0
    bytes: int = 0  # wrk: everything read, headers included; gRPC: serialized answers
    wrong: int | None = None  # gRPC: OK answers that were not the right image (wrk: None)
    wrong_examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful responses per second."""
        return self.ok / self.duration_s if self.duration_s else 0.0


def children_cpu() -> float:
    """CPU seconds of all reaped children so far.

    A difference around one load run is the load driver's own, since the gateway and the fake
    are reaped only later.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    procs: Processes,
    url: str,
    body_file: Path,
    token: str,
    *,
    connections: int,
    duration: float,
    timeout: float,
    threads: int,
    content_type: str = "application/json",
) -> LoadResult:
    """Run wrk with ``post.lua``, POSTing ``body_file`` to ``url``; return what it measured."""
    before = children_cpu()
    argv = [
        "wrk",
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{duration:g}s",
        f"--timeout={timeout:g}s",
        "-s",
        str(BENCH / "post.lua"),
        url,
        "--",
        str(body_file),
        token,
        content_type,
    ]
    child = procs.start("wrk", argv)
    result = _wait_wrk(procs, child, duration)
    result.driver_cpu_s = children_cpu() - before
    return result


def _wait_wrk(procs: Processes, child: subprocess.Popen[bytes], duration: float) -> LoadResult:
    assert child.stdout is not None
    try:
        out, _ = child.communicate(timeout=duration + 120)
    finally:
        procs.stop(child)
    for line in out.decode().splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"wrk gave no summary: {out.decode()[-2000:]}")
    errors = {k: v for k, v in data["errors"].items() if v}
    latency = data["latency_us"]
    return LoadResult(
        requests=data["requests"],
        ok=data["requests"] - data["errors"]["status"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=latency["mean"] / 1000,
        errors={("http>=400" if k == "status" else k): v for k, v in errors.items()},
        bytes=data["bytes"],
    )


def run_grpc_load(
    procs: Processes,
    target: str,
    token: str,
    body: dict[str, Any],
    *,
    image_bytes: int,
    connections: int,
    duration: float,
    timeout: float,
    processes: int,
    channels: int,
) -> LoadResult:
    """Run grpc_load.py in ``processes`` processes against ``target``; merge their results."""
    before = children_cpu()
    processes = max(1, min(processes, connections))
    start_at = time.time() + 3.0  # all driver processes connect first, then start together
    children = []
    for index in range(processes):
        share = connections // processes + (1 if index < connections % processes else 0)
        argv = [
            PYTHON,
            str(BENCH / "grpc_load.py"),
            f"--target={target}",
            f"--token={token}",
            f"--body={json.dumps(body)}",
            f"--image-bytes={image_bytes}",
            f"--concurrency={share}",
            f"--channels={max(1, channels // processes)}",
            f"--duration={duration}",
            f"--timeout={timeout}",
            f"--start-at={start_at}",
        ]
        children.append(procs.start(f"grpc_load-{index}", argv))
    result = _wait_grpc(procs, children, duration)
    result.driver_cpu_s = children_cpu() - before
    return result


def _wait_grpc(
    procs: Processes, children: list[subprocess.Popen[bytes]], duration: float
) -> LoadResult:
    results = []
    try:
        for child in children:
            out, _ = child.communicate(timeout=duration + 120)
            if child.returncode != 0:
                raise RuntimeError(f"gRPC driver failed (exit {child.returncode})")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for child in children:
            procs.stop(child)
    latencies = array.array("d")
    codes: dict[str, int] = {}
    for result in results:
        latencies.frombytes(base64.b64decode(result["latencies_b64"]))
        for code, count in result["codes"].items():
            codes[code] = codes.get(code, 0) + count
    ordered = sorted(latencies)
    return LoadResult(
        requests=len(ordered),
        ok=codes.get("OK", 0),
        duration_s=max(r["duration_s"] for r in results),
        p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        mean_ms=(statistics.fmean(ordered) * 1000) if ordered else 0.0,
        errors={code: count for code, count in codes.items() if code != "OK"},
        bytes=sum(r["bytes"] for r in results),
        wrong=sum(r["wrong"] for r in results),
        wrong_examples=[example for r in results for example in r["wrong_examples"]][:3],
    )


def percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values (what wrk's histogram reports too)."""
    if not ordered:
        return 0.0
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


# -- the systems under test ------------------------------------------------------------------


def start_fake(procs: Processes, workload: Workload, api_key: str) -> tuple[int, int]:
    """Start the fake upstream for a workload; returns (pid, port)."""
    argv = [
        PYTHON,
        "-m",
        "aqueduct_grpc.testing.fake_upstream",
        "--port=0",
        f"--image-bytes={workload.image_bytes}",
        f"--delay={workload.delay}",
        f"--api-key={api_key}",
    ]
    child = procs.start(f"fake-{workload.name}", argv)
    line = read_line(child, timeout=60)
    if not line.startswith("READY "):
        tail = log_tail(procs.log_dir, f"fake-{workload.name}")
        raise RuntimeError(f"fake upstream did not start: {line!r}\n{tail}")
    fields = dict(word.split("=", 1) for word in line.split()[1:])
    return child.pid, int(fields["port"])


@dataclasses.dataclass
class Gateway:
    """A started gateway: its process and the addresses of its HTTP and gRPC doors."""

    child: subprocess.Popen[bytes]
    http_url: str
    grpc_target: str


def gateway_env(upstream_key: str) -> dict[str, str]:
    """This process's environment plus the upstream key the config reads, output unbuffered."""
    env = dict(os.environ)
    env["BENCH_UPSTREAM_KEY"] = upstream_key
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def write_config(
    path: Path,
    upstream_port: int,
    timeout: float,
    limits_storage: str | None = None,
    *,
    budgets: bool = False,
) -> None:
    """Write a gateway config serving ``MODEL`` from the fake upstream on ``upstream_port``.

    ``limits_storage`` (a ``redis://`` URL) sets ``limits.storage``, where replicas share their
    rate-limit counters; no limit is configured either way. With ``budgets``, every image has a
    price and every token a monthly budget far above what a run spends, so that each request
    is checked and held against it.
    """
    config: dict[str, Any] = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": UPSTREAM_MODEL,
                    "api_base": f"http://{HOST}:{upstream_port}/v1",
                    "api_key": "os.environ/BENCH_UPSTREAM_KEY",
                    "timeout": timeout,
                },
                "model_info": {"mode": "image_generation"},
            }
        ]
    }
    if budgets:
        config["model_list"][0]["model_info"]["cost_per_image"] = {"1024x1024": 0.001}
        config["budgets"] = {"per_month_usd": 1_000_000}
    if limits_storage is not None:
        config["limits"] = {"storage": limits_storage}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def create_token(
    gateway_cmd: list[str],
    data_dir: Path,
    env: dict[str, str],
    database_url: str | None = None,
) -> str:
    """Create an API token with the gateway's CLI (in ``database_url`` if given); return it."""
    argv = [*gateway_cmd, "tokens", "create", "--name", "bench", "--data-dir", str(data_dir)]
    if database_url is not None:
        argv += ["--database-url", database_url]
    done = subprocess.run(
        argv, cwd=data_dir.parent, env=env, capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(
            f"{shlex.join(argv)} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout.strip().splitlines()[-1].strip()


def start_gateway(
    procs: Processes,
    gateway_cmd: list[str],
    config: Path,
    data_dir: Path,
    env: dict[str, str],
    name: str,
    extra_args: tuple[str, ...] = (),
) -> Gateway:
    """Start ``gateway_cmd serve`` on two free ports, without waiting (see ``wait_ready``)."""
    grpc_port, http_port = free_port(), free_port()
    argv = [
        *gateway_cmd,
        "serve",
        "--config",
        str(config),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--data-dir",
        str(data_dir),
        *extra_args,
    ]
    child = procs.start(name, argv, env=env)
    return Gateway(child, f"http://{HOST}:{http_port}", f"{HOST}:{grpc_port}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_ready(gateway: Gateway, log_dir: Path, name: str, timeout: float = 60.0) -> None:
    """Wait until both doors accept connections; fail early if the gateway exits."""
    http_port = int(gateway.http_url.rsplit(":", 1)[1])
    grpc_port = int(gateway.grpc_target.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.child.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {gateway.child.returncode}:\n{log_tail(log_dir, name)}"
            )
        if _port_open(http_port) and _port_open(grpc_port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"gateway not listening after {timeout} s:\n{log_tail(log_dir, name)}")


# -- checks: the answers must be right, not only fast ----------------------------------------
#
# Before the load, one check call per door parses a full answer: exactly one image, equal to the
# PNG the fake serves. For the HTTP targets it also measures the exact size of that answer on
# the wire (status line, headers, body), which every answer of the run has too (fixed-width
# Date, Content-Length and `created`). During the load:
# - wrk reads every response but does not parse it (a Lua response() callback would copy every
#   body into Lua); its totals must fit: bytes read >= successes x that size. A success that
#   carries no image, or a smaller one, shows as missing bytes.
# - the gRPC driver parses every OK answer and compares its image with the fake's PNG.
# - for every target, the fake upstream's count of requests it answered with images during the
#   load must be at least the number of successes: a gateway cannot answer without asking.
# A target whose answers fail any of these gets an error: its row prints FAILED, not figures.


_BOUNDARY = "bench-edit-boundary-7f3a"


def request_body(workload: Workload, model: str) -> tuple[bytes, str]:
    """The body every request of the workload sends, and its content type.

    Generations: the JSON. Edits: a multipart form as OpenAI's SDK sends it,
    with `upload_images` real, incompressible PNGs of `upload_bytes` each.
    """
    fields = {"model": model, "prompt": PROMPT, "n": 1}
    if not workload.upload_images:
        return json.dumps(fields).encode(), "application/json"
    parts = [
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        f"{value}\r\n".encode()
        for name, value in fields.items()
    ]
    for index in range(workload.upload_images):
        head = (
            f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="image[]"; '
            f'filename="input-{index}.png"\r\nContent-Type: image/png\r\n\r\n'
        )
        parts.append(head.encode() + png_image(workload.upload_bytes, index) + b"\r\n")
    parts.append(f"--{_BOUNDARY}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={_BOUNDARY}"


def expected_image(image_bytes: int) -> bytes:
    """The PNG the fake serves as the only image of an n=1 answer."""
    return png_image(image_bytes, 0)


def http_post_raw(
    url: str, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, bytes, int]:
    """POST over a plain HTTP/1.1 keep-alive connection, as wrk sends it.

    Returns (status, body, size of the whole response as read from the socket).
    """
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or HOST, parts.port or 80
    lines = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        with sock.makefile("rb") as reader:
            status_line = reader.readline()
            size = len(status_line)
            fields: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                size += len(line)
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            size += len(line)
            if "content-length" in fields:
                payload = reader.read(int(fields["content-length"]))
                size += len(payload)
            elif fields.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size_line = reader.readline()
                    chunk = reader.read(int(size_line.split(b";")[0], 16))
                    end = reader.readline()
                    size += len(size_line) + len(chunk) + len(end)
                    if not chunk:
                        break
                    chunks.append(chunk)
                payload = b"".join(chunks)
            else:
                raise RuntimeError(f"POST {url}: response without length: {fields}")
    return int(status_line.split()[1]), payload, size


def check_http(
    url: str,
    token: str,
    body: dict[str, Any] | bytes,
    image_bytes: int,
    content_type: str = "application/json",
) -> int:
    """One call; checks its answer and returns its exact size on the wire."""
    headers = {"Content-Type": content_type, **_auth(token)}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, payload, size = http_post_raw(url, headers, raw, timeout=120)
    if status != 200:
        raise RuntimeError(f"POST {url} -> {status}: {payload[:2000]!r}")
    data = json.loads(payload)["data"]
    _check_images([base64.b64decode(item["b64_json"]) for item in data], image_bytes)
    return size


def check_grpc(target: str, token: str, body: dict[str, Any], image_bytes: int) -> None:
    """One gRPC call; checks that its answer is the one image the fake serves."""
    request = images_pb2.GenerateImagesRequest(**body)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(
            METHOD_PATH,
            request_serializer=images_pb2.GenerateImagesRequest.SerializeToString,
            response_deserializer=images_pb2.GenerateImagesResponse.FromString,
        )
        try:
            response = call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=120)
        except grpc.RpcError as error:
            raise RuntimeError(
                f"gRPC {METHOD_PATH} -> {error.code().name}: {error.details()}"  # type: ignore[attr-defined]
            ) from None
    _check_images([image.b64_json for image in response.data], image_bytes)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check_images(images: list[bytes], image_bytes: int) -> None:
    expected = expected_image(image_bytes)
    if len(images) != 1 or images[0] != expected:
        got = [f"{len(i)} bytes, starting {i[:8]!r}" for i in images]
        raise RuntimeError(f"check call: expected 1 PNG of {len(expected)} bytes, got {got}")


def upstream_answered(port: int) -> int:
    """Requests the fake upstream has answered with images so far (its GET /_stats)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/_stats", timeout=30) as response:
        outcomes = json.loads(response.read())["outcomes"]
    return int(outcomes.get("replied", 0) + outcomes.get("streamed", 0))


def verify(row: Row, *, answered: int, response_bytes: int | None) -> None:
    """Check a target's timed answers (see above); sets ``row.error`` when they are wrong.

    Args:
        row: The row, with the load's result.
        answered: Requests the fake answered with images during the load.
        response_bytes: wrk targets: the exact size of one right answer (the check call's);
            None for the gRPC driver, which checks every answer itself.
    """
    r = row.result
    assert r is not None
    problems = []
    checks: dict[str, Any] = {"successes": r.ok, "upstream_answered": answered}
    if r.ok == 0:
        problems.append("no successful response")
    if answered < r.ok:
        problems.append(f"{r.ok:,} successes, but the upstream answered only {answered:,}")
    if response_bytes is not None:
        # Headers are fixed-width, so every right answer has exactly the check call's size (as
        # measured); the slack only absorbs a header that could differ by a few bytes, and is
        # small enough that an image 9 bytes short (12 base64 characters fewer) fails.
        # Responses still being read when wrk stops add bytes but no request, hence
        # `connections` in the upper bound; error responses (status >= 400) are small and
        # covered generously.
        slack = 8
        least = r.ok * (response_bytes - slack)
        most = (r.requests + row.connections) * (response_bytes + slack)
        most += r.errors.get("http>=400", 0) * 65_536
        checks.update(expected_bytes_per_response=response_bytes, bytes_read=r.bytes)
        if r.requests:
            checks["bytes_per_response"] = round(r.bytes / r.requests, 1)
        if r.ok and r.bytes < least:
            problems.append(
                f"{r.bytes:,} bytes read for {r.ok:,} successes ({r.bytes / r.ok:,.0f} per "
                f"success), but a right answer is {response_bytes:,} bytes"
            )
        if r.bytes > most:
            problems.append(
                f"{r.bytes:,} bytes read, more than {r.requests:,} right answers of "
                f"{response_bytes:,} bytes"
            )
    else:
        checks.update(wrong_answers=r.wrong, wrong_examples=r.wrong_examples)
        if r.wrong is None:
            problems.append("the gRPC driver did not check its answers")
        elif r.wrong:
            problems.append(
                f"{r.wrong:,} of {r.ok:,} OK answers were wrong (e.g. {r.wrong_examples[0]})"
            )
    row.verification = checks
    if problems:
        row.error = "wrong answers: " + "; ".join(problems)


# -- orchestration ---------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One row of the report: a workload on one target, its result and its checks."""

    workload: str
    target: str
    result: LoadResult | None
    connections: int
    duration_s: float
    gateway_peak_mb: float | None = None
    gateway_peak_detail: dict[str, float] = dataclasses.field(default_factory=dict)
    gateway_cpu_s: float | None = None
    upstream_peak_mb: float | None = None
    upstream_cpu_s: float | None = None
    verification: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The scale target: CPU seconds and peak RSS of each replica, HAProxy, PostgreSQL, Redis.
    scale: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None  # set: the row prints FAILED and the run exits 1


def raise_fd_limit(needed: int) -> None:
    """Raise the open-files soft limit to the hard one if below ``needed``; warn if still short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target != resource.RLIM_INFINITY and target < needed:
            print(f"warning: open files limited to {target} (< {needed})", file=sys.stderr)


def run_workload(
    workload: Workload,
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    token: str,
    upstream_key: str,
    rows: list[Row],
) -> None:
    """Run one workload on every target, appending a row per target to ``rows``."""
    duration = args.duration_s
    if workload.delay:
        # Every call takes `delay`, so completions come in rounds; end half-way between two
        # rounds, after at least three, so jitter cannot move a round in or out of the window.
        duration = max(duration, math.ceil(3.5 * workload.delay))
    call_timeout = workload.delay + 60
    body, content_type = request_body(workload, MODEL)
    direct_body, _ = request_body(workload, "gpt-image-1")
    (work / "body").write_bytes(body)
    direct_body_file = work / "direct_body"
    direct_body_file.write_bytes(direct_body)
    if workload.connections > 100:
        raise_fd_limit(workload.connections * 4 + 1024)

    fake_pid, fake_port = start_fake(procs, workload, upstream_key)
    fake_url = f"http://{HOST}:{fake_port}{workload.path}"
    try:
        # Warm the fake's response cache and check its answer like the gateway's.
        direct_bytes = check_http(
            fake_url, upstream_key, direct_body, workload.image_bytes, content_type
        )
        for target in args.targets:
            if workload.upload_images and target not in ("direct", "http"):
                print(f"  {workload.name} {target}: not measured (HTTP edits only)", flush=True)
                continue
            print(
                f"  {workload.name} {target}: {duration:g} s, {workload.connections} conn",
                flush=True,
            )
            row_target = "scale-http" if target == "scale" else target
            row = Row(workload.name, row_target, None, workload.connections, duration)
            try:
                if target == "direct":
                    answered_before = upstream_answered(fake_port)
                    with TreeMonitor({"upstream": fake_pid}) as monitor:
                        row.result = run_wrk(
                            procs,
                            fake_url,
                            direct_body_file,
                            upstream_key,
                            connections=workload.connections,
                            duration=duration,
                            timeout=call_timeout,
                            threads=args.wrk_threads,
                            content_type=content_type,
                        )
                    row.upstream_peak_mb = monitor.peak_mb("upstream")
                    row.upstream_cpu_s = monitor.cpu_seconds("upstream")
                    answered = upstream_answered(fake_port) - answered_before
                    verify(row, answered=answered, response_bytes=direct_bytes)
                elif target == "scale":
                    scale_target = ScaleTarget(args, procs, work, upstream_key)
                    scale_target.run(row, workload, fake_pid, fake_port, duration, call_timeout)
                else:
                    gateway_target = GatewayTarget(args, procs, work, token, upstream_key)
                    gateway_target.run(row, workload, fake_pid, fake_port, duration, call_timeout)
            except Exception as error:  # one target failing must not stop the others
                row.error = f"{type(error).__name__}: {error}"
            if row.error:
                print(f"    failed: {row.error}", file=sys.stderr, flush=True)
            rows.append(row)
    finally:
        for child in list(procs.children):
            if child.pid == fake_pid:
                procs.stop(child)


@dataclasses.dataclass
class GatewayTarget:
    """Runs one workload through one door of a freshly started gateway."""

    args: argparse.Namespace
    procs: Processes
    work: Path
    token: str
    upstream_key: str

    def run(
        self,
        row: Row,
        workload: Workload,
        fake_pid: int,
        fake_port: int,
        duration: float,
        call_timeout: float,
    ) -> None:
        """Start a gateway, check one answer, load its ``row.target`` door and fill in ``row``."""
        args, procs = self.args, self.procs
        body = {"model": MODEL, "prompt": PROMPT, "n": 1}
        config = self.work / f"config-{workload.name}.yaml"
        write_config(config, fake_port, timeout=call_timeout, budgets=args.budgets)
        name = f"gateway-{workload.name}-{row.target}"
        env = gateway_env(self.upstream_key)
        # A fresh gateway per target, so its peak RSS belongs to this load alone.
        gateway = start_gateway(procs, args.gateway_cmd, config, self.work / "data", env, name)
        try:
            wait_ready(gateway, procs.log_dir, name)
            url = f"{gateway.http_url}{workload.path}"
            payload, content_type = request_body(workload, MODEL)
            response_bytes: int | None = None
            if row.target == "http":
                response_bytes = check_http(
                    url, self.token, payload, workload.image_bytes, content_type
                )
            else:
                check_grpc(gateway.grpc_target, self.token, body, workload.image_bytes)
            answered_before = upstream_answered(fake_port)
            with TreeMonitor({"gateway": gateway.child.pid, "upstream": fake_pid}) as monitor:
                if row.target == "http":
                    row.result = run_wrk(
                        procs,
                        url,
                        self.work / "body",
                        self.token,
                        connections=workload.connections,
                        duration=duration,
                        timeout=call_timeout,
                        threads=args.wrk_threads,
                        content_type=content_type,
                    )
                else:
                    row.result = run_grpc_load(
                        procs,
                        gateway.grpc_target,
                        self.token,
                        body,
                        image_bytes=workload.image_bytes,
                        connections=workload.connections,
                        duration=duration,
                        timeout=call_timeout,
                        processes=args.grpc_procs,
                        channels=args.grpc_channels,
                    )
            row.gateway_peak_mb = monitor.peak_mb("gateway")
            row.gateway_peak_detail = monitor.peak_detail("gateway")
            row.gateway_cpu_s = monitor.cpu_seconds("gateway")
            row.upstream_peak_mb = monitor.peak_mb("upstream")
            row.upstream_cpu_s = monitor.cpu_seconds("upstream")
            if gateway.child.poll() is not None:
                raise RuntimeError(f"gateway died during load:\n{log_tail(procs.log_dir, name)}")
            answered = upstream_answered(fake_port) - answered_before
            verify(row, answered=answered, response_bytes=response_bytes)
        finally:
            procs.stop(gateway.child)


@dataclasses.dataclass
class ScaleTarget:
    """Runs one workload over HTTP through HAProxy in front of ``--scale-replicas`` gateways.

    The replicas share one fresh PostgreSQL database (tokens, usage rows) and one Redis (rate
    limit counters, ``limits.storage``); each has its own data dir, ports and one HTTP worker.
    HAProxy balances round-robin over their HTTP doors. PostgreSQL, Redis and HAProxy are
    ``tests/servers.py``'s, started for this target and stopped after it.
    """

    args: argparse.Namespace
    procs: Processes
    work: Path
    upstream_key: str

    def run(
        self,
        row: Row,
        workload: Workload,
        fake_pid: int,
        fake_port: int,
        duration: float,
        call_timeout: float,
    ) -> None:
        """Start the servers and replicas, check answers, load HAProxy with wrk, fill ``row``."""
        if str(ROOT) not in sys.path:
            sys.path.append(str(ROOT))  # tests/ is a package of the repository, not installed
        from tests.servers import HAProxy, PostgresServer, RedisServer

        with contextlib.ExitStack() as stack:
            postgres = stack.enter_context(PostgresServer())
            redis = stack.enter_context(RedisServer())
            database_url = asyncio.run(postgres.create_database())
            args, procs = self.args, self.procs
            body = {"model": MODEL, "prompt": PROMPT, "n": 1}
            config = self.work / f"config-{workload.name}-scale.yaml"
            write_config(
                config,
                fake_port,
                timeout=call_timeout,
                limits_storage=redis.url,
                budgets=args.budgets,
            )
            env = gateway_env(self.upstream_key)
            extra = ("--database-url", database_url, "--http-workers", "1")
            replicas: list[Gateway] = []
            for index in range(args.scale_replicas):
                name = f"gateway-{workload.name}-scale-{index}"
                data_dir = self.work / f"data-{workload.name}-scale-{index}"
                data_dir.mkdir(exist_ok=True)
                gateway = start_gateway(procs, args.gateway_cmd, config, data_dir, env, name, extra)
                stack.callback(procs.stop, gateway.child)
                # One after the other: the first creates the schema in the fresh database.
                wait_ready(gateway, procs.log_dir, name)
                replicas.append(gateway)
            token = create_token(args.gateway_cmd, self.work / "data", env, database_url)
            backends = [(HOST, int(g.http_url.rsplit(":", 1)[1])) for g in replicas]
            haproxy = stack.enter_context(HAProxy(backends))
            url = f"{haproxy.url}/v1/images/generations"
            # Round-robin: consecutive calls reach each replica; every one must be right and the
            # same size on the wire, so that wrk's byte totals check the answers of all of them.
            sizes = {check_http(url, token, body, workload.image_bytes) for _ in replicas}
            if len(sizes) != 1:
                raise RuntimeError(f"check calls through HAProxy differ in size: {sorted(sizes)}")
            response_bytes = sizes.pop()
            roots = {f"replica{i}": g.child.pid for i, g in enumerate(replicas)}
            assert haproxy.process is not None and postgres.process is not None
            assert redis.process is not None
            others = {
                "haproxy": haproxy.process.pid,
                "postgres": postgres.process.pid,
                "redis": redis.process.pid,
            }
            answered_before = upstream_answered(fake_port)
            with TreeMonitor({**roots, **others, "upstream": fake_pid}) as monitor:
                row.result = run_wrk(
                    procs,
                    url,
                    self.work / "body",
                    token,
                    connections=workload.connections,
                    duration=duration,
                    timeout=call_timeout,
                    threads=args.wrk_threads,
                )
            row.gateway_cpu_s = sum(monitor.cpu_seconds(name) for name in roots)
            row.gateway_peak_mb = sum(monitor.peak_mb(name) for name in roots)
            row.gateway_peak_detail = {
                f"{name} {label}": mb
                for name in roots
                for label, mb in monitor.peak_detail(name).items()
            }
            row.upstream_peak_mb = monitor.peak_mb("upstream")
            row.upstream_cpu_s = monitor.cpu_seconds("upstream")
            row.scale = {
                "replicas": args.scale_replicas,
                "cpu_s": {name: round(monitor.cpu_seconds(name), 3) for name in [*roots, *others]},
                "peak_mb": {name: round(monitor.peak_mb(name), 1) for name in [*roots, *others]},
            }
            for index, gateway in enumerate(replicas):
                if gateway.child.poll() is not None:
                    name = f"gateway-{workload.name}-scale-{index}"
                    raise RuntimeError(
                        f"replica {index} died during load:\n{log_tail(procs.log_dir, name)}"
                    )
            answered = upstream_answered(fake_port) - answered_before
            verify(row, answered=answered, response_bytes=response_bytes)


# -- report ----------------------------------------------------------------------------------


def report(rows: list[Row]) -> str:
    """The results table, its legend, and each row's checks, errors and peak RSS by process."""
    direct = {
        r.workload: r.result for r in rows if r.target == "direct" and r.result and not r.error
    }
    header = (
        f"{'load':<4} {'target':<10} {'conn':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>8} {'gw RSS MB':>9} {'gw CPU%':>7} {'up CPU%':>7} {'drv CPU%':>8} "
        f"{'vs direct':>17}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if row.result is None or row.error:
            lines.append(
                f"{row.workload:<4} {row.target:<10} {row.connections:>5}  FAILED: {row.error}"
            )
            continue
        r = row.result
        errors = sum(r.errors.values())
        rss = f"{row.gateway_peak_mb:.0f}" if row.gateway_peak_mb is not None else "-"
        cpu = _percent(row.gateway_cpu_s, r.duration_s)
        upstream_cpu = _percent(row.upstream_cpu_s, r.duration_s)
        driver_cpu = _percent(r.driver_cpu_s, r.duration_s)
        base = direct.get(row.workload)
        if row.target == "direct" or base is None:
            versus = "-"
        elif row.workload == "L1":
            versus = f"+{r.p50_ms - base.p50_ms:.2f}/+{r.p99_ms - base.p99_ms:.2f}ms"
        else:
            versus = f"{r.rps / base.rps:.3f}x" if base.rps else "-"
        lines.append(
            f"{row.workload:<4} {row.target:<10} {row.connections:>5} {r.rps:>9.1f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {errors:>8} {rss:>9} {cpu:>7} {upstream_cpu:>7} "
            f"{driver_cpu:>8} {versus:>17}"
        )
    lines.append("")
    lines.append(
        "req/s counts successful responses, each checked (see bench/README.md); errors =\n"
        "HTTP >= 400, socket errors and timeouts (wrk) or non-OK gRPC status; CPU% = CPU\n"
        "time / wall time of the gateway (all its processes), the fake upstream and the load\n"
        "driver (100 = one core); vs direct = req/s ratio (L1: latency added at p50/p99);\n"
        "FAILED: the target's answers were wrong or it did not run (the run exits 1)."
    )
    for row in rows:
        if row.verification:
            lines.append(f"  {row.workload} {row.target} checked: {_checked(row.verification)}")
        if row.result and row.result.errors:
            lines.append(f"  {row.workload} {row.target} errors: {row.result.errors}")
        if row.gateway_peak_detail:
            detail = ", ".join(f"{k}: {v} MB" for k, v in row.gateway_peak_detail.items())
            lines.append(f"  {row.workload} {row.target} gateway peak RSS by process: {detail}")
        if row.scale and row.result:
            seconds = row.result.duration_s
            cpu = ", ".join(f"{k} {_percent(v, seconds)}" for k, v in row.scale["cpu_s"].items())
            lines.append(f"  {row.workload} {row.target} CPU% by process group: {cpu}")
    return "\n".join(lines)


def _checked(checks: dict[str, Any]) -> str:
    text = f"{checks['successes']:,} successes, upstream answered {checks['upstream_answered']:,}"
    if "expected_bytes_per_response" in checks:
        per = checks.get("bytes_per_response")
        text += (
            f"; {per:,.1f} bytes read per response" if per is not None else "; nothing read"
        ) + f", a right answer is {checks['expected_bytes_per_response']:,}"
    else:
        text += f"; wrong answers {checks['wrong_answers']:,} (every OK answer parsed and compared)"
    return text


def _percent(cpu_s: float | None, duration_s: float) -> str:
    return f"{100 * cpu_s / duration_s:.0f}" if cpu_s is not None and duration_s else "-"


def environment() -> dict[str, Any]:
    """Where the run ran: CPU count, Python, platform, wrk version and git commit."""

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=ROOT)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if done.stdout or done.stderr
            else ""
        )

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": version(["wrk", "--version"]),
        "git": version(["git", "rev-parse", "--short", "HEAD"]),
    }


def parse_duration(text: str) -> float:
    """The seconds in a duration such as ``10s``, ``500ms`` or ``1m`` (a bare number is seconds)."""
    text = text.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``duration_s`` added and the workloads, targets and command split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", default="10s", help="per target and workload (10s, 500ms, 1m)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s per target")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads, e.g. W1,L1")
    parser.add_argument(
        "--targets",
        default="direct,http,grpc",
        help="direct,http,grpc (default) and scale (2 replicas behind HAProxy)",
    )
    parser.add_argument(
        "--gateway-cmd",
        default=str(ROOT / ".venv" / "bin" / "aqueduct-grpc"),
        help="the gateway's CLI (a command line; default: the installed aqueduct-grpc)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--grpc-procs", type=int, default=1, help="gRPC driver processes")
    parser.add_argument("--grpc-channels", type=int, default=16, help="gRPC connections in all")
    parser.add_argument(
        "--scale-replicas",
        type=int,
        default=SCALE_REPLICAS,
        help="gateway replicas of the scale target (default 2)",
    )
    parser.add_argument(
        "--budgets",
        action="store_true",
        help="price every image and give tokens a budget: each request is held against it",
    )
    parser.add_argument("--results-dir", default=str(BENCH / "results"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and logs")
    args = parser.parse_args(argv)
    # wrk takes whole seconds.
    args.duration_s = 2 if args.quick else max(1, math.ceil(parse_duration(args.duration)))
    args.workloads = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    args.targets = [t.strip().lower() for t in args.targets.split(",") if t.strip()]
    if bad := [t for t in args.targets if t not in TARGETS]:
        parser.error(f"unknown targets {bad}; choose from {list(TARGETS)}")
    if args.scale_replicas < 1:
        parser.error("--scale-replicas must be at least 1")
    args.gateway_cmd = shlex.split(args.gateway_cmd)
    return args


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run through the same clean-up as Ctrl-C."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the report and write the results JSON; return the exit status."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    gateway_needed = any(t != "direct" for t in args.targets)
    if gateway_needed and shutil.which(args.gateway_cmd[0]) is None:
        sys.exit(f"gateway command not found: {args.gateway_cmd[0]} (pip install -e . ?)")
    work = Path(tempfile.mkdtemp(prefix="aqueduct-bench-"))
    (work / "data").mkdir()
    (work / "logs").mkdir()
    procs = Processes(work / "logs", cwd=work)
    upstream_key = "sk-bench-upstream-" + secrets.token_hex(8)
    rows: list[Row] = []
    interrupted = False
    started = datetime.datetime.now(datetime.UTC)
    try:
        with stop_on_signals():
            token = ""
            if gateway_needed:
                token = create_token(args.gateway_cmd, work / "data", gateway_env(upstream_key))
            for name in args.workloads:
                workload = WORKLOADS[name]
                print(f"{name}: {workload.description}", flush=True)
                run_workload(workload, args, procs, work, token, upstream_key, rows)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; stopping everything", file=sys.stderr)
    finally:
        procs.close()
        if args.keep:
            print(f"logs kept in {work / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(report(rows))
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"bench-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "environment": environment(),
                "arguments": {
                    "duration_s": args.duration_s,
                    "workloads": args.workloads,
                    "targets": args.targets,
                    "gateway_cmd": args.gateway_cmd,
                    "wrk_threads": args.wrk_threads,
                    "grpc_procs": args.grpc_procs,
                    "grpc_channels": args.grpc_channels,
                    "scale_replicas": args.scale_replicas,
                    "budgets": args.budgets,
                },
                "workloads": {n: dataclasses.asdict(WORKLOADS[n]) for n in args.workloads},
                "rows": [
                    {
                        **dataclasses.asdict(row),
                        "rps": row.result.rps if row.result and not row.error else None,
                    }
                    for row in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if interrupted:
        return 130
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
