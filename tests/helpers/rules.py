"""The rules as written in Snakefile and workflow/rules/*.smk (their text blocks, parsed without Snakemake), and
the `ldae` verbs their commands call (src/ldae/cli.py COMMANDS): for tests/test_envs.py, test_profiles.py,
test_slurm.py and test_e2e.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
RULE_FILES = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
ACTIONS = ("shell:", "script:", "notebook:", "wrapper:", "cwl:", "template_engine:")


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """rule/checkpoint name -> (file, text of its block), for top-level rules in the rule files."""
    blocks = {}
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"(rule|checkpoint)\s+(\w+)\s*:", line)
            if not match:
                continue
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt.startswith((" ", "\t", "#")):
                    break
                body.append(nxt)
            blocks[match.group(2)] = (path, "\n".join(body))
    return blocks


RULES = rule_blocks()
ACTION_RULES = sorted(name for name, (_, body) in RULES.items() if any(a in body for a in ACTIONS))


def directive(body: str, name: str) -> str | None:
    """The text following `name:` in a rule block (same line or the next non-empty one)."""
    match = re.search(rf"^\s+{name}:[ \t]*(.*)$", body, re.M)
    if not match:
        return None
    value = match.group(1).strip()
    if value:
        return value
    rest = body[match.end() :].lstrip("\n").splitlines()
    return rest[0].strip() if rest else ""


def cli_commands() -> dict[str, str]:
    tree = ast.parse((SRC / "ldae/cli.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign) and isinstance(node.value, ast.Dict):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            if getattr(target, "id", "") == "COMMANDS":
                return {k.value: v.elts[0].value for k, v in zip(node.value.keys, node.value.values)}
    raise AssertionError("COMMANDS not found in src/ldae/cli.py")


def module_file(module: str) -> Path | None:
    base = SRC / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def rule_verbs() -> list[tuple[str, str, str]]:
    """(rule, env, verb) for every rule whose command is `python -m ldae.cli <verb>` / `ldae <verb>`."""
    out = []
    for rule in ACTION_RULES:
        _, body = RULES[rule]
        env = re.search(r'env_file\("(\w+)"\)', body)
        verb = re.search(r"(?:-m ldae\.cli|\bldae)\s+([a-z][a-z0-9-]*)", body)
        if env and verb:
            out.append((rule, env.group(1), verb.group(1)))
    return out
