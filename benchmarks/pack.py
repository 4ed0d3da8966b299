"""Packing benchmark: `audioset_nb.pack.pack_waveforms` beside the reference's one-file-at-a-time loop.

Generates N 10-second 32 kHz mono 16-bit wav clips (what the downloader leaves), then packs them
  - `reference`: librosa.load(sr=32000, mono=True) per file into a preallocated int16 dataset, one at a time;
  - `ours`: pack_waveforms with 1 and with 2 decoding processes (int16 store);
  - `ours-flac`: pack_waveforms with 2 processes into the compressed (FLAC) store.
Each variant runs in its own subprocess so its peak memory is its own: peak RSS is sampled every 50 ms over
the process and all its children (psutil), and getrusage's maxima are recorded too. Then it measures bytes
per clip and single-core read+decode speed of both stores. Writes benchmarks/results/pack-cpu.json.

    python benchmarks/pack.py            # 2,000 clips (about 6 min on 2 cores)
    python benchmarks/pack.py --n 200    # a quick look
"""
import argparse, datetime, json, os, platform, resource, subprocess, sys, tempfile, threading, time
from pathlib import Path
import numpy as np
from scipy.signal import lfilter

HERE = Path(__file__).resolve().parent
SR, SECONDS = 32000, 10

def synth(i:int)->np.ndarray:
    "A cheap clip that is not trivially compressible: brown + white noise, an envelope, two tones."
    g = np.random.default_rng(i)
    n = SR*SECONDS
    brown = lfilter([1.], [1., -0.995], g.standard_normal(n))
    brown /= np.abs(brown).max() + 1e-9
    t = np.arange(n)/SR
    x = 0.3*brown + 0.02*g.standard_normal(n) + 0.1*np.sin(2*np.pi*g.uniform(100, 4000)*t)*(np.sin(2*np.pi*0.3*t) > 0)
    return (x*np.interp(t, [0, 2, 5, 8, 10], g.uniform(0.2, 1, 5))).astype(np.float32)

def make_clips(d:Path, n:int):
    "n clips named Y<ytid>.wav and their segment CSV."
    from audioset_nb.download import Segment, load_labels, write_segments
    from multiprocessing import Pool
    labels = load_labels()
    (d/'audios').mkdir(parents=True, exist_ok=True)
    with Pool(2) as pool:
        pool.starmap(write_clip, [(d/'audios'/f'Ybench{i:06d}.wav', i) for i in range(n)], chunksize=16)
    write_segments(d/'segs.csv', [Segment(f'bench{i:06d}', 0., 10., (labels.mids[i % 527],)) for i in range(n)])

def write_clip(path, i):
    import soundfile as sf
    sf.write(path, synth(i), SR, subtype='PCM_16')

def reference_pack(csv_path, audios_dir, out):
    "The reference's loop: librosa per file, in order, into a preallocated dataset (missing files left silent)."
    import h5py, librosa
    from audioset_nb.download import read_segments, segments_to_targets
    segs = read_segments(csv_path)
    targets = segments_to_targets(segs)
    n = len(segs)
    with h5py.File(out, 'w') as hf:
        hf.create_dataset('audio_name', shape=(n,), dtype='S20')
        hf.create_dataset('waveform', shape=(n, SR*SECONDS), dtype=np.int16)
        hf.create_dataset('target', shape=(n, 527), dtype=bool)
        hf.attrs.create('sample_rate', data=SR, dtype=np.int32)
        for i, s in enumerate(segs):
            p = Path(audios_dir)/f'Y{s.ytid}.wav'
            if p.is_file():
                x, _ = librosa.load(p, sr=SR, mono=True)
                x = np.pad(x, (0, max(0, SR*SECONDS - len(x))))[:SR*SECONDS]
                hf['audio_name'][i] = p.name.encode()
                hf['waveform'][i] = (np.clip(x, -1, 1)*32767.).astype(np.int16)
                hf['target'][i] = targets[i]

def run_variant(variant, d):
    "Body of one subprocess: pack, print JSON with time and rusage."
    from audioset_nb.pack import pack_waveforms
    if variant == 'reference': import librosa  # noqa: F401  (imports are not part of the packing time)
    out = d/f'{variant}.h5'
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r0.ru_utime + r0.ru_stime
    t0 = time.perf_counter()
    if variant == 'reference': reference_pack(d/'segs.csv', d/'audios', out)
    else:
        workers = int(variant.split('-w')[1])
        pack_waveforms(d/'segs.csv', d/'audios', out, num_workers=workers, codec='flac' if 'flac' in variant else None,
                       progress=False)
    dt = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps(dict(seconds=dt, cpu_seconds=me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0,
                          maxrss_self_mb=me.ru_maxrss/1024, maxrss_children_mb=kids.ru_maxrss/1024,
                          file_bytes=out.stat().st_size)))

