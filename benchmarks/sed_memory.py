"""SED memory: peak RSS and CPU seconds of `audioset_sed` (events to CSV, figure) on files of 10 s to hours.

Run from the repository root: `python benchmarks/sed_memory.py` (about 15 minutes on 2 cores). Writes
benchmarks/results/sed_memory-cpu.json. Each run is its own process, so its peak RSS (`ru_maxrss`) is that run's;
CPU seconds are user + system time from getrusage, which a loaded machine does not inflate the way it does wall time.
`--package DIR` runs another copy of the package (e.g. the code before a change, exported to DIR/audioset_nb).
Weights are random (no checkpoint can be downloaded here); memory does not depend on them.
"""
import argparse, datetime, json, os, platform, subprocess, sys, tempfile, textwrap
from pathlib import Path
import numpy as np, soundfile as sf, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from audioset_nb.fileio import atomic_write

RUN = textwrap.dedent('''
    import json, resource, sys
    from audioset_nb.inference import sed_cli
    try: sed_cli(sys.argv[1:])
    except SystemExit as e: assert not e.code, e.code
    r = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(dict(peak_rss_mb=round(r.ru_maxrss/1024, 1), cpu_s=round(r.ru_utime + r.ru_stime, 1))))
''')

def write_long(path:Path, seconds:int, sr:int=16000):
    "A mono 16-kHz 16-bit wav of `seconds` (tones and noise), written a minute at a time; read at 32 kHz."
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, 'w', sr, 1, 'PCM_16') as f:
        for i in range(0, seconds, 60):
            t = np.arange(min(60, seconds - i)*sr)/sr
            x = 0.05*rng.standard_normal(len(t)) + 0.3*np.sin(2*np.pi*(200 + 10*(i//60 % 50))*t)
            f.write(x.astype(np.float32))

def run(package:Path, ckpt:Path, audio:Path, d:Path, framewise:bool, figure:bool)->dict:
    args = ['--checkpoint_path', ckpt, '--audio_path', audio, '--output', d/'events.csv', '--threshold', 0.5]
    if figure: args += ['--figure_dir', d/'figs']
    if framewise: args += ['--framewise_dir', d/'framewise']
    env = dict(os.environ, PYTHONPATH=str(package))
    r = subprocess.run([sys.executable, '-c', RUN, *map(str, args)], capture_output=True, text=True, env=env, cwd=d)
    if r.returncode: return dict(error=r.stderr.strip().splitlines()[-1][:300])
    for f in (d/'framewise').glob('*.h5'): f.unlink()
    return json.loads(r.stdout.strip().splitlines()[-1])

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--package', default=str(ROOT), help='folder holding the audioset_nb package to measure')
    ap.add_argument('--label', default='after')
    ap.add_argument('--minutes', default='0.1667,10,60,120', help='file lengths, comma-separated')
    ap.add_argument('--model_type', default='Cnn6_DecisionLevelMax')
    ap.add_argument('--framewise', action='store_true', help='also write framewise scores (--framewise_dir)')
    ap.add_argument('--no_figure', action='store_true', help='events only, no --figure_dir')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'sed_memory-cpu.json'))
    a = ap.parse_args()
    from audioset_nb.models import build_model, save_checkpoint
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    runs = res.setdefault('runs', {})
    with tempfile.TemporaryDirectory(prefix='sed_memory_') as d:
        d = Path(d)
        torch.manual_seed(0)
        save_checkpoint(d/'sed.pth', build_model(a.model_type), model_type=a.model_type)
        for m in map(float, a.minutes.split(',')):
            audio = d/'long.wav'
            write_long(audio, round(m*60))
            key = f'{a.label}{"_framewise" if a.framewise else ""}{"_nofigure" if a.no_figure else ""}_{m:g}min'
            runs[key] = dict(minutes=m, load=os.getloadavg()[0], **run(Path(a.package), d/'sed.pth', audio, d,
                                                                       a.framewise, not a.no_figure))
            print(key, runs[key], flush=True)
    import h5py
    res.update(benchmark='sed_memory', date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                             soundfile=sf.__version__, h5py=h5py.__version__),
               setup=dict(model=f'{a.model_type} (random weights), batch 8, 10-s windows, threshold 0.5',
                          audio='16 kHz mono 16-bit WAV (tones in noise), resampled to 32 kHz',
                          outputs=('events CSV and a figure (the first 600 s); _nofigure runs: no figure; '
                                   '_framewise runs also write the framewise .npy (--framewise_dir)')))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(res, indent=1) + '\n')
    print(f'wrote {out}')

if __name__ == '__main__': main()
