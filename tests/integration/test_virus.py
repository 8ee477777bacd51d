"""Virus scanning against a real clamd on loopback, with a signature database written by
the fixture (EICAR and a custom marker). Failure modes a real clamd cannot be made to show
on demand (garbage, silence, a hang) use tiny socket peers that speak badly on purpose."""

from __future__ import annotations

import io
import os
import socket
import tempfile
import threading
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailguard import Action, Config, Scanner
from mailguard.cli import main
from mailguard.config import PolicyConfig, ScannerConfig, StoreConfig
from mailguard.testing import EICAR, MARKER, ClamdServer, clamd_binary

from ..conftest import HAM_WORDS, make_message


def require_clamd() -> None:
    if clamd_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install clamd (apt-get install clamav-daemon); the virus tests cannot run")
        pytest.skip("clamd not installed (apt-get install clamav-daemon)")


@pytest.fixture(scope="module")
def clamd():
    require_clamd()
    with ClamdServer() as server:
        yield server


def virus_scanner(tiny_model, section: dict, **policy) -> Scanner:
    config = Config(
        store=StoreConfig(backend="memory"),
        scanner=ScannerConfig(scorers=("bayes", "virus")),
        scorers={"virus": section},
        policy=PolicyConfig(**policy),
    )
    return Scanner(config, model=tiny_model)


def with_attachment(payload: bytes, filename: str, maintype: str = "application", subtype: str = "octet-stream") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "the file you asked for"
    msg.set_content("See attached.\n")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def zipped(name: str, payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, payload)
    return buf.getvalue()


def nested_with_zip() -> bytes:
    """multipart/mixed > message/rfc822 > multipart/mixed > zip(eicar.com), base64 all the way."""
    inner = EmailMessage()
    inner["Subject"] = "fwd"
    inner.set_content("inner text\n")
    inner.add_attachment(zipped("eicar.com", EICAR), maintype="application", subtype="zip", filename="files.zip")
    outer = EmailMessage()
    outer["From"] = "carol@example.org"
    outer["To"] = "bob@example.net"
    outer["Subject"] = "forwarded"
    outer.set_content("forwarding this\n")
    outer.add_attachment(inner)
    return outer.as_bytes()


def marker_in_second_part() -> bytes:
    msg = EmailMessage()
    msg["From"] = "dave@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = "report"
    msg.set_content("first part is harmless\n")
    msg.add_attachment(b"prefix " + MARKER + b" suffix", maintype="application", subtype="octet-stream", filename="data.bin")
    return msg.as_bytes()


CASES = {
    "eicar-base64-attachment": (with_attachment(EICAR, "eicar.com"), "Eicar-Test-Signature"),
    "eicar-in-zip": (with_attachment(zipped("eicar.com", EICAR), "files.zip", subtype="zip"), "Eicar-Test-Signature"),
    "zip-in-nested-multipart": (nested_with_zip(), "Eicar-Test-Signature"),
    "marker-in-second-part": (marker_in_second_part(), "MailGuard.Test.Marker"),
}


