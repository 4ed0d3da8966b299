"""Per-class thresholds against one global 0.5: macro F1 on held-out clips of the mini AudioSet's classes.

Clips are synthesised with the mini AudioSet's `synth_clip` (1-3 events of its 14 real AudioSet classes over a noise
floor; here 4 s at 8 kHz, 32 mel bins at 50 frames/s, so that training fits two shared CPU cores), packed in the
reference layout (balanced_train, eval), and a `Cnn6_mini` is trained on balanced_train by `audioset_train`'s own
`train`. The eval clips are never trained on and are the held-out set.
Thresholds are never chosen and scored on the same clips:

- `twofold`: the eval clips are split in two halves at random; thresholds chosen (`best_thresholds`, F1-optimal per
  class, 0.5 for a class with under `min_positives` positives) on one half are scored on the other, and the other way
  round; macro F1 (mean over classes with a positive clip in the scored half) is averaged over the two folds.
- `train_tuned`: thresholds chosen on the training clips (what a user without a separate held-out set would do),
  scored on all eval clips.

Scores come from `clip_scores`, the tagging core `audioset_tag` runs, so the thresholds fit what the command compares.

    python benchmarks/thresholds.py            # 640 train, 400 eval clips, 300 iterations of batch 16
"""
import argparse, datetime, json, os, platform, time, tempfile
from pathlib import Path
import h5py, numpy as np, torch
import audioset_nb
from audioset_nb.config import FrontEnd
from audioset_nb.inference import load_tagger
from audioset_nb.metadata import load_labels
from audioset_nb.mini import MINI_CLASSES, synth_clip
from audioset_nb.pack import write_index
from audioset_nb.thresholds import best_thresholds, class_f1, clip_scores, macro_f1
from audioset_nb.train import TrainConfig, checkpoint_path, train

SR, SECONDS = 8000, 4.
FRONT = FrontEnd(SR, 256, 160, 32, 50, 4000)

def pack(root:Path, sub:str, n:int, seed:int)->Path:
    "`n` synthetic mini-AudioSet clips as `root/hdf5s/waveforms/<sub>.h5` (527-class targets) and its index."
    labels = load_labels()
    x, y = np.zeros((n, int(SECONDS*SR)), np.int16), np.zeros((n, 527), bool)
    for i in range(n):
        w, evs = synth_clip([seed, i], sample_rate=SR, seconds=SECONDS)
        x[i] = (np.clip(w, -1, 1)*32767).astype(np.int16)
        for e in evs: y[i, labels.index(e.name)] = True
    p = root/'hdf5s'/'waveforms'/f'{sub}.h5'
    p.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(p, 'w') as f:
        f['audio_name'] = np.array([f'Y{sub[:2]}{i:09d}.wav'.encode() for i in range(n)], dtype='S20')
        f['waveform'], f['target'] = x, y
        f.attrs['sample_rate'] = SR
    write_index(p, root/'hdf5s'/'indexes'/f'{sub}.h5')
    return p

def compare(tune_t, tune_s, test_t, test_s, min_positives:int)->dict:
    "Thresholds chosen on (tune_t, tune_s), scored on (test_t, test_s) against 0.5."
    th = best_thresholds(tune_t, tune_s, min_positives)
    own = int((np.asarray(tune_t).sum(0) >= min_positives).sum())
    return dict(macro_f1_global=macro_f1(test_t, test_s, 0.5), macro_f1_per_class=macro_f1(test_t, test_s, th),
                classes_scored=int((np.asarray(test_t).sum(0) > 0).sum()), classes_own_threshold=own,
                thresholds=th, f1_global=class_f1(test_t, test_s, 0.5), f1_per_class=class_f1(test_t, test_s, th))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--train', type=int, default=640)
    p.add_argument('--eval', type=int, default=400)
    p.add_argument('--iterations', type=int, default=300)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--min_positives', type=int, default=3)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'thresholds-cpu.json'))
    a = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count()))
    with tempfile.TemporaryDirectory() as d:
        ws, t0 = Path(d), time.perf_counter()
        pack(ws, 'balanced_train', a.train, 1000 + a.seed)
        eval_h5 = pack(ws, 'eval', a.eval, 2000 + a.seed)
        t_pack = time.perf_counter() - t0
        cfg = TrainConfig(workspace=str(ws), front=FRONT, model_type='Cnn6_mini', augmentation='none',
                          batch_size=a.batch, early_stop=a.iterations, eval_every=a.iterations,
                          save_every=a.iterations, num_workers=0, progress=False, seed=1234 + a.seed)
        t0 = time.perf_counter()
        final = train(cfg)
        t_train = time.perf_counter() - t0
        runner = load_tagger(checkpoint_path(cfg, 'latest'))
        s_tr, y_tr = clip_scores(runner, ws/'hdf5s'/'waveforms'/'balanced_train.h5', window_seconds=SECONDS)
        s_ev, y_ev = clip_scores(runner, eval_h5, window_seconds=SECONDS)
    half = np.random.default_rng(a.seed).permutation(len(y_ev))
    A, B = half[:len(half)//2], half[len(half)//2:]
    folds = [compare(y_ev[A], s_ev[A], y_ev[B], s_ev[B], a.min_positives),
             compare(y_ev[B], s_ev[B], y_ev[A], s_ev[A], a.min_positives)]
    tt = compare(y_tr, s_tr, y_ev, s_ev, a.min_positives)
    names, ix = load_labels().names, [load_labels().index(c) for c in MINI_CLASSES]
    mean = lambda k: float(np.mean([f[k] for f in folds]))
    per_class = {names[c]: dict(eval_positives=int(y_ev[:, c].sum()),
                                f1_global=float(np.nanmean([f['f1_global'][c] for f in folds])),
                                f1_per_class=float(np.nanmean([f['f1_per_class'][c] for f in folds])),
                                thresholds=[round(float(f['thresholds'][c]), 4) for f in folds]) for c in ix}
    plain = lambda r: {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    out = dict(device=platform.processor() or platform.machine(), cores=len(os.sched_getaffinity(0)),
               load_avg=os.getloadavg(), date=now, python=platform.python_version(), torch=torch.__version__,
               audioset_nb=audioset_nb.__version__, args=vars(a), model='Cnn6_mini', front=FRONT.dict(),
               clip_seconds=SECONDS, pack_s=round(t_pack, 1), train_s=round(t_train, 1),
               train_eval_mAP={k: float(np.nanmean(v.ap)) for k, v in final.items()},
               twofold=dict(macro_f1_global=mean('macro_f1_global'), macro_f1_per_class=mean('macro_f1_per_class'),
                            gain=mean('macro_f1_per_class') - mean('macro_f1_global'), folds=[plain(f) for f in folds]),
               train_tuned=dict(**plain(tt), gain=tt['macro_f1_per_class'] - tt['macro_f1_global']),
               per_class=per_class)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    print(json.dumps({k: out[k] for k in ('train_s', 'train_eval_mAP')}, indent=1))
    print(json.dumps(out['twofold'], indent=1, default=str)[:1500])
    print(json.dumps(plain(out['train_tuned']), indent=1))

if __name__ == '__main__': main()
