"""The servers under test: how to start, reach, stop and account for each of them.

tokenward and the tutorial's Express server (as written and tuned) share one shape here, a
``Server``: a command, an environment, a port and the routes of its ``Api``. Pinned servers run
under ``taskset -c 0``; each runs in its own process group, so that stopping it stops exactly
what the bench started (uvicorn's worker processes included).
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = BENCH / ".work"
LOGS = WORK / "logs"
PEER_SOURCE = REPO / ".." / "shared" / "peers" / "seed-express"
PEER_COPY = WORK / "seed-express"
VENV_BIN = REPO / ".venv" / "bin"
TOKENWARD_CLI = VENV_BIN / "tokenward"

SERVER_CORE = "0"
LOAD_CORE = "1"

TOKENWARD = "tokenward"
TOKENWARD_METRICS_OFF = "tokenward, metrics off"  # scenario 9: the same server, twice
TOKENWARD_METRICS_ON = "tokenward, metrics on"
EXPRESS = "express (as written)"
EXPRESS_TUNED = "express (tuned)"
EXPRESS_NAMES = (EXPRESS, EXPRESS_TUNED)


def log(message: str) -> None:
    print(message, flush=True)


@dataclass(frozen=True)
class Api:
    """Where one kind of server keeps its routes, and what its login answers with."""

    register: str
    login: str
    protected: str
    refresh: str
    ready: str
    cookie: str
    token_field: str


TOKENWARD_API = Api(
    register="/auth/register",
    login="/auth/login",
    protected="/auth/me",
    refresh="/auth/refresh",
    ready="/healthz",
    cookie="tw_refresh",
    token_field="access_token",
)
EXPRESS_API = Api(
    register="/register",
    login="/login",
    protected="/protected",
    refresh="/refresh",
    ready="/protected",  # no health route: any HTTP answer (401) means it listens
    cookie="refreshToken",
    token_field="accessToken",
)


@dataclass
class Server:
    name: str
    api: Api
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    pinned: bool = True
    database_pid: int | None = None
    """A database server's main process, whose CPU counts as this server's (PostgreSQL)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    @property
    def is_tokenward(self) -> bool:
        return self.api is TOKENWARD_API


def slug(name: str) -> str:
    """'tokenward, 1,000 sessions' -> 'tokenward-1-000-sessions', for file names."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TOKENWARD_")}


def tokenward_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of every tokenward the bench starts (server or CLI)."""
    return {
        **base_env(),
        "TOKENWARD_DATA_DIR": str(data_dir),
        # Rate limits would answer this load with 429s (refresh: 30/minute per session): the
        # setting that turns them off is meant for benchmarks. Older builds ignore it.
        "TOKENWARD_RATE_LIMITS": "false",
        # The token pools are made before the runs that use them: no expiry mid-run.
        "TOKENWARD_ACCESS_TTL": "1h",
        # New accounts get the bench role (accounts.BENCH_ROLE): tokens carry roles and scope.
        "TOKENWARD_DEFAULT_ROLES": "member",
        **{f"TOKENWARD_{key.upper()}": value for key, value in settings.items()},
    }


def tokenward_server(
    data_dir: Path,
    *,
    name: str = TOKENWARD,
    workers: int = 1,
    pinned: bool = True,
    **settings: str,
) -> Server:
    argv = [str(TOKENWARD_CLI), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return Server(
        name=name,
        api=TOKENWARD_API,
        argv=argv,
        env=tokenward_env(data_dir, **settings),
        cwd=WORK,  # not the repo root: a developer's .env there must not change the settings
        port=free_port(),
        log_path=LOGS / f"{slug(name)}.log",
        pinned=pinned,
    )


def express_server(name: str, script: str, *, pinned: bool = True) -> Server:
    port = free_port()
    env = {
        **base_env(),
        "ACCESS_SECRET": secrets.token_urlsafe(32),
        "REFRESH_SECRET": secrets.token_urlsafe(32),
        "PORT": str(port),
    }
    suffix = "" if pinned else "-unpinned"
    return Server(
        name=name,
        api=EXPRESS_API,
        argv=["node", script],
        env=env,
        cwd=PEER_COPY,
        port=port,
        log_path=LOGS / f"{Path(script).stem}{suffix}.log",
        pinned=pinned,
    )


def express_servers(*, pinned: bool = True) -> list[Server]:
    return [
        express_server(EXPRESS, "server.js", pinned=pinned),
        express_server(EXPRESS_TUNED, "server-tuned.js", pinned=pinned),
    ]


# -- running -------------------------------------------------------------------------------


def start(server: Server) -> None:
    argv = [arg.replace("{port}", str(server.port)) for arg in server.argv]
    if server.pinned:
        argv = ["taskset", "-c", SERVER_CORE, *argv]  # taskset execs: the pid stays the server's
    server.log_path.parent.mkdir(parents=True, exist_ok=True)
    with server.log_path.open("ab") as output:
        server.process = subprocess.Popen(
            argv,
            cwd=server.cwd,
            env=server.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop exactly what we started
        )


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited early; see {server.log_path}")
        try:
            if httpx.get(server.base_url + server.api.ready, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s; see {server.log_path}")


def stop(server: Server) -> None:
    process = server.process
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextmanager
def pinned_to(core: str) -> Iterator[None]:
    """Run the calling thread, and threads it starts meanwhile, on one core for a while.

    The bench's own clients go to the load core, away from the server's; in-process
    timings that stand for the server's work go to the server core.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(core)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def running(servers: Sequence[Server]) -> Iterator[None]:
    """Start every server and stop them all on the way out, whatever happens."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(stop, server)
            start(server)
        for server in servers:
            wait_ready(server)
            where = f"core {SERVER_CORE}" if server.pinned else "unpinned"
            log(f"  {server.name}: ready on :{server.port} (pid {server.pid}, {where})")
        yield


# -- what a server costs: CPU time and memory, from /proc -----------------------------------


def children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (a thread may be the one that forked)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents first."""
    tree = [pid]
    for parent in tree:  # the list grows while we walk it: breadth-first
        tree += children(parent)
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # it exited
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of the file
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(server: Server) -> float:
    """The server's processes, and its database's when it has one of its own."""
    roots = [server.pid] if server.database_pid is None else [server.pid, server.database_pid]
    return sum(cpu_seconds(pid) for root in roots for pid in process_tree(root))


def worker_pids(server: Server) -> list[int]:
    """The processes that answer requests: uvicorn's spawned workers, else the server itself."""
    spawned = []
    for pid in process_tree(server.pid)[1:]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:  # multiprocessing's spawn; not its resource tracker
            spawned.append(pid)
    return spawned or [server.pid]


def rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def workers_rss_kib(server: Server) -> int:
    return sum(rss_kib(pid) for pid in worker_pids(server))
