"""Distillation on the mini AudioSet with missing labels: does a teacher's soft target beat the labels alone?

AudioSet's training lists miss positives. The mini AudioSet is made with `drop_labels` (each true label of a
balanced_train row left out of its list with that probability, every row keeping one; eval keeps every label),
packed at 8 kHz, and trained on:

- teachers: an ensemble of `--teachers` models (`--teacher_model`, seeds 101, 102, ...) trained for `--teacher_steps`
  on the noisy lists; `audioset_teacher`'s `write_teacher` writes their mean logits for every training clip;
- students (`Cnn6_mini_DecisionLevelMax`, `--student_steps`, 3 seeds each): labels only; labels + teacher
  (`--kd_weight 0.9`); teacher only (`--kd_weight 1`).

Reported: eval mAP (complete labels) of each run, mean ± sd (n-1) per student recipe, the distilled students' gains
over the label-only one, the teacher's multiply-adds and the student's share of them (with and without the STFT,
which both compute alike), and how the teacher scores the training clips' left-out labels. Everything runs on the CPU,
one thread; the JSON is rewritten after each run, so a stopped run keeps what it finished.

    python benchmarks/distill.py                 # drop 0.5, 2 x Cnn6 x 300 steps, students 400 steps, no mixup, 3 seeds
    python benchmarks/distill.py --teacher_model Cnn6_mini --teacher_steps 300 --student_steps 150 \
        --augmentation mixup --out benchmarks/results/distill-cpu.json   # the first set-up (2 small teachers)
    python benchmarks/distill.py --root DIR      # keep (or reuse) the packed mini AudioSet in DIR
    python benchmarks/distill.py --root DIR --teacher_file DIR/teacher.h5 --recipes labels_teacher --kd_temperature 0.5
                                                 # one recipe again, with the teacher file of an earlier run
    python benchmarks/distill.py --root DIR --reuse --teachers 1   # go on: runs that finished are read back
"""
import argparse, datetime, json, platform, shutil, tempfile, time
from pathlib import Path
import numpy as np, torch
import audioset_nb
from audioset_nb.audio import write_wav
from audioset_nb.config import FrontEnd
from audioset_nb.fileio import atomic_write
from audioset_nb.metadata import clip_name, load_labels
from audioset_nb.mini import SUBSETS, load_mini, make_mini
from audioset_nb.models import build_model, count_flops
from audioset_nb.pack import pack_waveforms, write_index
from audioset_nb.teacher import Teacher, write_teacher
from audioset_nb.train import TrainConfig, checkpoint_path, read_statistics, score, statistics_path, train

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

def run(ws:Path, name:str, model_type:str, steps:int, seed:int, augmentation:str, evals:int=1, reuse:bool=False,
        **kw)->tuple:
    "(eval mAP, CPU seconds, checkpoint, eval mAP curve) of one training run in its own folder (the data linked)."
    d = ws.parent/'runs'/name
    d.mkdir(parents=True, exist_ok=True)
    if not (d/'hdf5s').exists(): (d/'hdf5s').symlink_to(ws/'hdf5s')
    cfg = TrainConfig(workspace=str(d), front=FRONT, model_type=model_type, batch_size=16, augmentation=augmentation,
                      early_stop=steps, eval_every=steps//evals, save_every=steps, max_eval_clips=150, num_workers=0,
                      seed=seed, progress=False, **kw)
    done = read_statistics(statistics_path(cfg)) if statistics_path(cfg).is_file() else []
    if reuse and checkpoint_path(cfg, 'latest').is_file() and any(r['iteration'] == steps for r in done):
        mAP, dt = done[-1]['test_mAP'], None   # finished by an earlier run (--reuse)
    else:
        t = time.process_time()
        scores = train(cfg)
        mAP, dt = float(scores['test'].mAP), time.process_time() - t
    curve = {r['iteration']: round(r['test_mAP'], 4) for r in read_statistics(statistics_path(cfg)) if 'test_mAP' in r}
    print(f'{name}: eval mAP {mAP:.4f} ({dt or 0:.0f} CPU s; curve {curve})', flush=True)
    return mAP, dt, checkpoint_path(cfg, 'latest'), curve

def macs(model_type:str)->dict:
    "Multiply-adds of one 10-s clip through `model_type` on FRONT: all, and without the STFT (alike in every model)."
    m = build_model(model_type, FRONT, classes_num=14)
    every = count_flops(m, 10., FRONT.sample_rate)//2
    stft = count_flops(m.spectrogram_extractor, 10., FRONT.sample_rate)//2
    return dict(all=every, without_stft=every - stft)

def recovery(root:Path, tfile:Path)->dict:
    "How the teacher scores the training clips: mean probability of listed, left-out and absent labels, and mAP."
    mini, t = load_mini(root/'mini'), Teacher(tfile)
    mids = [c if c.startswith('/') else load_labels().mid(c) for c in t.labels]
    listed = {s.ytid: set(s.labels) for s in mini.segments['balanced_train']}
    true = {y: {load_labels().mid(e.name) for e in c.events} for y, c in mini.clips.items() if y in listed}
    names = sorted(true)
    p = np.stack([1/(1 + np.exp(-t.logits(clip_name(y)).astype(np.float64))) for y in names])
    full = np.array([[m in true[y] for m in mids] for y in names], np.float32)
    lists = np.array([[m in listed[y] for m in mids] for y in names], np.float32)
    left_out = (full == 1) & (lists == 0)
    return dict(share_listed=round(float(lists.sum()/full.sum()), 3), p_listed=round(float(p[lists == 1].mean()), 3),
                p_left_out=round(float(p[left_out].mean()), 3), p_absent=round(float(p[full == 0].mean()), 3),
                mAP_complete=round(float(score(full, p).mAP), 4), mAP_lists=round(float(score(lists, p).mAP), 4))

