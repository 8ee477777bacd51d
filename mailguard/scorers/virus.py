"""ClamAV virus scanning: the whole message is streamed to clamd (INSTREAM) so that
ClamAV's own MIME and archive decoders see every part.

A message is reported clean only when clamd answered ``stream: OK``. Anything else (no
answer, a timeout, an ERROR line, garbage) raises `VirusScanError`, which the scanner
records as a failure and the policy turns into tempfail by default (the MTA retries and
nothing is lost). A message over ``max_bytes`` is not sent and is marked unscanned.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import Mapping
from typing import Any

import pyclamd

from ..errors import ConfigError, VirusScanError
from ..message.context import MessageContext
from ..result import Hit
from ..scorer import ScorerInfo, Services

__all__ = ["ClamdClient", "VirusScorer"]

log = logging.getLogger("mailguard.virus")

DEFAULT_MAX_BYTES = 100 * 1024 * 1024  # clamd's own StreamMaxLength default (100M)
_CHUNK = 64 * 1024
_NAME = re.compile(r"[^\w.:/+-]")


def _clean_name(name: str) -> str:
    """A signature name safe for headers and SMTP replies."""
    return _NAME.sub("_", name)[:100] or "unknown"


def _recording(base: type) -> type:
    """A pyclamd client class that keeps every reply line it reads.

    pyclamd returns None both for ``stream: OK`` and for no answer at all; the recorded
    lines let us tell the two apart, so silence is never taken for "clean"."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def _init_socket(self) -> None:
            self.replies: list[str] = []
            try:
                super()._init_socket()
            except Exception:  # pyclamd would leave the unconnected socket open
                self.clamd_socket.close()
                raise

        def _recv_response(self) -> str:
            reply = super()._recv_response()
            if reply:
                self.replies.append(reply if isinstance(reply, str) else repr(reply))
            return reply

    return Recording


_UnixClient = _recording(pyclamd.ClamdUnixSocket)
_NetworkClient = _recording(pyclamd.ClamdNetworkSocket)


