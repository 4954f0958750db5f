"""The tests' own layout (issue 15): no test module imports another one; what tests share lives
in tests/support/, and the fixtures defined there are registered once, in tests/conftest.py's
`pytest_plugins` (pytest reads that list from the root conftest only), never imported into a
test module."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
HOW = ("move what is shared into tests/support/<topic>.py; a fixture there is registered in "
       "tests/conftest.py's pytest_plugins, not imported")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _package(path: Path, root: Path) -> list[str]:
    return [root.name, *path.relative_to(root).parent.parts]


def _imported(path: Path, root: Path):
    """(line, dotted name) of every import in `path`, relative ones made absolute; a
    `from m import a` yields both `m` and `m.a` (a may be a module)."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(path, root)
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def imports_of_test_modules(root: Path = TESTS) -> list[str]:
    """`path:line module` for every import of a test module (tests.*.test_*) anywhere under root."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _imported(path, root):
            parts = name.split(".")
            tests = [i for i, p in enumerate(parts) if i and p.startswith("test_")]
            if parts[0] == root.name and tests:
                found.append(f"{path.relative_to(root.parent)}:{line} {'.'.join(parts[:tests[0] + 1])}")
    return sorted(set(found))


def _is_fixture(dec: ast.expr) -> bool:
    target = dec.func if isinstance(dec, ast.Call) else dec
    return (isinstance(target, ast.Attribute) and target.attr == "fixture") or \
        (isinstance(target, ast.Name) and target.id == "fixture")


def support_fixtures(root: Path = TESTS) -> dict[str, set[str]]:
    """{module: fixture names} for the modules of tests/support/ that define fixtures."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / "support").glob("*.py")):
        names = {n.name for n in ast.walk(_tree(path)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                 and any(_is_fixture(d) for d in n.decorator_list)}
        if names:
            out[f"{root.name}.support.{path.stem}"] = names
    return out


def plugins_declared(root: Path = TESTS) -> dict[str, list[str]]:
    """{file: its pytest_plugins list} for every file under root that declares one."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        for node in _tree(path).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytest_plugins"
                                                    for t in node.targets):
                out[str(path.relative_to(root.parent))] = list(ast.literal_eval(node.value))
    return out


def imported_fixtures(root: Path = TESTS) -> list[str]:
    """`path:line module.fixture` for every fixture of tests/support/ imported by name."""
    fixtures = {f"{mod}.{name}" for mod, names in support_fixtures(root).items() for name in names}
    return sorted({f"{path.relative_to(root.parent)}:{line} {name}"
                   for path in root.rglob("*.py") for line, name in _imported(path, root) if name in fixtures})


def test_no_test_module_imports_another():
    found = imports_of_test_modules()
    assert found == [], "\n".join([HOW, *found])


def test_support_fixtures_are_registered_once_in_the_root_conftest_and_not_imported():
    declared = plugins_declared()
    assert list(declared) == ["tests/conftest.py"], f"pytest_plugins outside the root conftest: {HOW}"
    missing = sorted(set(support_fixtures()) - set(declared["tests/conftest.py"]))
    assert missing == [], f"not in tests/conftest.py's pytest_plugins: {missing}"
    imported = imported_fixtures()
    assert imported == [], "\n".join([HOW, *imported])


def test_the_checks_find_each_way_of_breaking_the_layout(tmp_path):
    root = tmp_path / "tests"
    files = {
        "conftest.py": 'pytest_plugins = ["tests.support.things"]\n',
        "support/things.py": "import pytest\n\n@pytest.fixture\ndef thing():\n    return 1\n\n"
                             "@pytest.fixture(scope='session')\ndef other():\n    return 2\n\n"
                             "def helper():\n    return 3\n",
        "support/plain.py": "X = 1\n",
        "support/more.py": "from pytest import fixture\n\n@fixture\ndef more():\n    return 1\n",
        "a/test_a.py": "from tests.support.things import helper\nfrom tests.support.plain import X\n",
        "a/test_b.py": "from tests.a.test_a import helper\n",
        "a/test_c.py": "import tests.a.test_a as ta\n",
        "a/test_d.py": "from tests.a import test_a\nfrom . import test_b\n",
        "a/test_e.py": "def f():\n    from .test_a import X\n",
        "a/test_f.py": "from tests.support.things import thing  # noqa: F401\npytest_plugins = ['x']\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert imports_of_test_modules(root) == [
        "tests/a/test_b.py:1 tests.a.test_a", "tests/a/test_c.py:1 tests.a.test_a",
        "tests/a/test_d.py:1 tests.a.test_a", "tests/a/test_d.py:2 tests.a.test_b",
        "tests/a/test_e.py:2 tests.a.test_a"]
    assert support_fixtures(root) == {"tests.support.more": {"more"}, "tests.support.things": {"thing", "other"}}
    assert plugins_declared(root) == {"tests/a/test_f.py": ["x"], "tests/conftest.py": ["tests.support.things"]}
    assert imported_fixtures(root) == ["tests/a/test_f.py:1 tests.support.things.thing"]
