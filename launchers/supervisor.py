"""Start an engine, wait until it serves, and stop it with everything it started.

    from rmclient.launchers import launch

    with launch("vllm", "/models/polar", python=".venv-vllm/bin/python",
                env={"VLLM_CPU_KVCACHE_SPACE": "1"}, dtype="float32") as server:
        print(server.url)        # http://127.0.0.1:<free port>

The engine runs in its own process group (``start_new_session``), writes its
output to a log file, and is ready when every ready route of the engine
answers 200 (vLLM binds its port before the model is loaded, so ``/v1/models``
is required as well as ``/health``). If it dies or does not become ready in
time, ``LaunchError`` says so and quotes the end of the log. On exit the whole
group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from rmclient.engines import LAUNCHABLE, launchable
from rmclient.errors import LaunchError

from ._common import EngineSpec, LaunchOptions, format_version, resolve_version

logger = logging.getLogger("rmclient.launchers")

__all__ = ["ENGINES", "get_engine", "free_port", "Server", "launch", "start", "spawn", "build_launch_command"]

#: The names ``launch`` takes (``rmclient.engines.LAUNCHABLE``: ``transformers`` is ``rmclient``'s alias).
ENGINES: Tuple[str, ...] = tuple(LAUNCHABLE)

PathLike = Union[str, Path]


def get_engine(name: str) -> EngineSpec:
    """The ``EngineSpec`` of an engine of :data:`ENGINES` (``rmclient`` or ``transformers``: ``rmclient serve``)."""
    engine = launchable(name.strip())
    module = importlib.import_module(f"{__package__}.{engine.launcher}")
    return module.SPEC


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _tail(path: Path, max_lines: int = 40, max_chars: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    lines = text.splitlines()[-max_lines:]
    out = "\n".join(lines)
    return out[-max_chars:] if len(out) > max_chars else out


_ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b:|\bERROR\b")


def first_error(path: Path, max_chars: int = 500) -> Optional[str]:
    """The first line of the log that states an error (``SomeError: ...`` or an ``ERROR`` record): the
    cause is often far above the last lines (vLLM's "Available memory ... less than desired")."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").strip()
                if _ERROR_LINE.search(line) and "Dumping" not in line:
                    return line[:max_chars]
    except OSError:
        return None
    return None


def _failure_log(path: Path) -> str:
    first = first_error(path)
    return (f"first error in the log: {first}\n" if first else "") + f"log {path} (last lines):\n{_tail(path)}"


def _group_members(pgid: int) -> List[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc; elsewhere a probe)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parens
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 3 and int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@dataclass(eq=False)
class Server:
    """A running engine. ``url`` is its base address (``http://host:port``)."""

    engine: str
    model_path: str
    command: List[str]
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen
    engine_version: str
    api_key: Optional[str] = None
    ready_routes: Sequence[str] = ("/health",)
    stop_grace: float = 15.0
    _stopped: bool = field(default=False, repr=False)
    _log_file: Optional[object] = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{_connect_host(self.host)}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pgid(self) -> int:
        """The process group of the engine (its leader's pid: it was started in a new session)."""
        return self.process.pid

    def log_tail(self, max_lines: int = 40) -> str:
        return _tail(self.log_path, max_lines=max_lines)

    def alive(self) -> bool:
        return self.process.poll() is None

    def group_members(self) -> List[int]:
        """Processes still alive in the engine's process group (empty once stopped)."""
        return _group_members(self.pgid)

    # --- readiness ---------------------------------------------------------------------

    def wait_ready(self, timeout: float = 600.0, poll_interval: float = 0.5) -> "Server":
        """Block until every ready route answers 200; ``LaunchError`` if the process dies or time runs out."""
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(2.0, connect=1.0), headers=headers, trust_env=False) as http:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise LaunchError(
                        f"{self.engine} exited with code {code} before it was ready.\n"
                        f"command: {shlex.join(self.command)}\n{_failure_log(self.log_path)}"
                    )
                ok = True
                for route in self.ready_routes:
                    try:
                        r = http.get(route)
                    except httpx.HTTPError as exc:
                        ok, last = False, f"GET {route}: {type(exc).__name__}"
                        break
                    if r.status_code != 200:
                        ok, last = False, f"GET {route}: {r.status_code}"
                        break
                if ok:
                    logger.info("%s ready at %s (pid %d)", self.engine, self.url, self.pid)
                    return self
                if time.monotonic() >= deadline:
                    raise LaunchError(
                        f"{self.engine} did not become ready at {self.url} within {timeout:g} s "
                        f"(last check: {last}).\ncommand: {shlex.join(self.command)}\n{_failure_log(self.log_path)}"
                    )
                time.sleep(poll_interval)

    # --- stopping ------------------------------------------------------------------------

    def stop(self, grace: Optional[float] = None) -> Optional[int]:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds. Idempotent.

        Returns the engine's exit code.
        """
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        _RUNNING.discard(self)
        grace = self.stop_grace if grace is None else grace
        pgid = self.pgid
        self._signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.process.poll()  # reap the leader so it does not linger as a zombie
            if not _group_members(pgid):
                break
            time.sleep(0.1)
        else:
            left = _group_members(pgid)
            if left:
                logger.warning("%s: %d process(es) still alive after %g s; sending SIGKILL", self.engine, len(left), grace)
                self._signal_group(pgid, signal.SIGKILL)
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            code = None
        end = time.monotonic() + 5
        while _group_members(pgid) and time.monotonic() < end:
            time.sleep(0.05)
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
        logger.info("%s stopped (exit code %s); log kept at %s", self.engine, code, self.log_path)
        return code

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_RUNNING: "set[Server]" = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:  # an interpreter exiting without ``stop()`` must not leave engines behind
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop(grace=5)


def build_launch_command(
    engine: str,
    model_path: PathLike,
    *,
    python: Optional[str] = None,
    engine_version: Optional[str] = None,
    dry_run: bool = False,
    **options,
) -> List[str]:
    """The argv ``launch`` would run (``options``: the fields of ``LaunchOptions``)."""
    spec = get_engine(engine)
    opts = LaunchOptions.from_kwargs(**options)
    return spec.build_command(str(model_path), opts, engine_version=engine_version, python=python, dry_run=dry_run)


def start(
    engine: str,
    model_path: PathLike,
    *,
    port: Optional[int] = None,
    host: str = "127.0.0.1",
    python: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    inherit_env: bool = True,
    engine_version: Optional[str] = None,
    log_path: Optional[PathLike] = None,
    ready_timeout: float = 600.0,
    stop_grace: float = 15.0,
    wait: bool = True,
    **options,
) -> Server:
    """Start ``engine`` serving ``model_path`` and (``wait=True``) wait until it is ready.

    ``port`` 0/None: a free port. ``python``: the interpreter of the engine's
    environment (default: this one). ``env``: variables added to (or, with
    ``inherit_env=False``, instead of) this process's environment. ``options``:
    the fields of ``LaunchOptions`` (``tensor_parallel_size``, ``api_key``,
    ``trust_remote_code``, ``dtype``, ``max_model_len``, ``extra_args`` ...).
    The caller owns the returned ``Server``: call ``stop()`` (or use ``launch``).
    """
    spec = get_engine(engine)
    if not port:
        port = free_port(_connect_host(host))
    opts = LaunchOptions.from_kwargs(host=host, port=port, **options)
    version = resolve_version(spec, engine_version=engine_version, python=python, dry_run=False)
    version_text = format_version(version)
    cmd = spec.build_command(str(model_path), opts, engine_version=engine_version or version_text, python=python)
    return spawn(
        cmd,
        engine=spec.name,
        model_path=str(model_path),
        host=host,
        port=port,
        ready_routes=spec.ready_routes,
        engine_version=version_text,
        api_key=opts.api_key,
        env={**spec.key_env(opts), **(env or {})},
        inherit_env=inherit_env,
        log_path=log_path,
        ready_timeout=ready_timeout,
        stop_grace=stop_grace,
        wait=wait,
    )


def spawn(
    command: Sequence[str],
    *,
    port: int,
    host: str = "127.0.0.1",
    ready_routes: Sequence[str] = ("/health",),
    engine: str = "server",
    model_path: str = "",
    engine_version: str = "",
    api_key: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    inherit_env: bool = True,
    log_path: Optional[PathLike] = None,
    ready_timeout: float = 600.0,
    stop_grace: float = 15.0,
    wait: bool = True,
) -> Server:
    """Run an already-built ``command`` under supervision (what ``start`` does after building it).

    The process gets its own process group and writes stdout+stderr to
    ``log_path`` (default: a new temporary folder). With ``wait`` it blocks until
    every route of ``ready_routes`` answers 200 on ``host:port``; on failure the
    group is stopped and ``LaunchError`` quotes the log.
    """
    cmd = [str(c) for c in command]
    if log_path is None:
        log_dir = Path(tempfile.mkdtemp(prefix=f"rmclient-{engine}-"))
        log_path = log_dir / "server.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ) if inherit_env else {}
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")

    log_file = open(log_path, "ab", buffering=0)
    log_file.write(f"$ {shlex.join(cmd)}\n".encode())
    logger.info("starting %s %s: %s (log %s)", engine, engine_version, shlex.join(cmd), log_path)
    try:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        log_file.close()
        raise LaunchError(f"cannot start {engine}: {exc} (command: {shlex.join(cmd)})") from exc
    server = Server(
        engine=engine,
        model_path=model_path,
        command=cmd,
        host=host,
        port=port,
        log_path=log_path,
        process=process,
        engine_version=engine_version,
        api_key=api_key,
        ready_routes=tuple(ready_routes),
        stop_grace=stop_grace,
        _log_file=log_file,
    )
    with _RUNNING_LOCK:
        _RUNNING.add(server)
    if wait:
        try:
            server.wait_ready(timeout=ready_timeout)
        except BaseException:
            server.stop()
            raise
    return server


@contextlib.contextmanager
def launch(engine: str, model_path: PathLike, **kwargs) -> Iterator[Server]:
    """Context manager around ``start``: yields a ready ``Server`` and stops its process group on exit."""
    server = start(engine, model_path, **kwargs)
    try:
        yield server
    finally:
        server.stop()

