"""Packing benchmark: `audioset_nb.pack.pack_waveforms` beside the reference's one-file-at-a-time loop, per format.

Generates 10-second clips (synthetic noise and tones) in five formats, each under the downloader's name Y<ytid>.wav
(packing reads a file by its content): 32 kHz mono 16-bit wav (what the downloader leaves; N clips), and N/4 each of
44.1 kHz stereo 16-bit wav, 32 kHz mono FLAC, 44.1 kHz stereo mp3 and 44.1 kHz stereo AAC (m4a). Then packs each set
  - `reference`: librosa.load(sr=32000, mono=True) per file into a preallocated int16 dataset, one at a time
    (librosa cannot read m4a without audioread, which is not installed: no reference for m4a);
  - `ours-w1`, `ours-w2`: pack_waveforms with 1 and with 2 decoding processes (int16 store);
  - `ours-flac-w2` (32 kHz wav only): pack_waveforms with 2 processes into the compressed (FLAC) store.
Each variant runs in its own subprocess: its CPU seconds (getrusage, itself and its children: workers, ffmpeg) and
peak RSS of its process tree (psutil, every 50 ms) are its own. Rows of ours and the reference are compared.
Then it measures single-core read+decode speed of both stores. Writes benchmarks/results/pack-cpu.json.

    python benchmarks/pack.py            # 1,000 + 4 x 250 clips (about 5 min on 2 busy cores)
    python benchmarks/pack.py --n 200    # a quick look
"""
import argparse, datetime, json, os, platform, resource, shutil, subprocess, sys, tempfile, threading, time
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

FORMATS = {  # name: (rate, channels, how it is written), the first the downloader's output
    'wav-32k-mono': (32000, 1, 'WAV'), 'wav-44k-stereo': (44100, 2, 'WAV'), 'flac-32k-mono': (32000, 1, 'FLAC'),
    'mp3-44k-stereo': (44100, 2, 'mp3'), 'm4a-44k-stereo': (44100, 2, 'ipod')}

def make_clips(d:Path, n:int, fmt:str='wav-32k-mono'):
    "n clips of format `fmt` named Y<ytid>.wav and their segment CSV."
    from audioset_nb.download import Segment, load_labels, write_segments
    from multiprocessing import Pool
    labels = load_labels()
    (d/'audios').mkdir(parents=True, exist_ok=True)
    with Pool(2) as pool:
        pool.starmap(write_clip, [(d/'audios'/f'Ybench{i:06d}.wav', i, fmt) for i in range(n)], chunksize=16)
    write_segments(d/'segs.csv', [Segment(f'bench{i:06d}', 0., 10., (labels.mids[i % 527],)) for i in range(n)])

