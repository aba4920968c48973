"""What the training and evaluation stages read: preprocessed images and cached latents, by split.

Images are found only through the preprocessing QC table (status pass) joined with the session table and
the split table; latents only through the latent store written once by `encode_latents`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ldae.data.tables import TableError, read_tsv, sessions_with_splits, write_tsv_atomic

log = logging.getLogger("ldae.data")

RECORD_KEYS = ("participant_id", "session_id", "months", "age", "diagnosis", "split", "probe_split")


def image_records(qc_path, sessions_path, splits_path, derivatives_root) -> pd.DataFrame:
    """One row per preprocessed session that passed QC: its metadata, split and absolute image path."""
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
    table["image"] = [str(Path(derivatives_root) / rel) for rel in table.preproc]
    return table.drop(columns=["preproc"]).reset_index(drop=True)


def split_records(table: pd.DataFrame, split: str) -> list[dict]:
    rows = table[table.split == split]
    return [{"image": row.image, **{key: row[key] for key in RECORD_KEYS}} for _, row in rows.iterrows()]


# ------------------------------------------------------------------------------------------ latents
@dataclass(frozen=True)
class LatentStore:
    """Latents of every session, written once: <dir>/latents.npy (N, C, D, H, W) float32 memory-mapped,
    <dir>/index.tsv (row -> session + split), <dir>/scale.json (scale factor = 1/std over TRAINING latents)."""

    root: Path

    @property
    def array_path(self) -> Path:
        return self.root / "latents.npy"

    @property
    def index_path(self) -> Path:
        return self.root / "index.tsv"

    @property
    def scale_path(self) -> Path:
        return self.root / "scale.json"

    def write(self, latents: np.ndarray, index: pd.DataFrame, scale_factor: float, meta: dict) -> None:
        """All three files or none: written in a temporary sibling folder, then renamed into place."""
        if len(latents) != len(index):
            raise ValueError(f"{len(latents)} latents for {len(index)} index rows")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        staged = LatentStore(tmp)
        np.save(staged.array_path, latents.astype(np.float32))
        write_tsv_atomic(index, staged.index_path)
        staged.scale_path.write_text(json.dumps({"scale_factor": scale_factor, **meta}, indent=2))
        if self.root.exists():
            for path in self.root.iterdir():
                path.unlink()
            self.root.rmdir()
        os.replace(tmp, self.root)

    def read(self) -> tuple[np.ndarray, pd.DataFrame, float]:
        for path in (self.array_path, self.index_path, self.scale_path):
            if not path.is_file():
                raise FileNotFoundError(f"latent store incomplete, {path} missing; rerun rule encode_latents")
        latents = np.load(self.array_path, mmap_mode="r")
        index = pd.read_csv(self.index_path, sep="\t", dtype={"participant_id": str, "session_id": str})
        scale = float(json.loads(self.scale_path.read_text())["scale_factor"])
        return latents, index, scale


class LatentDataset(torch.utils.data.Dataset):
    """Scaled latents of one split (optionally with the matching image for stage 3)."""

    def __init__(self, store: LatentStore, split: str, image_lookup: dict | None = None, image_transform=None):
        self.latents, index, self.scale = store.read()
        self.rows = index.index[index.split == split].to_numpy()
        self.index = index
        self.image_lookup = image_lookup
        self.image_transform = image_transform
        if len(self.rows) == 0:
            raise TableError(f"no latent of split {split!r} in {store.index_path}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict:
        row = self.rows[item]
        sample = {"latent": torch.from_numpy(np.array(self.latents[row])) * self.scale, "row": int(row)}
        if self.image_lookup is not None:
            key = (self.index.participant_id[row], self.index.session_id[row])
            sample["image"] = self.image_transform({"image": self.image_lookup[key]})["image"]
        return sample
