"""Import benchmark: `audioset_nb.importer.import_clips` on Hugging Face-style parquet files of growing size.

For each N, one parquet file of N rows in the `agkphysics/AudioSet` schema (FLAC at 48 kHz/24-bit, as most of that
copy is; synthetic noise and tones from benchmarks/pack.py; row groups of 50), imported to an int16 waveform HDF5 by
  - `baseline`: the obvious script: `pq.read_table` of the whole file, then each clip decoded and resampled in turn
    (soundfile + soxr), rows written at the end;
  - `ours-w1`, `ours-w2`: import_clips with 1 and 2 decoding processes (row batches, streamed pages, chunked writes).
Each runs in its own subprocess; the peak RSS of it and its children is sampled every 50 ms (psutil). Clips/s and
peak RSS against N show whether memory stays flat. Writes benchmarks/results/import-cpu.json.

    python benchmarks/import.py               # N = 100 and 400 (a 150 MB and a 600 MB file), about 5 min on 2 cores
    python benchmarks/import.py --ns 10       # a quick look
"""
import argparse, datetime, io, json, os, platform, resource, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pack import synth, tree_rss_peak  # noqa: E402

def flac48(i:int)->bytes:
    import soundfile as sf
    from audioset_nb.audio import resample
    b = io.BytesIO()
    sf.write(b, resample(synth(i), 32000, 48000)*0.9, 48000, format='FLAC', subtype='PCM_24')
    return b.getvalue()

def make_parquet(path:Path, n:int):
    "n rows in the Hugging Face AudioSet schema; ids made up, one label each."
    import pyarrow as pa, pyarrow.parquet as pq
    from multiprocessing import Pool
    from audioset_nb.metadata import load_labels
    labels = load_labels()
    with Pool(2) as pool: audio = pool.map(flac48, range(n), chunksize=8)
    ids = [f'bench{i:06d}' for i in range(n)]
    audio_type = pa.struct([('bytes', pa.binary()), ('path', pa.string())])
    schema = pa.schema([('video_id', pa.string()), ('audio', audio_type),
                        ('labels', pa.list_(pa.string())), ('human_labels', pa.list_(pa.string()))])
    cols = {'video_id': ids, 'audio': [{'bytes': a, 'path': f'audio/unbal_train/{y}.flac'} for y, a in zip(ids, audio)],
            'labels': [[labels.mids[i % 527]] for i in range(n)], 'human_labels': [[labels[i % 527]] for i in range(n)]}
    pq.write_table(pa.table(cols, schema=schema), path, row_group_size=50)

def baseline(src:Path, out:Path):
    "Read the whole file, decode each clip in turn, write the rows."
    import h5py, pyarrow.parquet as pq, soundfile as sf
    from audioset_nb.audio import pad_or_truncate, resample, to_int16
    from audioset_nb.metadata import load_labels
    lab = load_labels()
    rows, names, targets = [], [], []
    for r in pq.read_table(src).to_pylist():
        x, sr = sf.read(io.BytesIO(r['audio']['bytes']), dtype='float32')
        rows.append(to_int16(pad_or_truncate(resample(x, sr, 32000), 320000)))
        names.append(f"Y{r['video_id']}.wav")
        t = np.zeros(527, bool)
        t[[lab.index(m) for m in r['labels']]] = True
        targets.append(t)
    with h5py.File(out, 'w') as f:
        f['audio_name'] = np.array(names, dtype='S20')
        f['waveform'] = np.stack(rows)
        f['target'] = np.stack(targets)
        f.attrs['sample_rate'] = np.int32(32000)

def run_variant(variant:str, src:Path, out:Path):
    "Body of one subprocess: import, print JSON with time and rusage."
    from audioset_nb.importer import import_clips
    import pyarrow.parquet  # noqa: F401  (imports are not part of the time)
    t0 = time.perf_counter()
    if variant == 'baseline': baseline(src, out)
    else: import_clips([src], out, num_workers=int(variant.split('-w')[1]), progress=False)
    dt = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps(dict(seconds=dt, cpu_seconds=me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                          maxrss_self_mb=me.ru_maxrss/1024, maxrss_children_mb=kids.ru_maxrss/1024)))

def measure(variant:str, src:Path, out:Path, n:int)->dict:
    stop, peak = threading.Event(), []
    proc = subprocess.Popen([sys.executable, __file__, '--variant', variant, '--src', str(src), '--out', str(out)],
                            stdout=subprocess.PIPE, text=True)
    th = threading.Thread(target=tree_rss_peak, args=(proc, stop, peak))
    th.start()
    stdout, _ = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode: raise SystemExit(f'variant {variant} failed')
    r = json.loads(stdout.strip().splitlines()[-1])
    r.update(variant=variant, clips=n, file_mb=src.stat().st_size/2**20, clips_per_s=n/r['seconds'],
             peak_tree_rss_mb=peak[0]/2**20)
    print(f"N={n:5} ({r['file_mb']:5.0f} MB) {variant:9} {r['clips_per_s']:6.1f} clips/s  "
          f"peak RSS (tree) {r['peak_tree_rss_mb']:6.0f} MB", flush=True)
    return r

def main(ns:list, out:Path):
    import h5py, pyarrow, soundfile, soxr
    import audioset_nb
    runs = []
    with tempfile.TemporaryDirectory(dir=os.environ.get('BENCH_TMP')) as d:
        d = Path(d)
        print(f'load average before: {os.getloadavg()}', flush=True)
        for n in ns:
            src = d/f'n{n}.parquet'
            make_parquet(src, n)
            rs = [measure(v, src, d/f'{v}-{n}.h5', n) for v in ['baseline', 'ours-w1', 'ours-w2']]
            with h5py.File(d/f'baseline-{n}.h5', 'r') as a, h5py.File(d/f'ours-w2-{n}.h5', 'r') as b:
                same = bool(np.array_equal(a['waveform'][:], b['waveform'][:]))
            for r in rs:
                r.update(vs_baseline_clips_per_s=r['clips_per_s']/rs[0]['clips_per_s'], rows_identical_to_baseline=same)
            runs += rs
    res = dict(benchmark='import', device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(python=platform.python_version(), audioset_nb=audioset_nb.__version__,
                             numpy=np.__version__, h5py=h5py.__version__, pyarrow=pyarrow.__version__,
                             soundfile=soundfile.__version__, soxr=soxr.__version__),
               clip='10 s FLAC 48 kHz/24-bit in parquet (Hugging Face schema, row groups of 50), files in page cache',
               loadavg_at_end=os.getloadavg(), runs=runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--ns', type=int, nargs='+', default=[100, 400])
    ap.add_argument('--variant')
    ap.add_argument('--src')
    ap.add_argument('--out', type=Path, default=HERE/'results'/'import-cpu.json')
    a = ap.parse_args()
    if a.variant: run_variant(a.variant, Path(a.src), a.out)
    else: main(a.ns, a.out)
