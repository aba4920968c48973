# LDAE: Latent Diffusion Autoencoders (Lozupone et al., 2025) from raw ADNI downloads to one report.
# The whole chain: workflow/rules/{data,preprocess,train,baselines,evaluate}.smk; paths and targets: common.smk.
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")
sys.path.insert(0, os.path.join(workflow.basedir, "src"))  # the ldae package, without installing it
import ldae.configtypes


configfile: "config.yaml"


# nested --config values arrive as strings ('{lr: 1.0e-5}' -> '1.0e-5'): give them their schema types first
ldae.configtypes.apply(config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/baselines.smk"


if PRETRAINED:

    include: "workflow/rules/pretrained.smk"


include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_targets(),
