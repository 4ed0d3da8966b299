"""Fine-tuning on real recordings: `audioset_finetune`'s default recipe (Cnn6_mini from scratch) against the log-mel
statistics + logistic regression baseline, on the real-sound benchmark of `audioset_nb.realsounds` (93_realsounds).

The packages of data/realsounds_packages.csv are installed (as root; `--no_install` uses what is there), labelled by
data/realsounds_map.csv and split by package: the training packages train, the validation packages choose (the best
epoch's weights: `--folds 2` of train.csv), the test packages are scored once with the kept weights. Four coarse
classes (speech, music, animal, other). Each recipe runs with 3 seeds; the table gives mean ± sd of test accuracy and
the baseline's, and the validation accuracy on which recipes are compared (never the test's).
Writes results/realsounds-cpu.json after each recipe (device, load, versions, date, counts, every run).

    python benchmarks/realsounds.py                                 # the default recipe, seeds 1 2 3
    python benchmarks/realsounds.py --recipes default 'gain 10 dB, EQ 6 dB' 'crops 3 s'
    python benchmarks/realsounds.py --from_log LOG   # the JSON of a stopped run, from the run lines it printed
    # seeds in parallel processes (a loaded machine shares its cores per process), then one JSON of them all:
    python benchmarks/realsounds.py --seeds 2 --no_baseline --out /tmp/s2.json & ...
    python benchmarks/realsounds.py --merge /tmp/s1.json /tmp/s2.json /tmp/s3.json

What a run costs, and what is spent once (measured in 93_realsounds' profile, BENCHMARKS.md): the audio is decoded
once into `--decoded` (kept between invocations, shared by every recipe and seed at the same sample rate); the
baseline does not depend on the seed, so `--no_baseline` runs skip its features and take its scores from a run of
the same front end; what remains is training and the validation pass of each epoch.
"""
import argparse, csv, datetime, json, os, platform, resource, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.config import FrontEnd
from audioset_nb.data import decode_files
from audioset_nb.finetune import FinetuneConfig, _read_files, finetune, finetune_dir
from audioset_nb.fileio import atomic_write, default_cache_dir
from audioset_nb.metadata import DATA_DIR
from audioset_nb.realsounds import RealSoundsConfig, counts, realsounds

RECIPES = {'default': {},
           '8-kHz front end': dict(front=FrontEnd(8000, 256, 80, 64, 50, 4000)),  # the scene set's
           'gain 10 dB, EQ 6 dB': dict(gain_db=10.0, eq_db=6.0),
           'crops 3 s': dict(clip_seconds=3.0),
           'crops 10 s': dict(clip_seconds=10.0),
           '20 epochs': dict(epochs=20),
           'mixup': dict(augmentation='mixup'),
           'no class balancing': dict(balanced='none')}
EIGHT = RECIPES['8-kHz front end']  # the 8-kHz front end with each other change of the table
RECIPES.update({f'8 kHz, {k}': {**EIGHT, **v} for k, v in list(RECIPES.items())
                if k not in ('default', '8-kHz front end')})

def manifest_check(rows:list)->dict:
    "How the manifest of this run compares with the committed one (same files, by path and SHA-256)."
    with open(DATA_DIR/'realsounds_manifest.csv', newline='') as f:
        committed = {(r['path'], r['sha256']) for r in csv.DictReader(f)}
    here = {(r['path'], r['sha256']) for r in rows}
    return dict(same=len(here & committed), only_here=len(here - committed), only_committed=len(committed - here))

def summarise(runs:list)->dict:
    "Mean and sample standard deviation (n - 1; 0 for one run) over the runs; the baseline over those that have it."
    def m(k):
        x = [r[k] for r in runs if k in r] or [float('nan')]
        return float(np.mean(x)), float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    (t, ts), (v, vs), (b, bs) = m('test'), m('valid'), m('baseline_test')
    return dict(runs=runs, test_mean=t, test_std=ts, valid_mean=v, valid_std=vs, baseline_test=b, baseline_test_std=bs,
                margin=t - b)

