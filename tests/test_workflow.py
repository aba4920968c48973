"""The workflow itself: config schema, lint, dry runs on the paper and demo configs."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def paper_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def undescribed_schema_nodes(node: dict, path: str = "") -> list[str]:
    """Config paths (``resources.*.mem_mb``, ``x[]`` for array items) of schema nodes that define a value but have
    no description: every property and pattern property, and every object schema under additionalProperties or
    items (a record per key or per element; a scalar one is described by its parent). Walks the nested schemas
    of properties, patternProperties, additionalProperties, items and oneOf/anyOf/allOf."""
    missing = []

    def visit(sub, sub_path: str, must_describe: bool):
        if not isinstance(sub, dict):  # additionalProperties: false, items: true ...
            return
        defines_record = sub.get("type") == "object" or "properties" in sub
        if (must_describe or defines_record) and "description" not in sub:
            missing.append(sub_path)
        missing.extend(undescribed_schema_nodes(sub, sub_path))

    for key, sub in node.get("properties", {}).items():
        visit(sub, f"{path}.{key}" if path else key, True)
    for pattern, sub in node.get("patternProperties", {}).items():
        visit(sub, f"{path}.<{pattern}>", True)
    visit(node.get("additionalProperties"), f"{path}.*", False)
    items = node.get("items")
    for i, sub in enumerate(items if isinstance(items, list) else [items]):
        visit(sub, f"{path}[{i if isinstance(items, list) else ''}]", False)
    for combinator in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(combinator, []):  # alternatives/constraints of this node: its own description covers them
            missing.extend(undescribed_schema_nodes(sub, path))
    return missing


def test_paper_config_validates_and_schema_describes_every_key():
    config = paper_config()
    validate(config, str(SCHEMA))
    schema = yaml.safe_load(SCHEMA.read_text())
    missing = undescribed_schema_nodes(schema)
    assert not missing, "schema keys without a description (workflow/schemas/config.schema.yaml): " + ", ".join(missing)


def test_schema_walk_reaches_every_nesting():
    described = {"type": "integer", "description": "d"}
    schema = {
        "properties": {
            "plain": {"type": "integer"},
            "ok": described,
            "per_rule": {
                "type": "object",
                "description": "d",
                "additionalProperties": {"type": "object", "properties": {"mem_mb": {"type": "integer"}}},
            },
            "by_pattern": {"type": "object", "description": "d", "patternProperties": {"^x": {"type": "string"}}},
            "records": {
                "type": "array",
                "description": "d",
                "items": {"type": "object", "description": "d", "properties": {"name": {"type": "string"}}},
            },
            "either": {
                "description": "d",
                "oneOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}},
                    {"allOf": [{"properties": {"b": described}}]},
                ],
            },
            "labels": {"type": "object", "description": "d", "additionalProperties": {"enum": ["CN", "AD"]}},
        }
    }
    assert undescribed_schema_nodes(schema) == [
        "plain",
        "per_rule.*",
        "per_rule.*.mem_mb",
        "by_pattern.<^x>",
        "records[].name",
        "either.a",
    ]


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["splits"].update(test_fractio=0.1), "test_fractio"),
        (lambda c: c["splits"].update(test_fraction=1.5), "test_fraction"),
        (lambda c: c["data"].update(source="loni"), "source"),
        (lambda c: c.update(unknown_section={}), "unknown_section"),
        (lambda c: c["images"].update(shape=[128, 160]), "shape"),
    ],
)
def test_malformed_config_names_the_key(mutate, key):
    config = copy.deepcopy(paper_config())
    mutate(config)
    with pytest.raises(Exception) as error:
        validate(config, str(SCHEMA))
    assert key in str(error.value)


def test_schema_fills_defaults():
    config = paper_config()
    del config["splits"]["seed"]
    validate(config, str(SCHEMA))
    assert config["splits"]["seed"] == 42


def run_snakemake(*args, cwd=ROOT):
    return subprocess.run(SNAKEMAKE + list(args), cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["profiles/default", "profiles/demo"])
def test_lint_is_clean(profile):
    result = run_snakemake("--lint", "--cores", "1", "--profile", profile)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


@pytest.mark.slow
def test_dry_run_paper_config_with_adni_paths(tmp_path):
    (tmp_path / "ADNI").mkdir()
    (tmp_path / "clinical").mkdir()
    result = run_snakemake(
        "-n",
        "--cores",
        "1",
        "--config",
        f"out_dir={tmp_path / 'out'}",
        f"data={{source: adni, adni_dir: {tmp_path / 'ADNI'}, clinical_dir: {tmp_path / 'clinical'}}}",
    )
    assert result.returncode == 0, result.stderr
    assert "adni_to_bids" in result.stdout and "synthesize_adni" not in result.stdout


@pytest.mark.slow
def test_dry_run_demo_profile(tmp_path):
    result = run_snakemake("-n", "--profile", "profiles/demo", "--config", f"out_dir={tmp_path / 'demo'}")
    assert result.returncode == 0, result.stderr
    for rule in ("synthesize_adni", "adni_to_bids", "sessions", "splits"):
        assert rule in result.stdout


def test_config_strings_get_their_schema_types():
    """What `--config ldm='{...}'` delivers (all strings) becomes the schema's types; strings stay strings."""
    from ldae.configtypes import typed

    schema = {
        "type": "object",
        "properties": {
            "lr": {"type": "number"},
            "epochs": {"type": "integer"},
            "ema": {"type": ["number", "null"]},
            "flag": {"type": "boolean"},
            "name": {"type": "string"},
            "steps": {"type": "array", "items": {"type": "integer"}},
            "nested": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    given = {
        "lr": "1e-5",
        "epochs": "1e3",
        "ema": "null",
        "flag": "true",
        "name": "007",
        "steps": ["10", "20"],
        "nested": {"a": "3"},
    }
    assert typed(given, schema) == {
        "lr": 1e-5,
        "epochs": 1000,
        "ema": None,
        "flag": True,
        "name": "007",
        "steps": [10, 20],
        "nested": {"a": 3},
    }
    assert typed({"epochs": "2.5", "lr": "fast"}, schema) == {"epochs": "2.5", "lr": "fast"}  # the schema says why
    assert typed({"lr": 0.5, "extra": "1"}, schema) == {"lr": 0.5, "extra": "1"}  # typed values, unknown keys: as given
