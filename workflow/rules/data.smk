# Raw download (ADNI or synthetic) -> BIDS (clinica), or an existing BIDS dataset (data.source: bids)
# -> session table -> subject-level splits.


rule synthesize_adni:
    """A synthetic ADNI-like LONI download with clinical CSVs, used when data.source is 'synthetic'."""
    output:
        raw=directory(raw_root()),
    log:
        log_file("synthesize_adni"),
    benchmark:
        bench_file("synthesize_adni")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    threads: rule_threads("synthesize_adni")
    resources:
        **rule_resources("synthesize_adni"),
    params:
        flags=cli_flags(config["data"]["synthetic"]),
    shell:
        "python -m ldae.cli synth-adni --out {output.raw} {params.flags} --workers {threads} > {log} 2>&1"


rule adni_to_bids:
    """Clinica's own adni-to-bids converter (T1 only); its QC picks the preferred scan per visit."""
    input:
        **raw_inputs(),
    output:
        bids=directory(BIDS_CONVERTED),
    log:
        log_file("adni_to_bids"),
    benchmark:
        bench_file("adni_to_bids")
    conda:
        env_file("clinica")
    container:
        container_for("clinica")
    threads: res("adni_to_bids", "threads", 1)
    resources:
        mem_mb=res("adni_to_bids", "mem_mb", 4000),
        runtime=res("adni_to_bids", "runtime", 60),
    params:
        dataset=adni_dir(),
        clinical=clinical_dir(),
        subjects_list=(f"--subjects-list {config['data']['subjects_list']}" if config["data"]["subjects_list"] else ""),
    shell:
        "python -m ldae.cli adni-to-bids --dataset-dir {params.dataset} --clinical-dir {params.clinical}"
        " --bids-dir {output.bids} {params.subjects_list} --n-procs {threads} --log {log}"


checkpoint sessions:
    """One row per usable T1w session (pybids); the rest go to the exclusions table with a reason."""
    input:
        **bids_inputs(),
    output:
        sessions=SESSIONS,
        excluded=EXCLUDED,
    log:
        log_file("sessions"),
    benchmark:
        bench_file("sessions")
    conda:
        env_file("clinica")
    container:
        container_for("clinica")
    params:
        flags=sessions_flags(),
    shell:
        "python -m ldae.cli sessions --bids-dir {input.bids} --out {output.sessions} --excluded {output.excluded}"
        " {params.flags} > {log} 2>&1"


rule validate_bids:
    """The official BIDS validator on config data.bids_dir (data.bids.validate): findings are warnings, never fatal."""
    input:
        **bids_inputs(),
    output:
        report=BIDS_VALIDATION,
    log:
        log_file("validate_bids"),
    benchmark:
        bench_file("validate_bids")
    conda:
        env_file("clinica")
    container:
        container_for("clinica")
    shell:
        "python -m ldae.cli validate-bids --bids-dir {input.bids} --out {output.report} > {log} 2>&1"


rule splits:
    """Subject-level train/val/test and probe_train/probe_val, seeded; every later stage reads this file."""
    input:
        sessions=SESSIONS,
    output:
        splits=SPLITS,
    log:
        log_file("splits"),
    benchmark:
        bench_file("splits")
    conda:
        env_file("torch")
    container:
        container_for("torch")
    params:
        flags=cli_flags(config["splits"]),
    shell:
        "python -m ldae.cli splits --sessions {input.sessions} --out {output.splits} {params.flags} > {log} 2>&1"


TARGETS.extend([SESSIONS, SPLITS])
if BIDS_SOURCE and config["data"].get("bids", {}).get("validate"):
    TARGETS.append(BIDS_VALIDATION)
