"""The Streamlit floor in pyproject.toml is a version the app's calls were checked against.

Every ``st.*`` call of the app (and every call of a Streamlit container method such as
``columns[0].metric`` or ``st.sidebar.error``) is read from the source, and each keyword it passes
must exist in the installed Streamlit; the installed version must meet the declared floor. The
floor is the version this suite was run with, so a call that needs a newer Streamlit fails here
first.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import streamlit as st
from packaging.version import Version
from streamlit.delta_generator import DeltaGenerator

REPO = Path(__file__).resolve().parents[2]
APP_FILES = sorted((REPO / "app" / "annotate").glob("*.py"))
CONTAINER_METHODS = {
    name
    for name in dir(DeltaGenerator)
    if not name.startswith("_") and callable(getattr(DeltaGenerator, name))
}


def declared_floor() -> Version:
    # pyproject's dependency line, e.g. "streamlit>=1.67,<2" (tomllib needs Python 3.11)
    (floor,) = re.findall(r'"streamlit\s*>=\s*([0-9.]+)', (REPO / "pyproject.toml").read_text())
    return Version(floor)


def streamlit_calls(path: Path) -> list[tuple[int, str, object, list[str]]]:
    """(line, name, callable, keywords) for each Streamlit call in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func, name = node.func, node.func.attr
        keywords = [k.arg for k in node.keywords if k.arg is not None]
        if isinstance(func.value, ast.Name) and func.value.id == "st":
            target = getattr(st, name, None)
            assert target is not None, f"{path.name}:{node.lineno}: st.{name} does not exist"
            found.append((node.lineno, f"st.{name}", target, keywords))
        elif name in CONTAINER_METHODS and not (
            isinstance(func.value, ast.Name) and func.value.id in ("self", "str", "re", "parser")
        ):
            found.append(
                (node.lineno, f"<container>.{name}", getattr(DeltaGenerator, name), keywords)
            )
    return found


def test_the_installed_streamlit_meets_the_declared_floor():
    assert Version(st.__version__) >= declared_floor()


def test_every_streamlit_call_of_the_app_exists_with_its_keywords():
    checked = 0
    for path in APP_FILES:
        for line, name, target, keywords in streamlit_calls(path):
            try:
                parameters = inspect.signature(target).parameters
            except (TypeError, ValueError):  # a builtin without a signature
                continue
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            unknown = [k for k in keywords if k not in parameters and not takes_any]
            assert not unknown, f"{path.name}:{line}: {name} has no keyword {unknown}"
            checked += 1
    assert checked > 40  # the scan sees the app's calls (fragments, forms, html, buttons, ...)
