"""Preprocessed images by split, for training and evaluation alike.

Images are found only through the preprocessing QC table (status pass) joined with the session table and the
split table (:func:`image_records`), and read through the shared MONAI transforms
(:func:`ldae.data.transforms.build_transforms`) by ONE :class:`ImageDataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ldae.data.tables import TableError, read_tsv, sessions_with_splits
from ldae.data.transforms import build_transforms

log = logging.getLogger("ldae.data")


def image_records(qc_path, sessions_path, splits_path, derivatives_root=None) -> pd.DataFrame:
    """One row per preprocessed session that passed QC: its metadata, split and absolute image path.

    ``derivatives_root``: what the QC table's ``preproc`` paths are relative to (None: the QC table's folder)."""
    root = derivatives_root if derivatives_root is not None else Path(qc_path).parent
    qc = read_tsv(qc_path, ["participant_id", "session_id", "status", "preproc"], "preprocessing QC table")
    passed = qc[qc.status == "pass"]
    table = sessions_with_splits(sessions_path, splits_path).merge(
        passed[["participant_id", "session_id", "preproc"]], on=["participant_id", "session_id"], how="inner"
    )
    failed = len(qc) - len(passed)
    if failed:
        log.info("%d session(s) excluded by preprocessing QC (see %s)", failed, qc_path)
    if table.empty:
        raise TableError(f"no session passed preprocessing QC in {qc_path}")
    table["image"] = [str(Path(root) / rel) for rel in table.preproc]
    return table.drop(columns=["preproc"]).reset_index(drop=True)


def records_of(args) -> pd.DataFrame:
    """:func:`image_records` from a verb's ``--qc/--sessions/--splits/--derivatives`` arguments."""
    return image_records(args.qc, args.sessions, args.splits, args.derivatives)


def as_image_tensor(image) -> torch.Tensor:
    """A transformed image as a plain (1, X, Y, Z) float32 tensor (no MONAI metadata)."""
    if hasattr(image, "as_tensor"):
        image = image.as_tensor()
    image = torch.as_tensor(image, dtype=torch.float32)
    return image[None] if image.ndim == 3 else image


class ImageDataset(torch.utils.data.Dataset):
    """Preprocessed volumes through the shared MONAI transforms, with MONAI caching.

    ``cache``: ``"memory"`` (``CacheDataset``), ``"disk"`` (``PersistentDataset`` under ``cache_dir``; the run folder,
    which is wiped when its inputs change) or ``"none"``. Items: ``{"image": (1, X, Y, Z) float tensor, "index": i}``
    (plain tensors: no MONAI metadata travels into the training loop).

    Called with a path (``dataset(path)``, what evaluation does), it reads that one file uncached and keeps the
    affine of the transformed image (template space, after resampling and pad/crop) in ``affines[path]``.
    """

    def __init__(
        self,
        paths: list[str],
        images_cfg: Mapping[str, Any] | None,
        cache: str = "none",
        cache_dir: str | os.PathLike | None = None,
        cache_workers: int = 0,
        transform=None,
    ):
        from monai.data import CacheDataset, Dataset, PersistentDataset

        self.transform = transform if transform is not None else build_transforms(dict(images_cfg or {}))
        self.affines: dict[str, np.ndarray] = {}
        data = [{"image": str(p)} for p in paths]
        self.paths = list(map(str, paths))
        if cache == "memory":
            self.data = CacheDataset(
                data,
                self.transform,
                cache_rate=1.0,
                num_workers=cache_workers or None,
                progress=False,
                copy_cache=False,
            )
        elif cache == "disk":
            if cache_dir is None:
                raise ValueError("cache 'disk' needs a cache_dir")
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            self.data = PersistentDataset(data, self.transform, cache_dir=cache_dir)
        elif cache == "none":
            self.data = Dataset(data, self.transform)
        else:
            raise ValueError(f"unknown cache mode {cache!r} (memory, disk, none)")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        return {"image": as_image_tensor(self.data[index]["image"]), "index": index}

    def __call__(self, path: str) -> torch.Tensor:
        image = self.transform({"image": str(path)})["image"]
        affine = getattr(image, "affine", None)
        if affine is not None:
            self.affines[str(path)] = np.asarray(affine, dtype=np.float64)
        return as_image_tensor(image)


def image_reader(images_cfg: Mapping[str, Any] | None = None, transform=None) -> ImageDataset:
    """``reader(path) -> (1, X, Y, Z)`` tensor (an :class:`ImageDataset` over no cached paths)."""
    return ImageDataset([], images_cfg, transform=transform)
