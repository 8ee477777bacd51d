"""Helpers for testing mailguard against real components on loopback (clamd, Postfix, Redis, ...).

Public so that integrators can reuse them in their own tests, as aiosmtpd does with its
``testing`` package. Nothing here is imported by the filter itself.
"""

from .clamd import EICAR, MARKER, ClamdServer, clamd_binary
from .postfix import PostfixInstance, postfix_binary
from .redis import RedisServer, redis_server_binary
from .redis_cluster import RedisClusterServers

__all__ = [
    "EICAR",
    "MARKER",
    "ClamdServer",
    "PostfixInstance",
    "RedisClusterServers",
    "RedisServer",
    "clamd_binary",
    "postfix_binary",
    "redis_server_binary",
]