@pytest.mark.parametrize("transport", ["unix", "tcp"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_infected_mail_is_rejected_with_the_signature_name(clamd, tiny_model, case, transport):
    raw, signature = CASES[case]
    section = {"socket": clamd.socket_path} if transport == "unix" else {"host": "127.0.0.1", "port": clamd.port}
    with virus_scanner(tiny_model, section) as scanner:
        result = scanner.scan_sync(raw)
    verdict = result.verdict
    assert verdict.action is Action.REJECT, verdict.reason
    assert verdict.smtp_reply is not None and verdict.smtp_reply[:2] == ("550", "5.7.1")
    assert signature in verdict.smtp_reply[2]
    status = dict(verdict.headers)["X-Virus-Status"]
    assert status.startswith(f"Infected ({signature}")  # clamd appends .UNOFFICIAL
    hit = next(c for c in result.contributions if c.symbol == "VIRUS_FOUND")
    assert hit.reason.startswith(signature)


def test_virus_action_is_configurable(clamd, tiny_model):
    raw, _ = CASES["eicar-base64-attachment"]
    with virus_scanner(tiny_model, {"socket": clamd.socket_path}, forced={"VIRUS_FOUND": "quarantine"}) as scanner:
        assert scanner.scan_sync(raw).verdict.action is Action.QUARANTINE


def test_clean_mail_says_clean_and_keeps_its_spam_verdict(clamd, tiny_model):
    raw = make_message(HAM_WORDS, subject="agenda", seed=5)
    with virus_scanner(tiny_model, {"socket": clamd.socket_path}) as scanner:
        result = scanner.scan_sync(raw)
    headers = dict(result.verdict.headers)
    assert headers["X-Virus-Status"] == "Clean"
    assert headers["X-Virus-Scanned"].startswith("ClamAV 1.")
    assert result.verdict.action is Action.ACCEPT and not result.failures


def test_message_over_the_size_bound_is_marked_unscanned(clamd, tiny_model):
    raw, _ = CASES["eicar-base64-attachment"]
    with virus_scanner(tiny_model, {"socket": clamd.socket_path, "max_bytes": 200}) as scanner:
        result = scanner.scan_sync(raw)
    assert dict(result.verdict.headers)["X-Virus-Status"].startswith("Unscanned (")
    hit = next(c for c in result.contributions if c.symbol == "VIRUS_UNSCANNED")
    assert str(len(raw)) in hit.reason
    assert result.verdict.action is not Action.REJECT


def test_clamd_stream_limit_is_reported_not_clean(tiny_model):
    require_clamd()
    with ClamdServer(stream_max_length="1K") as small:
        raw = with_attachment(os.urandom(8000), "noise.bin")
        with virus_scanner(tiny_model, {"socket": small.socket_path}) as scanner:
            result = scanner.scan_sync(raw)
    assert dict(result.verdict.headers)["X-Virus-Status"].startswith("Unscanned (")
    assert any(c.symbol == "VIRUS_UNSCANNED" and "StreamMaxLength" in c.reason for c in result.contributions)


def test_clamd_stopped_mid_run_tempfails_then_recovers(tiny_model):
    require_clamd()
    clean = make_message(HAM_WORDS, subject="agenda", seed=6)
    infected, _ = CASES["eicar-base64-attachment"]
    server = ClamdServer().start()
    try:
        with virus_scanner(tiny_model, {"socket": server.socket_path, "timeout": 2}) as scanner:
            assert dict(scanner.scan_sync(clean).verdict.headers)["X-Virus-Status"] == "Clean"
            server.stop()
            for raw in (clean, infected):
                verdict = scanner.scan_sync(raw).verdict
                assert verdict.action is Action.TEMPFAIL
                assert verdict.smtp_reply[:2] == ("451", "4.7.1")
                assert dict(verdict.headers)["X-Virus-Status"].startswith("Unscanned")
            server.start()
            assert scanner.scan_sync(infected).verdict.action is Action.REJECT
    finally:
        server.close()


def test_fail_open_accepts_with_a_header(tiny_model):
    missing = Path(tempfile.mkdtemp()) / "no-clamd.sock"
    with virus_scanner(tiny_model, {"socket": str(missing)}, on_failure={"virus": "accept"}) as scanner:
        result = scanner.scan_sync(make_message(HAM_WORDS, seed=7))
    assert result.verdict.action is Action.ACCEPT
    assert [f.scorer for f in result.failures] == ["virus"]
    assert dict(result.verdict.headers)["X-Virus-Status"] == "Unscanned (virus scanner unavailable)"


class BadPeer:
    """A unix-socket peer that answers every connection with ``reply`` (or hangs)."""

    def __init__(self, reply: bytes | None) -> None:
        self.path = tempfile.mktemp(prefix="mg-bad-", suffix=".sock", dir="/tmp")
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                conn.recv(65536)
            except OSError:
                pass
            if self.reply is None:
                self.held.append(conn)  # never answer
                continue
            try:
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()
        os.unlink(self.path)


@pytest.mark.parametrize(
    "reply", [b"this is not clamd\0", b"", b"stream: Something ERROR\0", None], ids=["garbage", "silence", "error", "hang"]
)
def test_misbehaving_scanner_is_never_taken_for_clean(tiny_model, reply):
    peer = BadPeer(reply)
    try:
        with virus_scanner(tiny_model, {"socket": peer.path, "timeout": 0.5}) as scanner:
            result = scanner.scan_sync(make_message(HAM_WORDS, seed=8))
    finally:
        peer.close()
    assert result.verdict.action is Action.TEMPFAIL
    assert [f.scorer for f in result.failures] == ["virus"]
    assert dict(result.verdict.headers)["X-Virus-Status"] != "Clean"


def test_health_and_doctor(clamd, tiny_model, tmp_path, monkeypatch, capsys):
    with virus_scanner(tiny_model, {"socket": clamd.socket_path}) as scanner:
        report = scanner.health_sync()
    assert report["scorer virus"][0] and report["scorer virus"][1].startswith("ClamAV")
    assert report["store"][0] and report["model"][0]

    monkeypatch.setenv("MAILGUARD_STORE", str(tmp_path / "s.sqlite3"))
    config = tmp_path / "mailguard.toml"
    config.write_text(f'[scanner]\nscorers = ["bayes", "virus"]\n[scorers.virus]\nsocket = "{clamd.socket_path}"\n')
    assert main(["--config", str(config), "doctor"]) == 0
    assert "ok   scorer virus: ClamAV" in capsys.readouterr().out
    config.write_text(f'[scanner]\nscorers = ["bayes", "virus"]\n[scorers.virus]\nsocket = "{tmp_path}/none.sock"\n')
    assert main(["--config", str(config), "doctor"]) == 1
    assert "FAIL scorer virus" in capsys.readouterr().out


def test_conformance_with_a_real_clamd(clamd, tiny_model):
    """The scorer runs over every sample with the service present: all clean, all said so."""
    import asyncio

    from mailguard.config import Config as C
    from mailguard.message import MessageContext
    from mailguard.scorer import Services, load_scorer
    from mailguard.stores.memory import MemoryStore

    from ..conftest import SAMPLES

    scorer = load_scorer("virus", {"socket": clamd.socket_path}, Services(C(), MemoryStore(), tiny_model))

    async def run():
        for path in sorted(SAMPLES.iterdir()):
            ctx = MessageContext(path.read_bytes())
            hits = await scorer.score(ctx)
            assert hits == [] and ("X-Virus-Status", "Clean") in ctx.added_headers

    asyncio.run(run())
