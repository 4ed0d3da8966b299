"""Distillation on the mini AudioSet with missing labels: does a teacher's soft target beat the labels alone?

AudioSet's training lists miss positives. The mini AudioSet is made with `drop_labels` (each true label of a
balanced_train row left out of its list with that probability, every row keeping one; eval keeps every label),
packed at 8 kHz, and trained on:

- teachers: an ensemble of `--teachers` models (`Cnn6_mini`, seeds 101, 102, ...) trained for `--teacher_steps` on
  the noisy lists; `audioset_teacher`'s `write_teacher` writes their mean logits for every training clip;
- students (`Cnn6_mini_DecisionLevelMax`, `--student_steps`, 3 seeds each): labels only; labels + teacher
  (`--kd_weight 0.9`); teacher only (`--kd_weight 1`).

Reported: eval mAP (complete labels) of each run, mean ± sd (n-1) per student recipe, and the distilled students'
gains over the label-only one. Everything runs on the CPU, one thread.

    python benchmarks/distill.py                 # drop 0.5, 2 teachers x 300 steps, students 150 steps, 3 seeds
    python benchmarks/distill.py --root DIR      # keep (or reuse) the packed mini AudioSet in DIR
    python benchmarks/distill.py --root DIR --teacher_file DIR/teacher.h5 --recipes labels_teacher --kd_temperature 0.5
                                                 # one recipe again, with the teacher file of an earlier run
"""
import argparse, datetime, json, platform, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.audio import write_wav
from audioset_nb.config import FrontEnd
from audioset_nb.metadata import clip_name
from audioset_nb.mini import SUBSETS, make_mini
from audioset_nb.pack import pack_waveforms, write_index
from audioset_nb.teacher import write_teacher
from audioset_nb.train import TrainConfig, checkpoint_path, train

FRONT = FrontEnd(sample_rate=8000, window_size=1024, hop_size=512, mel_bins=32, fmin=50, fmax=4000)

def workspace(root:Path, drop:float, seed:int=0)->Path:
    "A mini AudioSet with `drop` of its training labels left out, packed at 8 kHz into `root/workspace`."
    ws = root/'workspace'
    if (ws/'hdf5s'/'indexes'/'eval.h5').is_file(): return ws  # packed by an earlier run
    mini, ws = make_mini(root/'mini', seed=seed, sources=False, drop_labels=drop), root/'workspace'
    for ytid, c in mini.clips.items(): write_wav(root/'audios'/c.subset/clip_name(ytid), mini.reference_segment(ytid))
    for s in SUBSETS:
        packed = pack_waveforms(mini.csv_path(s), root/'audios'/s, ws/'hdf5s'/'waveforms'/f'{s}.h5', sample_rate=8000,
                                progress=False)
        write_index(packed.path, ws/'hdf5s'/'indexes'/f'{s}.h5')
    return ws

def run(ws:Path, name:str, model_type:str, steps:int, seed:int, **kw)->tuple:
    "(eval mAP, seconds, checkpoint) of one training run in its own workspace folder (the packed data linked)."
    d = ws.parent/'runs'/name
    d.mkdir(parents=True, exist_ok=True)
    if not (d/'hdf5s').exists(): (d/'hdf5s').symlink_to(ws/'hdf5s')
    cfg = TrainConfig(workspace=str(d), front=FRONT, model_type=model_type, batch_size=16, augmentation='mixup',
                      early_stop=steps, eval_every=steps, save_every=steps, max_eval_clips=150, num_workers=0,
                      seed=seed, progress=False, **kw)
    t = time.time()
    scores = train(cfg)
    mAP, dt = float(scores['test'].mAP), time.time() - t
    print(f'{name}: eval mAP {mAP:.4f} ({dt:.0f} s)', flush=True)
    return mAP, dt, checkpoint_path(cfg, 'latest')

def stats(v:list)->dict: return dict(mean=float(np.mean(v)), sd=float(np.std(v, ddof=1)), runs=v)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--drop', type=float, default=0.5)
    p.add_argument('--teachers', type=int, default=2)
    p.add_argument('--teacher_steps', type=int, default=300)
    p.add_argument('--student_steps', type=int, default=150)
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--kd_temperature', type=float, default=1.0)
    p.add_argument('--teacher_file', help='use this teacher file instead of training teachers')
    p.add_argument('--recipes', nargs='+', default=['labels', 'labels_teacher', 'teacher_only'])
    p.add_argument('--root', help='folder for the data and the runs (default: a new temporary one)')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'distill-cpu.json'))
    a = p.parse_args()
    torch.set_num_threads(1)
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix='distill_'))
    if (root/'runs').exists() and not a.teacher_file: shutil.rmtree(root/'runs')  # afresh; the packed data is kept
    t0 = time.time()
    ws = workspace(root, a.drop)
    if a.teacher_file: teachers, tfile = [], Path(a.teacher_file)
    else:
        teachers = [run(ws, f'teacher{k}', 'Cnn6_mini', a.teacher_steps, 101 + k) for k in range(a.teachers)]
        tfile = write_teacher([c for _, _, c in teachers], ws/'hdf5s'/'waveforms'/'balanced_train.h5',
                              root/'teacher.h5', progress=False).path
    kd = dict(teacher=str(tfile), kd_temperature=a.kd_temperature)
    recipes = dict(labels={}, labels_teacher=dict(kd, kd_weight=0.9), teacher_only=dict(kd, kd_weight=1.0))
    recipes = {r: recipes[r] for r in a.recipes}
    students = {r: [run(ws, f'{r}_{s}', 'Cnn6_mini_DecisionLevelMax', a.student_steps, s, **kw)[0]
                    for s in range(1, a.seeds + 1)] for r, kw in recipes.items()}
    out = dict(benchmark='distill', date=datetime.date.today().isoformat(), device=platform.machine(), threads=1,
               audioset_nb=audioset_nb.__version__, torch=torch.__version__, drop_labels=a.drop,
               kd_temperature=a.kd_temperature, teacher_file=bool(a.teacher_file),
               teacher=dict(model_type='Cnn6_mini', members=a.teachers, steps=a.teacher_steps,
                            eval_mAP=[m for m, _, _ in teachers], averaged='logits'),
               student=dict(model_type='Cnn6_mini_DecisionLevelMax', steps=a.student_steps, batch_size=16,
                            augmentation='mixup', seeds=a.seeds),
               eval_mAP={r: stats(v) for r, v in students.items()}, minutes=round((time.time() - t0)/60, 1))
    base = out['eval_mAP'].get('labels')
    out['gain_over_labels'] = {r: dict(gain=round(s['mean'] - base['mean'], 4),
                                       twice_spread=round(2*max(s['sd'], base['sd']), 4),
                                       goal_met=bool(s['mean'] - base['mean'] >= max(0.02, 2*max(s['sd'], base['sd']))))
                               for r, s in out['eval_mAP'].items() if r != 'labels' and base}
    print(json.dumps({k: out[k] for k in ('eval_mAP', 'gain_over_labels', 'minutes')}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')

if __name__ == '__main__': main()
