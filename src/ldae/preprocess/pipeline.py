"""`ldae preprocess`: N4 -> skull strip -> registration (order from config) for ONE session.

Always succeeds for a bad input: the session's QC record (the rule's declared output) says `excluded` with the
reason, and no image, mask, transform, sidecar or picture is left behind. For a session that passes, every file
is written under a temporary name and renamed into place; the QC record is written last.
Setup errors (a skull-stripping method that cannot run here, a bad config) fail the job instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback

from ldae import files, verbs
from ldae.preprocess.description import runtime_container, steps_text, tool_versions

log = logging.getLogger("ldae.preprocess")

STEPS = ("n4", "register", "skullstrip")
# Keys that change how fast, not what: left out of the rule's params so changing them reruns nothing.
RUNTIME_KEYS = ("threads", "group_size")


class ConfigError(ValueError):
    """A preprocess config that cannot work; the job fails (no session is excluded for it)."""


def resolve_config(cfg: dict | None) -> dict:
    """The `preprocess` section over the schema's defaults (:func:`ldae.verbs.section`: an unknown key is an
    error naming it), validated."""
    merged = verbs.section("preprocess", cfg or {})
    steps = list(merged["steps"])
    unknown = [s for s in steps if s not in STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise ConfigError(f"preprocess.steps {steps}: each of {STEPS} at most once")
    for needed in ("register", "skullstrip"):
        if needed not in steps:
            raise ConfigError(f"preprocess.steps {steps} must include '{needed}'")
    if merged["skullstrip"]["method"] == "template" and steps.index("skullstrip") < steps.index("register"):
        raise ConfigError(
            "skullstrip method 'template' propagates the template brain mask through the registration: "
            "put 'register' before 'skullstrip' in preprocess.steps"
        )
    return merged


def rule_params(cfg: dict) -> str:
    """The preprocess section as the JSON string the rules pass (without runtime-only keys)."""
    return json.dumps({k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}, sort_keys=True)


def set_threads(threads: int) -> None:
    """ANTs/ITK, BLAS and torch thread counts (ITK reads its variable when the first filter runs)."""
    for var in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def _remove(paths) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)


def _step_error(step: str, error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{step} failed ({type(error).__name__}: {text[:300]})"


def preprocess_session(
    t1w: str, participant_id: str, session_id: str, root: str, cfg: dict, threads: int = 1, source: str = ""
) -> dict:
    """Preprocess one session; returns its QC record (also written to its QC JSON)."""
    from ldae.preprocess import naming, templates
    from ldae.preprocess.scan import Excluded

    cfg = resolve_config(cfg)
    set_threads(threads)
    registration = cfg["registration"]
    space = templates.space_label(registration)
    paths = naming.preproc_paths(root, participant_id, session_id, space, registration["type"])
    # A rerun starts clean: no output of an earlier attempt may survive an exclusion now.
    _remove(list(paths.outputs_on_pass().values()) + [paths.qc_json])

    from ldae.preprocess import skullstrip

    skullstrip.check_method(cfg["skullstrip"])  # setup errors fail the job, before any work
    start = time.perf_counter()
    record = {
        "participant_id": f"sub-{naming.label(participant_id, 'sub')}",
        "session_id": f"ses-{naming.label(session_id, 'ses')}",
        "t1w": source or t1w,
        "space": space,
        "status": "excluded",
        "reason": "",
        "metrics": {},
        "step_seconds": {},
    }
    scratch = tempfile.mkdtemp(prefix="ldae-preproc-")
    written: list[str] = []
    try:
        result = _run_steps(t1w, cfg, scratch, record)
        record["current_step"] = "write"
        _write_outputs(result, paths, root, cfg, record, written)
        record["status"], record["reason"] = "pass", ""
    except Excluded as why:
        record["reason"] = str(why)
    except (skullstrip.SkullStripConfigError, MemoryError):
        raise  # setup problems fail the job: no session is excluded for them
    except OSError as error:
        if record.get("current_step") != "write":
            record["reason"] = _step_error(record.get("current_step", "preprocess"), error)
        else:  # the disk, not the scan: fail the job (Snakemake reruns it), leaving nothing behind
            _remove(written + [files.temp_name(p) for p in paths.outputs_on_pass().values()])
            _remove(paths.outputs_on_pass().values())
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    except Exception as error:  # noqa: BLE001 - a tool failing on this scan excludes it; the cohort goes on
        step = record.get("current_step", "preprocess")
        record["reason"] = _step_error(step, error)
        record["traceback"] = traceback.format_exc()
        log.error("session %s %s: %s", participant_id, session_id, record["traceback"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        record.pop("current_step", None)
    if record["status"] != "pass":
        _remove(written + [files.temp_name(p) for p in paths.outputs_on_pass().values()])
        _remove(paths.outputs_on_pass().values())
        record["outputs"] = {}
    record["seconds"] = round(time.perf_counter() - start, 2)
    files.write_json(paths.qc_json, record, trailing_newline=True)
    return record


def _run_steps(t1w: str, cfg: dict, scratch: str, record: dict) -> dict:
    from ldae.preprocess import n4 as n4_step
    from ldae.preprocess import qc, register, skullstrip, templates
    from ldae.preprocess.scan import Excluded, read_scan

    registration, qc_cfg = cfg["registration"], cfg["qc"]
    timings = record["step_seconds"]
    cpu = record.setdefault("step_cpu_seconds", {})

    tick, cpu_tick = time.perf_counter(), time.process_time()
    record["current_step"] = "read"
    image, info = read_scan(t1w, float(qc_cfg["min_voxel_mm"]), float(qc_cfg["max_voxel_mm"]))
    record["input"] = info
    template, template_mask = templates.load_template(registration, float(registration["output_voxel_mm"]))
    timings["read"] = round(time.perf_counter() - tick, 2)
    cpu["read"] = round(time.process_time() - cpu_tick, 2)

    scan = image  # the scan as read (scan space), for bringing masks back
    space, mask, reg, native_mask = "scan", None, None, None
    params: dict = {}
    for step in cfg["steps"]:
        record["current_step"] = step
        tick, cpu_tick = time.perf_counter(), time.process_time()
        if step == "n4":
            image, params["n4"] = n4_step.n4_correct(image, None, cfg["n4"])
        elif step == "skullstrip":
            mask, params["skullstrip"] = skullstrip.brain_mask(
                image, cfg["skullstrip"], template_mask if space == "template" else None
            )
            if space == "scan":
                native_mask = mask
        elif step == "register":
            reg = register.register(
                image, template, template_mask, registration, scratch, moving_mask=mask, seed=int(registration["seed"])
            )
            params["registration"] = reg.params
            image = register.to_template(image, reg, template, registration["interpolation"])
            if mask is not None:
                mask = register.mask_to_template(mask, reg, template)
            space = "template"
        timings[step] = round(time.perf_counter() - tick, 2)
        cpu[step] = round(time.process_time() - cpu_tick, 2)

    record["current_step"] = "qc"
    tick, cpu_tick = time.perf_counter(), time.process_time()
    if mask is None or not (mask.numpy() > 0.5).any():
        raise Excluded("skull stripping found no brain")
    output = image.new_image_like((image.numpy().clip(min=0) * (mask.numpy() > 0.5)).astype("float32"))
    if native_mask is None:
        native_mask = register.mask_to_scan(mask, reg, scan)
    similarity = qc.normalised_correlation(output, template, template_mask)
    volume = qc.volume_ml(native_mask)
    overlap = qc.dice(mask, template_mask)
    record["metrics"] = {
        "similarity": round(similarity, 4),
        "brain_volume_ml": round(volume, 1),
        "mask_overlap": round(overlap, 4),
    }
    timings["qc"] = round(time.perf_counter() - tick, 2)
    cpu["qc"] = round(time.process_time() - cpu_tick, 2)
    if not similarity >= float(registration["min_similarity"]):
        raise Excluded(
            f"registration failed: similarity to template {similarity:.3f} < "
            f"{registration['min_similarity']} (preprocess.registration.min_similarity)"
        )
    if not float(qc_cfg["min_brain_ml"]) <= volume <= float(qc_cfg["max_brain_ml"]):
        raise Excluded(
            f"brain volume {volume:.0f} ml outside [{qc_cfg['min_brain_ml']}, {qc_cfg['max_brain_ml']}] "
            "(preprocess.qc.min/max_brain_ml)"
        )
    return {"image": output, "mask": mask, "reg": reg, "template_mask": template_mask, "params": params}


def _sidecar(record: dict, cfg: dict, result: dict, rel: dict) -> dict:
    from ldae.preprocess import templates

    template_path, mask_path = templates.template_paths(cfg["registration"])
    image = result["image"]
    return {
        "Description": f"T1w after {steps_text(cfg)[0]}",
        "SkullStripped": True,
        "Sources": [f"bids::{record['t1w']}"] if not os.path.isabs(record["t1w"]) else [record["t1w"]],
        # BIDS: a single string (URI); the template's details go in the custom key "Template"
        "SpatialReference": templates.reference_uri(cfg["registration"]),
        "Template": {
            "space": record["space"],
            "template": os.path.basename(template_path),
            "template_mask": os.path.basename(mask_path) if mask_path else "template > 0.2, holes filled",
            "voxel_mm": [round(float(v), 4) for v in image.spacing],
            "shape": list(image.shape),
        },
        "Steps": list(cfg["steps"]),
        "StepParameters": result["params"],
        "Configuration": {k: v for k, v in cfg.items() if k not in ("threads", "group_size")},
        "ToolVersions": tool_versions(),
        "Container": runtime_container(),
        "Input": record.get("input", {}),
        "QC": record["metrics"],
        "Files": {"mask": os.path.basename(rel["mask"]), "transform": os.path.basename(rel["transform"])},
    }


def _write_outputs(result: dict, paths, root: str, cfg: dict, record: dict, written: list[str]) -> None:
    import ants

    from ldae.preprocess import qc

    rel = paths.relative(root)
    record["outputs"] = {
        "image": rel.image,
        "mask": rel.mask,
        "transform": rel.transform,
        "sidecar": rel.sidecar,
        "qc_png": rel.qc_png,
    }
    for folder in {os.path.dirname(p) for p in (paths.image, paths.qc_png)}:
        os.makedirs(folder, exist_ok=True)
    staged = {key: files.temp_name(path) for key, path in paths.outputs_on_pass().items()}
    written.extend(staged.values())
    ants.image_write(result["image"], staged["image"])
    ants.image_write(result["mask"].clone("unsigned char"), staged["mask"])
    shutil.copyfile(result["reg"].transform_file, staged["transform"])
    ncc = record["metrics"]["similarity"]
    title = f"{record['participant_id']} {record['session_id']}  space-{record['space']}  NCC {ncc:.3f}"
    qc.qc_picture(result["image"], result["template_mask"], staged["qc_png"], title)
    with open(staged["sidecar"], "w") as handle:
        json.dump(_sidecar(record, cfg, result, asdict_paths(rel)), handle, indent=2, default=str)
        handle.write("\n")
    for key, tmp in staged.items():
        final = getattr(paths, key)
        os.replace(tmp, final)
        written.append(final)


def asdict_paths(paths) -> dict:
    from dataclasses import asdict

    return asdict(paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ldae preprocess", description=__doc__.splitlines()[0])
    parser.add_argument("--t1w", required=True, help="the session's T1w NIfTI")
    parser.add_argument("--participant-id", required=True, help="e.g. sub-ADNI011S0002")
    parser.add_argument("--session-id", required=True, help="e.g. ses-M000")
    parser.add_argument("--derivatives", required=True, help="derivatives root (derivatives/ldae-preproc)")
    parser.add_argument("--source", default="", help="the T1w path as recorded (relative to the BIDS root)")
    parser.add_argument("--config-json", default="{}", help="the preprocess config section as JSON (or @file)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: config threads)")
    parser.add_argument("--qc-json", default="", help="expected QC record path (checked against the naming)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    text = args.config_json
    if text.startswith("@"):
        with open(text[1:]) as handle:
            text = handle.read()
    try:
        cfg = resolve_config(json.loads(text))
    except (ConfigError, json.JSONDecodeError) as error:
        print(f"ldae preprocess: {error}", file=sys.stderr)
        return 2
    threads = args.threads or int(cfg["threads"])
    if args.qc_json:
        from ldae.preprocess import naming, templates

        expected = naming.preproc_paths(
            args.derivatives,
            args.participant_id,
            args.session_id,
            templates.space_label(cfg["registration"]),
            cfg["registration"]["type"],
        ).qc_json
        if os.path.normpath(expected) != os.path.normpath(args.qc_json):
            print(f"ldae preprocess: --qc-json {args.qc_json} is not the naming module's {expected}", file=sys.stderr)
            return 2
    from ldae.preprocess.skullstrip import SkullStripConfigError

    try:
        record = preprocess_session(
            args.t1w, args.participant_id, args.session_id, args.derivatives, cfg, threads, args.source
        )
    except SkullStripConfigError as error:
        print(f"ldae preprocess: {error}", file=sys.stderr)
        return 2
    status = record["status"] + (f" ({record['reason']})" if record["reason"] else "")
    print(
        f"{record['participant_id']} {record['session_id']}: {status} in {record['seconds']} s "
        f"{json.dumps(record['metrics'])} steps {json.dumps(record['step_seconds'])}",
        file=sys.stderr,
    )
    return 0
