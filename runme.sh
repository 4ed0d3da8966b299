#!/usr/bin/env bash
# The main job.
#   ./runme.sh          the embedded mini AudioSet end to end on this machine: make it, serve it on loopback,
#                       download it with yt-dlp, pack, train (GPU if there is one), evaluate, tag and SED one clip
#   ./runme.sh --full   the seed's real pipeline: AudioSet from YouTube, packing, Cnn14 on a GPU
#   ./runme.sh --full --source DIR   the same from a local copy (Hugging Face parquet, WebDataset shards, folders of clips)
# Each step skips what an earlier run finished, so running it again resumes.
set -euo pipefail
cd "$(dirname "$0")"

case "${1:-}" in
  "") MODE=mini ;;
  --full) MODE=full ;;
  -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
  *) echo "runme.sh: unknown option '$1'; run it with no option (the mini AudioSet) or with --full." >&2; exit 2 ;;
esac
if [ "$MODE" = full ]; then
  case "${2:-}" in
    "") ;;
    --source) [ -n "${3:-}" ] || { echo "runme.sh: --source needs the folder of a local copy of AudioSet: ./runme.sh --full --source DIR." >&2; exit 2; }
              export SOURCE=$3 ;;
    *) echo "runme.sh: unknown option '$2' after --full; the only one is --source DIR." >&2; exit 2 ;;
  esac
  exec bash tools/full.sh
fi
source tools/env.sh ""  # the runtime requirements: no extra

W=${WORKSPACE:-workspace/mini}         # everything the job writes
# The job starts ffmpeg about 1,500 times (one encoder per source, one cut per clip): imageio-ffmpeg's static build
# starts in about 11 ms of CPU where a distribution's dynamically linked one takes 65 ms (Debian 12). Set
# AUDIOSET_NB_FFMPEG=ffmpeg to use the one on PATH instead (./test.sh checks decoding with both).
export AUDIOSET_NB_FFMPEG=${AUDIOSET_NB_FFMPEG:-bundled}
CUDA=$(python -c 'import torch; print("--cuda" if torch.cuda.is_available() else "")')
# The mini recipe: a quarter-width decision-level Cnn6 on a coarse 8-kHz front end, sized to train in minutes on
# 2 CPU cores (eval mAP 0.93 after 1,200 iterations, 0.94 after 1,600; see nbs/50_train.ipynb). The clips are read in
# the training process (--num_workers=0): a loader process would take a core from torch's two threads for 12 ms of
# reading a batch, and the steps ran 15% slower with one (BENCHMARKS.md, "The main job's own cost").
MODEL=${MODEL:-Cnn6_mini_DecisionLevelMax}
RATE=8000  # the clips are packed at the model's rate, so that no training step resamples the clip it draws
FRONT=(--sample_rate=$RATE --window_size=1024 --hop_size=512 --mel_bins=32 --fmin=50 --fmax=4000)
TRAIN=(--balanced=balanced --augmentation=none --batch_size=16 --learning_rate=1e-3 --early_stop=${ITERATIONS:-1200} --eval_every=400
       --num_workers=0)
t0=$SECONDS
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - t0)); }

step "1/6 make the mini AudioSet: segment lists and one source video per clip"
audioset_mini --root "$W/mini" --seed 0

step "2/6 serve the sources on loopback and download every clip with yt-dlp"
rm -f "$W/mirror.url"
audioset_mirror --root "$W/mini/sources" --url_file "$W/mirror.url" &
MIRROR=$!
trap 'kill $MIRROR 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$W/mirror.url" ] && break; sleep 0.1; done
[ -s "$W/mirror.url" ] || { echo "runme.sh: the loopback mirror did not start." >&2; exit 1; }
for s in balanced_train eval; do
  audioset_download --csv_path "$W/mini/metadata/${s}_segments.csv" --audios_dir "$W/audios/$s" \
    --url_template "$(cat "$W/mirror.url")" --workers 4
done
kill $MIRROR 2>/dev/null || true

step "3/6 pack the clips into HDF5, at the model's rate"
for s in balanced_train eval; do
  [ -f "$W/hdf5s/waveforms/$s.h5" ] ||
    audioset_pack --csv_path "$W/mini/metadata/${s}_segments.csv" --audios_dir "$W/audios/$s" \
      --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" --sample_rate $RATE
  audioset_pack --waveforms_hdf5_path "$W/hdf5s/waveforms/$s.h5" --indexes_hdf5_path "$W/hdf5s/indexes/$s.h5"
done

step "4/6 train $MODEL and evaluate it on the eval set"
audioset_train train --workspace "$W" --data_type balanced_train --model_type "$MODEL" "${FRONT[@]}" "${TRAIN[@]}" \
  --resume_latest $CUDA
run="main/*/data_type=balanced_train/$MODEL/*/*/*/*"
CKPT=$(ls -t $W/checkpoints/$run/latest.pth | sed -n 1p)  # sed reads it all: no SIGPIPE under pipefail
STATS=$(ls -t $W/statistics/$run/statistics.jsonl | sed -n 1p)  # sed reads it all: no SIGPIPE under pipefail

step "5/6 tag one eval clip and draw its sound-event picture"
CLIP=$(ls "$W/audios/eval/"Y*.wav | sed -n 1p)  # sed reads it all: no SIGPIPE under pipefail
audioset_tag --checkpoint_path "$CKPT" --audio_path "$CLIP" --top_k 5
audioset_sed --checkpoint_path "$CKPT" --audio_path "$CLIP" --output "$W/sed/events.csv" --figure_dir "$W/sed"

step "6/6 results"
python - "$STATS" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if 'test_mAP' in l]
r = recs[-1]
print(f"eval mAP {r['test_mAP']:.3f} (balanced-train mAP {r['bal_mAP']:.3f}) at iteration {r['iteration']}")
PY
cat <<MSG
Artifacts:
  mini AudioSet sources and lists  $W/mini
  downloaded clips and logs        $W/audios/{balanced_train,eval}
  packed HDF5                      $W/hdf5s/{waveforms,indexes}
  checkpoint                       $CKPT
  statistics, curve, per-class AP  $(dirname "$STATS")
  SED events and figure            $W/sed
Done in $((SECONDS - t0)) s.
MSG