class ClamdClient:
    """Talks to one clamd over a unix socket or TCP; a fresh pyclamd connection per call,
    so calls from several threads never share a socket."""

    def __init__(self, *, socket: str | None = None, host: str | None = None, port: int = 3310, timeout: float = 10.0) -> None:
        if bool(socket) == bool(host):
            raise ConfigError("[scorers.virus] give either socket (a unix socket path) or host and port")
        self.socket, self.host, self.port, self.timeout = socket, host, port, timeout
        self._local = threading.local()  # one pyclamd object per worker thread: its constructor connects

    @property
    def address(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"tcp:{self.host}:{self.port}"

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.socket:
                client = _UnixClient(self.socket, timeout=self.timeout)
            else:
                client = _NetworkClient(self.host, self.port, timeout=self.timeout)
            self._local.client = client
        return client

    @staticmethod
    def _close(client: Any) -> None:
        """pyclamd leaves its socket open when a call fails; close it ourselves."""
        sock = getattr(client, "clamd_socket", None)
        if sock is not None:
            sock.close()

    def version(self) -> str:
        """clamd's VERSION answer (engine and database), which also proves it is alive."""
        client = None
        try:
            client = self._client()
            if not client.ping():
                raise VirusScanError(f"clamd at {self.address} did not answer PING")
            return str(client.version()).strip()
        except VirusScanError:
            raise
        except Exception as exc:  # pyclamd raises socket errors, ValueError, IndexError...
            raise VirusScanError(f"clamd at {self.address} unreachable: {exc}") from exc
        finally:
            self._close(client)

    def scan(self, data: bytes) -> str | None:
        """The signature name if infected, None if clamd said OK; VirusScanError otherwise.
        Raises `OverflowError` when clamd refuses the size (its StreamMaxLength)."""
        client = None
        try:
            client = self._client()
            found = client.scan_stream(io.BytesIO(data), chunk_size=_CHUNK)
        except pyclamd.BufferTooLongError as exc:
            raise OverflowError("larger than clamd's StreamMaxLength") from exc
        except Exception as exc:
            raise VirusScanError(f"clamd at {self.address}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._close(client)
        if found is None:
            if any(line.endswith(": OK") for line in getattr(client, "replies", [])):
                return None
            raise VirusScanError(f"clamd at {self.address} gave no verdict (reply: {getattr(client, 'replies', [])!r:.80})")
        status, name = next(iter(found.values()))
        if status == "FOUND":
            return _clean_name(name)
        raise VirusScanError(f"clamd at {self.address} answered {status}: {name:.80}")


class VirusScorer:
    name = "virus"
    info = ScorerInfo(
        group="virus",
        symbols={
            "VIRUS_FOUND": "ClamAV found a signature (the policy forces an action, by default reject)",
            "VIRUS_UNSCANNED": "too large to scan; delivered unscanned unless the policy says otherwise",
        },
        # The verdict comes from the policy's forced action, not from spam points.
        default_weights={"VIRUS_FOUND": 0.0, "VIRUS_UNSCANNED": 0.0},
        timeout=30.0,
    )

    def __init__(self, client: ClamdClient, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.client = client
        self.max_bytes = max_bytes
        self.scanner_version: str | None = None

    @classmethod
    def from_config(cls, section: Mapping[str, Any], services: Services) -> VirusScorer:
        known = {"socket", "host", "port", "timeout", "max_bytes"}
        unknown = set(section) - known
        if unknown:
            raise ConfigError(f"[scorers.virus] unknown key(s): {', '.join(sorted(unknown))}")
        for key in ("port", "timeout", "max_bytes"):
            value = section.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"[scorers.virus] {key} must be a positive number")
        socket = section.get("socket")
        host = section.get("host")
        if not socket and not host:
            socket = "/var/run/clamav/clamd.ctl"  # Debian's clamav-daemon default
        timeout = float(section.get("timeout", 10.0))
        scorer = cls(
            ClamdClient(socket=socket, host=host, port=int(section.get("port", 3310)), timeout=timeout),
            max_bytes=int(section.get("max_bytes", DEFAULT_MAX_BYTES)),
        )
        scorer.info = ScorerInfo(**{**scorer.info.__dict__, "timeout": timeout + 5.0})
        try:  # the start-up check: a warning, not a refusal; scans tempfail until clamd answers
            scorer.scanner_version = scorer.client.version()
        except VirusScanError as exc:
            log.warning("virus scanner not ready at start-up: %s", exc)
        return scorer

    async def health(self) -> str:
        """clamd's version string; raises VirusScanError when it does not answer."""
        self.scanner_version = await asyncio.to_thread(self.client.version)
        return self.scanner_version

    async def score(self, ctx: MessageContext) -> list[Hit]:
        size = len(ctx.raw)
        if size > self.max_bytes:
            reason = f"{size} bytes, over the {self.max_bytes}-byte scan limit"
            ctx.add_header("X-Virus-Status", f"Unscanned ({reason})")
            return [Hit("VIRUS_UNSCANNED", 1.0, reason)]
        try:
            name = await asyncio.to_thread(self.client.scan, ctx.raw)
        except OverflowError as exc:
            ctx.add_header("X-Virus-Status", f"Unscanned ({exc})")
            return [Hit("VIRUS_UNSCANNED", 1.0, str(exc))]
        except VirusScanError:
            ctx.add_header("X-Virus-Status", "Unscanned (virus scanner unavailable)")
            raise
        ctx.add_header("X-Virus-Scanned", self.scanner_version or "ClamAV")
        if name is None:
            ctx.add_header("X-Virus-Status", "Clean")
            return []
        ctx.add_header("X-Virus-Status", f"Infected ({name})")
        return [Hit("VIRUS_FOUND", 1.0, name)]
