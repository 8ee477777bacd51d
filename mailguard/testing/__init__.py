"""Helpers for testing mailguard against real components on loopback (clamd, ...).

Public so that integrators can reuse them in their own tests, as aiosmtpd does with its
``testing`` package. Nothing here is imported by the filter itself.
"""

from .clamd import EICAR, MARKER, ClamdServer, clamd_binary

__all__ = ["EICAR", "MARKER", "ClamdServer", "clamd_binary"]
