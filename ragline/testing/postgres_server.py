"""A private PostgreSQL server for tests, CI and benchmarks: ``initdb`` in a fresh folder, started on a free port
of 127.0.0.1 with trust authentication, stopped and deleted afterwards. Never a stand-in: the machine's own
PostgreSQL binaries (``initdb``, ``pg_ctl``; on Debian under ``/usr/lib/postgresql/<version>/bin``).

PostgreSQL refuses to run as root: when this process is root, the server runs as the OS user ``postgres``.

From a shell (``.ci/run`` does this)::

    url=$(python -m ragline.testing.postgres_server start DIR)    # prints postgresql://postgres@127.0.0.1:PORT/postgres
    python -m ragline.testing.postgres_server stop DIR
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
"""Settings for throwaway servers (tests): nothing is worth flushing to disk."""
STATE_FILE = "server.json"


@dataclass(frozen=True)
class PostgresServer:
    """A running private server: its folder (data and socket) and port."""

    directory: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def binaries() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest Debian install."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if installed:
        return Path(installed[-1]).parent
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install the OS package 'postgresql', or point "
        "RAGLINE_TEST_DATABASE_URL at a server"
    )


def start(*, durable: bool = False, max_connections: int = 300) -> PostgresServer:
    """Create and start a server in a new folder under the system's temporary directory.

    ``durable`` keeps PostgreSQL's default flushing (fsync, synchronous commit), as in production: benchmarks use
    it; tests do not need it.
    """
    directory = Path(tempfile.mkdtemp(prefix="ragline-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
        data = directory / "data"
        _run(binaries() / "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        settings: tuple[str, ...] = ("-c", "listen_addresses=127.0.0.1", "-c", f"max_connections={max_connections}")
        if not durable:
            settings = (*settings, *FAST)
        for _ in range(5):  # a free port may be taken between choosing and binding it
            port = _free_port()
            if _pg_ctl_start(directory, port, settings, check=False).returncode == 0:
                return PostgresServer(directory, port)
        raise RuntimeError(f"PostgreSQL did not start:\n{_tail(directory / 'log')}")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def halt(server: PostgresServer) -> None:
    """Stop the server as an outage would (its clients' connections die), keeping its data for ``resume``."""
    _run(binaries() / "pg_ctl", "-D", str(server.directory / "data"), "-m", "fast", "-w", "stop")


def resume(server: PostgresServer) -> None:
    """Start a ``halt``-ed server again on its port (a test's server: nothing flushed)."""
    _pg_ctl_start(server.directory, server.port, ("-c", "listen_addresses=127.0.0.1", *FAST), check=True)


def _pg_ctl_start(
    directory: Path, port: int, settings: tuple[str, ...], *, check: bool
) -> subprocess.CompletedProcess[str]:
    """``pg_ctl start`` of the data in ``directory`` on ``port``, its socket there too, waiting until it accepts."""
    options = " ".join(("-p", str(port), "-k", str(directory), *settings))
    data, log = str(directory / "data"), str(directory / "log")
    return _run(binaries() / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start", check=check)


def stop(server: PostgresServer) -> None:
    """Stop the server at once and delete its folder."""
    _run(binaries() / "pg_ctl", "-D", str(server.directory / "data"), "-m", "immediate", "-w", "stop", check=False)
    shutil.rmtree(server.directory, ignore_errors=True)


def save(server: PostgresServer, state_dir: Path) -> None:
    """Remember ``server`` in ``state_dir`` (for ``load`` by another process, and ``stop`` from a shell)."""
    state = {"directory": str(server.directory), "port": server.port}
    (state_dir / STATE_FILE).write_text(json.dumps(state))


def load(state_dir: Path) -> PostgresServer | None:
    """The server saved in ``state_dir``, if any."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    return PostgresServer(Path(state["directory"]), int(state["port"]))


def _run(*command: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [str(part) for part in command]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    done = subprocess.run(args, capture_output=True, text=True, check=False, cwd="/")
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def main() -> None:
    parser = argparse.ArgumentParser(description="Start or stop a private PostgreSQL server.")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("state_dir", type=Path, help="Where the server's port and folder are remembered.")
    args = parser.parse_args()
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "start":
        server = start()
        save(server, args.state_dir)
        print(server.url)
    elif (saved := load(args.state_dir)) is not None:
        stop(saved)
        (args.state_dir / STATE_FILE).unlink()


if __name__ == "__main__":
    main()
