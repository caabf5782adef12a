"""
Outside ``antenna_tw/adapters/``, the collector uses public APIs only: no
import of a private module or name from another library, no private
attribute that the package does not define itself.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "antenna_tw"
ADAPTERS = PACKAGE / "adapters"
SOURCES = sorted(PACKAGE.rglob("*.py")) + [ROOT / "twisted" / "plugins" / "antenna_plugin.py"]
CHECKED = [path for path in SOURCES if ADAPTERS not in path.parents]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree: ast.AST) -> set[str]:
    """Names the package defines: functions, classes, its own attributes and assignments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return names


OWN_NAMES = set().union(*(_defined_names(ast.parse(path.read_text())) for path in SOURCES))


def private_uses(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in ("antenna_tw", "__future__"):
                continue
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{where} imports from {node.module}")
            found += [f"{where} imports {node.module}.{alias.name}"
                      for alias in node.names if _private(alias.name)]
        elif isinstance(node, ast.Import):
            found += [f"{where} imports {alias.name}" for alias in node.names
                      if any(_private(part) for part in alias.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in OWN_NAMES:
                found.append(f"{where} uses .{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _private(node.args[1].value)
              and node.args[1].value not in OWN_NAMES):
            found.append(f"{where} uses {node.func.id}(..., {node.args[1].value!r})")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda path: str(path.relative_to(ROOT)))
def test_public_api_only(path: pathlib.Path) -> None:
    assert private_uses(path) == []


def test_the_check_catches_private_uses(tmp_path: pathlib.Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from _string import formatter_parser\n"
        "from twisted.web._newclient import RequestTransmissionFailed\n"
        "from twisted.web.client import _HTTP11ClientFactory\n"
        "import twisted.web._newclient\n"
        "def f(transport):\n"
        "    transport._shouldShutdown = True\n"
        "    return getattr(transport, '_notOursAtAll', None)\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = private_uses(planted)
    finally:
        ROOT = saved
    assert len(found) == 6, found


def _module_name(path: pathlib.Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _class_body_names(cls: type) -> set[str]:
    """
    The names the body of ``cls`` defines: not what its metaclass adds
    (an Enum's ``_member_map_``, a Protocol's ``_is_protocol``).
    """
    try:
        source = inspect.getsource(cls)
    except OSError:
        # Made at run time (config.aws_settings): no body of its own is written anywhere.
        return set()
    [body] = ast.parse(textwrap.dedent(source)).body
    assert isinstance(body, ast.ClassDef)
    names = set()
    for node in body.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def private_overrides(module_name: str) -> list[str]:
    """Private methods a class of ``module_name`` overrides in another library's class."""
    module = importlib.import_module(module_name)
    found = []
    for name, value in vars(module).items():
        if not inspect.isclass(value) or value.__module__ != module_name:
            continue
        foreign = [base for base in value.__mro__[1:]
                   if not base.__module__.startswith("antenna_tw") and base is not object]
        for attribute in vars(value).keys() & _class_body_names(value):
            if _private(attribute) and any(attribute in vars(base) for base in foreign):
                found.append(f"{module_name}.{name} overrides {attribute}")
    return found


@pytest.mark.parametrize(
    "path", [path for path in CHECKED if path.is_relative_to(PACKAGE)],
    ids=lambda path: str(path.relative_to(ROOT)))
def test_no_private_overrides(path: pathlib.Path) -> None:
    assert private_overrides(_module_name(path)) == []


def test_the_override_check_catches_one() -> None:
    from twisted.web.client import HTTPConnectionPool

    class Planted(HTTPConnectionPool):
        def _newConnection(self, key: object, endpoint: object) -> None:
            pass

    Planted.__module__ = __name__
    globals()["Planted"] = Planted
    try:
        assert private_overrides(__name__) == [f"{__name__}.Planted overrides _newConnection"]
    finally:
        del globals()["Planted"]
