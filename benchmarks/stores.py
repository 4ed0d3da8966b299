"""Compressed stores benchmark: bytes per clip, decode speed per core, and what each store does to a trained model.

1. Size and speed: N synthetic 10-s 32-kHz clips (noise, tones, envelopes: benchmarks/pack.py's `synth`) encoded as
   each store of `audioset_nb.audio.STORES` beside int16; bytes per clip, and rows decoded per CPU second in one
   process (`decode_row`, what the training loader calls), int16 (`to_float32`, what the loader does with an int16
   row) as the baseline.
2. Model: the mini AudioSet (seed 0) written as a Hugging Face-style parquet copy (FLAC, 32 kHz), imported with
   `import_clips` into int16 and into each store, then the mini recipe of runme.sh trained on each with the same
   seed and iterations; eval mAP per store. Writes benchmarks/results/stores-cpu.json.

    # 200 clips; mini mAP after 400 iterations per store (about 25 min on 2 busy cores)
    python benchmarks/stores.py
    python benchmarks/stores.py --n 20 --iterations 0   # sizes and speed only
"""
import argparse, datetime, io, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pack import synth, SR  # noqa: E402

def sizes_and_speed(n:int)->dict:
    "Bytes per clip and decoded clips per CPU second of int16 and each store."
    from audioset_nb.audio import STORES, decode_row, encode_row, to_float32, to_int16
    rows = [to_int16(synth(i)) for i in range(n)]
    out = {}
    for store in [None, *STORES]:
        blobs = rows if store is None else [encode_row(r, SR, store) for r in rows]
        dec = (lambda b: to_float32(b)) if store is None else (lambda b: decode_row(b, store, SR*10))
        c0 = time.process_time()
        for b in blobs: dec(b)
        cpu = time.process_time() - c0
        sizes = [b.nbytes for b in blobs]
        out[store or 'int16'] = dict(bytes_per_clip=float(np.mean(sizes)), max_bytes=int(max(sizes)),
                                     decode_clips_per_cpu_s=n/cpu)
        print(f"{store or 'int16':6} {out[store or 'int16']['bytes_per_clip']/1e3:7.1f} kB/clip  "
              f"{out[store or 'int16']['decode_clips_per_cpu_s']:8.0f} clips decoded per CPU second", flush=True)
    return out

FRONT = ['--sample_rate', '8000', '--window_size', '1024', '--hop_size', '512', '--mel_bins', '32', '--fmin', '50',
         '--fmax', '4000']

def mini_copy(d:Path)->dict:
    "The mini AudioSet's segments as one Hugging Face-style parquet file per subset (FLAC at 32 kHz)."
    import pyarrow as pa, pyarrow.parquet as pq, soundfile as sf
    from audioset_nb.mini import make_mini
    mini = make_mini(d/'mini', seed=0, sources=False)
    out = {}
    for subset, segs in mini.segments.items():
        audio = []
        for s in segs:
            b = io.BytesIO()
            sf.write(b, mini.reference_segment(s.ytid), SR, format='FLAC', subtype='PCM_16')
            audio.append({'bytes': b.getvalue(), 'path': f'audio/{subset}/{s.ytid}.flac'})
        out[subset] = d/f'{subset}.parquet'
        pq.write_table(pa.table({'video_id': [s.ytid for s in segs], 'audio': audio,
                                 'labels': [list(s.labels) for s in segs]}), out[subset])
    return out

def train_map(ws:Path, iterations:int, seed:int)->float:
    "Eval mAP of the mini recipe trained for `iterations` on the packed files under `ws`."
    cmd = [sys.executable, '-m', 'audioset_nb.train', 'train', '--workspace', str(ws), '--data_type', 'balanced_train',
           '--model_type', 'Cnn6_mini_DecisionLevelMax', *FRONT, '--balanced', 'balanced', '--augmentation', 'none',
           '--batch_size', '16', '--learning_rate', '1e-3',
           '--early_stop', str(iterations), '--eval_every', str(iterations),
           '--seed', str(seed), '--num_workers', '1', '--no_progress']
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    stats = next(ws.glob('statistics/**/statistics.jsonl'))
    return [json.loads(l) for l in stats.read_text().splitlines() if 'test_mAP' in l][-1]['test_mAP']

def model_effect(d:Path, iterations:int, seed:int)->dict:
    from audioset_nb.audio import STORES
    from audioset_nb.importer import import_clips
    from audioset_nb.pack import write_index
    copy, out = mini_copy(d), {}
    for store in [None, *STORES]:
        ws = d/(store or 'int16')
        for subset, src in copy.items():
            r = import_clips([src], ws/'hdf5s'/'waveforms'/f'{subset}.h5', codec=store, num_workers=2, progress=False)
            write_index(r.path, ws/'hdf5s'/'indexes'/f'{subset}.h5')
        t0 = time.perf_counter()
        out[store or 'int16'] = dict(eval_mAP=train_map(ws, iterations, seed), train_seconds=time.perf_counter() - t0,
                                     file_bytes=sum(p.stat().st_size for p in (ws/'hdf5s'/'waveforms').glob('*.h5')))
        print(f"{store or 'int16':6} eval mAP {out[store or 'int16']['eval_mAP']:.3f} after {iterations} iterations",
              flush=True)
    return out

def main(n:int, iterations:int, seed:int, out:Path):
    import h5py, soundfile, torch
    import audioset_nb
    res = dict(benchmark='stores', device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(python=platform.python_version(), audioset_nb=audioset_nb.__version__,
                             numpy=np.__version__, h5py=h5py.__version__, soundfile=soundfile.__version__,
                             libsndfile=soundfile.__libsndfile_version__, torch=torch.__version__),
               loadavg_before=os.getloadavg(), clips=n, clip='10 s, 32 kHz, mono int16 (synthetic noise and tones)',
               size_and_decode=sizes_and_speed(n))
    base = res['size_and_decode']['int16']
    for v in res['size_and_decode'].values(): v['bytes_vs_int16'] = v['bytes_per_clip']/base['bytes_per_clip']
    if iterations:
        with tempfile.TemporaryDirectory(dir=os.environ.get('BENCH_TMP')) as d:
            res.update(mini_iterations=iterations, seed=seed, mini_eval_mAP=model_effect(Path(d), iterations, seed))
    res['loadavg_at_end'] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=200)
    ap.add_argument('--iterations', type=int, default=400)
    ap.add_argument('--seed', type=int, default=1234)
    ap.add_argument('--out', type=Path, default=HERE/'results'/'stores-cpu.json')
    a = ap.parse_args()
    main(a.n, a.iterations, a.seed, a.out)
