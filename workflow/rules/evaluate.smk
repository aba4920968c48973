# Evaluation: embeddings, the paper's Tables 5-7 and Figures 5-8, one results README (src/ldae/evaluation/).
# Every rule reads only its own sub-section of `evaluation:` (+ `images:` where it loads scans, + `ddim:` where it
# samples or inverts), so `--config evaluation=...` reruns evaluation only. Reported numbers come from the test
# split only.
# Every output path comes from ldae.outputs (written once: results_readme reads the other rules' outputs).
import json
import shlex

EVAL = config["evaluation"]
BASELINES = list(EVAL["baselines"])
SEED = EVAL["seed"]
EMBED_MODELS = (
    ["ldae"]
    + (["dae"] if "dae" in BASELINES else [])
    + (["supervised_ad", "supervised_age"] if "supervised" in BASELINES else [])
)
# the LDAE chain: model folders written by the training rules (train.smk)
LDAE_MODELS = {name: MODEL[name] for name in outputs.LDAE_CHAIN}
DAE_MODEL = [MODEL["dae"]] if "dae" in BASELINES else []
EMBED_INPUTS = {
    model: {
        "qc": QC_TABLE,
        "sessions": SESSIONS,
        "splits": SPLITS,
        **(LDAE_MODELS if model == "ldae" else {"model": MODEL[model]}),
    }
    for model in ("ldae", *outputs.BASELINES)
}


rule embed:
    """y_sem of every QC-passed session for one model; for the LDAE also the latent and x_T of the test scans."""
    input:
        unpack(lambda wildcards: EMBED_INPUTS[wildcards.model]),
    output:
        embeddings=outputs.embeddings(OUT, "{model}"),
    log:
        log_file("embed", "{model}"),
    benchmark:
        bench_file("embed", "{model}")
    wildcard_constraints:
        model="ldae|dae|supervised_ad|supervised_age",
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("embed")
    resources:
        **rule_resources("embed"),
    params:
        config=json.dumps(EVAL["embed"], sort_keys=True),
        images=IMAGES_JSON,
        models=lambda wildcards, input: (
            f"--autoencoder {input.autoencoder} --latents {input.latents} --ldm {input.ldm} --ldae {input.ldae}"
            if wildcards.model == "ldae"
            else f"--model-dir {input.model}"
        ),
        # only the LDAE inverts here (an empty quoted value would be no argument at all: the flag goes too)
        ddim=lambda wildcards: f"--ddim {shlex.quote(DDIM_JSON)}" if wildcards.model == "ldae" else "",
    shell:
        "python -m ldae.cli embed --model {wildcards.model} {params.models} --qc {input.qc}"
        " --sessions {input.sessions} --splits {input.splits} --images {params.images:q} --config {params.config:q}"
        " {params.ddim} --out {output.embeddings} --threads {threads} > {log} 2>&1"


rule probe:
    """Table 7: linear probes (AD vs CN; age) on frozen embeddings; Figure 5: 2-D LDA projection."""
    input:
        sessions=SESSIONS,
        splits=SPLITS,
        embeddings=expand(outputs.embeddings(OUT, "{model}"), model=EMBED_MODELS),
    output:
        table=report(
            outputs.table(OUT, outputs.TABLE7),
            category="Table 7 - linear probes",
            caption="../report/table7.rst",
        ),
        markdown=outputs.table(OUT, outputs.TABLE7, "md"),
        history=outputs.results(OUT, "probes", "history.tsv"),
        figure=report(
            outputs.figure(OUT, outputs.FIGURE5),
            category="Figure 5 - LDA",
            caption="../report/figure5.rst",
        ),
    log:
        log_file("probe"),
    benchmark:
        bench_file("probe")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("probe")
    resources:
        **rule_resources("probe"),
    params:
        config=json.dumps({**EVAL["probe"], "seed": SEED, "bootstrap": EVAL["bootstrap"]}, sort_keys=True),
        embeddings=lambda wildcards, input: " ".join(f"{m}={p}" for m, p in zip(EMBED_MODELS, input.embeddings)),
    shell:
        "python -m ldae.cli probe --sessions {input.sessions} --splits {input.splits} --embeddings {params.embeddings}"
        " --config {params.config:q} --table {output.table} --history {output.history} --figure {output.figure}"
        " --threads {threads} > {log} 2>&1"


rule reconstruct:
    """Table 6: SSIM / LPIPS / MSE of every representation at T = 10/20/50/100 on the test split."""
    input:
        **LDAE_MODELS,
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
        dae=DAE_MODEL,
    output:
        table=report(
            outputs.table(OUT, outputs.TABLE6),
            category="Table 6 - reconstruction",
            caption="../report/table6.rst",
        ),
        markdown=outputs.table(OUT, outputs.TABLE6, "md"),
        per_session=outputs.results(OUT, "reconstruction", "per_session.tsv"),
        figure=report(
            outputs.figure(OUT, outputs.TABLE6_EXAMPLES),
            category="Table 6 - reconstruction",
            caption="../report/table6_examples.rst",
        ),
    log:
        log_file("reconstruct"),
    benchmark:
        bench_file("reconstruct")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("reconstruct")
    resources:
        **rule_resources("reconstruct"),
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
        images=IMAGES_JSON,
        ddim=DDIM_JSON,
        dae=lambda wildcards, input: f"--dae {input.dae}" if input.dae else "",
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
        embeddings=outputs.embeddings(OUT, "ldae"),
    output:
        table=report(
            outputs.table(OUT, outputs.FIGURE8_TABLE),
            category="Figure 8 - interpolation",
            caption="../report/figure8_table.rst",
        ),
        markdown=outputs.table(OUT, outputs.FIGURE8_TABLE, "md"),
        triplets=outputs.results(OUT, "interpolation", "triplets.tsv"),
        figure=report(
            outputs.figure(OUT, outputs.FIGURE8),
            category="Figure 8 - interpolation",
            caption="../report/figure8.rst",
        ),
    log:
        log_file("interpolate"),
    benchmark:
        bench_file("interpolate")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("interpolate")
    resources:
        **rule_resources("interpolate"),
    params:
        config=json.dumps({**EVAL["interpolation"], "seed": SEED, "bootstrap": EVAL["bootstrap"]}, sort_keys=True),
        ddim=DDIM_JSON,
    shell:
        "python -m ldae.cli interpolate --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} --sessions {input.sessions} --splits {input.splits}"
        " --embeddings {input.embeddings} --config {params.config:q} --ddim {params.ddim:q} --table {output.table}"
        " --triplets {output.triplets} --figure {output.figure} --threads {threads} > {log} 2>&1"


