"""
The architecture of stproxy as tests: no import cycles, private Twisted and
Autobahn names only behind the adapters, small documented modules, a package
map that names every part, and Twisted and Autobahn capped below their next
major version.

How the import graph is drawn (L{importGraph}): a node is a module of
stproxy, a package being its C{__init__.py}.  Every import statement counts,
wherever it is (module level, functions, C{if TYPE_CHECKING:} blocks).  An
import's edge goes to the most specific stproxy module it names: C{import
stproxy.a.b} and C{from stproxy.a import b} (when C{stproxy/a/b.py} or
C{stproxy/a/b/} exists) are edges to C{stproxy.a.b}; C{from stproxy.a import
name} (a name defined in C{stproxy/a/__init__.py}) is an edge to the package
C{stproxy.a}.  So C{from stproxy import parse} in C{tap.py} is an edge to
C{stproxy.parse}, not to C{stproxy/__init__.py}, which re-exports C{api} and
C{tap}.  The parent packages Python initializes before a submodule are not
edges: Python finishes importing a submodule while its parent is still
initializing, so such a "cycle" only breaks when the submodule needs a name
from the parent, and that is an explicit C{from parent import name} edge,
which is counted.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stproxy"
ADAPTERS = {PACKAGE / "_twisted.py", PACKAGE / "_autobahn.py"}
MAX_LINES = 310
#: The adapters may be longer: every private name of one library stays in one
#: module (the rule above), with the reason it is used written next to it.
MAX_ADAPTER_LINES = 420

#: The Autobahn internals listed in stproxy/_autobahn.py's docstring.
AUTOBAHN_INTERNALS = {
    "_dataReceived",
    "_fail_connection",
    "sendCloseFrame",
    "send_queue",
    "closeHandshakeTimeoutCall",
    "message_data",
    "message_is_binary",
    "failedByMe",
    "droppedByMe",
    "_batched_timer",
    "http_request_data",
    "http_status_line",
    "http_request_path",
    "onCloseFrame",
    "failHandshake",
    "serverConnectionDropTimeoutCall",
    "onServerConnectionDropTimeout",
    "maxMessagePayloadSize",
    # Raw passage ("data", Autobahn's receive buffer, is left out: too common a name).
    "current_frame",
    "inside_message",
    "websocket_extensions_in_use",
    "autoPingTimeoutCall",
    "_cancelAutoPingTimeoutCall",
    "_closeConnection",
    # Memory per idle connection: options, starting state and handshake state ("http_headers"
    # is left out: twisted.web.http_headers).
    "CONFIG_ATTRS",
    "processHandshake",
    "closedByMe",
    "triggered",
    "wasNotCleanReason",
    "trackedTimings",
    "_perMessageCompress",
    "openHandshakeTimeoutCall",
    "autoPingPending",
    "autoPingPendingCall",
    "autoPingPendingSent",
    "autoPingPendingSeq",
    "send_state",
    "http_request_uri",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_protocols",
    "websocket_origin",
    "websocket_extensions",
    "_wskey",
}

#: The Twisted internals listed in stproxy/_twisted.py's docstring.
TWISTED_INTERNALS = {
    "_GenericHTTPChannelProtocol",
    "_HTTP11ClientFactory",
    "_raiseSynchronously",
    "_exitSignal",
    "_openLogFile",
    "_sslverify",
    "_factory",
    "_quiescentCallback",
    "_parser",
    "_giveUp",
    "_MalformedChunkedDataError",
    "_respondToBadRequestAndDisconnect",
    "_transferDecoder",
    "_ChunkedTransferDecoder",
    "_fromListeningDescriptor",
    "_transportProxy",
    "_requestWithEndpoint",
}

#: The libraries whose private names only the adapters may use, and their caps.
CAPPED = {"twisted": "26.10", "autobahn": "26.10"}


def moduleName(path: Path) -> str:
    """The dotted name of the stproxy module at C{path}."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stproxyModules() -> dict[str, Path]:
    """Every module of stproxy (packages by their C{__init__.py}), by dotted name."""
    return {moduleName(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def parse(path: Path) -> ast.Module:
    """The syntax tree of the file at C{path}."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def importedModules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The stproxy modules the module C{name} at C{path} imports (see the module docstring)."""
    isPackage = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if isPackage else 0)]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        targets.update(candidate for candidate in candidates if candidate in modules)
    return targets


def importGraph() -> dict[str, set[str]]:
    """The import graph of stproxy: each module's stproxy imports."""
    modules = stproxyModules()
    return {name: importedModules(name, path, modules) for name, path in modules.items()}


def findCycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of C{graph}, as a path that returns to its start, or None."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node) :] + [node]
        if node in done:
            return None
        stack.append(node)
        for target in sorted(graph[node]):
            cycle = visit(target)
            if cycle:
                return cycle
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return None


