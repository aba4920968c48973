"""Software environments, checked statically (conda and Apptainer cannot run here).

* every rule that runs something declares both `conda:` (envs/<name>.yaml) and `container:` (config
  containers.<name>) for the same env name, and the referenced files exist;
* envs/*.yaml pin exactly the versions of pyproject.toml (and every pinned package they pull in);
* containers/<name>.def exists per env and installs that env file's pins verbatim;
* each env provides what its rules' `python -m ldae.cli <verb>` imports (followed through the package).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers.rules import ACTION_RULES, RULES, cli_commands, directive, module_file, rule_verbs

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
CONTAINERS = ROOT / "containers"
ENV_NAMES = sorted(p.stem for p in ENVS.glob("*.yaml"))


def test_rule_files_found():
    assert ACTION_RULES, "no rules found in Snakefile / workflow/rules/*.smk"
    assert ENV_NAMES == sorted(["ants", "clinica", "torch"]), ENV_NAMES


@pytest.mark.parametrize("rule", ACTION_RULES)
def test_rule_declares_conda_and_container_of_one_env(rule):
    path, body = RULES[rule]
    conda, container = directive(body, "conda"), directive(body, "container")
    assert conda, f"rule {rule} ({path.name}) has no conda: directive"
    assert container, f"rule {rule} ({path.name}) has no container: directive"
    env = re.fullmatch(r'env_file\("(\w+)"\),?', conda)
    image = re.fullmatch(r'container_for\("(\w+)"\),?', container)
    assert env, f'rule {rule}: conda: should be env_file("<env>"), got {conda!r}'
    assert image, f'rule {rule}: container: should be container_for("<env>"), got {container!r}'
    assert env.group(1) == image.group(1), f"rule {rule}: conda env {env.group(1)} but container {image.group(1)}"
    assert (ENVS / f"{env.group(1)}.yaml").is_file(), f"rule {rule}: envs/{env.group(1)}.yaml missing"


# ---- the same, as Snakemake itself sees the workflow ----------------------------------------------
PRETRAINED = {"autoencoder": "autoencoderkl.pth", "encoder": "encoder.pth", "decoder": "decoder.pth"}


@pytest.fixture(scope="module")
def workflow_rules():
    """Rules of the parsed workflow (CI config, an image configured for every env, and a `pretrained:` section so
    that workflow/rules/pretrained.smk, included only then, is parsed too)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    images = {name: f"IMAGE-OF-{name}" for name in ENV_NAMES}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(
                configfiles=[ROOT / "tests/configs/ci.yaml"], config={"containers": images, "pretrained": PRETRAINED}
            ),
            snakefile=ROOT / "Snakefile",
            workdir=ROOT,
        )
        rules = list(workflow._workflow.rules)
    return {rule.name: rule for rule in rules}


@pytest.mark.slow
def test_parsed_rules_use_existing_env_files_and_matching_images(workflow_rules):
    checked = 0
    for name, rule in workflow_rules.items():
        if rule.norun:  # target rules such as `all`
            continue
        checked += 1
        env = rule.conda_env
        assert env, f"rule {name} has no conda env"
        env_path = (Path(rule.snakefile).parent / str(env)).resolve()
        assert env_path.parent == ENVS and env_path.is_file(), f"rule {name}: conda env {env} -> {env_path}"
        assert rule.container_img == f"IMAGE-OF-{env_path.stem}", (
            f"rule {name}: container {rule.container_img!r} is not config containers.{env_path.stem}"
        )
    assert checked == len(ACTION_RULES), (checked, ACTION_RULES)


def test_every_env_has_a_container_definition_and_config_entry():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    defs = sorted(p.stem for p in CONTAINERS.glob("*.def"))
    assert defs == ENV_NAMES, f"containers/*.def {defs} vs envs/*.yaml {ENV_NAMES}"
    assert sorted(config["containers"]) == ENV_NAMES, f"config containers: {sorted(config['containers'])}"


# ---- pins ---------------------------------------------------------------------------------------------
@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def pyproject_pins() -> dict[str, str]:
    pins = {}
    for line in pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"pyproject dependency not pinned with ==: {line}"
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def env_spec(name: str) -> tuple[list, list[str], list[str]]:
    """(conda dependencies, pip requirements, pip options) of envs/<name>.yaml."""
    data = yaml.safe_load((ENVS / f"{name}.yaml").read_text())
    conda, pip = [], []
    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda.append(dep)
    options = [p for p in pip if p.startswith("-")]
    return conda, [p for p in pip if not p.startswith("-")], options


def env_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in env_spec(name)[1]:
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"envs/{name}.yaml: {line} is not pinned with =="
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


@pytest.mark.parametrize("env", ENV_NAMES)
def test_env_pins_are_exactly_pyprojects(env):
    conda, _, options = env_spec(env)
    pins, wanted = env_pins(env), pyproject_pins()
    assert pins, f"envs/{env}.yaml installs nothing with pip"
    for dist, version in pins.items():
        assert dist in wanted, f"envs/{env}.yaml pins {dist}, which pyproject.toml does not (add it there first)"
        assert version == wanted[dist], f"envs/{env}.yaml: {dist}=={version}, pyproject.toml: =={wanted[dist]}"
    python = [d for d in conda if str(d).startswith("python")]
    assert python == ["python=3.11"], (
        f"envs/{env}.yaml python {python}; pyproject requires-python " + pyproject()["project"]["requires-python"]
    )
    assert "pip" in conda
    for option in options:  # only index options; never a second source of versions
        assert re.fullmatch(r"--(extra-)?index-url https://\S+", option), f"envs/{env}.yaml: pip option {option!r}"


