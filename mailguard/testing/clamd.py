"""A private clamd on loopback with a tiny signature database written on the spot.

The database holds EICAR and a custom marker as ``.ndb`` body signatures (which match in
decoded MIME parts and inside archives too), so no download and no system clamd are
needed. Recipe verified in ../shared/integration.md (section 1).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .system import find_binary, free_port, stop_process

__all__ = ["EICAR", "MARKER", "ClamdServer", "clamd_binary"]

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
MARKER = b"MAILGUARD-TEST-MALWARE-MARKER-7f3a"
SIGNATURES = {"Eicar-Test-Signature": EICAR, "MailGuard.Test.Marker": MARKER}


def clamd_binary() -> str | None:
    return find_binary("clamd")


class ClamdServer:
    """``with ClamdServer() as clamd:`` gives a running clamd on ``clamd.socket_path`` and
    ``127.0.0.1:clamd.port``; it is stopped and its directory removed afterwards."""

    def __init__(self, *, stream_max_length: str = "100M") -> None:
        binary = clamd_binary()
        if binary is None:
            raise FileNotFoundError("clamd not found (Debian: apt-get install clamav-daemon)")
        self.binary = binary
        # unix socket paths are limited to ~108 bytes: keep the directory short
        self.directory = Path(tempfile.mkdtemp(prefix="mg-clam-"))
        self.socket_path = str(self.directory / "clamd.sock")
        self.port = free_port()
        self.stream_max_length = stream_max_length
        self.process: subprocess.Popen[bytes] | None = None
        self._write_files()

    def _write_files(self) -> None:
        db = self.directory / "db"
        db.mkdir()
        (self.directory / "tmp").mkdir()
        (db / "test.ndb").write_text("".join(f"{name}:0:*:{body.hex()}\n" for name, body in SIGNATURES.items()))
        (self.directory / "clamd.conf").write_text(
            "\n".join(
                [
                    "Foreground yes",
                    f"LocalSocket {self.socket_path}",
                    "LocalSocketMode 660",
                    "FixStaleSocket yes",
                    f"TCPSocket {self.port}",
                    "TCPAddr 127.0.0.1",
                    f"DatabaseDirectory {db}",
                    f"TemporaryDirectory {self.directory / 'tmp'}",
                    f"PidFile {self.directory / 'clamd.pid'}",
                    f"LogFile {self.directory / 'clamd.log'}",
                    "LogTime yes",
                    "SelfCheck 0",
                    "MaxThreads 4",
                    "ScanArchive yes",
                    "ScanMail yes",
                    f"StreamMaxLength {self.stream_max_length}",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 30.0) -> ClamdServer:
        config = self.directory / "clamd.conf"
        self.process = subprocess.Popen([self.binary, "--foreground", f"--config-file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.process.returncode}: {self.log()[-2000:]}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"clamd did not answer PING within {timeout}s: {self.log()[-2000:]}")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(self.socket_path)
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def log(self) -> str:
        path = self.directory / "clamd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> ClamdServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
