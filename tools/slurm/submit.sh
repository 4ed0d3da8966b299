#!/usr/bin/env bash
# The full AudioSet run on a Slurm cluster (nbs/94_full_run.ipynb, "At AudioSet's size"): run it on a login node,
# from the repository root, with the project's environment active and WORKSPACE on a file system every node mounts.
#   1. segment lists and the task table: WORKSPACE/metadata/{eval,balanced_train,unbalanced_train}_segments.csv and
#      tasks.tsv, one line per array task (eval, balanced_train, then the unbalanced list in PARTS parts)
#   2. data.sbatch, a job array with one task per line: download the task's part, pack it, index it
#   3. combine.sbatch once every task succeeded: the full-train index
#   4. train.sbatch once that succeeded: torchrun on NODES machines of GPUS_PER_NODE GPUs
# Settings (environment, passed on to every job): WORKSPACE, PARTS (41), MAX_TASKS (array tasks at once, 41),
# NODES (1), GPUS_PER_NODE (1), URL_TEMPLATE, DL_WORKERS, DOWNLOAD_ARGS (more audioset_download flags), SOURCE
# (a local copy to import instead), IMPORT_ARGS, CODEC, TRAIN_ARGS; LISTS_ARGS for the lists step.
# Every step resumes: submit again after a failure or a cancelled job and only the unfinished work runs.
set -euo pipefail
export WORKSPACE=${WORKSPACE:-workspace/audioset} PARTS=${PARTS:-41}
S=$(dirname "$0")
# shellcheck disable=SC2086
python -m audioset_nb.plan --workspace "$WORKSPACE" --parts "$PARTS" ${SOURCE:+--source "$SOURCE"} ${LISTS_ARGS:-}
T=$(wc -l < "$WORKSPACE/metadata/tasks.tsv")
A=$(sbatch --parsable --array="0-$((T - 1))%${MAX_TASKS:-41}" "$S/data.sbatch")
C=$(sbatch --parsable --dependency="afterok:$A" "$S/combine.sbatch")
R=$(sbatch --parsable --dependency="afterok:$C" --nodes="${NODES:-1}" --gpus-per-node="${GPUS_PER_NODE:-1}" \
  "$S/train.sbatch")
echo "submitted: data array $A ($T tasks), combine $C, train $R"
