"""Benchmark: per-scan preprocessing time and alignment quality, ours vs Clinica's t1-linear recipe.

Both run in the same process on the same synthetic 1 mm head scans (ldae.preprocess.phantom: the MNI152NLin6Asym
head with a planted affine pose, a smooth bias field and noise; the true brain mask is known), with the same ITK
thread count, interleaved scan by scan so machine load hits both alike.

(a) ours: `ldae.preprocess.pipeline.preprocess_session` with the shipped defaults (config.yaml), plus the
    issue's step order (n4 -> register -> skullstrip) as a variant.
(b) Clinica t1-linear recipe reproduced with antspyx: N4 (bspline fitting distance 600, whole image, antspyx
    defaults otherwise), antsRegistrationSyN[a] (rigid + affine, MI, 1000x500x250x100 on 8x4x2x1, full
    resolution) of the head to the same template, crop to the template brain's bounding box.

Quality, for both:
- ncc: normalised correlation of the result with the template inside the template brain mask eroded by 3 mm
  (ours is skull-stripped, Clinica's is not: the brain's edge is left out of the comparison);
- dice_align: the TRUE brain mask carried through the estimated transform vs the template brain mask (ceiling
  below 1 because the scans come from a different template; `reference` gives that ceiling);
- error_mm: mean distance between the estimated affine and the reference alignment (planted pose composed
  with a careful NLin6 -> 2009a registration) over template brain points;
- ours also: dice_skullstrip, our brain mask vs the true brain mask (both in template space).

Usage:
    nice .venv/bin/python bench/preprocess/run.py --scans 3 --threads 2 --variant-scans 1 \
        --out bench/results/preprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np


def clinica_recipe(image, template, scratch: str, seed: int = 0):
    """Clinica t1-linear (antspy path): N4 spline 600 -> antsRegistrationSyN[a] -> crop."""
    import ants

    t0, c0 = time.perf_counter(), time.process_time()
    n4 = ants.n4_bias_field_correction(image, spline_param=600)
    t1, c1 = time.perf_counter(), time.process_time()
    reg = ants.registration(
        template,
        n4,
        type_of_transform="antsRegistrationSyN[a]",
        random_seed=seed,
        outprefix=os.path.join(scratch, "clin_"),
    )
    t2, c2 = time.perf_counter(), time.process_time()
    warped = reg["warpedmovout"]
    mask = template.numpy() > 0
    lo, hi = np.argwhere(mask).min(0), np.argwhere(mask).max(0) + 1
    cropped = ants.crop_indices(warped, lo.tolist(), hi.tolist())
    t3, c3 = time.perf_counter(), time.process_time()
    wall = {"n4": t1 - t0, "register": t2 - t1, "crop": t3 - t2}
    cpu = {"n4": c1 - c0, "register": c2 - c1, "crop": c3 - c2}
    return warped, cropped, reg["fwdtransforms"][-1], wall, cpu


def reference_alignment(template, template_mask, scratch: str):
    """A careful affine from the 2009a template (fixed) to the NLin6Asym brain (moving), LPS 4x4."""
    import ants

    from ldae.preprocess import phantom, register

    head, mask = phantom.source_template_paths()
    nlin6 = ants.image_read(str(head)) * ants.image_read(str(mask))
    # brain to brain, both at 2 mm (affine accuracy well below 1 mm), antsRegistrationSyN's full schedule
    half = dict(resample_params=(2.0, 2.0, 2.0), use_voxels=False, interp_type=0)
    reg = ants.registration(
        ants.resample_image(template * template_mask, **half),
        ants.resample_image(nlin6, **half),
        type_of_transform="antsRegistrationSyN[a]",
        random_seed=0,
        outprefix=os.path.join(scratch, "ref_"),
    )
    return register.affine_matrix(reg["fwdtransforms"][-1])


def alignment(fixed_to_scan_lps, truth_scan_mask, template, template_mask, ref_lps, pose, points_ras):
    """Dice of the true mask carried to the template, and the mean error (mm) against the reference."""
    import ants

    from ldae.preprocess import qc

    tx = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=fixed_to_scan_lps[:3, :3],
        offset=fixed_to_scan_lps[:3, 3],
    )
    path = tempfile.mktemp(suffix=".mat")
    ants.write_transform(tx, path)
    warped = ants.apply_transforms(template, truth_scan_mask, [path], interpolator="linear")
    os.remove(path)
    truth_tpl = template.new_image_like((warped.numpy() > 0.5).astype("float32"))
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    est = flip @ fixed_to_scan_lps @ flip
    ideal = np.linalg.inv(pose) @ (flip @ ref_lps @ flip)
    homog = np.c_[points_ras, np.ones(len(points_ras))]
    error = float(np.linalg.norm((est @ homog.T - ideal @ homog.T)[:3], axis=0).mean())
    return qc.dice(truth_tpl, template_mask), error, truth_tpl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--voxel-mm", type=float, default=1.0)
    parser.add_argument("--out", default="bench/results/preprocess.json")
    parser.add_argument("--skip-clinica", action="store_true", help="only ours (e.g. to try settings)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=YAML",
        help="override a key of the shipped preprocess config for ours, e.g. registration.resolution_mm=2",
    )
    parser.add_argument(
        "--variant-scans",
        type=int,
        default=1,
        help="run the issue-order variant of ours on this many of the scans (0: none)",
    )
    args = parser.parse_args(argv)

    from ldae.preprocess import pipeline

    pipeline.set_threads(args.threads)
    import ants
    import yaml

    from ldae.preprocess import phantom, qc, register, scan, templates

    with open(os.path.join(os.path.dirname(__file__), "..", "..", "config.yaml")) as handle:
        shipped = yaml.safe_load(handle)["preprocess"]
    for item in args.set:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (shipped.setdefault(section, {}) if section else shipped)[key] = yaml.safe_load(value)
    cfg = pipeline.resolve_config(shipped)
    variant = pipeline.resolve_config({**shipped, "steps": ["n4", "register", "skullstrip"]})
    template, template_mask = templates.load_template(cfg["registration"], 1.0)
    # NCC region for both: the template brain eroded by 3 mm, so that skull stripping (ours) versus none
    # (Clinica) at the brain's edge does not decide the comparison
    from scipy import ndimage

    core = template_mask.new_image_like(
        ndimage.binary_erosion(template_mask.numpy() > 0.5, iterations=3).astype("float32")
    )
    work = tempfile.mkdtemp(prefix="ldae-bench-")
    ref = reference_alignment(template, template_mask, work)
    points = np.argwhere(template_mask.numpy()[::4, ::4, ::4] > 0.5) * 4
    nib_tpl = __import__("ldae.preprocess.skullstrip", fromlist=["ants_to_nib"]).ants_to_nib(template)
    points_ras = (nib_tpl.affine @ np.c_[points, np.ones(len(points))].T).T[:, :3]

    rng = np.random.default_rng(2025)
    orientations = ["PIR", "RAS", "LPS", "ASL"]
    rows = []
    for i in range(args.scans):
        pose = dict(
            rotation_deg=tuple(rng.uniform(-10, 10, 3).round(1)),
            translation_mm=tuple(rng.uniform(-15, 15, 3).round(1)),
            scale=tuple(rng.uniform(0.94, 1.06, 3).round(3)),
        )
        ph = phantom.make_phantom(args.voxel_mm, seed=i, orientation=orientations[i % 4], bias_strength=0.3, **pose)
        path = os.path.join(work, f"scan{i}.nii.gz")
        ph.save(path)
        truth = scan.nib_to_ants(ph.brain_mask)
        row = {"scan": i, "shape": list(ph.image.shape), "orientation": orientations[i % 4], "pose": pose}
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        ideal_lps = flip @ np.linalg.inv(ph.pose) @ flip @ ref  # template -> scan, the best an affine can do
        ref_dice, ref_error, _ = alignment(ideal_lps, truth, template, template_mask, ref, ph.pose, points_ras)
        row["reference"] = {"dice_align": round(ref_dice, 4), "error_mm": round(ref_error, 4)}
        for name, config in [("ours", cfg)] + ([("ours_issue_order", variant)] if i < args.variant_scans else []):
            root = os.path.join(work, name)
            t0, c0 = time.perf_counter(), time.process_time()
            record = pipeline.preprocess_session(path, f"sub-bench{i}", "ses-M000", root, config, args.threads)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            result = {
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "status": record["status"],
                "reason": record["reason"],
                "step_seconds": record["step_seconds"],
                "step_cpu_seconds": record.get("step_cpu_seconds"),
                **record["metrics"],
            }
            if record["status"] == "pass":
                out = os.path.join(root, record["outputs"]["image"])
                mask = ants.image_read(os.path.join(root, record["outputs"]["mask"]))
                matrix = register.affine_matrix(os.path.join(root, record["outputs"]["transform"]))
                dice_align, error, truth_tpl = alignment(
                    matrix, truth, template, template_mask, ref, ph.pose, points_ras
                )
                result.update(
                    ncc=round(qc.normalised_correlation(ants.image_read(out), template, core), 4),
                    dice_align=round(dice_align, 4),
                    error_mm=round(error, 3),
                    dice_skullstrip=round(qc.dice(mask, truth_tpl), 4),
                )
            row[name] = result
            print(name, i, json.dumps(result), flush=True)
        if args.skip_clinica:
            rows.append(row)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        warped, _, tx, steps, steps_cpu = clinica_recipe(ants.image_read(path), template, work)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        matrix = register.affine_matrix(tx)
        dice_align, error, _ = alignment(matrix, truth, template, template_mask, ref, ph.pose, points_ras)
        row["clinica"] = {
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "step_seconds": {k: round(v, 2) for k, v in steps.items()},
            "step_cpu_seconds": {k: round(v, 2) for k, v in steps_cpu.items()},
            "ncc": round(qc.normalised_correlation(warped, template, core), 4),
            "dice_align": round(dice_align, 4),
            "error_mm": round(error, 3),
        }
        print("clinica", i, json.dumps(row["clinica"]), flush=True)
        rows.append(row)

    def mean(key, name):
        values = [r[name][key] for r in rows if key in r.get(name, {})]
        return round(float(np.mean(values)), 4) if values else None

    summary = {}
    for name in ["ours", "ours_issue_order", "clinica"]:
        if any(name in r for r in rows):
            summary[name] = {
                k: mean(k, name) for k in ("seconds", "cpu_seconds", "ncc", "dice_align", "error_mm", "dice_skullstrip")
            }
            summary[name]["scans"] = sum(name in r for r in rows)
    summary["reference_dice_align"] = round(float(np.mean([r["reference"]["dice_align"] for r in rows])), 4)
    if "clinica" in summary:
        summary["time_ratio_ours_over_clinica"] = round(summary["ours"]["seconds"] / summary["clinica"]["seconds"], 3)
        summary["cpu_ratio_ours_over_clinica"] = round(
            summary["ours"]["cpu_seconds"] / summary["clinica"]["cpu_seconds"], 3
        )
    import deepbet

    result = {
        "benchmark": "preprocess: seconds per scan and alignment, ours vs Clinica t1-linear recipe",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_avg_1min_at_end": os.getloadavg()[0],
            "python": sys.version.split()[0],
        },
        "versions": {"antspyx": ants.__version__, "deepbet": getattr(deepbet, "__version__", "1.0.2")},
        "scans": {"count": args.scans, "voxel_mm": args.voxel_mm, "source": "MNI152NLin6Asym head + planted pose"},
        "template": templates.space_label(cfg["registration"]),
        "config_ours": cfg,
        "summary": summary,
        "per_scan": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2, default=str)
        handle.write("\n")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
