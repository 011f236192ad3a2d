"""A private PostgreSQL 15 instance for tests and benchmarks: initdb + pg_ctl on a free port.

Never the shared server on 5432: the instance has its own data directory (a fresh temporary
directory), listens on 127.0.0.1 and a free port, and trusts local connections as user
``postgres``. As root, initdb and pg_ctl run as the ``postgres`` OS user (PostgreSQL refuses
to run as root). It can be stopped like a crash (``pg_ctl stop -m immediate``: no checkpoint,
WAL recovery at the next start) and started again on the same port and data.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from solar_tools.redis_server import free_port

__all__ = ["PostgresServer", "PostgresServerError", "postgres_bindir"]

logger = logging.getLogger(__name__)

_DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
_SHARED_PORT = 5432  # never used: the shared server's


class PostgresServerError(RuntimeError):
    """initdb or pg_ctl is missing or failed (the message carries their output)."""


def postgres_bindir() -> Path:
    """The directory of ``initdb``/``pg_ctl``: ``pg_config --bindir``, else PostgreSQL 15's."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").is_file():
            return candidate
    return _DEFAULT_BINDIR


class PostgresServer:
    """One private postgres on ``127.0.0.1:port``, data under a fresh temporary directory.

    Args:
        fsync: keep PostgreSQL's fsync on (benchmarks); tests turn it off for speed (a killed
            server still recovers from its WAL: only an OS crash would lose data).
        start_timeout_s: longest wait for ``pg_ctl start -w``.
    """

    def __init__(self, *, fsync: bool = False, start_timeout_s: float = 60.0) -> None:
        self.bindir = postgres_bindir()
        if not (self.bindir / "initdb").is_file():
            raise PostgresServerError(
                f"initdb not found in {self.bindir}: install PostgreSQL 15 "
                "(`apt-get install postgresql-15`); the history tests need a real PostgreSQL"
            )
        self.port = free_port()
        if self.port == _SHARED_PORT:
            raise PostgresServerError("refusing port 5432: it belongs to the shared server")
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self.workdir = Path(tempfile.mkdtemp(prefix="solar-pg-"))
        self.datadir = self.workdir / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        self._initialised = False

    def url(self, dbname: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<dbname>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def _run(self, *args: str, timeout_s: float = 120.0) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise PostgresServerError(
                f"{args[0]} failed ({out.returncode}): {out.stdout}{out.stderr}\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def start(self) -> None:
        """initdb (the first time), then ``pg_ctl start`` and wait until it accepts connections."""
        if not self._initialised:
            datadir = str(self.datadir)
            self._run("initdb", "-D", datadir, "-U", "postgres", "-A", "trust", "--no-sync")
            self._initialised = True
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=50"
        )
        wait = ["-w", "-t", str(round(self.start_timeout_s))]
        self._run(
            "pg_ctl",
            "start",
            *wait,
            "-D",
            str(self.datadir),
            "-l",
            str(self.log_path),
            "-o",
            options,
        )
        logger.info("postgres ready at %s", self.url())

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` (clean) or ``immediate`` (a crash: WAL recovery
        at the next start); a no-op when not running."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.datadir))

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m solar_tools.postgres_server --url-file F``: start a private instance, write
    its URL to F, and keep it until SIGTERM or SIGINT (then stop it and delete its data).
    For shell scripts (``loadtest/lib.sh``) that need a durable history tier."""
    import argparse
    import signal
    import threading

    parser = argparse.ArgumentParser(prog="python -m solar_tools.postgres_server")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write the URL")
    parser.add_argument("--fsync", action="store_true", help="keep fsync on (benchmarks)")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = PostgresServer(fsync=args.fsync)
    try:
        server.start()
        args.url_file.write_text(server.url() + "\n")
        done.wait()
    finally:
        server.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