def write(out:Path, rows:dict, a, **extra):
    res = dict(device=platform.processor() or platform.machine(), cores=len(os.sched_getaffinity(0)),
               load_avg=os.getloadavg(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               python=platform.python_version(), torch=torch.__version__, audioset_nb=audioset_nb.__version__,
               model_type='Cnn6_mini', seeds=a.seeds, recipes=rows, **extra)
    atomic_write(out, json.dumps(res, indent=1) + '\n')

def cpu_seconds()->float:
    "CPU seconds of this process and its finished children (decoding workers), user and system."
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

def front_rate(recipe:dict)->int: return recipe.get('front', FrontEnd(32000)).sample_rate

def decode(train:Path, test:Path, decoded:Path, rate:int):
    "The training and test files decoded once at `rate` into `decoded`, as `finetune` names and reuses them."
    for csv_path, name in ((train, 'decoded'), (test, 'test_decoded')):
        decode_files(_read_files(str(csv_path)).paths, rate, decoded/f'{name}_{rate}.h5', 0)

def run(train:Path, test:Path, ws:Path, seed:int, decoded:Path, baseline:bool=True, **recipe)->dict:
    "One `finetune` call, its scores; its decoded audio is linked from, or kept in, `decoded` (the same for all runs)."
    t, c = time.perf_counter(), cpu_seconds()
    cfg = FinetuneConfig(str(train), workspace=str(ws), model_type='Cnn6_mini', folds='2', test_data=str(test),
                         seed=seed, progress=False, max_memory_mb=0, baseline=baseline, **recipe)
    d = finetune_dir(cfg)
    d.mkdir(parents=True, exist_ok=True)
    for f in decoded.glob('*decoded_*.h5'): os.link(f, d/f.name)
    r = finetune(cfg)[0]
    for f in d.glob('*decoded_*.h5'):
        if not (decoded/f.name).exists(): os.link(f, decoded/f.name)
    shutil.rmtree(ws)
    out = dict(seed=seed, valid=r['scores'].accuracy, test=r['test'].accuracy, best_iteration=r['best_iteration'],
               seconds=time.perf_counter() - t, cpu_seconds=cpu_seconds() - c, labels=list(r['test'].labels),
               test_confusion=r['test'].confusion.tolist())  # rows: true class, columns: predicted
    if baseline:
        out.update(baseline_valid=r['baseline'].accuracy, baseline_test=r['baseline_test'].accuracy,
                   baseline_test_confusion=r['baseline_test'].confusion.tolist())
    return out

def merge(paths:list, a):
    "One JSON of several (seeds run in parallel): each recipe's runs together; a run without the baseline takes it"
    " from a run of a recipe with the same front end (the baseline does not depend on the seed or the training)."
    docs = [json.loads(Path(p).read_text()) for p in paths]
    runs = {}
    for d in docs:
        for k, v in d['recipes'].items(): runs.setdefault(k, []).extend(v['runs'])
    base = {}
    for k, rs in runs.items():
        for r in rs:
            if 'baseline_test' in r: base.setdefault(front_rate(RECIPES[k]), r)
    keys = ('baseline_valid', 'baseline_test', 'baseline_test_confusion')
    for k, rs in runs.items():
        for r in rs:
            b = base[front_rate(RECIPES[k])]
            if 'baseline_test' not in r: r.update({m: b[m] for m in keys if m in b})
        rs.sort(key=lambda r: r['seed'])
    a.seeds = sorted({r['seed'] for rs in runs.values() for r in rs})
    write(Path(a.out), {k: summarise(v) for k, v in runs.items()}, a, files=docs[0]['files'],
          manifest=docs[0].get('manifest'), merged=[Path(p).name for p in paths],
          load_avg_of_parts=[d['load_avg'] for d in docs])

def from_log(log:Path, a):
    "The JSON of a stopped run, from the per-run lines it printed (`<recipe> {run dict}`) and its counts."
    import ast
    rows, files = {}, {}
    for line in log.read_text().splitlines():
        name = next((n for n in RECIPES if line.startswith(n + ' {')), None)
        if name: rows.setdefault(name, []).append(ast.literal_eval(line[len(name) + 1:]))
        elif (split := line.split(' {')[0]) in ('train', 'valid', 'test'):
            files[split] = ast.literal_eval(line[len(split) + 1:])
    write(Path(a.out), {k: summarise(v) for k, v in rows.items()}, a, files=files, from_log=True,
          note='stopped before every seed had run: the seeds of each recipe are in its runs')

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', default=str(default_cache_dir()/'realsounds'), help='where audioset_realsounds writes')
    p.add_argument('--no_install', action='store_true', help='use the packages that are installed')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--recipes', nargs='+', default=['default'], choices=list(RECIPES))
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'realsounds-cpu.json'))
    p.add_argument('--from_log', help="write the JSON from a log of this script's per-run lines (a stopped run)")
    p.add_argument('--decoded', help='where the decoded audio is kept between invocations (default: <root>/../decoded)')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: one per core)')
    p.add_argument('--no_baseline', action='store_true', help='skip the baseline (--merge takes it from another run)')
    p.add_argument('--reuse', action='store_true', help="use <root>'s manifest.csv, train.csv and test.csv as they are")
    p.add_argument('--merge', nargs='+', help='write one JSON of these result JSONs (seeds run in parallel)')
    a = p.parse_args()
    if a.from_log: return from_log(Path(a.from_log), a)
    if a.merge: return merge(a.merge, a)
    torch.set_num_threads(a.threads or max(1, len(os.sched_getaffinity(0))))
    if a.reuse:  # the manifest and splits an earlier invocation wrote (parallel seeds: one writer, once)
        with open(Path(a.root)/'manifest.csv', newline='') as f: rows = list(csv.DictReader(f))
    else: rows = realsounds(RealSoundsConfig(a.root, install=not a.no_install))
    extra = dict(files=counts(rows), manifest=manifest_check(rows))
    root, tmp, out = Path(a.root), Path(tempfile.mkdtemp(prefix='bench_realsounds_')), {}
    decoded = Path(a.decoded or root.parent/'decoded')
    decoded.mkdir(parents=True, exist_ok=True)
    try:
        for rate in sorted({front_rate(RECIPES[n]) for n in a.recipes}):
            decode(root/'train.csv', root/'test.csv', decoded, rate)
        for name in a.recipes:
            runs = []
            for seed in a.seeds:
                r = run(root/'train.csv', root/'test.csv', tmp/f'ws_{len(out)}_{seed}', seed, decoded,
                        not a.no_baseline, **RECIPES[name])
                runs.append(r)
                print(name, r, flush=True)
                out[name] = summarise(runs)
                write(Path(a.out), out, a, **extra)  # after each run: an interrupted run keeps what it measured
        for k, v in out.items():
            print(f"{k}: test {v['test_mean']:.3f} ± {v['test_std']:.3f} (valid {v['valid_mean']:.3f} ± "
                  f"{v['valid_std']:.3f}), baseline test {v['baseline_test']:.3f} ± {v['baseline_test_std']:.3f}")
    finally: shutil.rmtree(tmp, ignore_errors=True)

if __name__ == '__main__': main()
