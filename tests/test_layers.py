"""The package's layering (issue "Open seams", items 5 and 6): no import cycle anywhere in toydiff
(imports inside functions included), nothing imports a CLI module, and shipped assets are found
through one module."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "toydiff"
CLI = {"toydiff.__main__", "toydiff.bridge.cli", "toydiff.bridge.__main__"}


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the toydiff modules it imports}, from the source (every import statement, at any
    depth; `from . import x` counts as importing the submodule x when there is one)."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                deps.add(base)
                deps |= {f"{base}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_reader_sees_a_cycle_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph()
    assert "toydiff.exact" in graph["toydiff.sampler"]  # `from . import exact, ...`
    assert "toydiff.guidance" in graph["toydiff.bridge.loop"]  # `from .. import guidance`


def test_no_import_cycle_in_toydiff():
    graph = import_graph()
    # a package's __init__ runs before any of its submodules, re-exporting them: not a cycle
    package_inits = {_module(p) for p in PKG.rglob("__init__.py")}
    graph = {m: deps - package_inits for m, deps in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_nothing_imports_a_cli_module():
    graph = import_graph()
    offenders = {m: deps & CLI for m, deps in graph.items() if deps & CLI and m not in CLI}
    assert not offenders, offenders


def test_an_installed_copy_finds_its_weights_from_another_folder(tmp_path):
    """`pip install .` (not editable; here into a --target folder, dependencies from this venv),
    then `python -m toydiff metrics --scene S --json` with learned scores from another folder: the
    installed package, not this checkout, runs and finds its shipped weights (toydiff.assets)."""
    import json
    import os
    import subprocess
    import sys

    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    for stem in ("three_blobs", "everywhere/three_blobs"):  # both kinds of net ship
        assert (target / "toydiff" / "pretrained" / f"{stem}.safetensors").is_file()
    scene = tmp_path / "elsewhere" / "scene.json"
    scene.parent.mkdir()
    scene.write_text(json.dumps({"preset": "three_blobs", "score": "learned", "n": 300}))
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("TOYDIFF_ASSETS", None)
    code = "import toydiff, toydiff.assets as a; print(toydiff.__file__); print(a.root())"
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=scene.parent, env=env, capture_output=True, text=True
    ).stdout.split()
    assert where == [
        str(target / "toydiff" / "__init__.py"),
        str(target / "toydiff" / "pretrained"),
    ]
    out = subprocess.run(
        [sys.executable, "-m", "toydiff", "metrics", "--scene", str(scene), "--json"],
        cwd=scene.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout)
    assert m["n"] == 300 and m["net_error_on_path"] > 0  # the learned nets ran
