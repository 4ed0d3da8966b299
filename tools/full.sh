#!/usr/bin/env bash
# ./runme.sh --full: the seed's real pipeline on the real AudioSet.
#   metadata -> YouTube download of eval, balanced_train and the 41 unbalanced parts -> packing -> indexes
#   -> Cnn14 trained on a GPU with the seed's settings.
# Needs YouTube, about 2.5 TB of disk (wav clips + int16 HDF5; set CODEC=flac to pack ~30% smaller) and a CUDA GPU.
# With SOURCE=DIR (./runme.sh --full --source DIR) the clips come from a local copy instead of YouTube: eval/,
# bal_train/ and unbal_train/ folders of Hugging Face parquet files, WebDataset shards or clips, imported with
# audioset_import (the unbalanced set in PARTS parts, default 41, as the reference's lists).
# Every step resumes: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh "${SOURCE:+import}"  # a local copy is read with the import extra (pyarrow, fsspec)
W=${WORKSPACE:-workspace/audioset}
NEED_GB=${NEED_GB:-$([ -n "${SOURCE:-}" ] && echo 1400 || echo 2500)}
mkdir -p "$W"

if [ -n "${SOURCE:-}" ]; then
  LAYOUT=$(python - "$SOURCE" <<'PY'
import sys
from audioset_nb.importer import copy_subsets
try: print('\n'.join(f'{s}\t{p}' for s, p in copy_subsets(sys.argv[1]).items()))
except (ValueError, OSError) as e: sys.exit(f'runme.sh --full: {e}')
PY
  ) || exit 1
else
  python - <<'PY' || { echo "runme.sh --full: YouTube cannot be reached from this machine; the full pipeline downloads AudioSet from it, so run it where there is internet access, or give a local copy with --source DIR (the mini job, ./runme.sh, needs none)." >&2; exit 1; }
import urllib.request; urllib.request.urlopen('https://www.youtube.com/', timeout=10)
PY
fi
free_gb=$(df -Pk "$W" | awk 'NR==2 {print int($4/1024/1024)}')
if [ "$free_gb" -lt "$NEED_GB" ] && [ -z "${ALLOW_SMALL_DISK:-}" ]; then
  echo "runme.sh --full: $W has ${free_gb} GB free but the full AudioSet needs about ${NEED_GB} GB; point WORKSPACE at a bigger disk (or set ALLOW_SMALL_DISK=1 to try anyway)." >&2
  exit 1
fi
python -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' ||
  { echo "runme.sh --full: no CUDA GPU is visible; training Cnn14 on AudioSet needs one (days on CPU)." >&2; exit 1; }

if [ -n "${SOURCE:-}" ]; then
  echo "== import the local copy $SOURCE (coverage reports beside the waveform files)"
  import_subset() {  # subset-name folder [flags]
    local s=$1 src=$2; shift 2
    [ -f "$W/hdf5s/waveforms/$s.h5" ] || audioset_import "$src" --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" ${CODEC:+--codec "$CODEC"} "$@"
    audioset_pack --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" --indexes_hdf5_path "$W/hdf5s/indexes/$s.h5"
  }
  while IFS=$'\t' read -r s src; do
    if [ "$s" = unbalanced_train ]; then
      for i in $(seq 0 $((${PARTS:-41} - 1))); do import_subset "unbalanced_train_part$(printf %02d "$i")" "$src" --part "$i/${PARTS:-41}"; done
    else import_subset "$s" "$src"; fi
  done <<< "$LAYOUT"
else
echo "== metadata: eval and balanced_train ship with the package; the unbalanced list is fetched and split"
python - "$W/metadata" <<'PY'
import sys; from pathlib import Path
from audioset_nb.download import fetch_unbalanced, read_segments, write_parts
out = Path(sys.argv[1])
if not (out/'unbalanced_train_segments_part00.csv').exists():
    segs = read_segments(fetch_unbalanced())
    write_parts(segs, out)  # 41 parts of 50,000, as the reference
PY

pack() {  # subset-name csv
  local s=$1 csv=$2
  audioset_download --csv_path "$csv" --audios_dir "$W/audios/$s" --skip_unavailable
  [ -f "$W/hdf5s/waveforms/$s.h5" ] || audioset_pack --csv_path "$csv" --audios_dir "$W/audios/$s" \
    --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" ${CODEC:+--codec "$CODEC"}
  audioset_pack --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" --indexes_hdf5_path "$W/hdf5s/indexes/$s.h5"
}
SHIPPED=$(python -c 'from audioset_nb.metadata import DATA_DIR; print(DATA_DIR)')  # audioset_pack reads files
pack eval "$SHIPPED/eval_segments.csv"
pack balanced_train "$SHIPPED/balanced_train_segments.csv"
for csv in "$W"/metadata/unbalanced_train_segments_part*.csv; do
  p=$(basename "$csv" .csv); pack "unbalanced_train_${p##*_}" "$csv"
done
fi
audioset_pack --indexes_hdf5s_dir "$W/hdf5s/indexes" --full_indexes_hdf5_path "$W/hdf5s/indexes/full_train.h5"

echo "== train Cnn14 as the seed does (600k iterations of 32 are the paper's schedule)"
audioset_train train --workspace "$W" --data_type full_train --sample_rate 32000 --window_size 1024 --hop_size 320 \
  --mel_bins 64 --fmin 50 --fmax 14000 --model_type Cnn14 --loss_type clip_bce --balanced balanced \
  --augmentation mixup --batch_size 32 --learning_rate 1e-3 --early_stop ${EARLY_STOP:-1000000} --resume_latest --cuda
