"""What a checkout declares and locks: its Python and npm packages, read from the
manifests and lock files it tracks (never from an environment, nothing installed).

- Python: `pyproject.toml` ([project] dependencies, optional dependencies,
  [dependency-groups], Poetry's dependency tables), `requirements*.txt`; versions
  from `uv.lock` or `poetry.lock` beside the pyproject, or a requirement's `==` pin.
- npm: `package.json` (dependencies, devDependencies, optionalDependencies); versions
  from `package-lock.json` beside it (lockfile versions 1 to 3).

A direct package is one a manifest names (the outdated check looks at those); a
locked one is any package with an exact version (the vulnerability check looks at
those, transitive ones included). Packages not from the registry (a path, a git
URL, the project itself) are left out: no registry knows them.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from healthmon.code_checks import ScanContext

PYPI = "PyPI"
NPM = "npm"
INVENTORY_KEY = "inventory"
PYTHON_LOCKS = ("uv.lock", "poetry.lock")
NPM_MANIFESTS = ("package.json", "package-lock.json")
_REQUIREMENTS = re.compile(r"^requirements[\w.-]*\.txt$|^[\w.-]*requirements\.txt$")
_SKIPPED_DIRECTORIES = {"node_modules", ".venv", "venv", "site-packages"}


@dataclass(frozen=True)
class Package:
    ecosystem: str  # PYPI or NPM
    name: str  # canonical for PyPI (PEP 503), as written for npm
    version: str | None  # the exact version locked or pinned, None when only a range
    declared: str  # the declared range ("" when none or not a direct package)
    file: str  # the manifest or lock file it comes from
    line: int | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.ecosystem, self.name, self.version or "")


@dataclass
class Inventory:
    """A checkout's packages: `direct` ones (named by a manifest) and `locked` ones."""

    direct: list[Package]
    locked: list[Package]
    unreadable: list[str]  # "file: reason" of manifests that could not be read

    def locked_in(self, ecosystem: str) -> list[Package]:
        return [package for package in self.locked if package.ecosystem == ecosystem]


def is_manifest(path: str) -> bool:
    """A file whose change can change what the checkout declares or locks."""
    parts = PurePosixPath(path).parts
    if not parts or _SKIPPED_DIRECTORIES.intersection(parts[:-1]):
        return False
    name = parts[-1]
    return (
        name in ("pyproject.toml", *PYTHON_LOCKS, *NPM_MANIFESTS)
        or _REQUIREMENTS.match(name) is not None
    )


def cached_inventory(context: ScanContext) -> Inventory:
    """The inventory, read again only when a manifest or lock file changed."""
    manifests = sorted((path, blob) for path, blob in context.files.items() if is_manifest(path))
    key = hashlib.sha256(repr(manifests).encode()).hexdigest()
    kept = context.cached(INVENTORY_KEY)
    if isinstance(kept, dict) and kept.get("key") == key:
        try:
            return Inventory(
                direct=[Package(**item) for item in kept["direct"]],
                locked=[Package(**item) for item in kept["locked"]],
                unreadable=list(kept["unreadable"]),
            )
        except (KeyError, TypeError):
            pass
    found = inventory(context.path, context.files)
    context.store(
        INVENTORY_KEY,
        {
            "key": key,
            "direct": [package.__dict__ for package in found.direct],
            "locked": [package.__dict__ for package in found.locked],
            "unreadable": found.unreadable,
        },
    )
    return found


def inventory(checkout: Path, files: dict[str, str]) -> Inventory:
    found = Inventory(direct=[], locked=[], unreadable=[])
    manifests = sorted(path for path in files if is_manifest(path))
    for path in manifests:
        name = PurePosixPath(path).name
        try:
            if name == "pyproject.toml":
                _read_pyproject(checkout, path, files, found)
            elif name == "package.json":
                _read_package_json(checkout, path, files, found)
            elif _REQUIREMENTS.match(name):
                _read_requirements(checkout, path, found)
        except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as error:
            # tomllib's and json's errors are ValueErrors; a table where a list was
            # expected is a TypeError or AttributeError.
            found.unreadable.append(f"{path}: {error}")
    found.locked = list({package.key: package for package in found.locked}.values())
    return found


