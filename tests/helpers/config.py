"""Config files as the workflow sees them: tests/configs/ci.yaml, and config files merged in order (Snakemake's
--configfile semantics: nested sections merge key by key, later files win)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CI_CONFIG = ROOT / "tests/configs/ci.yaml"


def ci_config() -> dict:
    return yaml.safe_load(CI_CONFIG.read_text())


def merged_config(*paths: Path) -> dict:
    def merge(a, b):
        for key, value in b.items():
            a[key] = merge(a.get(key, {}), value) if isinstance(value, dict) and isinstance(a.get(key), dict) else value
        return a

    config = {}
    for path in paths:
        merge(config, yaml.safe_load(path.read_text()))
    return config
