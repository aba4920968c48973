#!/usr/bin/env bash
# Build the Apptainer images of the workflow: containers/<env>.def -> containers/<env>.sif, each from the
# same pins as envs/<env>.yaml. Needs apptainer (or singularity) and either root or --fakeroot support;
# the torch image is ~10 GB while building (set APPTAINER_TMPDIR/APPTAINER_CACHEDIR to a big disk).
#
#   tools/build_containers.sh              # all images (what `make containers` runs)
#   tools/build_containers.sh torch ants   # some of them
#   FORCE=1 tools/build_containers.sh      # rebuild even if the .sif is newer than its .def and env file
#
# Then point config containers.<env> at the .sif (or push: apptainer push containers/torch.sif oras://...)
# and run with --profile profiles/slurm (software-deployment-method: apptainer).
set -euo pipefail
cd "$(dirname "$0")/.."

APPTAINER=${APPTAINER:-$(command -v apptainer || command -v singularity || true)}
if [[ -z $APPTAINER ]]; then
    echo "build_containers: apptainer (or singularity) not found; install it, or use" \
        "--software-deployment-method conda with envs/*.yaml instead" >&2
    exit 1
fi

envs=("$@")
((${#envs[@]})) || envs=($(ls containers/*.def | xargs -n1 basename | sed 's/\.def$//'))
fakeroot=()
[[ $(id -u) -eq 0 ]] || fakeroot=(--fakeroot)

for env in "${envs[@]}"; do
    def=containers/$env.def sif=containers/$env.sif
    [[ -f $def ]] || { echo "build_containers: no $def" >&2; exit 1; }
    if [[ -z ${FORCE:-} && -f $sif && $sif -nt $def && $sif -nt envs/$env.yaml ]]; then
        echo "[containers] $sif is up to date"
        continue
    fi
    echo "[containers] building $sif from $def"
    "$APPTAINER" build "${fakeroot[@]}" --force "$sif.tmp" "$def"
    mv "$sif.tmp" "$sif"
    "$APPTAINER" test "$sif"
done
echo "[containers] set config containers.<env> to containers/<env>.sif (absolute path when running elsewhere)"
