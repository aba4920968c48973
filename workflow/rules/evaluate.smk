# Evaluation: embeddings, the paper's Tables 5-7 and Figures 5-8, one results README (src/ldae/evaluation/).
# Every rule reads only its own sub-section of `evaluation:` (+ `images:` where it loads scans, + `ddim:` where it
# samples or inverts), so `--config evaluation=...` reruns evaluation only. Reported numbers come from the test
# split only.
# The baselines' training rules (and EVAL_QC, MODELS_DIR, LDAE_ENCODER) come from baselines.smk, included here.
import json
import shlex


include: "baselines.smk"


EVAL = config["evaluation"]
BASELINES = list(EVAL["baselines"])
SEED = EVAL["seed"]
EMBED_MODELS = (
    ["ldae"]
    + (["dae"] if "dae" in BASELINES else [])
    + (["supervised_ad", "supervised_age"] if "supervised" in BASELINES else [])
)
# the LDAE chain: model folders written by the training rules (train.smk)
LDAE_MODELS = {name: os.path.join(MODELS_DIR, name) for name in ("autoencoder", "latents", "ldm", "ldae")}
DAE_MODEL = [os.path.join(MODELS_DIR, "dae")] if "dae" in BASELINES else []
EMBED_INPUTS = {
    model: {
        "qc": EVAL_QC,
        "sessions": SESSIONS,
        "splits": SPLITS,
        **(LDAE_MODELS if model == "ldae" else {"model": os.path.join(MODELS_DIR, model)}),
    }
    for model in ("ldae", "dae", "supervised_ad", "supervised_age")
}


rule embed:
    """y_sem of every QC-passed session for one model; for the LDAE also the latent and x_T of the test scans."""
    input:
        unpack(lambda wildcards: EMBED_INPUTS[wildcards.model]),
    output:
        embeddings=out("embeddings", "{model}.npz"),
    wildcard_constraints:
        model="ldae|dae|supervised_ad|supervised_age",
    params:
        config=json.dumps(EVAL["embed"], sort_keys=True),
        images=EVAL_IMAGES_JSON,
        models=lambda wildcards, input: (
            f"--autoencoder {input.autoencoder} --latents {input.latents} --ldm {input.ldm} --ldae {input.ldae}"
            if wildcards.model == "ldae"
            else f"--model-dir {input.model}"
        ),
        # only the LDAE inverts here (an empty quoted value would be no argument at all: the flag goes too)
        ddim=lambda wildcards: f"--ddim {shlex.quote(DDIM_JSON)}" if wildcards.model == "ldae" else "",
    threads: rule_threads("embed")
    resources:
        **rule_resources("embed"),
    log:
        log_file("embed", "{model}"),
    benchmark:
        bench_file("embed", "{model}")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli embed --model {wildcards.model} {params.models} --qc {input.qc}"
        " --sessions {input.sessions} --splits {input.splits} --images {params.images:q} --config {params.config:q}"
        " {params.ddim} --out {output.embeddings} --threads {threads} > {log} 2>&1"


rule probe:
    """Table 7: linear probes (AD vs CN; age) on frozen embeddings; Figure 5: 2-D LDA projection."""
    input:
        sessions=SESSIONS,
        splits=SPLITS,
        embeddings=expand(out("embeddings", "{model}.npz"), model=EMBED_MODELS),
    output:
        table=report(
            out("results", "tables", "table7_linear_probes.tsv"),
            category="Table 7 - linear probes",
            caption="../report/table7.rst",
        ),
        markdown=out("results", "tables", "table7_linear_probes.md"),
        history=out("results", "probes", "history.tsv"),
        figure=report(
            out("results", "figures", "figure5_lda.png"),
            category="Figure 5 - LDA",
            caption="../report/figure5.rst",
        ),
    params:
        config=json.dumps({**EVAL["probe"], "seed": SEED, "bootstrap": EVAL["bootstrap"]}, sort_keys=True),
        embeddings=lambda wildcards, input: " ".join(f"{m}={p}" for m, p in zip(EMBED_MODELS, input.embeddings)),
    threads: rule_threads("probe")
    resources:
        **rule_resources("probe"),
    log:
        log_file("probe"),
    benchmark:
        bench_file("probe")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli probe --sessions {input.sessions} --splits {input.splits} --embeddings {params.embeddings}"
        " --config {params.config:q} --table {output.table} --history {output.history} --figure {output.figure}"
        " --threads {threads} > {log} 2>&1"