def stats(v:list)->dict: return dict(mean=float(np.mean(v)), sd=float(np.std(v, ddof=1)), runs=v)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--drop', type=float, default=0.5)
    p.add_argument('--teacher_model', default='Cnn6')
    p.add_argument('--teachers', type=int, default=2)
    p.add_argument('--teacher_steps', type=int, default=300)
    p.add_argument('--student_steps', type=int, default=400)
    p.add_argument('--augmentation', default='none', help='none (the runme.sh recipe) | mixup')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--kd_temperature', type=float, default=1.0)
    p.add_argument('--top_k', type=int, default=0, help="teacher file keeps each clip's k largest logits (0: all)")
    p.add_argument('--teacher_file', help='use this teacher file instead of training teachers')
    p.add_argument('--recipes', nargs='+', default=['labels', 'labels_teacher', 'teacher_only'])
    p.add_argument('--reuse', action='store_true', help='keep the runs in --root that finished; train the rest')
    p.add_argument('--root', help='folder for the data and the runs (default: a new temporary one)')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'distill_cnn6-cpu.json'))
    a = p.parse_args()
    torch.set_num_threads(1)
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix='distill_'))
    if (root/'runs').exists() and not (a.teacher_file or a.reuse):
        shutil.rmtree(root/'runs')  # afresh; the packed data is kept
    t0 = time.time()
    ws = workspace(root, a.drop)
    student = 'Cnn6_mini_DecisionLevelMax'
    out = dict(benchmark='distill', date=datetime.date.today().isoformat(), device=platform.machine(), threads=1,
               audioset_nb=audioset_nb.__version__, torch=torch.__version__, drop_labels=a.drop,
               kd_temperature=a.kd_temperature, top_k=a.top_k, teacher_file=bool(a.teacher_file),
               front=FRONT.dict(), max_eval_clips=150)
    def save():
        out['minutes'] = round((time.time() - t0)/60, 1)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(a.out, json.dumps(out, indent=1) + '\n')
    m_t, m_s = macs(a.teacher_model), macs(student)
    out['multiply_adds'] = dict(teacher_member=m_t, teacher_ensemble={k: v*a.teachers for k, v in m_t.items()},
                                student=m_s, student_over_member={k: round(m_s[k]/m_t[k], 4) for k in m_s},
                                student_over_ensemble={k: round(m_s[k]/(m_t[k]*a.teachers), 4) for k in m_s})
    if a.teacher_file: teachers, tfile = [], Path(a.teacher_file)
    else:
        teachers = []
        for k in range(a.teachers):
            teachers.append(run(ws, f'teacher{k}', a.teacher_model, a.teacher_steps, 101 + k, a.augmentation, 2,
                                reuse=a.reuse))
            out['teacher'] = dict(model_type=a.teacher_model, members=a.teachers, steps=a.teacher_steps,
                                  augmentation=a.augmentation, eval_mAP=[r[0] for r in teachers],
                                  curves=[r[3] for r in teachers], cpu_s=[r[1] and round(r[1]) for r in teachers],
                                  averaged='logits')
            save()
        tfile = write_teacher([r[2] for r in teachers], ws/'hdf5s'/'waveforms'/'balanced_train.h5',
                              root/'teacher.h5', top_k=a.top_k, progress=False).path
    out['teacher_on_train_clips'] = recovery(root, tfile)
    print('teacher on the training clips:', out['teacher_on_train_clips'], flush=True)
    out['student'] = dict(model_type=student, steps=a.student_steps, batch_size=16, augmentation=a.augmentation,
                          seeds=a.seeds)
    kd = dict(teacher=str(tfile), kd_temperature=a.kd_temperature)
    recipes = dict(labels={}, labels_teacher=dict(kd, kd_weight=0.9), teacher_only=dict(kd, kd_weight=1.0))
    out['eval_mAP'], out['curves'] = {}, {}
    for r in a.recipes:
        runs = []
        for s in range(1, a.seeds + 1):
            runs.append(run(ws, f'{r}_{s}', student, a.student_steps, s, a.augmentation, 2,
                            reuse=a.reuse, **recipes[r]))
            out['eval_mAP'][r], out['curves'][r] = stats([x[0] for x in runs]), [x[3] for x in runs]
            save()
    if 'teacher' in out:
        tm = float(np.mean(out['teacher']['eval_mAP']))
        out['student_over_teacher_mAP'] = {r: round(v['mean']/tm, 4) for r, v in out['eval_mAP'].items()}
    base = out['eval_mAP'].get('labels')
    out['gain_over_labels'] = {r: dict(gain=round(s['mean'] - base['mean'], 4),
                                       twice_spread=round(2*max(s['sd'], base['sd']), 4),
                                       goal_met=bool(s['mean'] - base['mean'] >= max(0.02, 2*max(s['sd'], base['sd']))))
                               for r, s in out['eval_mAP'].items() if r != 'labels' and base}
    save()
    print(json.dumps({k: out.get(k) for k in ('eval_mAP', 'gain_over_labels', 'student_over_teacher_mAP', 'minutes')},
                     indent=1))

if __name__ == '__main__': main()