def write_clip(path, i, fmt='wav-32k-mono'):
    import soundfile as sf
    from audioset_nb.audio import ffmpeg_cmd
    sr, ch, how = FORMATS[fmt]
    x = synth(i)
    if sr != SR: x = np.interp(np.arange(int(SECONDS*sr))/sr, np.arange(len(x))/SR, x).astype(np.float32)
    if ch == 2: x = np.stack([x, 0.5*x[::-1]], 1)
    if how in ('WAV', 'FLAC'): return sf.write(path, x, sr, format=how, subtype='PCM_16')
    pcm = (np.clip(x, -1, 1)*32767).astype('<i2').tobytes()
    subprocess.run(ffmpeg_cmd('-y', '-f', 's16le', '-ar', sr, '-ac', ch, '-i', 'pipe:0', '-f', how, path), input=pcm,
                   check=True)

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
                x, _ = librosa.load(p, sr=SR, mono=True)  # its default resampler: soxr_hq
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
    print(json.dumps(dict(seconds=dt, loadavg_after=os.getloadavg()[0],
                          cpu_seconds=me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime - cpu0,
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

def measure(variant, d, n, fmt):
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
    r.update(format=fmt, variant=variant, clips=n, clips_per_s=n/r['seconds'],
             cpu_ms_per_clip=1000*r['cpu_seconds']/n, clips_per_cpu_second=n/r['cpu_seconds'],
             peak_tree_rss_mb=peak[0]/2**20 if peak else None, bytes_per_clip=r['file_bytes']/n)
    print(f"{fmt:15} {variant:12} {r['clips_per_cpu_second']:7.1f} clips/CPU s {r['cpu_ms_per_clip']:6.2f} CPU ms/clip"
          f"  {r['clips_per_s']:7.1f} clips/s (wall)  peak RSS (tree) {r['peak_tree_rss_mb'] or float('nan'):5.0f} MB"
          f"  load {r['loadavg_after']:.1f}", flush=True)
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

def same_rows(a, b):
    "Whether two packed files hold the same int16 rows (all of them)."
    import h5py
    with h5py.File(a, 'r') as f, h5py.File(b, 'r') as g:
        return all(np.array_equal(f['waveform'][i:i + 100], g['waveform'][i:i + 100])
                   for i in range(0, len(f['waveform']), 100))

def main(n):
    import h5py, librosa, soundfile, soxr, torch
    import audioset_nb
    runs, identical, gen = [], {}, {}
    with tempfile.TemporaryDirectory(dir=os.environ.get('BENCH_TMP')) as top:
        print(f'load average before: {os.getloadavg()}', flush=True)
        for fmt in FORMATS:
            d, k = Path(top)/fmt, n if fmt == 'wav-32k-mono' else max(1, n//4)
            t0 = time.perf_counter()
            make_clips(d, k, fmt)
            gen[fmt] = time.perf_counter() - t0
            variants = (['reference'] if fmt != 'm4a-44k-stereo' else []) + ['ours-w1', 'ours-w2']
            if fmt == 'wav-32k-mono': variants.append('ours-flac-w2')
            rs = [measure(v, d, k, fmt) for v in variants]
            ref = next((r for r in rs if r['variant'] == 'reference'), None)
            for r in rs:
                if ref: r['cpu_ratio_vs_reference'] = ref['cpu_seconds']/r['cpu_seconds']
                if ref: r['wall_ratio_vs_reference'] = r['clips_per_s']/ref['clips_per_s']
            if ref: identical[fmt] = same_rows(d/'ours-w2.h5', d/'reference.h5')
            runs += rs
            if fmt == 'wav-32k-mono':
                dec = dict(int16=decode_speed(d/'ours-w2.h5', min(k, 500)),
                           flac=decode_speed(d/'ours-flac-w2.h5', min(k, 500)))
                flac_ratio = rs[-1]['bytes_per_clip']/rs[-2]['bytes_per_clip']
                print(f"read+decode, one process: int16 {dec['int16']['per_cpu_second']:.0f}, "
                      f"flac {dec['flac']['per_cpu_second']:.0f} clips per CPU second", flush=True)
            for v in variants: (d/f'{v}.h5').unlink()
            shutil.rmtree(d/'audios')
    print('rows identical to the reference loop:', identical)
    res = dict(benchmark='pack', device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               versions=dict(python=platform.python_version(), audioset_nb=audioset_nb.__version__,
                             numpy=np.__version__, h5py=h5py.__version__, soundfile=soundfile.__version__,
                             libsndfile=soundfile.__libsndfile_version__, soxr=soxr.__version__,
                             librosa=librosa.__version__, torch=torch.__version__),
               clips={f: (n if f == 'wav-32k-mono' else max(1, n//4)) for f in FORMATS},
               clip='10 s of synthetic noise and tones per format, files in page cache', generate_seconds=gen,
               loadavg_at_end=os.getloadavg(), rows_identical_to_reference=identical, runs=runs,
               read_decode_clips_per_s_one_core=dec, flac_bytes_ratio=flac_ratio)
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