rule reconstruct:
    """Table 6: SSIM / LPIPS / MSE of every representation at T = 10/20/50/100 on the test split."""
    input:
        **LDAE_MODELS,
        qc=EVAL_QC,
        sessions=SESSIONS,
        splits=SPLITS,
        dae=DAE_MODEL,
    output:
        table=report(
            out("results", "tables", "table6_reconstruction.tsv"),
            category="Table 6 - reconstruction",
            caption="../report/table6.rst",
        ),
        markdown=out("results", "tables", "table6_reconstruction.md"),
        per_session=out("results", "reconstruction", "per_session.tsv"),
        figure=report(
            out("results", "figures", "table6_examples.png"),
            category="Table 6 - reconstruction",
            caption="../report/table6_examples.rst",
        ),
    params:
        config=json.dumps(
            {
                **EVAL["reconstruction"],
                "lpips_weights": EVAL["lpips_weights"],
                "seed": SEED,
                "bootstrap": EVAL["bootstrap"],
            },
            sort_keys=True,
        ),
        images=EVAL_IMAGES_JSON,
        ddim=DDIM_JSON,
        dae=lambda wildcards, input: f"--dae {input.dae}" if input.dae else "",
    threads: rule_threads("reconstruct")
    resources:
        **rule_resources("reconstruct"),
    log:
        log_file("reconstruct"),
    benchmark:
        bench_file("reconstruct")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli reconstruct --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} {params.dae} --qc {input.qc} --sessions {input.sessions}"
        " --splits {input.splits} --images {params.images:q} --config {params.config:q} --ddim {params.ddim:q}"
        " --table {output.table} --per-session {output.per_session} --figure {output.figure} --threads {threads}"
        " > {log} 2>&1"


rule interpolate:
    """Figure 8: every test triplet start < target < end; LERP y_sem + SLERP x_T vs the AE reconstruction."""
    input:
        **LDAE_MODELS,
        sessions=SESSIONS,
        splits=SPLITS,
        embeddings=out("embeddings", "ldae.npz"),
    output:
        table=report(
            out("results", "tables", "figure8_interpolation.tsv"),
            category="Figure 8 - interpolation",
            caption="../report/figure8_table.rst",
        ),
        markdown=out("results", "tables", "figure8_interpolation.md"),
        triplets=out("results", "interpolation", "triplets.tsv"),
        figure=report(
            out("results", "figures", "figure8_interpolation.png"),
            category="Figure 8 - interpolation",
            caption="../report/figure8.rst",
        ),
    params:
        config=json.dumps({**EVAL["interpolation"], "seed": SEED, "bootstrap": EVAL["bootstrap"]}, sort_keys=True),
        ddim=DDIM_JSON,
    threads: rule_threads("interpolate")
    resources:
        **rule_resources("interpolate"),
    log:
        log_file("interpolate"),
    benchmark:
        bench_file("interpolate")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli interpolate --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} --sessions {input.sessions} --splits {input.splits}"
        " --embeddings {input.embeddings} --config {params.config:q} --ddim {params.ddim:q} --table {output.table}"
        " --triplets {output.triplets} --figure {output.figure} --threads {threads} > {log} 2>&1"


