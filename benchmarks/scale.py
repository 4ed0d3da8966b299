"""Cost laws: how each bookkeeping stage's time and peak memory grow with the number of clips, up to AudioSet's size.

Each stage runs at three sizes a decade apart (20,000, 200,000 and 2,000,000 rows; evaluation at 2,037, 20,371 and
203,710 clips) in a fresh process of its own, on inputs written beforehand by another process, so that its peak
memory is its own. Time and peak memory are fitted to `c * n**b` (least squares in log-log) and extrapolated to
AudioSet: 2,063,949 training clips (2,041,789 unbalanced + 22,160 balanced) and 20,371 evaluation clips.
The stages are the ones whose cost depends on the number of clips and not on their audio:
  - read_segments:   reading and validating a segment list (the unbalanced list has 2,041,789 rows)
  - plan_parts:      cutting it into the 41 parts of 50,000 rows the reference uses, and writing them
  - download_log:    reading a download log back at resume (latest row per clip) and summarizing it
  - write_index:     the index of one packed waveform file (its names and targets)
  - combine_indexes: joining 41 part indexes into the full-train index
  - read_index:      reading the full-train index, as training starts
  - sampler:         the balanced sampler's start-up, 100 batches of 32, and the size of its saved state
  - score:           mAP, AUC and d' over clips x 527 classes, as every evaluation computes them
  - checkpoint:      a resumable training checkpoint (Cnn14's weights and Adam state, the balanced sampler's state at
                     this many clips) written, read back and the sampler restored, as every save and resume does
  - statistics:      resuming the statistics file of a run of n iterations (a loss record every 100 iterations and an
                     evaluation every 2,000, as the trainer writes them); its AudioSet size is the paper's 600,000
The per-clip costs of audio (download, pack and import per core, the loader) are constants measured by pack.py,
import.py and loader.py; this script does not repeat them.
Writes benchmarks/results/scale-cpu.json; BENCHMARKS.md quotes it.

    python benchmarks/scale.py                 # all sizes (about 10 minutes and 6 GB of temporary disk)
    python benchmarks/scale.py --sizes 2000 20000 200000   # a quick look
    python benchmarks/scale.py --stages checkpoint statistics --out benchmarks/results/scale_checkpoints-cpu.json
"""
import argparse, datetime, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path
import h5py, numpy as np

HERE = Path(__file__).resolve().parent
AUDIOSET = dict(train=2_041_789 + 22_160, eval=20_371, iterations=600_000)
STAGES = ('read_segments', 'plan_parts', 'download_log', 'write_index', 'combine_indexes', 'read_index', 'sampler',
          'score', 'checkpoint', 'statistics')
PARTS = 41

def _ytid(k:int)->str:
    "A valid, distinct 11-character YouTube id for row `k`."
    alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    return ''.join(alphabet[(k >> (6*j)) & 63] for j in range(11))

def _labels(n:int, seed:int=0)->list:
    "Label-index lists for `n` clips: 1-3 labels each, drawn with AudioSet's skew (a few classes on most clips)."
    g = np.random.default_rng(seed)
    p = 1/np.arange(1, 528)**1.1
    counts = g.integers(1, 4, n)
    return [g.choice(527, k, replace=False, p=p/p.sum()) for k in counts]

