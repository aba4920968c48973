# N4 -> skull strip -> registration to MNI152 per session (order from config preprocess.steps), as the BIDS
# derivatives dataset derivatives/ldae-preproc with a QC record per session and the cohort QC table qc.tsv.
# Every file name comes from ldae.preprocess.naming (here with wildcard placeholders). Downstream rules read
# only qc.tsv (+ tables/splits.tsv) to find images.
import ldae.preprocess.pipeline as _pp_pipeline
import ldae.preprocess.rules as _pp_rules
import ldae.preprocess.templates as _pp_templates

PREPROC_MONTAGE = naming.qc_montage(PREPROC)
PREPROC_DESCRIPTION = naming.description_file(PREPROC)
_PP = _pp_pipeline.resolve_config(config["preprocess"])  # schema defaults + checks (steps, method order)
_PP_SPACE = _pp_templates.space_label(_PP["registration"])
_PP_REG = _PP["registration"]["type"]
_PP_SESSION = naming.preproc_paths(PREPROC, "{subject}", "{session}", _PP_SPACE, _PP_REG)
# The section as JSON without threads/group_size: a changed step parameter reruns every session, a changed
# thread count or bundle size reruns nothing.
_PP_PARAMS = _pp_pipeline.rule_params(_PP)
_PP_BUNDLE = out("work", "preprocess", "bundle-{bundle}.txt")


rule preprocess:
    """One session: N4, skull strip, registration; always writes its QC record (pass or excluded)."""
    input:
        t1w=lambda wc: os.path.join(
            BIDS, _pp_rules.source_t1w(checkpoints.sessions.get().output.sessions, wc.subject, wc.session)
        ),
    output:
        qc=_PP_SESSION.qc_json,
    log:
        log_file("preprocess", "sub-{subject}_ses-{session}"),
    benchmark:
        bench_file("preprocess", "sub-{subject}_ses-{session}")
    wildcard_constraints:
        subject="[A-Za-z0-9]+",
        session="[A-Za-z0-9]+",
    group:
        "preprocess"
    conda:
        env_file("ants")
    container:
        container_for("ants")
    threads: int(_PP["threads"])
    resources:
        **rule_resources("preprocess"),
    params:
        config=_PP_PARAMS,
        derivatives=lambda wc, output: naming.root_of_qc_json(output.qc),
        source=lambda wc: _pp_rules.source_t1w(checkpoints.sessions.get().output.sessions, wc.subject, wc.session),
    shell:
        "python -m ldae.cli preprocess --t1w {input.t1w} --participant-id sub-{wildcards.subject}"
        " --session-id ses-{wildcards.session} --derivatives {params.derivatives} --source {params.source:q}"
        " --config-json {params.config:q} --threads {threads} --qc-json {output.qc} > {log} 2>&1"


rule preprocess_bundle:
    """config preprocess.group_size sessions: one cluster job (group 'preprocess') instead of one per session."""
    input:
        qc=lambda wc: _pp_rules.bundle_qc_records(session_bundles()[wc.bundle], PREPROC, _PP_SPACE, _PP_REG),
    output:
        bundle=_PP_BUNDLE,
    log:
        log_file("preprocess_bundle", "{bundle}"),
    benchmark:
        bench_file("preprocess_bundle", "{bundle}")
    group:
        "preprocess"
    conda:
        env_file("ants")
    container:
        container_for("ants")
    threads: 1
    resources:
        **rule_resources("preprocess_bundle"),
    shell:
        "ls {input.qc} > {output.bundle} 2> {log}"


rule preproc_qc:
    """The cohort QC table: one row per session (status, reason, similarity, brain volume, image path)."""
    input:
        bundles=lambda wc: expand(_PP_BUNDLE, bundle=session_bundles()),
        sessions=SESSIONS,
    output:
        qc=report(QC_TABLE, caption="../report/preproc_qc.rst", category="Preprocessing"),
        montage=report(PREPROC_MONTAGE, caption="../report/preproc_montage.rst", category="Preprocessing"),
    log:
        log_file("preproc_qc"),
    benchmark:
        bench_file("preproc_qc")
    conda:
        env_file("ants")
    container:
        container_for("ants")
    threads: 1
    resources:
        **rule_resources("preproc_qc"),
    params:
        config=_PP_PARAMS,
        derivatives=lambda wc, output: os.path.dirname(output.qc),
    shell:
        "python -m ldae.cli preproc-qc --sessions {input.sessions} --derivatives {params.derivatives}"
        " --out {output.qc} --montage {output.montage} --config-json {params.config:q} 2> {log}"


rule preproc_description:
    """dataset_description.json of the derivatives (GeneratedBy with versions and container, SourceDatasets)."""
    output:
        description=PREPROC_DESCRIPTION,
    log:
        log_file("preproc_description"),
    benchmark:
        bench_file("preproc_description")
    conda:
        env_file("ants")
    container:
        container_for("ants")
    threads: 1
    resources:
        **rule_resources("preproc_description"),
    params:
        config=_PP_PARAMS,
        source=BIDS,
        container=f"--container {container_for('ants')}" if container_for("ants") else "",
    shell:
        "python -m ldae.cli preproc-description --out {output.description} --source {params.source}"
        " {params.container} --config-json {params.config:q} > {log} 2>&1"


TARGETS.extend([QC_TABLE, PREPROC_DESCRIPTION])
