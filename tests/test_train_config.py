"""The training sections of config.yaml, the schema and the code agree: one set of defaults (the paper's), every
override file resolves, the rules pass only their own sections."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from ldae import verbs
from ldae.diffusion import DDIM_DEFAULTS, DDIMSettings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
STAGES = ("autoencoder", "latents", "ldm", "ldae")


def paper():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("section", sorted(STAGES))
def test_config_yaml_schema_defaults_and_code_defaults_agree(section):
    config = paper()
    assert config[section] == verbs.section(section)  # config.yaml holds the paper values, as the code
    bare = copy.deepcopy(config)
    del bare[section]
    validate(bare, str(SCHEMA))  # the schema fills the same defaults
    assert bare[section] == verbs.section(section)


def test_ddim_section_defaults_agree_and_are_the_authors():
    config = paper()
    assert config["ddim"] == DDIM_DEFAULTS == {"clip_x0": [-1.0, 1.0], "grid": "authors"}
    bare = copy.deepcopy(config)
    del bare["ddim"]
    validate(bare, str(SCHEMA))
    assert bare["ddim"] == DDIM_DEFAULTS and DDIMSettings.from_config(bare["ddim"]) == DDIMSettings()
    for bad in ({"clip_x0": [1.0]}, {"grid": "linear"}, {"clamp": True}):
        with pytest.raises(Exception, match="clip_x0|grid|clamp"):
            validate({**copy.deepcopy(config), "ddim": bad}, str(SCHEMA))


def test_training_defaults_are_the_authors_where_the_issue_asks():
    config = paper()
    for section in ("autoencoder", "ldm", "ldae", "dae", "supervised"):
        assert config[section]["train"]["gradient_clip_val"] == 1.0, section
    assert config["autoencoder"]["adversarial_activation"] == "none"
    assert config["latents"]["sample"] is True and config["latents"]["scale_factor"] == 0.873
    for overlay in ("profiles/demo/demo.yaml", "tests/configs/ci.yaml"):  # tiny AEs trained from scratch
        assert yaml.safe_load((ROOT / overlay).read_text())["latents"]["scale_factor"] is None, overlay


@pytest.mark.parametrize("overlay", ["profiles/demo/demo.yaml", "tests/configs/ci.yaml"])
def test_demo_and_ci_overrides_resolve(overlay):
    extra = yaml.safe_load((ROOT / overlay).read_text())
    for section in STAGES:
        resolved = verbs.section(section, extra.get(section, {}))
        assert set(resolved) == set(verbs.schema_defaults(section))
    for rule in ("train_autoencoder", "encode_latents", "train_ldm", "train_ldae"):
        assert extra["resources"][rule]["gpus"] == 0  # CPU runs


def test_malformed_training_key_names_the_key():
    config = paper()
    config["ldm"]["network"]["chanels"] = [1]
    with pytest.raises(Exception, match="chanels"):
        validate(config, str(SCHEMA))


def test_rules_read_only_their_own_sections():
    text = (ROOT / "workflow/rules/train.smk").read_text()
    rules = dict(re.findall(r"\nrule (\w+):\n(.*?)(?=\nrule |\nTARGETS)", text, flags=re.S))
    allowed = {
        "train_autoencoder": {"autoencoder", "images"},
        "encode_latents": {"latents", "images"},
        "train_ldm": {"ldm"},
        "train_ldae": {"ldae", "images", "ddim"},
    }
    assert set(rules) == set(allowed)
    for rule, body in rules.items():
        used = set(re.findall(r'config\["(\w+)"\]', body)) | ({"images"} if "IMAGES_JSON" in body else set())
        used |= {"ddim"} if "DDIM_JSON" in body else set()
        assert used == allowed[rule], rule


@pytest.mark.parametrize("section", sorted(STAGES))
def test_rule_json_round_trips_exactly(section):
    """The rules pass sections as JSON; numbers like 1e-07 must stay numbers (YAML 1.1 would read a string)."""
    import json

    defaults = verbs.section(section)
    assert verbs.parse_config_arg(json.dumps(defaults, sort_keys=True)) == defaults
