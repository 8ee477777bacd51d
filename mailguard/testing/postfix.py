"""A private Postfix instance on loopback that delivers every accepted message to one Maildir.

It follows the recipe verified in ../shared/integration.md (section 2b): its own config,
queue and data directories under a short /tmp path, a pristine master.cf, no chroot,
virtual delivery to ``<dir>/mail/inbox/`` as nobody, and a log file (there is no syslog).
/etc/postfix is never touched. Needs root (Postfix's own privilege separation) and
Debian's ``postfix`` package.

    with PostfixInstance(milter="inet:127.0.0.1:8895") as pf:
        smtplib.SMTP("127.0.0.1", pf.port).sendmail(...)
        pf.delivered()          # list of Maildir messages (bytes), one per delivered recipient
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .system import find_binary, free_port

__all__ = ["PostfixInstance", "postfix_binary"]

QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")


def postfix_binary() -> str | None:
    return find_binary("postfix")


class PostfixInstance:
    """``with PostfixInstance(milter=...) as pf`` gives Postfix on 127.0.0.1:``pf.port``
    for mail to ``anything@mailfilter.test``; stopped and removed afterwards."""

    domain = "mailfilter.test"

    def __init__(
        self,
        *,
        milter: str | None = None,
        milter_default_action: str = "tempfail",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if postfix_binary() is None:
            raise FileNotFoundError("postfix not found (Debian: apt-get install postfix, see integration.md)")
        # unix socket paths under the queue directory must stay short: keep the root in /tmp
        self.directory = Path(tempfile.mkdtemp(prefix="mgpf-", dir="/tmp"))
        self.directory.chmod(0o755)  # mkdtemp's 0700 would keep the postfix and nobody users out
        self.etc = self.directory / "etc"
        self.spool = self.directory / "spool"
        self.maildir = self.directory / "mail" / "inbox"
        self.log_path = self.directory / "postfix.log"
        self.port = port or free_port()
        self.milter = milter
        self.milter_default_action = milter_default_action
        self.settings = dict(settings or {})
        self.running = False
        self._configured = False

    # -- setup --------------------------------------------------------------------------

    def _run(self, *args: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            detail = (proc.stdout + proc.stderr).strip()
            if not detail:  # Postfix prints fatal errors only to a tty: ask again through script(1)
                again = subprocess.run(["script", "-qc", " ".join(args), "/dev/null"], capture_output=True, text=True, timeout=60)
                detail = (again.stdout + again.stderr).strip()
            raise RuntimeError(f"{' '.join(args)} failed (rc {proc.returncode}): {detail}\n{self.log()[-2000:]}")
        return proc.stdout

    def _configure(self) -> None:
        for sub in ("etc", "spool", "data", "mail"):
            (self.directory / sub).mkdir(exist_ok=True)
        shutil.copy("/usr/share/postfix/master.cf.dist", self.etc / "master.cf")  # pristine, not /etc/postfix's
        shutil.copy("/usr/share/postfix/dynamicmaps.cf", self.etc / "dynamicmaps.cf")
        (self.etc / "main.cf").write_text("")
        shutil.chown(self.directory / "data", user="postfix")
        shutil.chown(self.directory / "mail", user="nobody", group="nogroup")
        d = self.directory
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(d / "data"),
            "myhostname": "mx.mailfilter.test",
            "mydestination": "localhost",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "default_transport": "error",
            "relay_transport": "error",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(d / "mail"),
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": "static:65534",
            "virtual_gid_maps": "static:65534",
            "maillog_file_prefixes": f"/var, /dev/stdout, {d}",
            "maillog_file": str(self.log_path),
            "milter_default_action": self.milter_default_action,
            "milter_protocol": "6",
        }
        if self.milter:
            settings["smtpd_milters"] = self.milter
        settings.update(self.settings)
        self._run("postconf", "-c", str(self.etc), "-e", *(f"{k} = {v}" for k, v in settings.items()))
        self._run("postconf", "-c", str(self.etc), "-MX", "smtp/inet")
        self._run("postconf", "-c", str(self.etc), "-M", f"127.0.0.1:{self.port}/inet=127.0.0.1:{self.port} inet n - n - - smtpd")
        self._run("postconf", "-c", str(self.etc), "-F", "*/*/chroot = n")
        self._run("postfix", "-c", str(self.etc), "check")
        self._configured = True

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> PostfixInstance:
        if not self._configured:
            self._configure()
        self._run("postfix", "-c", str(self.etc), "start")
        self.running = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"postfix did not answer on 127.0.0.1:{self.port} within {timeout}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.running:
            subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, timeout=30)
            self.running = False

    def reload(self, **settings: str) -> None:
        """Change main.cf settings and reload (idle smtpd processes keep the old config until they exit)."""
        if settings:
            self._run("postconf", "-c", str(self.etc), "-e", *(f"{k} = {v}" for k, v in settings.items()))
        self._run("postfix", "-c", str(self.etc), "reload")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostfixInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation --------------------------------------------------------------------

    def smtp(self, timeout: float = 30.0) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=timeout)

    def delivered_paths(self) -> list[Path]:
        paths = [p for sub in ("new", "cur") if (self.maildir / sub).is_dir() for p in (self.maildir / sub).iterdir()]
        return sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))

    def delivered(self) -> list[bytes]:
        """Every delivered copy (one per recipient), oldest first."""
        out = []
        for path in self.delivered_paths():
            try:
                out.append(path.read_bytes())
            except FileNotFoundError:  # moved new/ -> cur/ meanwhile
                continue
        return out

    def clear_maildir(self) -> None:
        for path in self.delivered_paths():
            path.unlink(missing_ok=True)

    def queued(self, which: tuple[str, ...] = QUEUE_DIRS) -> list[Path]:
        """Queue files still in Postfix (held, deferred or in transit)."""
        return [p for q in which if (self.spool / q).is_dir() for p in (self.spool / q).rglob("*") if p.is_file()]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until at least ``count`` copies are in the Maildir."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.delivered()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return self.delivered()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        try:
            return int((self.spool / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
