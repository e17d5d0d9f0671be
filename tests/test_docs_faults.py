"""docs/FAULTS.md: every table row names the test that proves it, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _test_functions() -> dict[str, set[str]]:
    """Test file name -> the names of its test functions (module level and in classes)."""
    found = {}
    for path in TESTS.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        found[path.name] = {node.name for node in ast.walk(tree)
                            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                            and node.name.startswith("test")}
    return found


def _rows(doc: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every table body row (header and separator rows left out)."""
    rows, lines = [], doc.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or re.fullmatch(r"\|[\s|:-]+\|", line):
            continue
        if i + 1 < len(lines) and re.fullmatch(r"\|[\s|:-]+\|", lines[i + 1]):
            continue  # a header row
        rows.append((i + 1, [c.strip() for c in line.strip().strip("|").split("|")]))
    return rows


def unknown_references(doc: str, functions: dict[str, set[str]]) -> list[str]:
    """Problems with the last column of each row: no test named, or a name that is not a test."""
    every = set().union(*functions.values())
    problems = []
    for line, cells in _rows(doc):
        names = re.findall(r"`([^`]+)`", cells[-1])
        if not names:
            problems.append(f"line {line}: no test named")
        for name in names:
            file, _, func = name.partition("::")
            if not file.endswith(".py"):
                file, func = "", file
            if file and file not in functions:
                problems.append(f"line {line}: no file tests/{file}")
            elif func and func not in (functions[file] if file else every):
                problems.append(f"line {line}: no test {name}")
    return problems


def test_every_row_names_tests_that_exist() -> None:
    assert unknown_references((ROOT / "docs" / "FAULTS.md").read_text(), _test_functions()) == []


def test_the_check_catches_a_missing_or_misspelt_test() -> None:
    functions = {"test_a.py": {"test_one"}, "test_b.py": {"test_two"}}
    doc = ("| what | test |\n|---|---|\n| ok | `test_a.py::test_one`, `test_two`, `test_b.py` |\n"
           "| none | nothing |\n| typo | `test_a.py::test_two` |\n| gone | `test_three` |\n"
           "| file | `test_c.py` |\n")
    assert unknown_references(doc, functions) == [
        "line 4: no test named", "line 5: no test test_a.py::test_two", "line 6: no test test_three",
        "line 7: no file tests/test_c.py"]
