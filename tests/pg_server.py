"""A throw-away PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder.

The cluster listens only on a Unix socket in that folder (no TCP port to clash with anything),
trusts local connections, skips fsync (the data is thrown away), and runs as an unprivileged
user (PostgreSQL refuses to run as root: under root it runs as `postgres` or `nobody`).
`scripts/test` installs Debian's `postgresql` package when the binaries are missing.

    python -m tests.pg_server      # start one by hand; prints its URL, stops on Enter
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "gemcord"


def find_bin() -> Path | None:
    """The folder of the newest installed PostgreSQL server binaries, if any."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for folder in reversed(candidates):
        if (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


@dataclass
class PgServer:
    """A running throw-away cluster."""

    root: Path
    bin: Path
    run_as: str | None

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket is."""
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        """A connection URL for one of the cluster's databases."""
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root, timeout=120)

    def stop(self) -> None:
        """Stop the server at once and delete its folder."""
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start() -> PgServer:
    """Create and start a cluster in a new temporary folder (raises if PostgreSQL is missing)."""
    binaries = find_bin()
    if binaries is None:
        raise RuntimeError(
            "PostgreSQL is not installed (apt-get install postgresql), or set"
            " GEMCORD_SKIP_POSTGRES=1 to skip its tests"
        )
    root = Path(tempfile.mkdtemp(prefix="gemcord-pg-"))
    run_as = None
    if os.geteuid() == 0:
        run_as = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(run_as)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    server = PgServer(root, binaries, run_as)
    (root / "socket").mkdir()
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(root / "socket", entry.pw_uid, entry.pw_gid)
    options = (
        f"-c listen_addresses='' -c unix_socket_directories='{server.socket_dir}'"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        " -c max_connections=200 -c shared_buffers=32MB"
    )
    try:
        server._run(
            "initdb",
            "-D",
            str(root / "data"),
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        server._run(
            "pg_ctl",
            "-D",
            str(root / "data"),
            "-l",
            str(root / "log"),
            "-o",
            options,
            "-w",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(
            f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}{log}"
        ) from exc
    return server


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


if __name__ == "__main__":
    server = start()
    print(server.url())
    try:
        input("running; press Enter to stop\n")
    finally:
        server.stop()
