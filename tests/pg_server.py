"""A throwaway PostgreSQL cluster for tests: Debian's PostgreSQL, initdb'd into a temporary folder,
listening on 127.0.0.1 at a free port, stopped and removed at the end of the session.

initdb refuses to run as root: as root, the cluster belongs to the `postgres` user."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from smtp_server import free_port

PG_BIN = Path(os.environ.get("NEWSLETTER_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


class PostgresCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user:  # as root, run as postgres (initdb and postgres refuse root)
            cmd = ["su", self.user, "-s", "/bin/sh", "-c", " ".join(_quote(a) for a in args)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresCluster:
        if self.user:
            shutil.chown(self.dir, self.user)
        r = self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "newsletter",
                      "--no-sync", "-E", "UTF8")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr}")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200")
        r = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                      str(self.dir / "log"), "-w", "start")
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr} {r.stdout}")
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://newsletter@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        deadline = time.monotonic() + 10
        while (self.data / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
