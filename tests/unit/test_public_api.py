"""The public API is exported explicitly, documented, and the standing rules hold."""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

import snakepit
from snakepit.otp._lowlevel import NoPublicConstructor

PUBLIC_PACKAGES = (
    "snakepit",
    "snakepit.session",
    "snakepit.otp",
    "snakepit.errors",
    "snakepit.worker",
    "snakepit.pool",
    "snakepit.testing.adapters",
)
ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[ModuleType]:
    found = [snakepit]
    for info in pkgutil.walk_packages(snakepit.__path__, "snakepit."):
        if "._proto" not in info.name:
            found.append(importlib.import_module(info.name))
    return found


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_names_exist_and_are_documented(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    exported = module.__all__
    assert isinstance(exported, tuple), f"{name}.__all__ must be a tuple"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    undocumented = []
    for attr in exported:
        obj = getattr(module, attr)  # AttributeError names a missing export
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            undocumented.append(attr)
        if inspect.isclass(obj) and obj.__module__.startswith("snakepit"):
            for member, value in vars(obj).items():
                if member.startswith("_") or (
                    not callable(value)
                    and not isinstance(value, property | classmethod | staticmethod)
                ):
                    continue
                if not inspect.getdoc(getattr(obj, member)):
                    undocumented.append(f"{attr}.{member}")
    assert undocumented == [], f"undocumented public names in {name}: {undocumented}"


def test_public_classes_are_exported_from_their_package() -> None:
    # Every public name of a private module (snakepit/<pkg>/_x.py, or deeper in a
    # private package such as snakepit/pool/_launch/) is re-exported by the nearest
    # public package (snakepit.pool). Modules of a private top-level package
    # (snakepit/_wire/) are internal.
    missing = []
    for module in _modules():
        parts = module.__name__.split(".")
        if len(parts) < 3 or not parts[-1].startswith("_") or parts[1].startswith("_"):
            continue
        public = next(i for i, part in enumerate(parts) if part.startswith("_"))
        package = importlib.import_module(".".join(parts[:public]))
        for attr in getattr(module, "__all__", ()):
            if attr not in getattr(package, "__all__", ()):
                missing.append(f"{module.__name__}.{attr}")
    assert missing == []


def test_every_error_is_a_snakepit_error() -> None:
    import snakepit.errors as errors

    for attr in errors.__all__:
        obj = getattr(errors, attr)
        assert issubclass(obj, snakepit.SnakepitError), attr
        assert attr in errors.__doc__, f"{attr} is missing from the tree drawn in the docstring"


#: What each layer may import of snakepit (and of grpc): imports point down only.
LAYERS: dict[str, tuple[str, ...]] = {
    # otp._reasons under TYPE_CHECKING (ServerExited.reason); _wire._payload_fields
    # imports nothing (the fields PayloadError shares with the codec's CodecError).
    "snakepit.errors": ("snakepit.otp._reasons", "snakepit._wire._payload_fields"),
    "snakepit.otp": ("snakepit.errors",),
    # _wire._variables: a variable's spec and value, as both sides of the bridge know them.
    "snakepit.session": ("snakepit.errors", "snakepit.otp", "snakepit._wire._variables"),
    # snakepit.errors: a leaf; a variable's spec (_wire._variables) raises its errors.
    "snakepit._wire": ("grpc", "snakepit.errors"),
    # snakepit.errors: a leaf (see above); a tool's bridge errors are of the one hierarchy.
    "snakepit.worker": ("snakepit._wire", "snakepit.errors", "grpc"),
    "snakepit.pool": (
        "snakepit.errors",
        "snakepit.otp",
        "snakepit.session",
        "snakepit._wire",
        "snakepit.worker",
        "snakepit.pool",
        "grpc",
    ),
}


@functools.cache
def _parse(path: Path) -> ast.Module:
    """The syntax tree of ``path`` (each file is parsed once per run)."""
    return ast.parse(path.read_text())


@functools.cache
def _nodes(path: Path) -> tuple[ast.AST, ...]:
    """Every node of ``path``'s tree, as ``ast.walk`` gives them (walked once per run)."""
    return tuple(ast.walk(_parse(path)))


def _class_node(cls: type) -> ast.ClassDef:
    """The ``class`` statement of ``cls``, from its module's tree."""
    return next(
        node
        for node in _nodes(Path(inspect.getfile(cls)))
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__
    )


@functools.cache  # several tests ask for every file's imports
def _imports(path: Path, module: str) -> frozenset[str]:
    """Every module ``path`` imports, at any depth (in functions too), relative ones resolved."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in _nodes(path):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    # otp knows nothing of grpc or pools; the worker runtime and _wire nothing of
    # the host side; nothing in the product imports snakepit.testing.
    allowed = (layer, *LAYERS[layer])
    offenders = []
    root = ROOT / Path(*layer.split("."))
    paths = [root.with_suffix(".py")] if root.with_suffix(".py").exists() else root.rglob("*.py")
    for path in paths:
        if "_proto" in path.parts:
            continue
        relative = path.relative_to(ROOT).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        for name in _imports(path, module):
            inside = _within(name, "snakepit") or _within(name, "grpc")
            if inside and not any(_within(name, ok) for ok in allowed):
                offenders.append(f"{relative}: {name}")
    assert offenders == []


def test_nothing_in_the_product_imports_the_testing_package() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "snakepit").rglob("*.py")
        if "testing" not in path.relative_to(ROOT).parts
        for name in _imports(path, "snakepit.x")
        if _within(name, "snakepit.testing")
    ]
    assert offenders == []


def test_no_sleep_for_synchronization_in_tests() -> None:
    pattern = re.compile(r"\b(time|anyio|asyncio|trio)\.sleep\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "tests").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_py_typed_marker_ships() -> None:
    assert (Path(snakepit.__file__).parent / "py.typed").exists()


def test_every_error_is_exported_from_the_package() -> None:
    import snakepit.errors

    missing = [name for name in snakepit.errors.__all__ if name not in snakepit.__all__]
    assert missing == [], f"errors not re-exported from snakepit: {missing}"


#: Every public package whose ``__all__`` the type walk below covers.
TYPED_PACKAGES = (
    "snakepit",
    "snakepit.errors",
    "snakepit.otp",
    "snakepit.session",
    "snakepit.pool",
    "snakepit.worker",
    "snakepit.testing",
    "snakepit.testing.adapters",
)


def _annotation_namespace(name: str) -> dict[str, object]:
    """The globals of module ``name``, plus what it imports under ``if TYPE_CHECKING:``."""
    import sys
    import typing

    module = sys.modules[name]
    namespace = dict(vars(module))
    # Module-level statements only: an ``if TYPE_CHECKING:`` anywhere else
    # defines no global (and a walk of every node cost ~0.3 s per run).
    for node in _parse(Path(inspect.getfile(module))).body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name | ast.Attribute)
            and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        ):
            block = ast.Module(body=node.body, type_ignores=[])
            code = compile(block, module.__file__ or module.__name__, "exec")
            package = module.__name__ if hasattr(module, "__path__") else module.__package__
            scope: dict[str, object] = {"__name__": module.__name__, "__package__": package}
            exec(code, scope)
            namespace.update({k: v for k, v in scope.items() if not k.startswith("__")})
    namespace.setdefault("typing", typing)
    return namespace


def _types_in(annotation: object) -> list[type]:
    """Every class an annotation names, through unions, generics, Callable and aliases."""
    import typing

    found: list[type] = []
    todo = [annotation]
    while todo:
        item = todo.pop()
        if isinstance(item, typing.TypeVar):
            if item.__bound__ is not None:
                todo.append(item.__bound__)
            todo.extend(item.__constraints__)
            continue
        if isinstance(item, list | tuple):
            todo.extend(item)
            continue
        value = getattr(item, "__value__", None)  # a `type X = ...` alias
        if value is not None:
            todo.append(value)
        origin = typing.get_origin(item)
        if origin is typing.Literal:
            continue
        if origin is not None:
            todo.append(origin)
            todo.extend(typing.get_args(item))
        elif isinstance(item, type):
            found.append(item)
    return found


def _signatures(name: str, obj: object) -> list[tuple[str, object, object]]:
    """(qualified name, annotated object, its module's object) of a public object and its members.

    A class gives its public fields (its own and its snakepit bases', each
    resolved in its own module), ``__init__`` and public methods and properties.
    """
    if inspect.isfunction(obj):
        return [(name, obj, obj)]
    if not inspect.isclass(obj) or not obj.__module__.startswith("snakepit"):
        return []
    found: list[tuple[str, object, object]] = []
    for klass in obj.__mro__:
        if not klass.__module__.startswith("snakepit"):
            continue
        own = vars(klass)
        fields = {k: v for k, v in own.get("__annotations__", {}).items() if not k.startswith("_")}
        if fields:
            holder = type(klass.__name__, (), {"__annotations__": fields})
            found.append((f"{name} (fields of {klass.__qualname__})", holder, klass))
        # A class whose constructor raises (only snakepit makes one) has no
        # public __init__ to speak of.
        made_by_us = isinstance(klass, NoPublicConstructor)
        for member, value in own.items():
            if member.startswith("_") and (member != "__init__" or made_by_us):
                continue
            if isinstance(value, property):
                value = value.fget
            elif isinstance(value, classmethod | staticmethod):
                value = value.__func__
            if inspect.isfunction(value):
                found.append((f"{name}.{member}", value, value))
    return found


def test_no_public_signature_names_a_private_or_generated_type() -> None:
    # A user can name, import and document every type a public function or
    # method takes or returns: none lives only in a private module, none is a
    # generated protobuf message.
    import typing

    packages = [importlib.import_module(name) for name in TYPED_PACKAGES]
    public = {id(getattr(p, attr)) for p in packages for attr in p.__all__}
    namespaces: dict[str, dict[str, object]] = {}
    problems: set[str] = set()
    for package in packages:
        for attr in package.__all__:
            found = _signatures(f"{package.__name__}.{attr}", getattr(package, attr))
            for qualname, obj, home in found:
                module_name = home.__module__
                if module_name not in namespaces:
                    namespaces[module_name] = _annotation_namespace(module_name)
                try:
                    hints = typing.get_type_hints(obj, globalns=namespaces[module_name])
                except Exception as exc:  # an annotation that does not resolve
                    problems.add(f"{qualname}: cannot resolve its annotations: {exc!r}")
                    continue
                for where, annotation in hints.items():
                    if where.startswith("_"):  # a private parameter (``_child``): internal
                        continue
                    for cls in _types_in(annotation):
                        module = cls.__module__
                        generated = module.endswith("_pb2") or "._proto" in module
                        private = module.startswith("snakepit") and any(
                            part.startswith("_") for part in module.split(".")[1:]
                        )
                        if generated or (private and id(cls) not in public):
                            problems.add(f"{qualname} ({where}): {module}.{cls.__qualname__}")
    assert sorted(problems) == [], "\n".join(sorted(problems))


def _private_names(node: ast.AST, nodes: Iterable[ast.AST] | None = None) -> set[str]:
    """The ``_x`` names (not dunders) ``node`` defines or uses on ``self``: methods, attributes.

    ``nodes``: ``ast.walk(node)``, when it is at hand already.
    """
    names: set[str] = set()
    for sub in ast.walk(node) if nodes is None else nodes:
        if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(sub.name)
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            if sub.value.id in ("self", "cls"):
                names.add(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            names.add(sub.value)  # __slots__ entries
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_nothing_outside_the_otp_core_uses_its_private_names() -> None:
    # The OTP core's extension points are public (GenServer.lifespan,
    # Supervisor.restart_counts, ...): no other package imports a private otp
    # module, overrides or calls a private method of an otp class, or touches a
    # private attribute of one.
    import snakepit.otp as otp

    exempt = {"snakepit/errors.py": {"snakepit.otp._reasons"}}  # TYPE_CHECKING, see LAYERS
    otp_classes = [c for c in vars(otp).values() if inspect.isclass(c) and _in_otp(c)]
    own: dict[type, set[str]] = {c: _private_names(_class_node(c)) for c in otp_classes}
    otp_only = set().union(*own.values())
    outside = [p for p in (ROOT / "snakepit").rglob("*.py") if not _under(p, "snakepit/otp")]
    offenders = []
    for path in outside:
        if "_proto" in path.parts:
            continue
        name = str(path.relative_to(ROOT))
        # A name the product uses for its own is not otp's.
        otp_only -= _private_names(_parse(path), _nodes(path))
        for imported in _imports(path, "snakepit.x"):
            parts = imported.split(".")
            private = len(parts) > 2 and parts[:2] == ["snakepit", "otp"] and parts[2][:1] == "_"
            if private and not any(_within(imported, ok) for ok in exempt.get(name, ())):
                offenders.append(f"{name}: imports {imported}")
    for module in _modules():
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__ or _in_otp(cls):
                continue
            bases = [b for b in cls.__mro__ if b in own]
            if bases:
                used = _private_names(_class_node(cls))
                for base in bases:
                    offenders += [
                        f"{cls.__qualname__}: {base.__name__}.{n}" for n in used & own[base]
                    ]
    for path in outside:
        nodes = _nodes(path)
        modules = {  # os._exit is no otp name
            (alias.asname or alias.name).split(".")[0]
            for sub in nodes
            if isinstance(sub, ast.Import)
            for alias in sub.names
        }
        for sub in nodes:
            on_module = isinstance(sub, ast.Attribute) and (
                isinstance(sub.value, ast.Name) and sub.value.id in modules
            )
            if isinstance(sub, ast.Attribute) and sub.attr in otp_only and not on_module:
                offenders.append(f"{path.relative_to(ROOT)}:{sub.lineno}: .{sub.attr}")
    assert offenders == []


def _in_otp(obj: object) -> bool:
    return getattr(obj, "__module__", "").startswith("snakepit.otp.")


def _under(path: Path, folder: str) -> bool:
    return path.relative_to(ROOT).as_posix().startswith(folder + "/")
