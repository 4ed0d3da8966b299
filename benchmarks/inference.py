"""Inference on the CPU: tagging clips/s for Cnn14 through the user-facing API (decode + resample + model, batch 1
and 8) beside the plain reference-style path (librosa.load, one clip per forward), and peak memory for a 1-hour file.

Run from the repository root: `python benchmarks/inference.py` (about 8 minutes on 2 cores). Writes
benchmarks/results/inference-cpu.json. Weights are random (no checkpoint can be downloaded here): speed and memory
do not depend on them. The 1-hour memory run uses Cnn6 (about 5x cheaper than Cnn14 on the CPU) to keep the run short;
the memory the audio path needs does not depend on the model, the model's activations for one batch are fixed.
"""
import argparse, datetime, json, os, platform, resource, subprocess, sys, tempfile, textwrap, time
from pathlib import Path
import numpy as np, soundfile as sf, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from audioset_nb.fileio import atomic_write
from audioset_nb.inference import load_tagger
from audioset_nb.tagging import tag_files
from audioset_nb.models import build_model, save_checkpoint

def make_clips(d:Path, n:int, seconds:float=10., sr:int=44100):
    "`n` stereo 44.1-kHz FLAC clips (tones in noise): decoding and resampling are part of the measured work."
    rng, t, out = np.random.default_rng(0), np.arange(int(seconds*sr))/sr, []
    for i in range(n):
        x = 0.1*rng.standard_normal((2, len(t))) + 0.3*np.sin(2*np.pi*(220 + 110*i)*t)
        sf.write(d/f'clip{i}.flac', x.T.astype(np.float32), sr)
        out.append(d/f'clip{i}.flac')
    return out

def reference_style(model, files):
    "What PANNs' inference.py does per file: librosa.load at 32 kHz mono, one forward of the plain model under no_grad."
    import librosa
    outs = []
    for f in files:
        x, _ = librosa.load(str(f), sr=32000, mono=True)
        with torch.no_grad(): outs.append(model(torch.from_numpy(x[None]).float())['clipwise_output'][0].numpy())
    return np.stack(outs)

def timed(fn, *args):
    t0 = time.perf_counter()
    r = fn(*args)
    return time.perf_counter() - t0, r

def speed(d:Path, n:int, rounds:int):
    files = make_clips(d, n)
    torch.manual_seed(0)
    save_checkpoint(d/'cnn14.pth', build_model('Cnn14'), model_type='Cnn14')
    tagger = load_tagger(d/'cnn14.pth')               # ours: `for_inference` (fast STFT, fast CPU conv blocks)
    model = build_model('Cnn14', fast_stft=False).eval()  # the reference: conv-STFT, plain modules, same weights
    model.load_state_dict(tagger.model.state_dict())
    reference_style(model, files[:1])
    tag_files(tagger, files[:1])  # warm up
    best = {}
    for _ in range(rounds):
        for name, fn in [('reference_style', lambda: reference_style(model, files)),
                         ('api_batch1', lambda: np.stack([t.clipwise for t in tag_files(tagger, files,
                                                                                        batch_size=1)[0]])),
                         ('api_batch8', lambda: np.stack([t.clipwise for t in tag_files(tagger, files,
                                                                                        batch_size=8)[0]]))]:
            dt, scores = timed(fn)
            best[name] = min(best.get(name, (1e9,))[0], dt), scores
    ref = best['reference_style'][1]
    return {k: {'seconds': round(v[0], 3), 'clips_per_s': round(n/v[0], 3),
                'speedup_vs_reference': round(best['reference_style'][0]/v[0], 3),
                'max_abs_diff_vs_reference': float(np.abs(v[1] - ref).max())} for k, v in best.items()}

MEM = textwrap.dedent('''
    import json, os, sys, threading, time
    from audioset_nb.inference import load_tagger
    from audioset_nb.tagging import tag
    from audioset_nb.audio import load_audio
    kind, path, ckpt = sys.argv[1:4]
    page = os.sysconf('SC_PAGE_SIZE')
    def rss_mb():
        with open('/proc/self/statm') as f: return int(f.read().split()[1])*page/2**20
    samples, stop = [], threading.Event()
    def sample():
        while not stop.is_set(): samples.append(rss_mb()); time.sleep(0.005)
    tagger = load_tagger(ckpt); base = rss_mb(); th = threading.Thread(target=sample, daemon=True); th.start()
    t0 = time.perf_counter()
    if kind == 'api': n = len(tag(tagger, path, batch_size=8).starts)
    else: n = len(load_audio(path, tagger.sample_rate))
    dt = time.perf_counter() - t0; stop.set(); th.join(); samples.append(rss_mb())
    samples.sort(); peak, med = samples[-1], samples[len(samples)//2]
    print(json.dumps(dict(rss_before_mb=round(base, 1), rss_peak_mb=round(peak, 1), rss_median_mb=round(med, 1),
                          rss_peak_growth_mb=round(peak - base, 1), seconds=round(dt, 1), n=n)))
''')

def write_long(path:Path, seconds:int, sr:int=16000):
    "A mono 16-kHz 16-bit wav of `seconds` (tones and noise), written in blocks; it is resampled to 32 kHz when read."
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, 'w', sr, 1, 'PCM_16') as f:
        for i in range(0, seconds, 60):
            t = np.arange(60*sr)/sr
            x = 0.05*rng.standard_normal(len(t)) + 0.3*np.sin(2*np.pi*(200 + 10*(i//60 % 50))*t)
            f.write(x.astype(np.float32))

def memory(d:Path, long_seconds:int):
    torch.manual_seed(0)
    save_checkpoint(d/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    out = {}
    for label, secs in [('5min', 300), (f'{long_seconds//60}min', long_seconds)]:
        p = d/f'long{secs}.wav'
        write_long(p, secs)
        for kind in (['api', 'load_whole'] if secs == long_seconds else ['api']):
            r = subprocess.run([sys.executable, '-c', MEM, kind, str(p), str(d/'cnn6.pth')], capture_output=True,
                               text=True,
                               cwd=ROOT, check=True)
            out[f'{kind}_{label}'] = json.loads(r.stdout.strip().splitlines()[-1])
            print(kind, label, out[f'{kind}_{label}'], flush=True)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--clips', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--long_seconds', type=int, default=3600)
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'inference-cpu.json'))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sp = speed(d, a.clips, a.rounds)
        print(json.dumps(sp, indent=1), flush=True)
        mem = memory(d, a.long_seconds)
    import librosa, soxr
    res = dict(benchmark='inference', date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               torch_threads=torch.get_num_threads(),
               versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                             librosa=librosa.__version__,
                             soxr=soxr.__version__, soundfile=sf.__version__),
               setup=dict(clips=a.clips, clip_seconds=10, clip_format='FLAC 44.1 kHz stereo', model='Cnn14 (random '
                          'weights)',
                          rounds=a.rounds, timing='best of rounds, after one warm-up clip',
                          memory_model='Cnn6 (random weights), batch 8, 10-s windows',
                          long_file=f'{a.long_seconds} s, 16 kHz mono 16-bit WAV'),
               speed=sp, memory=mem)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(res, indent=1) + '\n')
    print(f'wrote {out}')

if __name__ == '__main__': main()
