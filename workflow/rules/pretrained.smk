# The authors' released weights instead of the three training stages (config `pretrained:`;
# docs/training.md, "The authors' released weights"). Rule import_official converts autoencoderkl.pth / encoder.pth / decoder.pth into the model
# folders the training rules would publish (ldae.models.io loads both alike); the ruleorder below makes Snakemake
# take it instead of train_autoencoder / train_ldm / train_ldae. encode_latents then encodes every session with the
# imported autoencoder (scale factor from `latents.scale_factor`), and evaluation runs unchanged.
import json
import os

PRETRAINED_CFG = config["pretrained"]
# what sizes and uses the imported networks (a change re-imports; training settings do not)
IMPORT_CONFIG = {
    "autoencoder": {"network": config["autoencoder"]["network"]},
    "ldm": {key: config["ldm"][key] for key in ("network", "diffusion")},
    "ldae": {key: config["ldae"][key] for key in ("encoder", "estimator", "guidance")},
    "images": config["images"],
    "ddim": config["ddim"],
}


ruleorder: import_official > train_autoencoder
ruleorder: import_official > train_ldm
ruleorder: import_official > train_ldae


rule import_official:
    """The authors' weights -> models/autoencoder, models/ldm, models/ldae (+ models/official_probe)."""
    input:
        autoencoder=PRETRAINED_CFG["autoencoder"],
        encoder=PRETRAINED_CFG["encoder"],
        decoder=PRETRAINED_CFG["decoder"],
        probe=[PRETRAINED_CFG[key] for key in ("probe", "probe_mean", "probe_std")] if OFFICIAL_PROBE else [],
    output:
        autoencoder=directory(AE_MODEL),
        ldm=directory(LDM_MODEL),
        ldae=directory(LDAE_MODEL),
        probe=directory(OFFICIAL_PROBE) if OFFICIAL_PROBE else [],
    log:
        log_file("import_official"),
    benchmark:
        bench_file("import_official")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("import_official")
    resources:
        **rule_resources("import_official"),
    params:
        config=json.dumps(IMPORT_CONFIG, sort_keys=True),
        probe=lambda wildcards, input: (
            f"--probe {input.probe[0]} --probe-mean {input.probe[1]} --probe-std {input.probe[2]}"
            if input.probe
            else ""
        ),
        models=lambda wildcards, output: os.path.dirname(output.autoencoder),
    shell:
        "python -m ldae.cli import-official --autoencoder {input.autoencoder} --encoder {input.encoder}"
        " --decoder {input.decoder} {params.probe} --config {params.config:q} --out-dir {params.models}"
        " --no-scale > {log} 2>&1"
