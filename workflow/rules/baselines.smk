# Baselines of Tables 5-7 (training): the voxel-space DAE and the supervised encoder (src/ldae/training/baselines.py).
# Both reuse the LDAE's semantic encoder section (ldae.encoder) with their own overrides; each rule's params come
# from its own section (dae / supervised) plus that encoder section (train_dae also `ddim`: its validation sampler),
# so `--config dae=...` reruns only the DAE.
# Included by evaluate.smk.
import json

import ldae.preprocess.naming as _eval_naming

EVAL_QC = _eval_naming.qc_table(out(_eval_naming.DERIVATIVES_SUBDIR))
MODELS_DIR = out("models")
LDAE_ENCODER = config.get("ldae", {}).get("encoder", {}) or {}
EVAL_IMAGES_JSON = json.dumps(config["images"], sort_keys=True)


rule train_dae:
    """Voxel-space DAE (DiffAE-style): semantic encoder + y_sem-conditioned image U-Net, trained jointly."""
    input:
        qc=EVAL_QC,
        sessions=SESSIONS,
        splits=SPLITS,
    output:
        model=directory(out("models", "dae")),
    params:
        config=json.dumps(config["dae"], sort_keys=True),
        encoder=json.dumps(LDAE_ENCODER, sort_keys=True),
        images=EVAL_IMAGES_JSON,
        ddim=DDIM_JSON,
        run_dir=resume_dir(
            "train_dae",
            {"dae": config["dae"], "encoder": LDAE_ENCODER, "images": config["images"], "ddim": config["ddim"]},
        ),
    threads: rule_threads("train_dae")
    resources:
        **rule_resources("train_dae"),
    log:
        log_file("train_dae"),
    benchmark:
        bench_file("train_dae")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli train-dae --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q} --config {params.config:q} --encoder {params.encoder:q} --ddim {params.ddim:q}"
        " --run-dir {params.run_dir} --out-dir {output.model} --devices {resources.gpu} --threads {threads}"
        " > {log} 2>&1"


rule train_supervised:
    """Supervised encoder: semantic encoder + linear head end-to-end on AD vs CN or on age (probe splits)."""
    input:
        qc=EVAL_QC,
        sessions=SESSIONS,
        splits=SPLITS,
    output:
        model=directory(out("models", "supervised_{task}")),
    wildcard_constraints:
        task="ad|age",
    params:
        config=json.dumps(config["supervised"], sort_keys=True),
        encoder=json.dumps(LDAE_ENCODER, sort_keys=True),
        images=EVAL_IMAGES_JSON,
        run_dir=lambda wildcards: resume_dir(
            f"train_supervised_{wildcards.task}",
            {"supervised": config["supervised"], "encoder": LDAE_ENCODER, "images": config["images"]},
        ),
    threads: rule_threads("train_supervised")
    resources:
        **rule_resources("train_supervised"),
    log:
        log_file("train_supervised", "{task}"),
    benchmark:
        bench_file("train_supervised", "{task}")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli train-supervised --task {wildcards.task} --qc {input.qc} --sessions {input.sessions}"
        " --splits {input.splits} --images {params.images:q} --config {params.config:q}"
        " --encoder {params.encoder:q} --run-dir {params.run_dir} --out-dir {output.model}"
        " --devices {resources.gpu} --threads {threads} > {log} 2>&1"
