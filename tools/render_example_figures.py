"""Render the evaluation figures (Table 6 examples, Figures 6/7 manipulation, Figure 8) from synthetic arrays, to
look at them after changing ldae.evaluation.figures: python tools/render_example_figures.py [--out /tmp/figures]."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ldae.evaluation import figures


def phantom(rng: np.random.Generator, shape=(48, 64, 48), ventricles: float = 1.0) -> np.ndarray:
    """An ellipsoidal 'brain' (grey rim, white core) with two dark 'ventricles' scaled by `ventricles`, in [0, 1]."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((g[0] / 0.8) ** 2 + (g[1] / 0.85) ** 2 + (g[2] / 0.75) ** 2)
    v = np.where(r < 1, 0.55, 0.0) + np.where(r < 0.8, 0.3, 0.0)
    for sx in (-0.18, 0.18):
        rv = np.sqrt(
            ((g[0] - sx) / (0.09 * ventricles)) ** 2 + (g[1] / (0.35 * ventricles)) ** 2 + ((g[2] - 0.1) / 0.25) ** 2
        )
        v = np.where(rv < 1, 0.15, v)
    v = ndi.gaussian_filter(v, 1) + rng.normal(0, 0.02, shape) * (r < 1)
    return np.clip(v / v.max() * 0.8, 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/ldae-example-figures"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = phantom(rng)
    examples = {"input": x[None], "AutoencoderKL - T=-": ndi.gaussian_filter(x, 0.7)[None]}
    small = ndi.zoom(x, 0.5, order=1)
    for t in (10, 20, 50, 100):
        examples[f"LDDIM encoded x_T T={t}"] = ndi.gaussian_filter(x, 0.8)[None]
        examples[f"LDAE (a) y_sem + noise x_T T={t}"] = (phantom(rng, ventricles=1.2) * 0.9)[None]
        examples[f"LDAE (b) y_sem + encoded x_T T={t}"] = ndi.gaussian_filter(x, 0.9)[None]
        examples[f"DAE (a) y_sem + noise x_T T={t}"] = (small + rng.normal(0, 0.3 / t**0.5, small.shape))[None]
        examples[f"DAE (b) y_sem + encoded x_T T={t}"] = ndi.gaussian_filter(small, 0.5 + 5 / t)[None]
    figures.reconstruction_examples(examples, args.out / "table6_examples.png")
    scales = [0, 1, 2, 3, 4, 5]
    figures.manipulation_montage(np.stack([phantom(rng, ventricles=1 + 0.08 * s) for s in scales]), scales,
                                 args.out / "figure6_manipulation_cn.png",
                                 "CN test scan sub-X ses-M000 moved towards AD (p = probability of CN, re-encoded)",
                                 original=x, probabilities=[0.9, 0.75, 0.5, 0.3, 0.12, 0.05],
                                 probability_label="p(CN)")  # fmt: skip
    n = 30
    results = pd.DataFrame({"participant_id": [f"sub-{i % 5}" for i in range(n)],
                            "time_gap": rng.choice([12, 24, 36], n), "prediction_gap": rng.choice([6, 12], n),
                            "alpha": rng.uniform(0.1, 0.9, n), "ssim": rng.uniform(0.9, 0.97, n),
                            "mse": rng.uniform(0.001, 0.003, n), "nearest_ssim": rng.uniform(0.9, 0.97, n),
                            "nearest_mse": rng.uniform(0.001, 0.003, n)})  # fmt: skip
    triplet = {
        "start": x,
        "target": phantom(rng, ventricles=1.1),
        "generated": phantom(rng, ventricles=1.08),
        "end": phantom(rng, ventricles=1.2),
    }
    figures.figure8_interpolation(results, triplet, args.out / "figure8_interpolation.png")
    for path in sorted(args.out.glob("*.png")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