def test_no_import_cycle():
    """No stproxy module imports itself through other stproxy modules."""
    graph = importGraph()
    assert "stproxy.parse" in graph["stproxy.tap"], "the import graph misses tap -> parse"
    cycle = findCycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def privateUses(path: Path) -> list[str]:
    """Each private Twisted or Autobahn name the module at C{path} uses, as C{file:line: what}."""
    where = path.relative_to(ROOT)
    internals = AUTOBAHN_INTERNALS | TWISTED_INTERNALS
    found = []
    for node in ast.walk(parse(path)):
        names: list[str] = []
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.append(node.module)
                imported = [alias.name for alias in node.names]
            else:
                imported = []
            for module in modules:
                if module.split(".")[0] not in CAPPED:
                    continue
                if any(_private(part) for part in module.split(".")):
                    names.append(module)
                names += [f"{module}.{name}" for name in imported if _private(name)]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found += [f"{where}:{node.lineno}: imports {name}" for name in names]
        else:
            found += [f"{where}:{node.lineno}: uses {name}" for name in names if name in internals]
    return sorted(set(found))


def _private(name: str) -> bool:
    """Whether C{name} is private (C{_name}, not C{__dunder__})."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_private_library_names_only_in_the_adapters():
    """Only stproxy/_twisted.py and stproxy/_autobahn.py import or use private Twisted and Autobahn names."""
    assert privateUses(PACKAGE / "_twisted.py"), "the check finds nothing in the Twisted adapter"
    assert privateUses(PACKAGE / "_autobahn.py"), "the check finds nothing in the Autobahn adapter"
    violations = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path not in ADAPTERS
        for use in privateUses(path)
    ]
    assert not violations, "private library names outside the adapters:\n" + "\n".join(violations)


def test_modules_are_small():
    """No module in stproxy is longer than the ~300 lines the architecture allows."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines()))
        > (MAX_ADAPTER_LINES if path in ADAPTERS else MAX_LINES)
    }
    assert not long, f"modules over {MAX_LINES} lines ({MAX_ADAPTER_LINES} for adapters): {long}"


def test_every_module_has_a_docstring():
    """Every module and package of stproxy says what it is in a docstring."""
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if not (ast.get_docstring(parse(path)) or "").strip()
    ]
    assert not missing, f"modules without a docstring: {missing}"


def test_every_test_says_what_it_checks():
    """Every test function and method under tests/ has a docstring stating its behaviour."""
    missing = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                if not ast.get_docstring(node):
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not missing, "tests without a docstring:\n" + "\n".join(missing)


def topLevelParts() -> set[str]:
    """The names of stproxy's subpackages and top-level modules."""
    return {
        path.stem if path.is_file() else path.name
        for path in PACKAGE.iterdir()
        if (path.suffix == ".py" and path.name != "__init__.py")
        or (path.is_dir() and (path / "__init__.py").exists())
    }


def test_package_map_names_every_part():
    """stproxy/__init__.py's docstring names every subpackage and top-level module as C{name}."""
    doc = ast.get_docstring(parse(PACKAGE / "__init__.py")) or ""
    unnamed = sorted(part for part in topLevelParts() if f"C{{{part}}}" not in doc)
    assert not unnamed, f"stproxy/__init__.py's docstring does not name: {unnamed}"


def test_package_map_names_only_existing_modules():
    """Every module path in stproxy/__init__.py's diagrams (C{http/site}, C{tap.py}) exists."""
    doc = ast.get_docstring(parse(PACKAGE / "__init__.py")) or ""
    paths = re.findall(r"\b([a-z]+/[a-z_]+)\b", doc) + re.findall(r"\b([a-z_]+)\.py\b", doc)
    assert paths, "no module paths found in the package map"
    stale = sorted({path for path in paths if not (PACKAGE / f"{path}.py").exists()})
    assert not stale, f"stproxy/__init__.py's docstring names missing modules: {stale}"


def installRequires() -> dict[str, Requirement]:
    """The C{install_requires} of setup.py, by canonical project name."""
    for node in ast.walk(parse(ROOT / "setup.py")):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            requirements = [Requirement(text) for text in ast.literal_eval(node.value)]
            return {canonicalize_name(req.name): req for req in requirements}
    raise AssertionError("setup.py has no install_requires")


def test_twisted_and_autobahn_are_capped_below_their_next_major():
    """setup.py pins Twisted and Autobahn to at least the tested release and below its next major."""
    requires = installRequires()
    for name, floor in CAPPED.items():
        assert name in requires, f"setup.py does not require {name}"
        specifier = requires[name].specifier
        nextMajor = Version(floor).major + 1
        expected = {(">=", floor), ("<", str(nextMajor))}
        found = {(spec.operator, spec.version) for spec in specifier}
        assert found == expected, (
            f"setup.py requires {requires[name]}; expected {name}>={floor},<{nextMajor}"
        )


def test_installed_twisted_and_autobahn_satisfy_setup_py():
    """The installed Twisted and Autobahn satisfy setup.py's requirements (the tested versions)."""
    requires = installRequires()
    for name in CAPPED:
        installed = importlib.metadata.version(name)
        assert requires[name].specifier.contains(installed, prereleases=True), (
            f"{name} {installed} is installed but setup.py requires {requires[name]}"
        )
