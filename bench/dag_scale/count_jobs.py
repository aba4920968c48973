"""Run snakemake (arguments as on the command line) in this process and report, as one JSON line on
stderr, how many jobs the DAG plans and how many submissions a cluster would see after grouping:
ungrouped jobs + distinct group jobs (the slurm profile's group-components bundle per-session jobs)."""

import json
import sys

import snakemake.api  # noqa: F401  (import order: api first, as the CLI does)
from snakemake.dag import DAG

stats = {}
original = DAG.update_groups


def update_groups(self):
    original(self)
    needrun = list(self.needrun_jobs())
    groups = {self._group[j] for j in needrun if j in self._group}
    # local: target rules (no action) and `localrules`; the dry-run executor calls every job local
    local = [j for j in needrun if j.rule.norun or j.rule.name in self.workflow._localrules]
    ungrouped = [j for j in needrun if j not in self._group and j not in local]
    sizes = sorted({len(g.jobs) for g in groups})
    stats.update(
        planned_jobs=len(needrun),
        local_jobs=len(local),
        ungrouped_jobs=len(ungrouped),
        group_jobs=len(groups),
        group_sizes=sizes,
        cluster_jobs=len(ungrouped) + len(groups),
    )


DAG.update_groups = update_groups

if __name__ == "__main__":
    from snakemake.cli import main

    try:
        main(sys.argv[1:])
    except SystemExit as done:
        code = int(done.code or 0)
    else:
        code = 0
    print("DAGSTATS " + json.dumps(stats), file=sys.stderr)
    sys.exit(code)