def make_inputs(n:int, d:Path):
    "Write every input the stages read at size `n` into folder `d`."
    from audioset_nb.download import LOG_FIELDS
    from audioset_nb.metadata import load_labels
    mids = load_labels().mids
    labels = _labels(n)
    d.mkdir(parents=True, exist_ok=True)
    with open(d/'segments.csv', 'w') as f:
        f.write('# Segments csv created Sun Mar  5 10:54:31 2017 from http://research.google.com/audioset/\n'
                f'# num_ytids={n}, num_segs={n}, num_unique_labels=527, num_positive_labels=0\n'
                '# YTID, start_seconds, end_seconds, positive_labels\n')
        for k, ls in enumerate(labels):
            f.write(f'{_ytid(k)}, {30.0 + k % 7:.3f}, {40.0 + k % 7:.3f}, "{",".join(mids[i] for i in ls)}"\n')
    with open(d/'download_log.csv', 'w') as f:
        f.write(','.join(LOG_FIELDS) + '\n')
        for k in range(n):
            status = 'unavailable' if k % 6 == 0 else 'ok'
            f.write(f'{_ytid(k)},30.0,40.0,{status},,1,{0 if k % 6 == 0 else 320000},1.5,2026-12-07T20:00:00+00:00\n')
    target = np.zeros((n, 527), bool)
    for k, ls in enumerate(labels): target[k, ls] = True
    names = np.array([f'Y{_ytid(k)}.wav' for k in range(n)], dtype='S20')
    # a packed waveform file as the index sees it: names, targets and a waveform dataset that is never written
    # (HDF5 allocates no chunk for it), so 2 M rows cost the disk only their names and targets
    for name, lo, hi in [('waveforms.h5', 0, n), *((f'unbalanced_train_part{i:02d}.h5', n*i//PARTS, n*(i + 1)//PARTS)
                                                   for i in range(PARTS))]:
        sub = d/('parts' if name.startswith('unbalanced') else '')/name
        sub.parent.mkdir(exist_ok=True)
        with h5py.File(sub, 'w') as f:
            f['audio_name'], f['target'] = names[lo:hi], target[lo:hi]
            f.create_dataset('waveform', (hi - lo, 320000), np.int16, chunks=(1, 320000))
    from audioset_nb.pack import write_index
    (d/'indexes').mkdir(exist_ok=True)
    for p in sorted((d/'parts').glob('*.h5')): write_index(p, d/'indexes'/p.name)
    write_index(d/'waveforms.h5', d/'full_train.h5')
    if n > 250_000: return  # evaluation sets are AudioSet's eval size or near it: no 4-GB score matrix
    g = np.random.default_rng(1)
    np.save(d/'output.npy', np.clip(target + g.normal(0, .4, target.shape), 0, 1).astype(np.float32))

def run_stage(stage:str, n:int, d:Path)->dict:
    "Run one stage on the inputs in `d`; the result (what it made), to check the stage did its work."
    if stage == 'read_segments':
        from audioset_nb.metadata import read_segments
        segs = read_segments(d/'segments.csv', strict=True)
        return dict(rows=len(segs))
    if stage == 'plan_parts':
        from audioset_nb.metadata import read_segments, take_part, write_parts
        segs = read_segments(d/'segments.csv', strict=True)
        t0 = time.perf_counter()  # reading is the stage above: only the planning is this stage's time
        parts = [take_part(segs, f'{i}/{PARTS}') for i in range(PARTS)]
        files = write_parts(segs, d/'plan', part_size=-(-len(segs)//PARTS))
        return dict(parts=len(parts), files=len(files), rows=sum(map(len, parts)), own_seconds=time.perf_counter()-t0)
    if stage == 'download_log':
        from audioset_nb.download import read_log, summarize
        rows = read_log(d/'download_log.csv')
        return dict(rows=len(rows), summary=summarize(rows))
    if stage == 'write_index':
        from audioset_nb.pack import write_index
        out = write_index(d/'waveforms.h5', d/'index_again.h5')
        with h5py.File(out, 'r') as f: return dict(rows=f['audio_name'].shape[0])
    if stage == 'combine_indexes':
        from audioset_nb.pack import combine_indexes
        out = combine_indexes(d/'indexes', d/'combined.h5')
        with h5py.File(out, 'r') as f: return dict(rows=f['audio_name'].shape[0])
    if stage == 'read_index':
        from audioset_nb.data import read_index
        return dict(rows=len(read_index(d/'full_train.h5')))
    if stage == 'sampler':
        from audioset_nb.data import BalancedSampler, read_index
        ix = read_index(d/'full_train.h5')
        t0 = time.perf_counter()
        s = BalancedSampler(ix.target, 32, seed=0)
        it = iter(s)
        batches = [next(it) for _ in range(100)]
        state = json.dumps(s.state_dict())
        return dict(batches=len(batches), state_bytes=len(state), own_seconds=time.perf_counter() - t0)
    if stage == 'score':
        from audioset_nb.train import score
        out = np.load(d/'output.npy')
        with h5py.File(d/'waveforms.h5', 'r') as f: target = f['target'][:]
        t0 = time.perf_counter()
        s = score(target, out)
        return dict(clips=len(target), mAP=round(float(s.mAP), 4), own_seconds=time.perf_counter() - t0)
    if stage == 'checkpoint':
        import torch
        from audioset_nb.checkpoints import read_checkpoint, save_checkpoint
        from audioset_nb.data import BalancedSampler, read_index
        from audioset_nb.models import build_model
        ix = read_index(d/'full_train.h5')
        s = BalancedSampler(ix.target, 32, seed=0)
        it = iter(s)
        for _ in range(10): next(it)
        model = build_model('Cnn14')
        opt = torch.optim.Adam(model.parameters())
        model(torch.zeros(2, 32000)).get('clipwise_output').sum().backward()
        opt.step()  # Adam's two moments exist only after a step: a real checkpoint holds them
        t0 = time.perf_counter()
        save_checkpoint(d/'run.pth', model, optimizer=opt.state_dict(), iteration=10,
                        ranks=[dict(sampler=s.state_dict(batches=10))])
        ckpt = read_checkpoint(d/'run.pth')
        again = BalancedSampler(ix.target, 32, seed=0)
        again.load_state_dict(ckpt['ranks'][0]['sampler'])
        same = next(iter(again)) == next(it)
        return dict(bytes=(d/'run.pth').stat().st_size, resumes_same_batch=bool(same),
                    own_seconds=time.perf_counter() - t0)
    if stage == 'statistics':
        from audioset_nb.train import read_statistics, statistics_logger
        path = d/'statistics.jsonl'
        log = statistics_logger(path)
        for it in range(100, n + 1, 100):  # the records the trainer writes: losses, and scores at each evaluation
            rec = dict(iteration=it, loss=0.01, lr=1e-3, examples_per_s=900., data_wait=0.01)
            if it % 2000 == 0: rec.update(bal_mAP=0.3, bal_AUC=0.9, bal_d_prime=2., test_mAP=0.3, test_AUC=0.9,
                                          test_d_prime=2.)
            log(rec)
        t0 = time.perf_counter()
        statistics_logger(path, start=n//2)  # a resume half-way: reads every record, keeps and rewrites the first half
        return dict(records=len(read_statistics(path)), bytes=path.stat().st_size,
                    own_seconds=time.perf_counter() - t0)
    raise ValueError(f'no stage {stage!r}; one of {", ".join(STAGES)}')

def _rss_mb()->float:
    "This process's resident memory now, in MB."
    return int(Path('/proc/self/statm').read_text().split()[1])*os.sysconf('SC_PAGE_SIZE')/1e6

def child(stage:str, n:int, d:Path):
    "The measuring process: imports first (not counted), then the stage; prints one JSON line."
    import audioset_nb.data, audioset_nb.download, audioset_nb.metadata, audioset_nb.pack, audioset_nb.train  # noqa
    base = _rss_mb()
    t0 = time.perf_counter()
    made = run_stage(stage, n, d)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss*1024/1e6  # KiB on Linux
    print(json.dumps(dict(stage=stage, n=n, seconds=made.pop('own_seconds', seconds), peak_mb=peak - base,
                          made=made)))

def measure(stage:str, n:int, d:Path)->dict:
    "Run `stage` at size `n` in a fresh process; its JSON result."
    r = subprocess.run([sys.executable, __file__, '--child', stage, str(n), str(d)], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f'{stage} at {n}: {r.stderr[-2000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def fit(ns, ys)->dict:
    "`y = c * n**b` by least squares in log-log: b, and the prediction at AudioSet's size."
    ns, ys = np.asarray(ns, float), np.maximum(np.asarray(ys, float), 1e-6)
    b, logc = np.polyfit(np.log(ns), np.log(ys), 1)
    return dict(exponent=round(float(b), 3), c=float(np.exp(logc)))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[20_000, 200_000, 2_000_000])
    ap.add_argument('--eval_sizes', type=int, nargs='+', default=[2_037, 20_371, 203_710])
    ap.add_argument('--stages', nargs='+', default=list(STAGES))
    ap.add_argument('--out', default=str(HERE/'results'/'scale-cpu.json'))
    a = ap.parse_args()
    import torch, audioset_nb
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix='scale-') as tmp:
        plan = [(n, s) for n in a.sizes for s in a.stages if s != 'score']
        plan += [(n, 'score') for n in a.eval_sizes if 'score' in a.stages]
        for n in sorted({n for n, _ in plan}):
            d = Path(tmp)/str(n)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, __file__, '--inputs', str(n), str(d)], check=True)
            print(f'inputs for {n:,} clips written in {time.perf_counter() - t0:.0f} s', flush=True)
            for stage in [s for m, s in plan if m == n]:
                r = measure(stage, n, d)
                rows.append(r)
                print(f'{stage:16s} {n:>9,} clips  {r["seconds"]:8.3f} s  {r["peak_mb"]:8.1f} MB  {r["made"]}',
                      flush=True)
            subprocess.run(['rm', '-rf', str(d)], check=True)
    laws = {}
    for stage in a.stages:
        rs = [r for r in rows if r['stage'] == stage]
        ns = [r['n'] for r in rs]
        at = AUDIOSET[dict(score='eval', statistics='iterations').get(stage, 'train')]
        t, m = fit(ns, [r['seconds'] for r in rs]), fit(ns, [max(r['peak_mb'], 1.) for r in rs])
        laws[stage] = dict(time_exponent=t['exponent'], memory_exponent=m['exponent'], audioset_clips=at,
                           audioset_seconds=round(t['c']*at**t['exponent'], 2),
                           audioset_peak_mb=round(m['c']*at**m['exponent'], 1))
        unit = 'iterations' if stage == 'statistics' else 'clips'
        print(f'{stage:16s} time ~ n^{t["exponent"]:.2f}, memory ~ n^{m["exponent"]:.2f}; at {at:,} {unit}: '
              f'{laws[stage]["audioset_seconds"]:.1f} s, {laws[stage]["audioset_peak_mb"]:.0f} MB')
    res = dict(date=datetime.date.today().isoformat(), device=platform.processor() or platform.machine(),
               cores=os.cpu_count(), load=[round(x, 2) for x in load], end_load=[round(x, 2) for x in os.getloadavg()],
               python=platform.python_version(), torch=torch.__version__, numpy=np.__version__, h5py=h5py.__version__,
               audioset_nb=audioset_nb.__version__, rows=rows, laws=laws)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(f'wrote {a.out}')

if __name__ == '__main__':
    if sys.argv[1:2] == ['--child']: child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    elif sys.argv[1:2] == ['--inputs']: make_inputs(int(sys.argv[2]), Path(sys.argv[3]))
    else: main()