# -- Python -------------------------------------------------------------------------------


def _read_pyproject(checkout: Path, path: str, files: dict[str, str], found: Inventory) -> None:
    text = (checkout / path).read_text(encoding="utf-8")
    document = tomllib.loads(text)
    lines = text.splitlines()
    folder = PurePosixPath(path).parent
    locked: dict[str, str] = {}
    for lock in PYTHON_LOCKS:
        lock_path = (folder / lock).as_posix()
        if lock_path in files:
            locked = _read_python_lock(checkout, lock_path, found)
            break
    for requirement in _pyproject_requirements(document):
        try:
            parsed = Requirement(requirement)
        except InvalidRequirement:
            continue
        name = canonicalize_name(parsed.name)
        if name == canonicalize_name(str(document.get("project", {}).get("name", ""))):
            continue  # the project naming itself (an extra of its own)
        specifier = str(parsed.specifier)
        found.direct.append(
            Package(
                PYPI,
                name,
                locked.get(name) or _pinned(specifier),
                specifier,
                path,
                line_of(lines, parsed.name),
            )
        )


def _pyproject_requirements(document: dict[str, Any]) -> list[str]:
    project = document.get("project", {})
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    for group in document.get("dependency-groups", {}).values():
        requirements += [item for item in group if isinstance(item, str)]
    poetry = document.get("tool", {}).get("poetry", {})
    tables = [poetry.get("dependencies", {}), poetry.get("dev-dependencies", {})]
    tables += [group.get("dependencies", {}) for group in poetry.get("group", {}).values()]
    for table in tables:
        for name, spec in table.items():
            if name.lower() == "python":
                continue
            version = spec.get("version", "") if isinstance(spec, dict) else str(spec)
            if isinstance(spec, dict) and not version:
                continue  # a path or git dependency
            requirements.append(name + _poetry_specifier(version))
    return requirements


def _poetry_specifier(version: str) -> str:
    """Poetry's "^1.2" and "~1.2" as PEP 440 (">=1.2"; the upper bound does not matter
    for the outdated check, which compares the locked version)."""
    version = version.strip()
    if not version or version == "*":
        return ""
    if version[0] in "^~" and version[1:2] != "=":
        return ">=" + version[1:]
    if version[0].isdigit():
        return "==" + version
    return version


def _read_python_lock(checkout: Path, path: str, found: Inventory) -> dict[str, str]:
    text = (checkout / path).read_text(encoding="utf-8")
    where = _first_lines(text, _LOCK_ENTRY)
    versions: dict[str, str] = {}
    for entry in tomllib.loads(text).get("package", []):
        name, version = entry.get("name"), entry.get("version")
        if not (name and version and _from_python_registry(path, entry.get("source") or {})):
            continue
        name = canonicalize_name(name)
        versions[name] = str(version)
        found.locked.append(Package(PYPI, name, str(version), "", path, where.get(entry["name"])))
    return versions


def _from_python_registry(lock: str, source: dict[str, Any]) -> bool:
    """uv marks a registry package `source = { registry = ... }`; Poetry gives a
    package from PyPI no source, one from another index type "legacy"."""
    if lock.endswith("uv.lock"):
        return "registry" in source
    return not source or source.get("type") == "legacy"


def _read_requirements(checkout: Path, path: str, found: Inventory) -> None:
    lines = (checkout / path).read_text(encoding="utf-8").splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line:
            continue  # comments, options (-r, -e, --hash...) and URLs
        try:
            parsed = Requirement(line.rstrip("\\").strip())
        except InvalidRequirement:
            continue
        specifier = str(parsed.specifier)
        package = Package(
            PYPI, canonicalize_name(parsed.name), _pinned(specifier), specifier, path, number
        )
        found.direct.append(package)
        if package.version:
            found.locked.append(package)


