# LDAE: Latent Diffusion Autoencoders (Lozupone et al., 2025) from raw ADNI downloads to one report.
# The whole chain: workflow/rules/{data,preprocess,train,evaluate}.smk; paths and targets: common.smk.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        final_targets(),
    default_target: True
