"""Figures 6/7: attribute manipulation along the AD-vs-CN probe direction (paper, "Using the trained model").

A linear AD-vs-CN classifier on y_sem (label AD = 0, CN = 1; trained on probe_train, selected on probe_val as in
Table 7) gives the unit direction ``w / ||w||`` in the z-scored y_sem space. A test scan is moved by
``s * step * sqrt(D) * w / ||w||`` in z-scored space (authors' code: step 1), de-normalised, and decoded with the
x_T inverted with its ORIGINAL y_sem (so only the semantics change). ``s`` runs over the configured scales (paper
0..5); towards AD for a CN scan, towards CN for an AD scan. Each decoded scan is re-encoded and scored by the
probe, a check that the decoded image (not just the code) moved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ldae import verbs
from ldae.data.images import image_reader, records_of
from ldae.models.pipelines import LDAEPipeline

from .probes import LinearProbe

__all__ = ["shift_codes", "manipulate_scan", "choose_subjects"]


def shift_codes(
    y: np.ndarray, probe: LinearProbe, scales: Sequence[float], towards_positive: bool, step: float = 1.0
) -> np.ndarray:
    """``(len(scales), D)`` codes: ``y`` moved by ``s * step * sqrt(D)`` along the probe direction (z-scored space),
    de-normalised. ``towards_positive`` picks the sign (the probe's positive class, CN by default)."""
    y = np.asarray(y, dtype=np.float64).reshape(1, -1)
    d = y.shape[1]
    direction = probe.direction() * (1.0 if towards_positive else -1.0)
    z = probe.scaler.transform(y)
    shifted = np.stack([z[0] + float(s) * step * np.sqrt(d) * direction for s in scales])
    return probe.scaler.inverse_transform(shifted)


@torch.no_grad()
def manipulate_scan(
    ldae: LDAEPipeline,
    image: torch.Tensor,
    probe: LinearProbe,
    scales: Sequence[float],
    towards_positive: bool,
    steps: int,
    step: float = 1.0,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Decoded volumes ``(S, X, Y, Z)`` for every scale and a table (scale, probe probability of the shifted
    code and of the re-encoded decoded scan, mean absolute change from scale 0)."""
    x = image[None].to(ldae.device) if image.ndim == 4 else image.to(ldae.device)
    y0 = ldae.semantic(x)
    x_T = ldae.invert(ldae.latent(x), y0, steps)
    codes = shift_codes(y0[0].cpu().numpy(), probe, scales, towards_positive, step)
    volumes, rows = [], []
    for s, code in zip(scales, codes):
        y_s = torch.from_numpy(code.astype(np.float32))[None].to(ldae.device)
        vol = ldae.decode(ldae.sample(x_T, y_s, steps)).float().clamp(0, 1)
        re_y = ldae.semantic(vol).cpu().numpy()
        volumes.append(vol[0, 0].cpu().numpy())
        rows.append(
            {
                "scale": float(s),
                "p_positive_code": float(probe.predict_proba(code[None])[0]),
                "p_positive_decoded": float(probe.predict_proba(re_y)[0]),
            }
        )
    volumes = np.stack(volumes)
    for row, vol in zip(rows, volumes):
        row["mean_abs_change"] = float(np.abs(vol - volumes[0]).mean())
    return volumes, pd.DataFrame(rows)


def choose_subjects(
    table: pd.DataFrame, scores: np.ndarray, wanted: Sequence[str] = (), positive_class: str = "CN"
) -> dict[str, pd.Series]:
    """One test scan per class: the configured participants if given, else the baseline scan of the test subject
    the probe scores most confidently for its class. ``table`` rows (test sessions: participant_id, session_id,
    months, diagnosis) align with ``scores`` (probability of the positive class)."""
    table = table.reset_index(drop=True).assign(score=np.asarray(scores, dtype=float))
    chosen = {}
    for diagnosis in ("AD", "CN"):
        rows = table[table.diagnosis == diagnosis]
        if wanted:
            rows = rows[rows.participant_id.isin(list(wanted))]
        if rows.empty:
            continue
        rows = rows.sort_values(["participant_id", "months"]).groupby("participant_id").head(1)
        confident = rows.score if diagnosis == positive_class else 1.0 - rows.score
        chosen[diagnosis] = rows.loc[confident.idxmax()]
    return chosen


# ------------------------------------------------------------------------------------------------------ CLI


def save_nifti(volumes: np.ndarray, affine: np.ndarray | None, path) -> None:
    """``(S, X, Y, Z)`` volumes as one 4-D NIfTI (4th axis = scale) with the template-space affine."""
    import nibabel as nib

    data = np.moveaxis(np.asarray(volumes, dtype=np.float32), 0, -1)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def main(argv: list[str] | None = None) -> int:
    """``ldae manipulate``: Figures 6/7, their table and the decoded volumes (NIfTI, template space)."""
    from pathlib import Path

    from . import runtime
    from .embed import load_embeddings
    from .figures import manipulation_montage
    from .probes import ProbeDataError, embedding_table, probe_options, probe_splits
    from .tables import write_table

    parser = runtime.base_parser(
        "manipulate", "Figures 6/7: move y_sem along the AD-vs-CN probe direction", images=True
    )
    runtime.add_ldae_args(parser)
    parser.add_argument("--probe-config", default="", help="the probe settings (evaluation.probe)")
    parser.add_argument("--embeddings", required=True, type=Path, help="embeddings/ldae.npz (rule embed)")
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--figure-cn", required=True, type=Path, help="CN scan moved towards AD")
    parser.add_argument("--figure-ad", required=True, type=Path, help="AD scan moved towards CN")
    parser.add_argument("--volumes", required=True, type=Path, help="folder for the decoded NIfTI volumes")
    parser.add_argument(
        "--probe-file",
        type=Path,
        default=None,
        help="a probe file or its folder (ldae.evaluation.probe_file, e.g. the authors' probe imported with "
        "write_official_probe) instead of training the probe on probe_train",
    )
    args, cfg = runtime.parse(parser, argv, "evaluation.manipulation")
    pcfg = verbs.section("evaluation.probe", args.probe_config, shared=("seed", "bootstrap"))
    positive = str(pcfg["positive_class"])
    emb = load_embeddings(args.embeddings)
    table, features = embedding_table(args.sessions, args.splits, {"ldae": emb})
    try:
        data = None if args.probe_file else probe_splits(table, features["ldae"], "ad", positive, pcfg["age_diagnoses"])
    except ProbeDataError as error:
        from .figures import placeholder_figure

        message = f"no AD-vs-CN probe direction: {error}"
        write_table(pd.DataFrame([{"participant_id": "n/a", "scale": float("nan")}]), args.table, notes=[message])
        for path in (args.figure_cn, args.figure_ad):
            placeholder_figure(path, message)
        args.volumes.mkdir(parents=True, exist_ok=True)
        print(message)
        return 0
    if args.probe_file:
        from .probe_file import load_probe

        probe = load_probe(args.probe_file, positive)
        if probe.scaler.n_features_in_ != features["ldae"].shape[1]:
            raise SystemExit(
                f"manipulate: the probe {args.probe_file} has {probe.scaler.n_features_in_} inputs, "
                f"the embeddings {args.embeddings} are {features['ldae'].shape[1]}-d"
            )
        probe_note = f"Probe: {args.probe_file} (given, not trained); positive class {positive}."
    else:
        probe = data.train_probe("classification", **probe_options(pcfg, "classification"))
        probe_note = f"Probe: AD vs CN on LDAE y_sem (probe_train, selected on probe_val); positive class {positive}."
    images = records_of(args)
    test = images[(images.split == "test") & images.diagnosis.isin(["AD", "CN"])].reset_index(drop=True)
    test = test.merge(emb.ids, on=["participant_id", "session_id"], how="inner")
    scores = probe.predict_proba(emb.aligned(test)) if len(test) else np.zeros(0)
    chosen = choose_subjects(test, scores, cfg["subjects"], positive)
    pipe = runtime.ldae_pipeline(args, runtime.device())
    load = image_reader(verbs.parse_config_arg(args.images))
    scales = [float(s) for s in cfg["scales"]]
    args.volumes.mkdir(parents=True, exist_ok=True)
    rows = []
    figures = {"CN": args.figure_cn, "AD": args.figure_ad}
    for diagnosis, target_class in (("CN", "AD"), ("AD", "CN")):
        if diagnosis not in chosen:
            from .figures import placeholder_figure

            placeholder_figure(figures[diagnosis], f"no {diagnosis} test scan to manipulate")
            continue
        rec = chosen[diagnosis]
        image = load(rec["image"])
        volumes, frame = manipulate_scan(
            pipe,
            image,
            probe,
            scales,
            towards_positive=target_class == positive,
            steps=int(cfg["ddim_steps"]),
            step=float(cfg["step"]),
        )
        name = f"{rec['participant_id']}_{rec['session_id']}_to-{target_class}"
        save_nifti(volumes, load.affines.get(str(rec["image"])), args.volumes / f"{name}.nii.gz")
        frame.insert(0, "participant_id", rec["participant_id"])
        frame.insert(1, "session_id", rec["session_id"])
        frame.insert(2, "diagnosis", diagnosis)
        frame.insert(3, "towards", target_class)
        frame.insert(4, "positive_class", positive)  # p_positive_* are probabilities of this class
        frame["volume"] = f"{name}.nii.gz"
        rows.append(frame)
        manipulation_montage(
            volumes,
            scales,
            figures[diagnosis],
            f"{diagnosis} test scan {rec['participant_id']} {rec['session_id']} moved towards "
            f"{target_class} (p = probability of {positive}, re-encoded)",
            original=image[0].numpy(),
            probabilities=frame.p_positive_decoded.tolist(),
            probability_label=f"p({positive})",
        )
    result = (
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame([{"participant_id": "n/a", "scale": float("nan")}])
    )
    notes = [
        probe_note,
        f"Shift: s * {cfg['step']} * sqrt(D) * w / ||w|| in z-scored y_sem space, x_T kept from the inversion with "
        f"the original y_sem, DDIM {cfg['ddim_steps']} steps.",
        "p_positive_code: probe on the shifted code; p_positive_decoded: probe on the re-encoded decoded scan; "
        "mean_abs_change: mean |scan(s) - scan(0)|.",
    ]
    write_table(result, args.table, notes=notes)
    print(result.to_string(index=False))
    return 0
