"""Fine-tuning data throughput: examples/s and data_wait with every file decoded once, against decoding at every draw.

Long files (60-200 s, mp3/ogg/flac/wav at 22.05-48 kHz, mono and stereo) are synthesised with ffmpeg; the same
`audioset_finetune` run (Cnn6_mini from scratch, 5-s crops at 16 kHz) trains on them twice in this script: 'before'
decodes and resamples the whole file at every draw in the main process (`decode_once=False`, no workers: the old way,
after a pass that checks that every file decodes), 'after' uses the defaults (decode pass first, loader workers).
examples/s and data_wait are read from the run's statistics.jsonl (`fit` writes them per epoch); the first epoch of each
run (worker start-up) is left out, and the decode pass's wall time is reported beside them. The loop can only gain what
it waited for (at most 1/(1 - data_wait before)), so the script also times the dataset alone: crops drawn per second
with and without the decode pass, which is the part this change speeds up whatever the model costs. On a shared machine
wall time depends on the other jobs; examples per CPU-second (getrusage of this process and its ended children: the
loader workers and decoding processes, over the whole run) is the steadier comparison.

    python benchmarks/finetune.py            # 24 files, 4 epochs of batch 8
"""
import argparse, datetime, gc, json, os, platform, resource, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.audio import write_audio
from audioset_nb.config import FrontEnd
from audioset_nb.finetune import FinetuneConfig, finetune, finetune_dir
from audioset_nb.train import read_statistics

FORMATS = [('mp3', 44100, 2), ('ogg', 48000, 1), ('flac', 22050, 2), ('wav', 32000, 1)]

def long_files(root:Path, n:int, seconds=(60, 200), seed=0)->Path:
    "`n` long, compressed files in 4 classes (`root/<class>/<i>.<ext>`): tones, chirps, noise bursts, clicks in noise."
    rng = np.random.default_rng(seed)
    for i in range(n):
        c, (ext, sr, ch) = i % 4, FORMATS[(i//4) % len(FORMATS)]
        t = np.arange(int(rng.uniform(*seconds)*sr))/sr
        x = [np.sin(2*np.pi*rng.uniform(200, 800)*t), np.sin(2*np.pi*(300 + 200*np.sin(2*np.pi*0.5*t))*t),
             rng.standard_normal(len(t))*(np.sin(2*np.pi*2*t) > 0), (np.arange(len(t)) % (sr//3) < 40)*1.0][c]
        x = (0.3*x + 0.05*rng.standard_normal(len(t))).astype(np.float32)
        write_audio(root/f'class{c}'/f'{i:03d}.{ext}', np.stack([x]*ch), sr)
    return root

def cpu_seconds()->float:
    "CPU time (user + system) of this process and of its children that have ended (loader workers, decoding processes)."
    return sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF,
                                                           resource.RUSAGE_CHILDREN) for k in ('ru_utime', 'ru_stime'))

def run(data:Path, ws:Path, epochs:int, batch:int, **kw)->dict:
    cfg = FinetuneConfig(str(data), workspace=str(ws), model_type='Cnn6_mini', clip_seconds=5.0, epochs=epochs,
                         batch_size=batch,
                         front=FrontEnd(8000, 256, 80, 64, 50, 4000), progress=False, valid_fraction=0.15, **kw)
    c, t = cpu_seconds(), time.perf_counter()
    r = finetune(cfg)[0]
    gc.collect()
    wall = time.perf_counter() - t
    cpu = cpu_seconds() - c  # the whole run: decode pass, training, evaluation, its worker processes
    recs = [s for s in read_statistics(r['checkpoint'].parent/'statistics.jsonl') if 'examples_per_s' in s][1:]
    mean = lambda k: float(np.mean([s[k] for s in recs]))
    return dict(examples_per_s=mean('examples_per_s'), data_wait=mean('data_wait'), wall_s=wall, cpu_s=cpu,
                examples=r['iteration']*batch, examples_per_cpu_s=r['iteration']*batch/cpu, epochs=epochs, records=recs)

def loader_only(data:Path, n_old:int=16, n_new:int=2000)->dict:
    "Crops drawn per second by the dataset alone (no model): decoding at every draw against reading decoded samples."
    from audioset_nb.finetune import read_folder
    from audioset_nb.data import CropDataset, decode_files
    clips, n = read_folder(data), 5*8000
    old = CropDataset(clips.paths, clips.targets, 8000, n)
    t = time.perf_counter()
    [old[i % len(clips)] for i in range(n_old)]
    old_rate = n_old/(time.perf_counter() - t)
    t = time.perf_counter()
    audio, _ = decode_files(clips.paths, 8000, data.parent/'bench_decoded.h5')
    decode_s = time.perf_counter() - t
    new = CropDataset(clips.paths, clips.targets, 8000, n, audio)
    t = time.perf_counter()
    [new[i % len(clips)] for i in range(n_new)]
    new_rate = n_new/(time.perf_counter() - t)
    return dict(old_crops_per_s=old_rate, new_crops_per_s=new_rate, ratio=new_rate/old_rate, decode_pass_s=decode_s)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--files', type=int, default=24)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--out', default=None)
    p.add_argument('--seconds', type=float, nargs=2, default=[60, 200], help='range of file lengths')
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='bench_finetune_'))
    try:
        data = long_files(tmp/'long', a.files, tuple(a.seconds))
        before = run(data, tmp/'ws_before', a.epochs, a.batch, decode_once=False, num_workers=0, baseline=False)
        after = run(data, tmp/'ws_after', a.epochs, a.batch, baseline=False)
        loader = loader_only(data)
        out = dict(device=platform.processor() or platform.machine(), cores=len(os.sched_getaffinity(0)),
                   load_avg=os.getloadavg(),
                   date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                   python=platform.python_version(),
                   torch=torch.__version__, audioset_nb=audioset_nb.__version__, files=a.files, batch=a.batch,
                   before=before, after=after, speedup=after['examples_per_s']/before['examples_per_s'],
                   cpu_speedup=after['examples_per_cpu_s']/before['examples_per_cpu_s'], loader=loader)
        print(json.dumps({k: v for k, v in out.items() if k not in ('before', 'after')}))
        print('loader', loader)
        for k in ('before', 'after'): print(k, {m: round(v, 3) for m, v in out[k].items() if m != 'records'})
        path = Path(a.out or Path(__file__).parent/'results'/'finetune-cpu.json')
        tmpf = path.with_suffix('.tmp')
        tmpf.write_text(json.dumps(out, indent=1) + '\n')
        tmpf.replace(path)
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