def dependency_closure(dists) -> set[str]:
    """The given distributions plus everything they require (as installed in this interpreter)."""
    seen, stack = set(), [canonicalize_name(d) for d in dists]
    while stack:
        dist = stack.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = md.distribution(dist).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(canonicalize_name(req.name))
    return seen


@cache
def env_closure(env: str) -> set[str]:
    return dependency_closure(env_pins(env))


@cache
def installed_modules() -> dict[str, list[str]]:
    """Top-level module -> the installed distributions providing it (a scan of site-packages: once per session)."""
    return md.packages_distributions()


@pytest.mark.parametrize("env", ENV_NAMES)
def test_env_pins_every_pinned_package_it_pulls_in(env):
    """A package pyproject pins must not enter an env unpinned through a dependency."""
    pins = env_pins(env)
    pulled = dependency_closure(pins) & set(pyproject_pins())
    assert pulled <= set(pins), f"envs/{env}.yaml pulls in {sorted(pulled - set(pins))} unpinned: pin them"


def test_training_env_is_gpu_ready_and_preprocessing_env_cpu_only():
    assert not env_spec("torch")[2], "envs/torch.yaml must take CUDA-enabled torch from PyPI (no CPU index)"
    assert "torch" in env_pins("torch") and "lightning" in env_pins("torch")
    assert any("whl/cpu" in o for o in env_spec("ants")[2]), "envs/ants.yaml: CPU-only torch for deepbet"


@pytest.mark.parametrize("env", ENV_NAMES)
def test_container_definition_installs_the_env_pins(env):
    text = (CONTAINERS / f"{env}.def").read_text()
    assert re.search(r"^Bootstrap:\s*docker", text, re.M) and re.search(r"^From:\s*python:3\.11", text, re.M)
    files = re.search(r"^%files\n((?:[ \t]+.*\n)+)", text, re.M)
    assert files and f"envs/{env}.yaml" in files.group(1), f"containers/{env}.def does not copy envs/{env}.yaml"
    post = re.search(r"^%post\n((?:[ \t]+.*\n|\n)+)", text, re.M).group(1)
    assert "- pip:" in post and "pip install" in post and "-r /opt/ldae/requirements.txt" in post
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([0-9][^\s'\"]*)", text):  # explicit pins, if any
        assert pyproject_pins().get(canonicalize_name(name)) == version, f"containers/{env}.def: {name}=={version}"
    assert "%test" in text


def test_container_pip_extraction_matches_env_file():
    """The awk line in every .def turns the env file's pip section into exactly its requirements."""
    import subprocess

    for env in ENV_NAMES:
        text = (CONTAINERS / f"{env}.def").read_text()
        program = re.search(r"awk '([^']+)'", text).group(1)
        lines = subprocess.run(
            ["awk", program, str(ENVS / f"{env}.yaml")], capture_output=True, text=True, check=True
        ).stdout.split("\n")
        _, pip, options = env_spec(env)
        assert [line for line in lines if line] == [
            line for line in yaml.safe_load((ENVS / f"{env}.yaml").read_text())["dependencies"][-1]["pip"]
        ] and set(pip + options) == {line for line in lines if line}


# ---- what each rule imports (rule_verbs, cli_commands, module_file: tests/helpers/rules.py) -------------------
def optional(node: ast.AST, parents: dict) -> bool:
    """An import inside `try: ... except ImportError` (or ModuleNotFoundError/Exception) is optional."""
    while node in parents:
        node, child = parents[node], node
        if isinstance(node, ast.Try) and child in node.body:
            for handler in node.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if handler.type is None or any(
                    getattr(n, "id", "") in {"ImportError", "ModuleNotFoundError", "Exception"} for n in names
                ):
                    return True
    return False


def third_party_imports(module: str) -> dict[str, str]:
    """Top-level third-party module -> the ldae module importing it, following ldae imports."""
    found, seen, todo = {}, set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        path = module_file(current)
        if path is None:
            continue
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = current if path.name == "__init__.py" else current.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                    names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
                else:
                    names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            if optional(node, parents):
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "ldae":
                    if module_file(name):
                        todo.append(name)
                        # a submodule import also runs its parent packages' __init__
                        parts = name.split(".")
                        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
                elif top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, current)
    return found


@pytest.mark.parametrize("rule, env, verb", rule_verbs())
def test_env_provides_what_the_rule_imports(rule, env, verb):
    commands = cli_commands()
    assert verb in commands, f"rule {rule} calls `ldae {verb}`, which src/ldae/cli.py does not define"
    module = commands[verb]
    if module_file(module) is None:
        pytest.skip(f"rule {rule}: `ldae {verb}` -> {module} is not written yet")
    provided = env_closure(env)
    modules_to_dists = installed_modules()
    missing = []
    for top, importer in sorted(third_party_imports(module).items()):
        dists = {canonicalize_name(d) for d in modules_to_dists.get(top, [])}
        if not dists:
            missing.append(f"{top} (imported by {importer}; not installed here either)")
        elif not dists & provided:
            missing.append(f"{top} (distribution {', '.join(sorted(dists))}, imported by {importer})")
    assert not missing, f"rule {rule} runs in envs/{env}.yaml, which lacks: " + "; ".join(missing)
