"Distillation in fine-tuning: `audioset_finetune --teacher` (soft targets) and `--unlabelled` (files taught by it)."
import json, shutil
from pathlib import Path
import numpy as np, pytest, torch
from audioset_nb.checkpoints import load_checkpoint, save_checkpoint
from audioset_nb.config import FrontEnd
from audioset_nb.finetune import FinetuneConfig, Transfer, checkpoint_extras, finetune, finetune_cli, read_folder
from audioset_nb.scenes import make_sound_folder
from conftest import cli, one_sentence

torch.set_num_threads(1)
MODEL = 'Cnn6'
FRONT = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
FLAGS = [a for k, v in FRONT.items() for a in (f'--{k}', v)]

def cfg(data, ws, **kw):
    return FinetuneConfig(str(data), workspace=str(ws), model_type=MODEL, clip_seconds=1.0, progress=False,
                          front=FrontEnd(**FRONT), baseline=False, batch_size=12, warmup_epochs=0, **kw)

@pytest.fixture(scope='module')
def tmp(tmp_path_factory): return tmp_path_factory.mktemp('finetune_kd')

@pytest.fixture(scope='module')
def folder(tmp): return make_sound_folder(tmp/'sounds', per_class=6, seconds=(1.0, 1.5), seed=1)

def fixed_teacher(path:Path, labels:list, favourite:str, front:dict=FRONT, multi:bool=False)->Path:
    "A fine-tuned checkpoint that gives every clip to class `favourite`, sure of it: wrong on all the others."
    fe = FrontEnd(**front)
    t = Transfer(MODEL, len(labels), multi, front=fe)
    with torch.no_grad():
        t.base.fc_audioset.weight.zero_()
        t.base.fc_audioset.bias.copy_(torch.tensor([8. if l == favourite else -8. for l in labels]))
    c = FinetuneConfig('x', model_type=MODEL)
    save_checkpoint(path, t.base, iteration=0, **checkpoint_extras(c, labels, fe, multi))
    return path

def test_the_student_follows_the_teacher_not_the_labels(tmp, folder):
    "kd_weight 1: a teacher that calls everything 'knock' makes a student that does too; the labels are balanced."
    labels = read_folder(folder).labels
    teacher = fixed_teacher(tmp/'knock.pth', labels, 'knock')
    kw = dict(epochs=4, learning_rate=3e-3, valid_fraction=0.34, keep='last')  # best: chosen by the labels
    taught = finetune(cfg(folder, tmp/'ws_kd1', teacher=[str(teacher)], kd_weight=1.0, **kw))[0]['scores']
    alone = finetune(cfg(folder, tmp/'ws_alone', **kw))[0]['scores']
    knock = labels.index('knock')
    assert (taught.target == knock).mean() == 0.25  # balanced validation labels
    assert (taught.pred == knock).mean() == 1.0, taught.pred
    assert (alone.pred == knock).mean() < 1.0, alone.pred

def test_unlabelled_files_are_taught_and_counted(tmp, folder):
    "With a teacher, unlabelled files change training; an unreadable one is left out with a warning and counted."
    labels = read_folder(folder).labels
    teacher = fixed_teacher(tmp/'hiss.pth', labels, 'hiss')
    unl = make_sound_folder(tmp/'unl', per_class=2, seconds=(1.0, 1.5), seed=9)
    (unl/'drone'/'broken.wav').write_bytes(b'RIFF not really audio')
    common = ['--data', folder, '--model_type', MODEL, *FLAGS, '--clip_seconds', 1, '--epochs', 1, '--batch_size',
              12, '--warmup_epochs', 0, '--no_baseline', '--no_progress', '--teacher', teacher, '--num_workers', 1,
              '--keep', 'last']
    p = cli('audioset_finetune', *common, '--workspace', tmp/'ws_unl', '--unlabelled', unl, timeout=600)
    assert p.returncode == 0, p.stderr
    assert 'Traceback' not in p.stderr and 'broken.wav' in p.stderr
    line = json.loads(p.stdout.splitlines()[-1])
    assert (line['unlabelled_files'], line['unlabelled_unreadable']) == (9, 1), line
    q = cli('audioset_finetune', *common, '--workspace', tmp/'ws_nounl', timeout=600)
    assert q.returncode == 0, q.stderr
    a, b = (load_checkpoint(json.loads(r.stdout.splitlines()[-1])['checkpoint'])['model'] for r in (p, q))
    assert not torch.equal(a['fc_audioset.weight'], b['fc_audioset.weight'])  # the unlabelled files were trained on
    assert 'unlabelled_files' not in json.loads(q.stdout.splitlines()[-1])

def _exit_message(*args):
    with pytest.raises(SystemExit) as e: finetune_cli(['--no_progress', *map(str, args)])
    msg = str(e.value.code)
    assert msg.startswith('audioset_finetune: ') and one_sentence(msg) == msg
    return msg

def test_bad_teachers_and_unlabelled_are_one_sentence(tmp, folder):
    labels = read_folder(folder).labels
    base = ['--data', folder, '--model_type', MODEL, *FLAGS, '--clip_seconds', 1, '--epochs', 1, '--no_baseline']
    unl = tmp/'unl_dir'
    unl.mkdir(exist_ok=True)
    shutil.copy(read_folder(folder).paths[0], unl/'a.wav')
    msg = _exit_message(*base, '--workspace', tmp/'ws_b1', '--unlabelled', unl)
    assert '--unlabelled needs --teacher' in msg
    other = fixed_teacher(tmp/'other.pth', ['cat', 'dog', *labels[2:]], 'cat')
    msg = _exit_message(*base, '--workspace', tmp/'ws_b2', '--teacher', other)
    assert str(other) in msg and 'other classes' in msg and 'cat' in msg
    rate = fixed_teacher(tmp/'rate.pth', labels, 'hiss', front={**FRONT, 'sample_rate': 32000, 'fmax': 16000})
    msg = _exit_message(*base, '--workspace', tmp/'ws_b3', '--teacher', rate)
    assert '32000' in msg and '--sample_rate' in msg
    multi = fixed_teacher(tmp/'multi.pth', labels, 'hiss', multi=True)
    assert 'multi-label' in _exit_message(*base, '--workspace', tmp/'ws_b4', '--teacher', multi)
    assert 'does not exist' in _exit_message(*base, '--workspace', tmp/'ws_b5', '--teacher', tmp/'nowhere.pth')
    good = fixed_teacher(tmp/'good.pth', labels, 'hiss')
    msg = _exit_message(*base, '--workspace', tmp/'ws_b6', '--teacher', good, '--unlabelled', tmp/'nowhere')
    assert 'is not a folder' in msg and 'nowhere' in msg
    assert '--kd_weight' in _exit_message(*base, '--workspace', tmp/'ws_b7', '--teacher', good, '--kd_weight', 2)
    p = cli('audioset_finetune', *base, '--workspace', tmp/'ws_b8', '--teacher', other, timeout=300)
    assert p.returncode != 0
    one_sentence(p.stderr, 'other classes')
