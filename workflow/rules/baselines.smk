# Baselines of Tables 5-7 (training): the voxel-space DAE and the supervised encoder (src/ldae/training/{dae,supervised}.py).
# Both reuse the LDAE's semantic encoder section (ldae.encoder) with their own overrides; each rule's params come
# from its own section (dae / supervised) plus that encoder section (train_dae also `ddim`: its validation sampler),
# so `--config dae=...` reruns only the DAE.
import json

_LDAE_ENCODER = config.get("ldae", {}).get("encoder", {}) or {}


rule train_dae:
    """Voxel-space DAE (DiffAE-style): semantic encoder + y_sem-conditioned image U-Net, trained jointly."""
    input:
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
    output:
        model=directory(MODEL["dae"]),
    log:
        log_file("train_dae"),
    benchmark:
        bench_file("train_dae")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("train_dae")
    resources:
        **rule_resources("train_dae"),
    params:
        config=json.dumps(config["dae"], sort_keys=True),
        encoder=json.dumps(_LDAE_ENCODER, sort_keys=True),
        images=IMAGES_JSON,
        ddim=DDIM_JSON,
        run_dir=resume_dir(
            "train_dae",
            {"dae": config["dae"], "encoder": _LDAE_ENCODER, "images": config["images"], "ddim": config["ddim"]},
        ),
    shell:
        "python -m ldae.cli train-dae --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q} --config {params.config:q} --encoder {params.encoder:q} --ddim {params.ddim:q}"
        " --run-dir {params.run_dir} --out-dir {output.model} --devices {resources.gpu} --threads {threads}"
        " > {log} 2>&1"


rule train_supervised:
    """Supervised encoder: semantic encoder + linear head end-to-end on AD vs CN or on age (probe splits)."""
    input:
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
    output:
        model=directory(outputs.model_dir(OUT, "supervised_{task}")),
    log:
        log_file("train_supervised", "{task}"),
    benchmark:
        bench_file("train_supervised", "{task}")
    wildcard_constraints:
        task="ad|age",
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("train_supervised")
    resources:
        **rule_resources("train_supervised"),
    params:
        config=json.dumps(config["supervised"], sort_keys=True),
        encoder=json.dumps(_LDAE_ENCODER, sort_keys=True),
        images=IMAGES_JSON,
        run_dir=lambda wildcards: resume_dir(
            f"train_supervised_{wildcards.task}",
            {"supervised": config["supervised"], "encoder": _LDAE_ENCODER, "images": config["images"]},
        ),
    shell:
        "python -m ldae.cli train-supervised --task {wildcards.task} --qc {input.qc} --sessions {input.sessions}"
        " --splits {input.splits} --images {params.images:q} --config {params.config:q}"
        " --encoder {params.encoder:q} --run-dir {params.run_dir} --out-dir {output.model}"
        " --devices {resources.gpu} --threads {threads} > {log} 2>&1"
