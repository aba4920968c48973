"""Reruns follow config sections: changing one stage's section reruns exactly that stage and what depends
on it, nothing upstream (each stage reads only its own section, through params).

A run is marked complete without running anything (tools/fake_run.py: every output created, metadata
recorded), then each case changes one section and reads the dry-run's job list: the jobs whose params
changed must belong to that stage, and the jobs that rerun must be exactly those plus everything
downstream of them in the rule graph. Stages whose section or rules are not written yet are skipped, with
the reason; they run as soon as they exist.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from helpers.config import merged_config

pytestmark = pytest.mark.slow  # dry runs and fake-complete runs of the workflow: make test, not make test-fast
ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "tests/configs/ci.yaml"
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
RULE_FILES = {p.stem: p for p in (ROOT / "workflow/rules").glob("*.smk")}

# section -> (rule files whose rules may read it, rule that must rerun, the change; None: its first number).
# ldae: the DAE / supervised baselines share the LDAE semantic encoder's definition (ldae.encoder) on purpose.
STAGES = {
    "sessions": (("data",), "sessions", {"diagnosis_missing": "nearest"}),
    "splits": (("data",), "splits", {"seed": 7}),
    "preprocess": (("preprocess",), "preprocess", {"qc": {"min_brain_ml": 650}}),
    "autoencoder": (("train",), "train_autoencoder", None),
    "ldm": (("train",), "train_ldm", None),
    "ldae": (("train", "baselines"), "train_ldae", {"encoder": {"pe_dropout": 0.2}}),
    "evaluation": (("evaluate",), None, None),
}


def rules_in(stems) -> set[str]:
    rules = set()
    for stem in stems:
        path = RULE_FILES.get(stem)
        text = path.read_text() if path else ""
        rules |= set(re.findall(r"^(?:rule|checkpoint)\s+(\w+)\s*:", text, re.M))
    return rules


def first_number_change(section: dict, path=()) -> dict | None:
    """A change of the first numeric leaf of a section (int + 1, float x 0.5), as a nested dict."""
    for key, value in section.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            new = value + 1 if isinstance(value, int) else (value * 0.5 if value else 0.5)
            change = {key: new}
            for parent in reversed(path):
                change = {parent: change}
            return change
        if isinstance(value, dict):
            found = first_number_change(value, (*path, key))
            if found:
                return found
    return None


def snakemake(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(SNAKEMAKE + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def dry_run_jobs(*configfiles: Path) -> dict[str, list[str]]:
    """rule -> reasons of each job the dry run would run (target rule `all` left out)."""
    result = snakemake("-n", "--cores", "1", "--configfile", *map(str, configfiles))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs: dict[str, list[str]] = {}
    current = None
    for line in result.stdout.splitlines():
        header = re.match(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):$", line)  # group members are indented
        if header:
            current = header.group(1)
            jobs.setdefault(current, [])
        elif current and line.strip().startswith("reason:"):
            jobs[current].append(line.strip()[len("reason:") :].strip())
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A complete (fake) run of the CI config: (its config override file, rule graph edges)."""
    tmp = tmp_path_factory.mktemp("reruns")
    base = tmp / "base.yaml"
    base.write_text(yaml.safe_dump({"out_dir": str(tmp / "out")}))
    made = subprocess.run(
        [sys.executable, str(ROOT / "tools/fake_run.py"), "--sessions", "30", "--",
         "--cores", "1", "--configfile", str(CI), str(base)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    assert dry_run_jobs(CI, base) == {}, "after the fake run the dry run should have nothing to do"
    graph = snakemake("--rulegraph", "--cores", "1", "--configfile", str(CI), str(base))
    assert graph.returncode == 0, graph.stderr[-3000:]
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', graph.stdout, re.M))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", graph.stdout, re.M)}
    return base, edges


def downstream(rules: set[str], edges: set[tuple[str, str]]) -> set[str]:
    found, todo = set(rules), list(rules)
    while todo:
        rule = todo.pop()
        for a, b in edges:
            if a == rule and b not in found:
                found.add(b)
                todo.append(b)
    found.discard("all")
    return found


@pytest.mark.parametrize("section", list(STAGES))
def test_changing_a_section_reruns_its_stage_and_downstream_only(section, done_run, tmp_path):
    base, edges = done_run
    stems, must_rerun, change = STAGES[section]
    config = merged_config(ROOT / "config.yaml", CI)
    if section not in config:
        pytest.skip(f"config section {section!r} is not in config.yaml yet")
    stage_rules, where = rules_in(stems), "/".join(f"workflow/rules/{stem}.smk" for stem in stems)
    if must_rerun and must_rerun not in stage_rules:
        pytest.skip(f"rule {must_rerun} ({where}) is not written yet")
    if not stage_rules:
        pytest.skip(f"{where} has no rules yet")
    change = change or first_number_change(config[section])
    assert change, f"no number to change in config section {section}"
    changed = copy.deepcopy(config)
    changed[section] = config_for_merge(changed[section], change)
    validate(changed, str(SCHEMA))  # the change itself must be a valid config

    override = tmp_path / "change.yaml"
    override.write_text(yaml.safe_dump({section: change}))
    jobs = dry_run_jobs(CI, base, override)

    params_changed = {rule for rule, reasons in jobs.items() if any("Params have changed" in r for r in reasons)}
    assert params_changed, f"changing {section}: {change} reran nothing with changed params; jobs: {jobs}"
    assert params_changed <= stage_rules, (
        f"changing config section {section} changed the params of {sorted(params_changed - stage_rules)}, "
        f"which are not {section} rules ({where}): they must not read that section"
    )
    if must_rerun:
        assert must_rerun in params_changed, f"{must_rerun} did not rerun after changing {section}: {jobs}"
    expected = downstream(params_changed, edges)
    assert set(jobs) == expected, (
        f"changing {section}: reran {sorted(jobs)}, expected {sorted(expected)} "
        f"(unexpected: {sorted(set(jobs) - expected)}; missing: {sorted(expected - set(jobs))})"
    )
    upstream = {a for a, _ in edges} - expected - {"all"}
    assert not upstream & set(jobs)


# the rules that sample or invert with DDIM: they pass the `ddim` section through params, nothing else does
DDIM_RULES = {"train_ldae", "train_dae", "embed", "reconstruct", "interpolate", "manipulate", "time_inference"}


def params_changed_by_rule(*configfiles: Path) -> dict[str, set[str]]:
    """rule -> outputs whose params changed (`--detailed-summary` status), also for jobs that rerun anyway
    (the dry run's reason then only says that their input files are updated)."""
    result = snakemake("--detailed-summary", "--cores", "1", "--configfile", *map(str, configfiles))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    header = lines[0]
    column = {name: header.index(name) for name in ("output_file", "rule", "status")}
    found: dict[str, set[str]] = {}
    for row in lines[1:]:
        if row[column["status"]] == "params changed":
            found.setdefault(row[column["rule"]], set()).add(row[column["output_file"]])
    return found


@pytest.mark.parametrize("change", [{"grid": "exact"}, {"clip_x0": None}])
def test_changing_ddim_reruns_the_ddim_rules_and_downstream_only(change, done_run, tmp_path):
    """`ddim` (x0 clamp, grid) is read by exactly the rules that sample or invert; of the embed jobs only the LDAE's
    (the others do not run DDIM)."""
    base, edges = done_run
    config = merged_config(ROOT / "config.yaml", CI)
    changed = copy.deepcopy(config)
    changed["ddim"] = config_for_merge(changed["ddim"], change)
    validate(changed, str(SCHEMA))
    override = tmp_path / "change.yaml"
    override.write_text(yaml.safe_dump({"ddim": change}))
    by_rule = params_changed_by_rule(CI, base, override)
    assert set(by_rule) == DDIM_RULES, by_rule
    assert [Path(p).name for p in by_rule["embed"]] == ["ldae.npz"], by_rule["embed"]
    jobs = dry_run_jobs(CI, base, override)
    assert set(jobs) == downstream(DDIM_RULES, edges), jobs  # those and what follows, nothing upstream


def config_for_merge(section: dict, change: dict) -> dict:
    out = copy.deepcopy(section)
    for key, value in change.items():
        out[key] = config_for_merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


@pytest.mark.parametrize(
    "flag, rule",
    [
        ("splits={seed: 7}", "splits"),
        ("ldm={lr: 1e-5}", "train_ldm"),  # the README's example (YAML would keep '1e-5' a string)
        ("ldm={train: {max_epochs: 3, gradient_clip_val: 1.0}}", "train_ldm"),
        ("evaluation={manipulation: {scales: [0, 1]}}", "manipulate"),
    ],
)
def test_config_flag_on_the_command_line_reruns_the_stage(done_run, flag, rule):
    """Nested --config values arrive as strings; the workflow types them by the schema (ldae.configtypes)."""
    base, _ = done_run
    result = snakemake("-n", "--cores", "1", "--configfile", str(CI), str(base), "--config", flag)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(rf"^rule {rule}:", result.stdout, re.M), result.stdout[-3000:]


def test_a_wrongly_typed_config_flag_names_the_key(done_run):
    base, _ = done_run
    result = snakemake("-n", "--cores", "1", "--configfile", str(CI), str(base), "--config", "ldm={lr: fast}")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "lr" in message and "fast" in message, message[-2000:]
