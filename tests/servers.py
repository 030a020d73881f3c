"""Real servers for the tests: PostgreSQL, Redis, an S3-compatible store and HAProxy.

Each one runs on a free loopback port chosen by the OS, in a temporary folder,
and is stopped (folder removed) by `stop()` or by leaving its `with` block.
Binaries are found on PATH; a missing one raises `MissingServer` naming the
Debian package to install (a skip would hide the tests it stands for).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import asyncpg

__all__ = [
    "HAProxy",
    "MissingServer",
    "PostgresServer",
    "RedisServer",
    "S3Server",
    "ServerFailed",
    "answers_tcp",
    "free_port",
]

# PostgreSQL refuses to run as root; as root the tests run it as this user.
POSTGRES_OS_USER = "aqueduct-test"
# The database superuser initdb creates (trusted on 127.0.0.1 only).
POSTGRES_ROLE = "aqueduct"
START_SECONDS = 30.0
STOP_SECONDS = 10.0
# In each server's folder: the pid of the test run that made it.
OWNER_FILE = "owner.pid"


class MissingServer(RuntimeError):
    """A server binary is not installed."""


class ServerFailed(RuntimeError):
    """A server exited or did not answer in time."""


def free_port() -> int:
    """A loopback port the OS has just handed out (free unless someone races for it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_binary(name: str, package: str, extra_dirs: Sequence[pathlib.Path] = ()) -> str:
    """The path of `name`, from PATH or `extra_dirs`.

    Raises:
        MissingServer: naming the Debian `package` that provides it.
    """
    # haproxy and useradd live in /usr/sbin, which a non-root PATH may lack.
    folders = [os.environ.get("PATH", ""), *map(str, extra_dirs), "/usr/sbin", "/sbin"]
    search = os.pathsep.join(folders)
    found = shutil.which(name, path=search)
    if found is None:
        raise MissingServer(
            f"{name} is not installed: install the Debian package {package!r} "
            f"(apt-get install -y {package}, or run scripts/install_test_servers.sh)"
        )
    return found


def answers_tcp(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _remove_orphans(parent: pathlib.Path, prefix: str) -> None:
    # A test run killed outright (a CI timeout) removes nothing; its servers die
    # with it (pdeathsig), and the next run removes their folders, which in
    # /dev/shm hold memory.
    for owner in parent.glob(f"{prefix}*/{OWNER_FILE}"):
        try:
            os.kill(int(owner.read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(owner.parent, ignore_errors=True)
        except (OSError, ValueError):
            pass  # alive but not ours, or being written: leave it


class _Process:
    """One server process, its port, temporary folder and log; the base of the servers.

    A subclass sets what `_start` needs, then calls `__init__`, which starts it.
    """

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, *, parent: str | None = None) -> None:
        prefix = f"aqueduct-{self.name}-"
        _remove_orphans(pathlib.Path(parent or tempfile.gettempdir()), prefix)
        self.port = free_port()
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        (self.folder / OWNER_FILE).write_text(str(os.getpid()))
        self.log_path = self.folder / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        # A server that fails half way must not stay behind.
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        """Starts the server; returns once it answers."""
        raise NotImplementedError

    def _spawn(self, argv: Sequence[str], *, as_user: str | None = None) -> None:
        # setpriv makes the server die with the test run even when pytest is
        # killed (no teardown then), and switches user where one is needed.
        prefix = [find_binary("setpriv", "util-linux"), "--pdeathsig", "TERM"]
        if as_user is not None:
            prefix += [f"--reuid={as_user}", f"--regid={as_user}", "--init-groups"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*prefix, "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not ready():
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServerFailed(f"{self.name} did not answer in time:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stops the process (killed if it lingers) and removes the folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _postgres_os_user() -> str | None:
    """The OS user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError:
        # Another test run may create it at the same moment: check the result, not the exit code.
        subprocess.run(
            [
                find_binary("useradd", "passwd"),
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                POSTGRES_OS_USER,
            ],
            check=False,
            capture_output=True,
        )
        pwd.getpwnam(POSTGRES_OS_USER)
    return POSTGRES_OS_USER


class PostgresServer(_Process):
    """A throw-away PostgreSQL cluster: trust auth on 127.0.0.1, no fsync."""

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client.
    stop_signal = signal.SIGINT

    def __init__(self) -> None:
        """Runs initdb and starts the server; returns once it accepts queries."""
        self._databases = 0
        # In memory where possible: CREATE DATABASE is 20 times faster on tmpfs.
        memory = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        super().__init__(parent=memory)

    def _binary(self, name: str) -> str:
        # Debian keeps the server binaries out of PATH, under a versioned folder.
        versions = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        return find_binary(name, "postgresql", versions)

    def _start(self) -> None:
        user = _postgres_os_user()
        data = self.folder / "data"
        if user is not None:
            os.chown(self.folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        initdb = [self._binary("initdb"), "--pgdata", str(data), "--username", POSTGRES_ROLE]
        initdb += ["--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-sync"]
        self._spawn(initdb, as_user=user)
        assert self.process is not None
        if self.process.wait(START_SECONDS) != 0:
            raise ServerFailed(f"initdb failed:\n{self.log_tail()}")
        # Only TCP on loopback is trusted; initdb's file also trusts the Unix socket.
        (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            # Durability is pointless for a throw-away cluster; speed is not.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",
        }
        options = [part for key, value in settings.items() for part in ("-c", f"{key}={value}")]
        self._spawn([self._binary("postgres"), "-D", str(data), *options], as_user=user)
        self._wait_until(self._accepts_queries)

    def _accepts_queries(self) -> bool:
        # TCP is accepted before recovery ends ("the database system is starting up").
        ready = subprocess.run(
            [self._binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
        )
        return ready.returncode == 0

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of `database` on this server."""
        return f"postgresql+asyncpg://{POSTGRES_ROLE}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user=POSTGRES_ROLE, database="postgres"
        )
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create_database(self) -> str:
        """A new empty database; returns its URL."""
        self._databases += 1
        name = f"test_{self._databases}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        """Drops the database of `url`, closing the connections still open to it."""
        name = url.rsplit("/", 1)[1]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RedisServer(_Process):
    """A Redis server that keeps nothing on disk; made once it answers PING."""

    name = "redis"

    def _start(self) -> None:
        argv = [find_binary("redis-server", "redis-server"), "--port", str(self.port)]
        argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.folder), "--daemonize", "no"]
        self._spawn(argv)
        self._wait_until(self._pongs)

    def _pongs(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def emptied(self) -> str:
        """The server's URL, its database emptied: a test starts with no counters."""
        import redis.asyncio  # the redis extra; only tests that use Redis need it

        client = redis.asyncio.Redis.from_url(self.url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()
        return self.url


class S3Server(_Process):
    """Moto's S3-compatible server (any bucket, any credentials); made once it answers HTTP."""

    name = "s3"

    def _start(self) -> None:
        if importlib.util.find_spec("moto") is None:
            raise MissingServer(
                "moto is not installed: .venv/bin/pip install -e '.[dev]' (it brings moto[server])"
            )
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._spawn(argv)
        self._wait_until(self._answers)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    @property
    def endpoint_url(self) -> str:
        """The endpoint URL clients are given (AWS_ENDPOINT_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def client_environ(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        # Moto accepts any credentials; clients still need some to sign requests.
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class HAProxy(_Process):
    """HAProxy balancing HTTP round-robin over backends on loopback."""

    name = "haproxy"

    def __init__(
        self, backends: Sequence[tuple[str, int]], *, health_check: str | None = None
    ) -> None:
        """Starts HAProxy; returns once its front port accepts connections.

        Args:
            backends: (host, port) of each server, used in turn.
            health_check: a path (e.g. "/healthz") to GET every 200 ms; a backend
                that does not answer 2xx/3xx gets no requests until it does.
                None sends to every backend regardless.
        """
        self._backends = list(backends)
        self._health_check = health_check
        super().__init__()

    def _config(self) -> str:
        check = " check inter 200ms fall 1 rise 1" if self._health_check else ""
        lines = [
            "global",
            "  maxconn 4096",
            "defaults",
            "  mode http",
            "  timeout connect 5s",
            "  timeout client 120s",
            "  timeout server 120s",
            "frontend front",
            f"  bind 127.0.0.1:{self.port}",
            "  default_backend replicas",
            "backend replicas",
            "  balance roundrobin",
        ]
        if self._health_check:
            lines += ["  option httpchk", f"  http-check send meth GET uri {self._health_check}"]
        lines += [
            f"  server replica{i} {host}:{port}{check}"
            for i, (host, port) in enumerate(self._backends)
        ]
        return "\n".join(lines) + "\n"

    def _start(self) -> None:
        config = self.folder / "haproxy.cfg"
        config.write_text(self._config())
        # -db: stay in the foreground, so that the process we started is the proxy.
        self._spawn([find_binary("haproxy", "haproxy"), "-db", "-f", str(config)])
        self._wait_until(lambda: answers_tcp(self.port))

    @property
    def url(self) -> str:
        """The front's base URL."""
        return f"http://127.0.0.1:{self.port}"