def _pinned(specifier: str) -> str | None:
    if specifier.startswith("==") and "," not in specifier and "*" not in specifier:
        return specifier.removeprefix("==").strip()
    return None


# -- npm ----------------------------------------------------------------------------------


def _read_package_json(checkout: Path, path: str, files: dict[str, str], found: Inventory) -> None:
    text = (checkout / path).read_text(encoding="utf-8")
    manifest = json.loads(text)
    lines = text.splitlines()
    lock_path = (PurePosixPath(path).parent / "package-lock.json").as_posix()
    locked = _read_package_lock(checkout, lock_path, found) if lock_path in files else {}
    for table in ("dependencies", "devDependencies", "optionalDependencies"):
        for name, declared in (manifest.get(table) or {}).items():
            declared = str(declared)
            if not _from_npm_registry(declared):
                continue
            version = locked.get(name) or (declared if _is_exact(declared) else None)
            found.direct.append(
                Package(NPM, name, version, declared, path, line_of(lines, f'"{name}"'))
            )


def _read_package_lock(checkout: Path, path: str, found: Inventory) -> dict[str, str]:
    """The top-level versions (what the manifest's names resolve to); every locked
    package, nested ones included, goes to `found.locked`."""
    text = (checkout / path).read_text(encoding="utf-8")
    lock = json.loads(text)
    where = _first_lines(text, _NPM_LOCK_ENTRY)
    top: dict[str, str] = {}
    if isinstance(lock.get("packages"), dict):  # lockfile versions 2 and 3
        for location, entry in lock["packages"].items():
            if not location or entry.get("link") or not entry.get("version"):
                continue
            name = entry.get("name") or location.rsplit("node_modules/", 1)[-1]
            nested = "/node_modules/" in location
            _lock_one(found, name, str(entry["version"]), path, where, top, nested)
    else:  # lockfile version 1: nested "dependencies"
        pending = [(lock.get("dependencies") or {}, False)]
        while pending:
            table, nested = pending.pop()
            for name, entry in table.items():
                if entry.get("version"):
                    _lock_one(found, name, str(entry["version"]), path, where, top, nested)
                pending.append((entry.get("dependencies") or {}, True))
    return top


def _lock_one(
    found: Inventory,
    name: str,
    version: str,
    path: str,
    where: dict[str, int],
    top: dict[str, str],
    nested: bool,
) -> None:
    if not _is_exact(version):
        return  # a tarball, a git or file reference
    if not nested:
        top.setdefault(name, version)
    found.locked.append(Package(NPM, name, version, "", path, where.get(name)))


def _from_npm_registry(declared: str) -> bool:
    return not declared.startswith(("file:", "link:", "git", "http:", "https:", "workspace:"))


_EXACT = re.compile(r"^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$")


def _is_exact(version: str) -> bool:
    return _EXACT.match(version.strip()) is not None


_LOCK_ENTRY = re.compile(r'^name = "([^"]+)"', re.M)
_NPM_LOCK_ENTRY = re.compile(r'^\s*"(?:[^"]*/)?node_modules/((?:@[^/"]+/)?[^/"]+)": \{', re.M)


def _first_lines(text: str, pattern: re.Pattern[str]) -> dict[str, int]:
    """The first line (1-based) of each entry of a lock file, by package name: one pass
    over a file that may hold thousands of packages."""
    found: dict[str, int] = {}
    for match in pattern.finditer(text):
        found.setdefault(match.group(1), text.count("\n", 0, match.start()) + 1)
    return found


def line_of(lines: list[str], text: str) -> int | None:
    """The first line (1-based) naming `text` as a whole word, for the finding's link."""
    pattern = re.compile(r"(?<![\w.-])" + re.escape(text) + r"(?![\w-])", re.IGNORECASE)
    for number, line in enumerate(lines, start=1):
        if pattern.search(line):
            return number
    return None
