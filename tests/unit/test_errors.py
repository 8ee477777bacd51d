"""The exception tree and the public names of the package."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import mailguard
from mailguard import errors

ERRORS = [getattr(errors, name) for name in errors.__all__]


def test_error_list_is_complete():
    defined = {name for name, obj in vars(errors).items() if inspect.isclass(obj) and issubclass(obj, BaseException)}
    assert defined == set(errors.__all__)
    assert len(ERRORS) == 7


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_derives_from_mailguard_error(cls):
    assert issubclass(cls, errors.MailguardError)
    assert issubclass(cls, Exception)
    with pytest.raises(errors.MailguardError, match="boom"):
        raise cls("boom")


@pytest.mark.parametrize("cls", [c for c in ERRORS if c is not errors.MailguardError], ids=lambda c: c.__name__)
def test_errors_are_siblings(cls):
    others = [c for c in ERRORS if c not in (cls, errors.MailguardError)]
    assert not any(issubclass(cls, other) for other in others)
    assert cls.__bases__ == (errors.MailguardError,)


def test_errors_exported_from_package():
    for cls in ERRORS:
        assert getattr(mailguard, cls.__name__) is cls
        assert cls.__name__ in mailguard.__all__


def test_package_all_names_exist():
    for name in mailguard.__all__:
        assert hasattr(mailguard, name), name
    assert len(set(mailguard.__all__)) == len(mailguard.__all__)
    assert mailguard.__all__ == sorted(mailguard.__all__)


def test_package_all_matches_the_names_imported_on_first_use():
    """``from mailguard import X`` works for exactly the names of ``__all__``, each the object its
    module defines, and type checkers are shown the same names (the TYPE_CHECKING imports)."""
    assert set(mailguard._EXPORTS) == set(mailguard.__all__)
    for name, module in mailguard._EXPORTS.items():
        assert getattr(mailguard, name) is getattr(importlib.import_module(f"mailguard.{module}"), name), name
    tree = ast.parse(Path(mailguard.__file__).read_text("utf-8"))
    checked = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    shown = {alias.asname or alias.name for node in checked.body if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert shown == set(mailguard.__all__)


@pytest.mark.parametrize(
    "module",
    sorted(m.name for m in pkgutil.walk_packages(mailguard.__path__, "mailguard.") if m.name != "mailguard.__main__"),
)
def test_module_all_names_exist(module):
    mod = __import__(module, fromlist=["__all__"])
    for name in getattr(mod, "__all__", ()):  # a package of modules only has its docstring
        assert hasattr(mod, name), f"{module}.{name}"
