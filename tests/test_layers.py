"""`shared/` keeps its layers (devtools/import_graph.py) and imports only declared dependencies."""

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from devtools.import_graph import (
    LAYERS,
    REPO_ROOT,
    Analysis,
    analyse,
    import_statements,
    python_files,
)


@pytest.fixture(scope="module")
def repository() -> Analysis:
    return analyse(REPO_ROOT)


def expect_none(title: str, entries: list[object]) -> None:
    if entries:
        pytest.fail("\n  ".join([f"{title} ({len(entries)}):", *map(str, entries)]), pytrace=False)


def test_every_module_has_a_layer(repository: Analysis) -> None:
    expect_none("modules in no layer of LAYERS", repository.unlayered)


def test_no_module_imports_a_higher_layer(repository: Analysis) -> None:
    expect_none("upward arrows", repository.upward)


def test_no_domain_imports_another_domains_service_or_repository(repository: Analysis) -> None:
    expect_none("sideways arrows between domains", repository.sideways)


def test_no_shared_import_is_deferred_into_a_function(repository: Analysis) -> None:
    expect_none("deferred imports", repository.deferred)


def test_no_modules_import_each_other_in_a_cycle(repository: Analysis) -> None:
    expect_none("module cycles", [", ".join(cycle) for cycle in repository.module_cycles])


def test_no_packages_import_each_other_in_a_cycle(repository: Analysis) -> None:
    expect_none("package cycles", [", ".join(cycle) for cycle in repository.package_cycles])


def _normalized(distribution: str) -> str:
    """PEP 503: case and runs of `-`, `_`, `.` do not distinguish distributions."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _declared_distributions() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # A requirement starts with its name; extras, versions and markers follow it.
    names = (re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", each) for each in project["dependencies"])
    return {_normalized(name.group()) for name in names if name}


def test_shipped_code_imports_only_declared_dependencies() -> None:
    declared = _declared_distributions()
    distributions = packages_distributions()
    undeclared = []
    for directory in ("shared", "functions"):
        for path in python_files(REPO_ROOT / directory):
            for statement in import_statements(path):
                if statement.level or statement.module is None:
                    continue
                module = statement.module.split(".")[0]
                if module in sys.stdlib_module_names or module == "shared":
                    continue
                providers = distributions.get(module, [])
                if not declared & {_normalized(provider) for provider in providers}:
                    where = f"{path.relative_to(REPO_ROOT)}:{statement.line}"
                    undeclared.append(f"{where}: {module} (from {', '.join(providers) or '?'})")
    expect_none("imports of undeclared distributions", undeclared)


def write_tree(root: Path, sources: dict[str, str]) -> Path:
    for name, source in sources.items():
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
        for package in path.relative_to(root).parents[:-1]:
            (root / package / "__init__.py").touch()
    return root


# The synthetic trees take their module names from the table, so they follow it when it changes.
FOUNDATION = LAYERS["foundation"][1]
WORKFLOWS = LAYERS["workflows"][0]
DOMAIN, OTHER_DOMAIN = LAYERS["domains"][:2]


def test_an_import_of_a_higher_layer_is_an_upward_arrow(tmp_path: Path) -> None:
    workflow = f"{WORKFLOWS}.service"
    analysis = analyse(
        write_tree(tmp_path, {FOUNDATION: f"import {workflow}\n", workflow: "VALUE = 1\n"})
    )
    assert [(a.importer, a.imported) for a in analysis.upward] == [(FOUNDATION, workflow)]
    assert analysis.summary().startswith("upward=1 ")


def test_a_module_outside_every_layer_is_reported(tmp_path: Path) -> None:
    analysis = analyse(write_tree(tmp_path, {"shared.unplaced": f"import {FOUNDATION}\n"}))
    assert analysis.unlayered == ["shared.unplaced"]


def test_a_domain_importing_another_domains_service_is_sideways(tmp_path: Path) -> None:
    analysis = analyse(
        write_tree(
            tmp_path,
            {
                f"{DOMAIN}.service": f"from {OTHER_DOMAIN} import service\n",
                f"{OTHER_DOMAIN}.service": f"from {OTHER_DOMAIN}.models import Name\n",
                f"{OTHER_DOMAIN}.models": "Name = str\n",
            },
        )
    )
    assert [(a.importer, a.imported) for a in analysis.sideways] == [
        (f"{DOMAIN}.service", f"{OTHER_DOMAIN}.service")
    ]


def test_two_modules_importing_each_other_are_a_cycle(tmp_path: Path) -> None:
    first, second = f"{DOMAIN}.first", f"{OTHER_DOMAIN}.second"
    analysis = analyse(
        write_tree(tmp_path, {first: f"import {second}\n", second: f"import {first}\n"})
    )
    assert analysis.module_cycles == [[first, second]]
    assert analysis.package_cycles == [[DOMAIN, OTHER_DOMAIN]]


def test_an_import_inside_a_function_is_deferred(tmp_path: Path) -> None:
    analysis = analyse(
        write_tree(
            tmp_path,
            {
                f"{DOMAIN}.service": (
                    f"import {FOUNDATION}\n\n\ndef load():\n    from {DOMAIN} import models\n"
                ),
                f"{DOMAIN}.models": "VALUE = 1\n",
            },
        )
    )
    assert [(each.imported, each.location) for each in analysis.deferred] == [
        (f"{DOMAIN}.models", f"{DOMAIN.replace('.', '/')}/service.py:5")
    ]


def test_a_type_only_import_still_closes_a_cycle(tmp_path: Path) -> None:
    first, second = f"{DOMAIN}.first", f"{DOMAIN}.second"
    analysis = analyse(
        write_tree(
            tmp_path,
            {
                first: f"import {second}\n",
                second: (
                    f"from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import {first}\n"
                ),
            },
        )
    )
    assert analysis.module_cycles == [[first, second]]
    assert not analysis.deferred
    assert {(a.importer, a.kinds) for a in analysis.arrows} == {
        (first, frozenset({"module-level"})),
        (second, frozenset({"type-only"})),
    }
