"""Package attributes imported on first use (PEP 562), for ``mailguard`` and ``mailguard.message``.

Importing the scanner pulls in numpy, scipy, dnspython, lxml and the model code (half a
second); a process that only reads a config, parses arguments or starts scan workers should
not pay that because it imported one small module of the package.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each public name to the
    submodule defining it, imported when the name is first asked for (then kept)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
