# AutoencoderKL -> latents -> latent DDPM -> LDAE (training stages; src/ldae/training/, docs/training.md).
# Each rule reads only its own config section (+ `images` where it loads scans, + `ddim` for train_ldae's validation
# sampler) through params, so e.g.
# `--config ldm='{lr: 1e-5}'` reruns train_ldm and what follows, nothing above. Training state lives in a
# resume folder outside the outputs (resume_dir): a restarted job continues from its last.ckpt; on success the
# weights, resolved config, metrics and summary are published into models/<stage>/ (ldae.models.io loads them).
import json

AE_MODEL, LATENTS, LDM_MODEL, LDAE_MODEL = (MODEL[name] for name in outputs.LDAE_CHAIN)


rule train_autoencoder:
    """Stage 1: AutoencoderKL + patch GAN on the preprocessed images; best validation SSIM."""
    input:
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
    output:
        model=report(
            directory(AE_MODEL),
            patterns=["{name}.csv", "{name}.json"],
            caption="../report/train_autoencoder.rst",
            category="Training",
            subcategory="1 AutoencoderKL",
        ),
    log:
        log_file("train_autoencoder"),
    benchmark:
        bench_file("train_autoencoder")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("train_autoencoder")
    resources:
        **rule_resources("train_autoencoder"),
    params:
        config=json.dumps(config["autoencoder"], sort_keys=True),
        images=IMAGES_JSON,
        run_dir=resume_dir("train_autoencoder", {"autoencoder": config["autoencoder"], "images": config["images"]}),
    shell:
        "python -m ldae.cli train-autoencoder --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q}"
        " --config {params.config:q} --run-dir {params.run_dir} --out-dir {output.model}"
        " --devices {resources.gpu} --threads {threads} > {log} 2>&1"


rule encode_latents:
    """Every QC-passed session through the stage-1 encoder once; scale factor from the training latents."""
    input:
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
        autoencoder=AE_MODEL,
    output:
        latents=report(
            directory(LATENTS),
            patterns=["{name}.json"],
            caption="../report/train_latents.rst",
            category="Training",
            subcategory="2 latents",
        ),
    log:
        log_file("encode_latents"),
    benchmark:
        bench_file("encode_latents")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("encode_latents")
    resources:
        **rule_resources("encode_latents"),
    params:
        config=json.dumps(config["latents"], sort_keys=True),
        images=IMAGES_JSON,
    shell:
        "python -m ldae.cli encode-latents --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q}"
        " --config {params.config:q} --autoencoder {input.autoencoder} --out-dir {output.latents}"
        " --devices {resources.gpu} --threads {threads} > {log} 2>&1"


rule train_ldm:
    """Stage 2: unconditional latent DDPM on the cached scaled latents; final EMA weights."""
    input:
        latents=LATENTS,
    output:
        model=report(
            directory(LDM_MODEL),
            patterns=["{name}.csv", "{name}.json"],
            caption="../report/train_ldm.rst",
            category="Training",
            subcategory="3 latent DDPM",
        ),
    log:
        log_file("train_ldm"),
    benchmark:
        bench_file("train_ldm")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("train_ldm")
    resources:
        **rule_resources("train_ldm"),
    params:
        config=json.dumps(config["ldm"], sort_keys=True),
        run_dir=resume_dir("train_ldm", config["ldm"]),
    shell:
        "python -m ldae.cli train-ldm --latents {input.latents} --config {params.config:q}"
        " --run-dir {params.run_dir} --out-dir {output.model} --devices {resources.gpu} --threads {threads}"
        " > {log} 2>&1"


rule train_ldae:
    """Stage 3: semantic encoder + gradient estimator on the frozen stage-2 U-Net (PDAE); best val SSIM (DDIM per
    the `ddim` section)."""
    input:
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
        autoencoder=AE_MODEL,
        latents=LATENTS,
        ldm=LDM_MODEL,
    output:
        model=report(
            directory(LDAE_MODEL),
            patterns=["{name}.csv", "{name}.json"],
            caption="../report/train_ldae.rst",
            category="Training",
            subcategory="4 LDAE",
        ),
    log:
        log_file("train_ldae"),
    benchmark:
        bench_file("train_ldae")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("train_ldae")
    resources:
        **rule_resources("train_ldae"),
    params:
        config=json.dumps(config["ldae"], sort_keys=True),
        images=IMAGES_JSON,
        ddim=DDIM_JSON,
        run_dir=resume_dir("train_ldae", {"ldae": config["ldae"], "images": config["images"], "ddim": config["ddim"]}),
    shell:
        "python -m ldae.cli train-ldae --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q}"
        " --config {params.config:q} --latents {input.latents}"
        " --ldm {input.ldm} --autoencoder {input.autoencoder}"
        " --ddim {params.ddim:q} --run-dir {params.run_dir} --out-dir {output.model} --devices {resources.gpu}"
        " --threads {threads} > {log} 2>&1"


TARGETS.extend([AE_MODEL, LATENTS, LDM_MODEL, LDAE_MODEL])