rule manipulate:
    """Figures 6/7: AD and CN test scans moved along the AD-vs-CN probe direction; NIfTI volumes."""
    input:
        **LDAE_MODELS,
        qc=EVAL_QC,
        sessions=SESSIONS,
        splits=SPLITS,
        embeddings=out("embeddings", "ldae.npz"),
        official_probe=[OFFICIAL_PROBE] if OFFICIAL_PROBE else [],
    output:
        table=report(
            out("results", "tables", "figure67_manipulation.tsv"),
            category="Figures 6/7 - manipulation",
            caption="../report/manipulation_table.rst",
        ),
        markdown=out("results", "tables", "figure67_manipulation.md"),
        figure_cn=report(
            out("results", "figures", "figure6_manipulation_cn.png"),
            category="Figures 6/7 - manipulation",
            caption="../report/figure6.rst",
        ),
        figure_ad=report(
            out("results", "figures", "figure7_manipulation_ad.png"),
            category="Figures 6/7 - manipulation",
            caption="../report/figure7.rst",
        ),
        volumes=directory(out("results", "manipulation")),
    params:
        config=json.dumps(EVAL["manipulation"], sort_keys=True),
        probe=json.dumps({**EVAL["probe"], "seed": SEED}, sort_keys=True),
        probe_file=lambda wildcards, input: (
            f"--probe-file {input.official_probe}/probe.pt" if input.official_probe else ""
        ),
        images=EVAL_IMAGES_JSON,
        ddim=DDIM_JSON,
    threads: rule_threads("manipulate")
    resources:
        **rule_resources("manipulate"),
    log:
        log_file("manipulate"),
    benchmark:
        bench_file("manipulate")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli manipulate --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} --qc {input.qc} --sessions {input.sessions} --splits {input.splits}"
        " --images {params.images:q} --embeddings {input.embeddings} --config {params.config:q}"
        " --probe-config {params.probe:q} {params.probe_file} --ddim {params.ddim:q} --table {output.table}"
        " --figure-cn {output.figure_cn}"
        " --figure-ad {output.figure_ad} --volumes {output.volumes} --threads {threads} > {log} 2>&1"


rule time_inference:
    """Table 5: seconds per reconstruction at T = 100 and parameter counts, LDAE vs DAE in one job."""
    input:
        **LDAE_MODELS,
        qc=EVAL_QC,
        sessions=SESSIONS,
        splits=SPLITS,
        reconstruction=out("results", "tables", "table6_reconstruction.tsv"),
        dae=DAE_MODEL,
    output:
        table=report(
            out("results", "tables", "table5_efficiency.tsv"),
            category="Table 5 - efficiency",
            caption="../report/table5.rst",
        ),
        markdown=out("results", "tables", "table5_efficiency.md"),
    params:
        config=json.dumps(EVAL["timing"], sort_keys=True),
        images=EVAL_IMAGES_JSON,
        ddim=DDIM_JSON,
        dae=lambda wildcards, input: f"--dae {input.dae}" if input.dae else "",
        # training wall time from the training rules' benchmark files (read if present, never a rerun trigger)
        bench_ldae=" ".join(
            bench_file(name) for name in ("train_autoencoder", "encode_latents", "train_ldm", "train_ldae")
        ),
        bench_dae=bench_file("train_dae") if "dae" in BASELINES else "",
    threads: rule_threads("time_inference")
    resources:
        **rule_resources("time_inference"),
    log:
        log_file("time_inference"),
    benchmark:
        bench_file("time_inference")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli time-inference --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} {params.dae} --qc {input.qc} --sessions {input.sessions}"
        " --splits {input.splits} --images {params.images:q} --reconstruction {input.reconstruction}"
        " --config {params.config:q} --ddim {params.ddim:q} --benchmarks-ldae {params.bench_ldae}"
        " --benchmarks-dae {params.bench_dae}"
        " --table {output.table} --threads {threads} > {log} 2>&1"


RESULT_TABLES = [
    out("results", "tables", f"{stem}.md")
    for stem in (
        "table5_efficiency",
        "table6_reconstruction",
        "table7_linear_probes",
        "figure8_interpolation",
        "figure67_manipulation",
    )
]
RESULT_FIGURES = [
    out("results", "figures", f"{name}.png")
    for name in (
        "figure5_lda",
        "figure6_manipulation_cn",
        "figure7_manipulation_ad",
        "figure8_interpolation",
        "table6_examples",
    )
]


rule results_readme:
    """results/README.md: each paper table beside our numbers, the paper's claims judged against our intervals,
    and the figures."""
    input:
        tables=RESULT_TABLES,
        data=[path[: -len(".md")] + ".tsv" for path in RESULT_TABLES],  # read beside each .md
        figures=RESULT_FIGURES,
    output:
        readme=out("results", "README.md"),
    params:
        confidence=EVAL["bootstrap"]["confidence"],
    log:
        log_file("results_readme"),
    benchmark:
        bench_file("results_readme")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    shell:
        "python -m ldae.cli results-readme --tables {input.tables} --figures {input.figures}"
        " --confidence {params.confidence} --out {output.readme} > {log} 2>&1"


TARGETS.extend([out("results", "README.md"), *RESULT_TABLES, *RESULT_FIGURES])
