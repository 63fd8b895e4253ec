"""What a stage module reads, found statically (no import runs, torch stays unloaded): the pipeline files it imports
and the params keys it declares. rules/common.smk gives both to every rule, so a job reruns when one of its code
files or params values changes, and only then; dvc.yaml is written from those rules (pipeline/dvc_yaml.py)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def stage_params_keys(module: str) -> tuple[str, ...]:
    """The literal `PARAMS = (...)` tuple at the top level of a stage module."""
    path = _module_file(module)
    if path is None:
        raise LookupError(f"no module {module}")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PARAMS"]:
            return tuple(ast.literal_eval(node.value))
    raise LookupError(f"{module} declares no PARAMS tuple")


def code_files(module: str) -> list[str]:
    """Every file of `pipeline` that `module` imports, transitively, relative to the repository root."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a module's packages run their __init__ too
            f = _module_file(".".join(parts[:i]))
            if f is None or f in seen:
                continue
            seen.add(f)
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                    todo.append(node.module)
                    todo.extend(f"{node.module}.{a.name}" for a in node.names)
                elif isinstance(node, ast.Import):
                    todo.extend(a.name for a in node.names if a.name.startswith("pipeline"))
    # params.schema.yaml is not a dependency: validation passes or stops a stage, it never changes an output, and a
    # stage depends on the values of the keys it declares. Were the schema a dependency, adding any key to it would
    # rerun the whole DAG.
    return sorted(str(f.relative_to(ROOT)) for f in seen)
