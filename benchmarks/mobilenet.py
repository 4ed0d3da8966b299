"""CPU cost of tagging 10-s clips with EfficientAT's mn04 and mn10 against Cnn14, in CPU-seconds.

Each model is built with random weights and prepared as tagging prepares it (`for_inference`: `torch.stft`,
channels-last, `torch.inference_mode`), on one torch thread. CPU time (getrusage: user + system of this process)
is measured around each call, so that other jobs on the machine change the numbers less than wall time; the models
are interleaved rep by rep. Parameters and multiply-adds come from `count_params` and `count_flops`.
Run: python benchmarks/mobilenet.py [--reps 5] [--batch 4]
"""
import argparse, datetime, json, os, platform, resource, statistics, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.fileio import atomic_write
from audioset_nb.models import build_model, count_flops, count_params, demo_signal
from audioset_nb.fastpath import for_inference

def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['mn04', 'mn10', 'Cnn14'])
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--seconds', type=float, default=10.)
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'mobilenet-cpu.json'))
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.from_numpy(np.stack([demo_signal(a.seconds, seed=i) for i in range(a.batch)]))
    models, rows = {}, {}
    for n in a.models:
        m = build_model(n).eval()
        rows[n] = {'model': n, 'params': count_params(m), 'gmacs_per_clip': count_flops(m, a.seconds)/2e9}
        models[n] = for_inference(m)
        with torch.inference_mode(): models[n](x)  # warm-up
    cpu, wall = {n: [] for n in models}, {n: [] for n in models}
    for _ in range(a.reps):
        for n, m in models.items():
            c0, t0 = cpu_s(), time.perf_counter()
            with torch.inference_mode(): m(x)
            cpu[n].append((cpu_s() - c0)/a.batch)
            wall[n].append((time.perf_counter() - t0)/a.batch)
    base = a.models[-1]
    for n, r in rows.items():
        r.update(cpu_s_per_clip=statistics.median(cpu[n]), cpu_s_per_clip_all=cpu[n],
                 wall_s_per_clip=statistics.median(wall[n]),
                 cpu_ratio_vs_last=statistics.median(cpu[base])/statistics.median(cpu[n]))
        print(json.dumps({k: v for k, v in r.items() if not k.endswith('_all')}), flush=True)
    info = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'device': f'CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, '
                      f'1 torch thread', 'load_average_at_end': os.getloadavg(),
            'versions': {'torch': torch.__version__, 'numpy': np.__version__, 'audioset_nb': audioset_nb.__version__,
                         'python': platform.python_version()},
            'clip_seconds': a.seconds, 'batch': a.batch, 'reps': a.reps,
            'timing': 'median over reps of CPU-seconds per clip (getrusage user+system) after one warm-up call; '
                      'models interleaved rep by rep; cpu_ratio_vs_last: the last model\'s CPU time over this one\'s',
            'results': list(rows.values())}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(info, indent=1))
    print(f'wrote {out}')

if __name__ == '__main__': main()
