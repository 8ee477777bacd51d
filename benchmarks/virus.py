"""Virus scanning overhead: the corpus scanned with the virus scorer off and on, against a
private clamd on this machine (mailguard.testing.ClamdServer, test signatures only).

    python benchmarks/virus.py [--corpora ../shared/corpora] [--limit N]

Prints messages per second both ways and the per-message overhead p50/p99. The scanning
process is pinned to one core; clamd runs as its own process. With ClamAV's official
database clamd would do more work per message; that database cannot be fetched here.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from common import corpus_bytes, percentiles_ms, pin_one_core, timed_scans

from mailguard.config import Config, ScannerConfig, StoreConfig
from mailguard.scanner import Scanner
from mailguard.testing import ClamdServer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", default=os.environ.get("MAILGUARD_CORPORA", "../shared/corpora"))
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    pin_one_core()
    raws = corpus_bytes(args.corpora, args.limit)
    with ClamdServer() as clamd:
        base = Config(store=StoreConfig(backend="memory"), scanner=ScannerConfig(scorers=("bayes",), network=False))
        with_virus = base.replace(scanner=ScannerConfig(scorers=("bayes", "virus"), network=False), scorers={"virus": {"socket": clamd.socket_path}})
        with Scanner(base) as off_scanner:
            off = timed_scans(off_scanner, raws)
        with Scanner(with_virus) as on_scanner:
            on = timed_scans(on_scanner, raws)
    print(f"{len(raws)} messages (mean {np.mean([len(r) for r in raws]) / 1024:.1f} KiB), clamd {clamd.binary} with test signatures, unix socket")
    print(f"  virus scorer off  {len(raws) / off.sum():6.0f} messages/s   {percentiles_ms(off)}")
    print(f"  virus scorer on   {len(raws) / on.sum():6.0f} messages/s   {percentiles_ms(on)}")
    print(f"  overhead per message: {percentiles_ms(on - off)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
