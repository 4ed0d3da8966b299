"""SED memory: peak RSS and CPU seconds of `audioset_sed` (events to CSV, figure) on files of 10 s to hours.

Run from the repository root: `python benchmarks/sed_memory.py` (10, 60 and 120 minutes of WAV, FLAC and MP3: about
25 CPU-minutes; `--minutes 10,60,120,600` adds a 10-hour file, 1.15 GB of WAV while it runs). Writes
benchmarks/results/sed_memory-cpu.json. Each run is its own process, so its peak RSS (`ru_maxrss`) is that run's; a
thread samples its RSS every 0.5 s, so a run also says how much its RSS rose after the first quarter of its time.
CPU seconds are user + system time from getrusage, which a loaded machine does not inflate the way it does wall time.
`growth_mb_per_hour`: the peak RSS of the longest file less that of the shortest, per hour of audio between them.
`--package DIR` runs another copy of the package (e.g. the code before a change, exported to DIR/audioset_nb).
Weights are random (no checkpoint can be downloaded here); memory does not depend on them.
"""
import argparse, datetime, json, os, platform, subprocess, sys, tempfile, textwrap
from pathlib import Path
import numpy as np, soundfile as sf, soxr, torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from audioset_nb.fileio import atomic_write

RUN = textwrap.dedent('''
    import json, resource, sys, threading, time, psutil
    from audioset_nb.inference import sed_cli
    rss, proc = [], psutil.Process()
    def sample():
        while True:
            rss.append(proc.memory_info().rss/2**20)
            time.sleep(0.5)
    threading.Thread(target=sample, daemon=True).start()
    try: sed_cli(sys.argv[1:])
    except SystemExit as e: assert not e.code, e.code
    r, q = resource.getrusage(resource.RUSAGE_SELF), len(rss)//4
    print(json.dumps(dict(peak_rss_mb=round(r.ru_maxrss/1024, 1), cpu_s=round(r.ru_utime + r.ru_stime, 1),
                          rise_after_first_quarter_mb=round(max(rss[q:]) - max(rss[:q] or rss[:1]), 1))))
''')

def write_long(path:Path, seconds:int, sr:int=16000):
    "A mono 16-kHz 16-bit wav or flac (by suffix) of `seconds` (tones and noise), written a minute at a time."
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
    for f in (d/'framewise').glob('*.npy'): f.unlink()
    return json.loads(r.stdout.strip().splitlines()[-1])

def to_mp3(d:Path, path:Path, seconds:int):
    "An MP3 of `write_long`'s audio, by way of a WAV that is deleted."
    wav = d/'tmp.wav'
    write_long(wav, seconds)
    subprocess.run(['ffmpeg', '-nostdin', '-loglevel', 'error', '-y', '-i', wav, '-b:a', '64k', path], check=True)
    wav.unlink()

def growth(res:dict, runs:dict, label:str, fmt:str):
    "Peak RSS growth, MB per hour of audio, from the shortest to the longest file of `fmt` in this label."
    rs = sorted((r['minutes'], r['peak_rss_mb']) for k, r in runs.items()
                if k.startswith(label + '_') and r.get('format') == fmt and 'peak_rss_mb' in r
                and '_framewise' not in k and '_nofigure' not in k)
    if len(rs) < 2: return
    (m0, p0), (m1, p1) = rs[0], rs[-1]
    res.setdefault('growth_mb_per_hour', {})[f'{label}_{fmt}'] = dict(
        minutes=[m0, m1], peak_rss_mb=[p0, p1], mb_per_hour=round((p1 - p0)/((m1 - m0)/60), 1))

def save(out:Path, res:dict, model_type:str):
    "Write the results so far (after each run: a long benchmark cut short keeps what it measured)."
    res.update(benchmark='sed_memory', date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device='cpu', cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
               versions=dict(python=platform.python_version(), torch=torch.__version__, numpy=np.__version__,
                             soundfile=sf.__version__, soxr=soxr.__version__),
               setup=dict(model=f'{model_type} (random weights), batch 8, 10-s windows, threshold 0.5',
                          audio=('16 kHz mono (tones in noise): 16-bit WAV, 16-bit FLAC, or MP3 at 64 kb/s (ffmpeg), '
                                 'resampled to 32 kHz (soxr) as it streams; the file is deleted after its run'),
                          outputs=('events CSV and a figure (the first 600 s); _nofigure runs: no figure; '
                                   '_framewise runs also write the framewise .npy (--framewise_dir)')))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(res, indent=1) + '\n')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--package', default=str(ROOT), help='folder holding the audioset_nb package to measure')
    ap.add_argument('--label', default='after')
    ap.add_argument('--minutes', default='10,60,120', help='file lengths, comma-separated')
    ap.add_argument('--formats', default='wav,flac,mp3', help='containers, comma-separated (mp3: ffmpeg, 64 kb/s)')
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
        for fmt in a.formats.split(','):
            for m in map(float, a.minutes.split(',')):
                audio = d/f'long.{fmt}'
                write_long(audio, round(m*60)) if fmt != 'mp3' else to_mp3(d, audio, round(m*60))
                key = (f'{a.label}{"_framewise" if a.framewise else ""}{"_nofigure" if a.no_figure else ""}'
                       f'{"" if fmt == "wav" else "_" + fmt}_{m:g}min')
                runs[key] = dict(minutes=m, format=fmt, load=os.getloadavg()[0],
                                 **run(Path(a.package), d/'sed.pth', audio, d, a.framewise, not a.no_figure))
                audio.unlink()
                print(key, runs[key], flush=True)
                growth(res, runs, a.label, fmt)
                save(out, res, a.model_type)
    print(f'wrote {out}')

if __name__ == '__main__': main()
