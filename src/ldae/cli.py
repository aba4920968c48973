"""`ldae <verb> ...`: one verb per Snakemake rule.

Each verb lives in its own module as ``main(argv: list[str]) -> int`` (argparse inside), imported lazily so
that `ldae --help` stays fast and a rule only pays for the libraries it uses.
"""

from __future__ import annotations

import importlib
import sys

# verb -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth-adni": ("ldae.data.synth", "generate a synthetic ADNI-like raw download (images + clinical CSVs)"),
    "adni-to-bids": ("ldae.data.convert", "run clinica's adni-to-bids converter (T1) with a kept log"),
    "sessions": ("ldae.data.sessions", "build the session table from the BIDS dataset (pybids)"),
    "validate-bids": ("ldae.data.validate_bids", "official BIDS validator on the input dataset (warnings only)"),
    "splits": ("ldae.data.splits", "subject-level train/val/test + probe splits, seeded, written once"),
    "preprocess": ("ldae.preprocess.pipeline", "N4, skull strip, registration (configured order) for one session"),
    "preproc-qc": ("ldae.preprocess.qc", "gather per-session QC into the cohort QC table"),
    "preproc-description": ("ldae.preprocess.description", "write dataset_description.json of the derivatives"),
    "train-autoencoder": ("ldae.training.autoencoder", "stage 1: AutoencoderKL + patch GAN, best val SSIM"),
    "encode-latents": ("ldae.training.latents", "encode every session once; scale factor from training latents"),
    "train-ldm": ("ldae.training.ldm", "stage 2: unconditional latent DDPM, final EMA weights"),
    "train-ldae": ("ldae.training.ldae", "stage 3: semantic encoder + gradient estimator (PDAE), best val SSIM"),
    "import-official": ("ldae.import_official", "the authors' released weights -> models/{autoencoder,ldm,ldae}"),
    "train-dae": ("ldae.training.dae", "baseline: voxel-space diffusion autoencoder (same semantic encoder)"),
    "train-supervised": ("ldae.training.supervised", "baseline: semantic encoder + linear head, end-to-end (--task)"),
    "embed": ("ldae.evaluation.embed", "y_sem of every session for one model (+ LDAE x_T of test sessions)"),
    "probe": ("ldae.evaluation.probes", "Table 7 linear probes (AD vs CN, age) + Figure 5 LDA"),
    "reconstruct": ("ldae.evaluation.reconstruct", "Table 6 reconstruction SSIM/LPIPS/MSE at T = 10/20/50/100"),
    "interpolate": ("ldae.evaluation.interpolate", "Figure 8 longitudinal interpolation (LERP y_sem, SLERP x_T)"),
    "manipulate": ("ldae.evaluation.manipulate", "Figures 6/7 manipulation along the AD-vs-CN probe direction"),
    "time-inference": ("ldae.evaluation.timing", "Table 5 seconds per reconstruction, LDAE vs DAE, same device"),
    "results-readme": ("ldae.evaluation.report", "results/README.md: each paper table beside our numbers"),
    "demo-summary": ("ldae.demo_summary", "wall time per stage (benchmarks) and the three files to open first"),
}


def _usage() -> str:
    width = max(len(v) for v in COMMANDS)
    lines = ["usage: ldae <command> [options]", "", "commands:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from ldae import __version__

        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        print(f"ldae: unknown command {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[verb][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