rule manipulate:
    """Figures 6/7: AD and CN test scans moved along the AD-vs-CN probe direction; NIfTI volumes."""
    input:
        **LDAE_MODELS,
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
        embeddings=outputs.embeddings(OUT, "ldae"),
        official_probe=[OFFICIAL_PROBE] if OFFICIAL_PROBE else [],
    output:
        table=report(
            outputs.table(OUT, outputs.FIGURE67_TABLE),
            category="Figures 6/7 - manipulation",
            caption="../report/manipulation_table.rst",
        ),
        markdown=outputs.table(OUT, outputs.FIGURE67_TABLE, "md"),
        figure_cn=report(
            outputs.figure(OUT, outputs.FIGURE6),
            category="Figures 6/7 - manipulation",
            caption="../report/figure6.rst",
        ),
        figure_ad=report(
            outputs.figure(OUT, outputs.FIGURE7),
            category="Figures 6/7 - manipulation",
            caption="../report/figure7.rst",
        ),
        volumes=directory(outputs.results(OUT, "manipulation")),
    log:
        log_file("manipulate"),
    benchmark:
        bench_file("manipulate")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("manipulate")
    resources:
        **rule_resources("manipulate"),
    params:
        config=json.dumps(EVAL["manipulation"], sort_keys=True),
        probe=json.dumps({**EVAL["probe"], "seed": SEED}, sort_keys=True),
        probe_file=lambda wildcards, input: (f"--probe-file {input.official_probe}" if input.official_probe else ""),
        images=IMAGES_JSON,
        ddim=DDIM_JSON,
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
        qc=QC_TABLE,
        sessions=SESSIONS,
        splits=SPLITS,
        reconstruction=outputs.table(OUT, outputs.TABLE6),
        dae=DAE_MODEL,
    output:
        table=report(
            outputs.table(OUT, outputs.TABLE5),
            category="Table 5 - efficiency",
            caption="../report/table5.rst",
        ),
        markdown=outputs.table(OUT, outputs.TABLE5, "md"),
    log:
        log_file("time_inference"),
    benchmark:
        bench_file("time_inference")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("time_inference")
    resources:
        **rule_resources("time_inference"),
    params:
        config=json.dumps(EVAL["timing"], sort_keys=True),
        images=IMAGES_JSON,
        ddim=DDIM_JSON,
        dae=lambda wildcards, input: f"--dae {input.dae}" if input.dae else "",
        # training wall time from the training rules' benchmark files (read if present, never a rerun trigger)
        bench_ldae=" ".join(
            bench_file(name) for name in ("train_autoencoder", "encode_latents", "train_ldm", "train_ldae")
        ),
        bench_dae=bench_file("train_dae") if "dae" in BASELINES else "",
    shell:
        "python -m ldae.cli time-inference --autoencoder {input.autoencoder} --latents {input.latents}"
        " --ldm {input.ldm} --ldae {input.ldae} {params.dae} --qc {input.qc} --sessions {input.sessions}"
        " --splits {input.splits} --images {params.images:q} --reconstruction {input.reconstruction}"
        " --config {params.config:q} --ddim {params.ddim:q} --benchmarks-ldae {params.bench_ldae}"
        " --benchmarks-dae {params.bench_dae}"
        " --table {output.table} --threads {threads} > {log} 2>&1"


# the results README reads every table (its .md and, beside it, its .tsv) and shows every figure, in this order
RESULT_TABLES = [outputs.table(OUT, stem, "md") for stem in outputs.TABLES]
RESULT_FIGURES = [outputs.figure(OUT, name) for name in outputs.FIGURES]


rule results_readme:
    """results/README.md: each paper table beside our numbers, the paper's claims judged against our intervals,
    and the figures."""
    input:
        tables=RESULT_TABLES,
        data=[path[: -len(".md")] + ".tsv" for path in RESULT_TABLES],  # read beside each .md
        figures=RESULT_FIGURES,
    output:
        readme=outputs.results_readme(OUT),
    log:
        log_file("results_readme"),
    benchmark:
        bench_file("results_readme")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    params:
        confidence=EVAL["bootstrap"]["confidence"],
    shell:
        "python -m ldae.cli results-readme --tables {input.tables} --figures {input.figures}"
        " --confidence {params.confidence} --out {output.readme} > {log} 2>&1"


TARGETS.extend([outputs.results_readme(OUT), *RESULT_TABLES, *RESULT_FIGURES])
