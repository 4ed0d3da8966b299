"""Consistent teaching on the mini AudioSet with missing labels: a teacher file of augmentation epochs vs the plain one.

The set-up of `distill.py` (drop 0.5, 8 kHz, an ensemble of `Cnn6_mini` teachers, `Cnn6_mini_DecisionLevelMax`
students with mixup, `--kd_weight 0.9`). The same teachers write two files: the plain one (their logits of each
clip) and one of `--epochs` consistent-teaching epochs (their logits of each clip as each epoch's draw makes it:
mixed with the partner the draw names, rolled, at a random gain, time stripes silenced). Students train on each, the
same steps and seeds; with the epochs file the loader replays each draw and the mix comes from the file.

    python benchmarks/consistent_teaching.py --root DIR --seeds 1
"""
import argparse, datetime, json, platform, resource, shutil, tempfile, time
from pathlib import Path
import torch
import audioset_nb
from audioset_nb.fileio import atomic_write
from audioset_nb.teacher import Augment, write_teacher
from distill import run, stats, workspace

def cpu_s()->float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--drop', type=float, default=0.5)
    p.add_argument('--teachers', type=int, default=2)
    p.add_argument('--teacher_steps', type=int, default=300)
    p.add_argument('--student_steps', type=int, default=150)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--root', help='folder for the data and the runs (default: a new temporary one)')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'consistent_teaching-cpu.json'))
    a = p.parse_args()
    torch.set_num_threads(1)
    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix='cte_'))
    if (root/'runs').exists(): shutil.rmtree(root/'runs')
    t0, ws = time.time(), workspace(root, a.drop)
    teachers = [run(ws, f'teacher{k}', 'Cnn6_mini', a.teacher_steps, 101 + k) for k in range(a.teachers)]
    ckpts, wav = [c for _, _, c in teachers], ws/'hdf5s'/'waveforms'/'balanced_train.h5'
    c0 = cpu_s()
    plain = write_teacher(ckpts, wav, root/'teacher.h5', progress=False).path
    c1 = cpu_s()
    epochs = write_teacher(ckpts, wav, root/'teacher_epochs.h5', progress=False, augment=Augment(epochs=a.epochs)).path
    c2 = cpu_s()
    files = dict(plain=plain, consistent=epochs)
    students = {k: [run(ws, f'{k}_{s}', 'Cnn6_mini_DecisionLevelMax', a.student_steps, s, teacher=str(f),
                        kd_weight=0.9)[0] for s in range(1, a.seeds + 1)] for k, f in files.items()}
    out = dict(benchmark='consistent_teaching', date=datetime.date.today().isoformat(), device=platform.machine(),
               threads=1, audioset_nb=audioset_nb.__version__, torch=torch.__version__, drop_labels=a.drop,
               teacher=dict(model_type='Cnn6_mini', members=a.teachers, steps=a.teacher_steps,
                            eval_mAP=[m for m, _, _ in teachers]),
               augment=vars(Augment(epochs=a.epochs)),
               teacher_file_cpu_s=dict(plain=round(c1 - c0, 1), consistent=round(c2 - c1, 1)),
               student=dict(model_type='Cnn6_mini_DecisionLevelMax', steps=a.student_steps, batch_size=16,
                            augmentation='mixup', kd_weight=0.9, seeds=a.seeds),
               eval_mAP={k: stats(v) if len(v) > 1 else dict(mean=v[0], sd=None, runs=v) for k, v in students.items()},
               minutes=round((time.time() - t0)/60, 1))
    print(json.dumps({k: out[k] for k in ('eval_mAP', 'teacher_file_cpu_s', 'minutes')}, indent=1))
    atomic_write(Path(a.out), json.dumps(out, indent=1) + '\n')

if __name__ == '__main__': main()