def tree_rss_peak(proc, stop, out):
    "Peak of the summed RSS of `proc` and its descendants, sampled every 50 ms."
    import psutil
    p, peak = psutil.Process(proc.pid), 0
    while not stop.is_set():
        try: peak = max(peak, sum(q.memory_info().rss for q in [p] + p.children(recursive=True)))
        except psutil.Error: pass
        time.sleep(0.05)
    out.append(peak)

def measure(variant, d, n):
    stop, peak = threading.Event(), []
    proc = subprocess.Popen([sys.executable, __file__, '--variant', variant, '--dir', str(d)], stdout=subprocess.PIPE,
                            text=True)
    th = None
    try:
        import psutil  # noqa: F401
        th = threading.Thread(target=tree_rss_peak, args=(proc, stop, peak))
        th.start()
    except ImportError: pass
    out, _ = proc.communicate()
    stop.set()
    if th: th.join()
    if proc.returncode: raise SystemExit(f'variant {variant} failed')
    r = json.loads(out.strip().splitlines()[-1])
    r.update(variant=variant, clips=n, clips_per_s=n/r['seconds'], cpu_ms_per_clip=1000*r['cpu_seconds']/n,
             peak_tree_rss_mb=peak[0]/2**20 if peak else None, bytes_per_clip=r['file_bytes']/n)
    print(f"{variant:12} {r['clips_per_s']:7.1f} clips/s {r['cpu_ms_per_clip']:6.1f} CPU ms/clip  "
          f"peak RSS (tree) {r['peak_tree_rss_mb'] or float('nan'):7.0f} MB  "
          f"{r['bytes_per_clip']/1e3:6.0f} kB/clip", flush=True)
    return r

def decode_speed(path, n_read):
    "Single-core clips/s reading rows through AudioSetDataset (int16 or FLAC store), file already in page cache."
    from audioset_nb.data import AudioSetDataset
    ds = AudioSetDataset(path)
    ds[0]
    idx = np.random.default_rng(0).permutation(len(ds))[:n_read]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in idx: ds[int(i)]
    return dict(wall=n_read/(time.perf_counter() - t0), per_cpu_second=n_read/(time.process_time() - c0))

def main(n):
    import h5py, librosa, soundfile, soxr, torch
    import audioset_nb
    with tempfile.TemporaryDirectory(dir=os.environ.get('BENCH_TMP')) as d:
        d = Path(d)
        print(f'load average before: {os.getloadavg()}', flush=True)
        t0 = time.perf_counter()
        make_clips(d, n)
        gen = time.perf_counter() - t0
        print(f'generated {n} clips in {gen:.0f} s', flush=True)
        runs = [measure(v, d, n) for v in ['reference', 'ours-w1', 'ours-w2', 'ours-flac-w2']]
        base = runs[0]['clips_per_s']
        for r in runs: r['speedup_vs_reference'] = r['clips_per_s']/base
        with h5py.File(d/'ours-w2.h5', 'r') as a, h5py.File(d/'reference.h5', 'r') as b:
            same = bool(np.array_equal(a['waveform'][:50], b['waveform'][:50]))
        dec = dict(int16=decode_speed(d/'ours-w2.h5', min(n, 500)), flac=decode_speed(d/'ours-flac-w2.h5', min(n, 500)))
        print(f"read+decode, one process: int16 {dec['int16']['per_cpu_second']:.0f}, "
              f"flac {dec['flac']['per_cpu_second']:.0f} clips per CPU second "
              f"(wall: {dec['int16']['wall']:.0f}, {dec['flac']['wall']:.0f} clips/s)", flush=True)
    res = dict(benchmark='pack', device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(python=platform.python_version(), audioset_nb=audioset_nb.__version__,
                             numpy=np.__version__, h5py=h5py.__version__, soundfile=soundfile.__version__,
                             libsndfile=soundfile.__libsndfile_version__, soxr=soxr.__version__,
                             librosa=librosa.__version__, torch=torch.__version__),
               clips=n, clip='10 s, 32 kHz, mono, 16-bit wav (synthetic noise and tones), files in page cache',
               generate_seconds=gen, loadavg_at_end=os.getloadavg(), first_50_rows_identical_to_reference=same,
               runs=runs,
               read_decode_clips_per_s_one_core=dec,
               flac_bytes_ratio=runs[3]['bytes_per_clip']/runs[2]['bytes_per_clip'])
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'pack-cpu.json').write_text(json.dumps(res, indent=1))
    print(f"wrote {HERE/'results'/'pack-cpu.json'}")

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=2000)
    ap.add_argument('--variant')
    ap.add_argument('--dir')
    a = ap.parse_args()
    if a.variant: run_variant(a.variant, Path(a.dir))
    else: main(a.n)
