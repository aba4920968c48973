"""Helpers of workflow/rules/preprocess.smk (kept out of the Snakefile: the linter wants rules and functions
apart). Pure Python, cheap: called from input functions for every one of ~10k sessions."""

from __future__ import annotations

import os

from ldae.preprocess import naming

_T1W: dict = {}


def t1w_table(sessions_tsv: str) -> dict[tuple[str, str], str]:
    """{(subject label, session label): T1w path relative to the BIDS root}, read once per table version."""
    import pandas as pd

    key = (sessions_tsv, os.path.getmtime(sessions_tsv))
    if key not in _T1W:
        table = pd.read_csv(sessions_tsv, sep="\t", dtype=str)
        _T1W.clear()
        _T1W[key] = {
            (naming.label(p, "sub"), naming.label(s, "ses")): t
            for p, s, t in zip(table.participant_id, table.session_id, table.t1w)
        }
    return _T1W[key]


def source_t1w(sessions_tsv: str, subject: str, session: str) -> str:
    """The session's T1w path relative to the BIDS root."""
    return t1w_table(sessions_tsv)[(naming.label(subject, "sub"), naming.label(session, "ses"))]


def bundle_qc_records(rows, root: str, space: str, registration: str) -> list[str]:
    """QC record paths of the sessions in `rows` (a slice of the session table)."""
    return [
        naming.preproc_paths(root, p, s, space, registration).qc_json
        for p, s in zip(rows.participant_id, rows.session_id)
    ]
