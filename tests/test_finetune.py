"Fine-tuning end to end: a body pretrained on the mini AudioSet, transferred to a new folder of generated sounds."
import json, os, shutil, subprocess
from pathlib import Path
import numpy as np, pytest, torch
from audioset_nb.audio import write_wav
from audioset_nb.finetune import (FinetuneConfig, Transfer, Unfreeze, finetune, finetune_cli, is_head, load_body,
                                  load_finetuned, read_csv, read_folder)
from audioset_nb.scenes import make_sound_folder, write_mini_csv
from audioset_nb.config import FrontEnd
from audioset_nb.models import build_model, load_checkpoint, load_weights
from audioset_nb.finetune import predict_clips
from audioset_nb.data import CropDataset, decode_files
import audioset_nb.data as data_mod
from audioset_nb.inference import load_tagger, tag
from audioset_nb.train import read_statistics
import audioset_nb.finetune as ft
import soundfile as sf
from conftest import cli, cli_cmd, cli_env, one_sentence

torch.set_num_threads(1)
# the smallest CNN of the zoo; MobileNetV1's BatchNorm statistics lag after so short a pretraining
MODEL = 'Cnn6'
FRONT = dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
ACCURACY = 0.75        # the stated accuracy on 12 held-out clips: 4 classes, chance is 0.25

def cfg(data, ws, **kw):
    return FinetuneConfig(str(data), workspace=str(ws), model_type=MODEL, clip_seconds=1.0, progress=False,
                          front=FrontEnd(**FRONT), **kw)

@pytest.fixture(scope='module')
def tmp(tmp_path_factory): return tmp_path_factory.mktemp('finetune')

@pytest.fixture(scope='module')
def body(tmp):
    "A Cnn6 body pretrained (multi-label, BCE) on one-second mini AudioSet clips with the same `finetune`."
    csv = write_mini_csv(tmp/'mini', n=96)
    r = finetune(cfg(csv, tmp/'ws', epochs=6, batch_size=16, learning_rate=1e-3))[0]
    assert r['scores'].mAP > 0.3, r['scores']  # 14 classes: a body that learnt something
    return r['checkpoint']

@pytest.fixture(scope='module')
def folder(tmp): return make_sound_folder(tmp/'sounds', per_class=12, seed=1)

BODY = Transfer(MODEL, 4, front=FrontEnd(**FRONT)).body_names  # trainable weights outside the classifier

def test_finetune_reaches_accuracy(tmp, body, folder):
    "Training the whole pretrained model on the new sounds (classes the body never heard) reaches ACCURACY."
    r = finetune(cfg(folder, tmp/'ws_all', pretrained_checkpoint_path=str(body), epochs=15, batch_size=12,
                     learning_rate=1e-3, valid_fraction=0.25))[0]
    assert len(r['scores'].target) == 12 and r['scores'].confusion.sum() == 12
    assert r['scores'].accuracy >= ACCURACY, r['scores']

def test_frozen_body_keeps_weights(tmp, body, folder):
    r = finetune(cfg(folder, tmp/'ws_frozen', pretrained_checkpoint_path=str(body), freeze_base=True,
                     epochs=2, batch_size=12, learning_rate=1e-2, valid_fraction=0.25))[0]
    ck, pre = load_checkpoint(r['checkpoint']), load_checkpoint(body)
    assert len(BODY) > 10 and all(torch.equal(pre['model'][k],
                                              ck['model'][k]) for k in BODY), 'a frozen body weight changed'
    # BatchNorm follows the new data
    assert not torch.equal(pre['model']['bn0.running_mean'], ck['model']['bn0.running_mean'])
    assert ck['model']['fc_audioset.weight'].shape == (4, pre['model']['fc_audioset.weight'].shape[1])

def test_labels_round_trip(tmp, body, folder):
    r = finetune(cfg(folder, tmp/'ws_rt', pretrained_checkpoint_path=str(body), freeze_base=True, epochs=1,
                     batch_size=12))[0]
    ck = load_checkpoint(r['checkpoint'])
    assert ck['labels'] == ['drone', 'hiss', 'knock', 'trill'] == read_folder(folder).labels
    assert ck['model_type'] == MODEL and ck['task'] == 'single'
    assert {k: ck['config'][k] for k in FRONT} == FRONT
    zoo = build_model(ck['model_type'], classes_num=len(ck['labels']), **{k: ck['config'][k] for k in FRONT})
    load_weights(zoo, ck)  # what audioset_tag does: a plain zoo model with len(labels) classes loads it strictly
    model, labels = load_finetuned(r['checkpoint'])
    assert labels == ck['labels']
    x = torch.randn(3, 16000)*0.1
    with torch.no_grad():
        p = model(x)['clipwise_output']
        z = zoo.eval()(x)['clipwise_output']
    torch.testing.assert_close(p, torch.softmax(torch.logit(z.double(), eps=1e-12), -1).float(), atol=1e-4, rtol=1e-3)

def test_unfreeze_after(tmp, body, folder):
    m = Transfer(MODEL, 4, freeze_base=True, front=FrontEnd(**FRONT))
    seen, hook = [], Unfreeze(m, 2)
    for it in range(5):
        hook.before_step(it)  # `fit` calls it before drawing the batch of iteration it + 1
        seen.append((it + 1, m.frozen))
    assert seen == [(1, True), (2, True), (3, False), (4, False), (5, False)]
    r = finetune(cfg(folder, tmp/'ws_unfreeze', pretrained_checkpoint_path=str(body), freeze_base=True,
                     unfreeze_after=2,
                     epochs=1, batch_size=12, valid_fraction=0.25))[0]
    b0, b1 = load_checkpoint(body)['model'], load_checkpoint(r['checkpoint'])['model']
    assert sum(not torch.equal(b0[k], b1[k]) for k in BODY) > len(BODY)//2  # trained after the unfreeze

def test_transfer_any_head():
    for mt in ('Cnn14_DecisionLevelAtt', 'Cnn6'):
        m = Transfer(mt, 3, front=FrontEnd(**FRONT)).eval()
        with torch.no_grad(): out = m(torch.randn(2, 16000)*0.1)
        torch.testing.assert_close(out['clipwise_output'].sum(1), torch.ones(2))
        assert out['logits'].shape == (2, 3) and out['logits'].dtype == torch.float32
        ml = Transfer(mt, 3, multi_label=True, front=FrontEnd(**FRONT)).eval()
        with torch.no_grad(): p = ml(torch.randn(2, 16000)*0.1)['clipwise_output']
        assert p.shape == (2, 3) and 'logits' not in ml(torch.randn(2, 16000)*0.1)
    published_like = build_model('Cnn6', classes_num=527, **FRONT).state_dict()
    m = load_body(Transfer('Cnn6', 5, front=FrontEnd(**FRONT)),
                  {'model': {f'module.{k}': v for k, v in published_like.items()}})
    assert torch.equal(m.base.conv_block1.conv1.weight, published_like['conv_block1.conv1.weight'])

def folds_csv(folder, path, extra=lambda i: '')->object:
    "Write a CSV of `folder`'s clips in two alternating folds (a label of `extra(i)` added to row i); the clips."
    clips = read_folder(folder)
    rows = [f'{Path(p).relative_to(folder)},{clips.labels[t.argmax()]}{extra(i)},{i % 2 + 1}'
            for i, (p, t) in enumerate(zip(clips.paths, clips.targets))]
    Path(path).write_text('path,label,fold\n' + '\n'.join(rows) + '\n')
    return clips

def test_csv_folds_cli(tmp, folder):
    "A multi-label CSV with a fold column, cross-validated by the console script over both folds."
    clips = folds_csv(folder, tmp/'folds.csv', extra=lambda i: ';hiss' if i % 5 == 0 else '')
    p = cli('audioset_finetune', '--data', tmp/'folds.csv', '--audios_dir', folder, '--workspace', tmp/'ws_cli',
            '--model_type', MODEL, *[a for k, v in FRONT.items() for a in (f'--{k}', v)], '--clip_seconds', 1,
            '--folds', 'all', '--epochs', 1, '--batch_size', 12, '--no_progress', timeout=300)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(l) for l in p.stdout.splitlines()]
    assert [l['split'] for l in lines] == ['fold=1', 'fold=2', 'mean']
    assert all(0 <= l['mAP'] <= 1 for l in lines)
    ck = load_checkpoint(lines[0]['checkpoint'])
    assert ck['task'] == 'multi' and ck['labels'] == clips.labels
    assert read_csv(tmp/'folds.csv', folder).folds.tolist() == [i % 2 + 1 for i in range(len(clips))]

def test_rerun_resumes(tmp, folder):
    c = cfg(folder, tmp/'ws_resume', epochs=1, batch_size=12)
    a = finetune(c)[0]
    w = load_checkpoint(a['checkpoint'])['model']
    b = finetune(c)[0]  # latest.pth is at the last iteration: nothing more to train
    assert all(torch.equal(w[k], v) for k, v in load_checkpoint(b['checkpoint'])['model'].items())
    assert b['scores'].accuracy == a['scores'].accuracy

def _exit_message(**kw):
    with pytest.raises(SystemExit) as e: finetune_cli(['--no_progress', *[f'--{k}={v}' for k, v in kw.items()]])
    msg = str(e.value.code)
    assert msg.startswith('audioset_finetune: ') and one_sentence(msg) == msg
    return msg

def test_bad_inputs(tmp, folder, body):
    assert 'does not exist' in _exit_message(data=str(tmp/'nowhere'))
    (tmp/'one'/'only').mkdir(parents=True)
    shutil.copy(read_folder(folder).paths[0], tmp/'one'/'only'/'a.wav')
    assert 'at least two' in _exit_message(data=str(tmp/'one'))
    (tmp/'nolabel.csv').write_text('a.wav,x\nb.wav\n')
    assert 'Row 2' in _exit_message(data=str(tmp/'nolabel.csv'))
    assert 'Unknown --model_type' in _exit_message(data=str(folder), model_type='Cnn99')
    assert 'fold column' in _exit_message(data=str(folder), folds='all')
    msg = _exit_message(data=str(folder), model_type='Cnn10', pretrained_checkpoint_path=str(body),
                        workspace=str(tmp/'ws_bad'))
    assert str(body) in msg and '--model_type' in msg
    p = cli('audioset_finetune', '--data', tmp/'nowhere')
    assert p.returncode != 0
    one_sentence(p.stderr, 'does not exist')


# ---------------------------------------------------------------------------------------------------- issue 16 / 14
def test_single_label_checkpoint_tags_with_softmax(tmp, folder):
    "audioset_tag's loader scores a single-label fine-tuned checkpoint with probabilities that sum to one."
    r = finetune(cfg(folder, tmp/'ws_soft', epochs=1, batch_size=12))[0]
    t = load_tagger(r['checkpoint'])
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)*0.1
    s = tag(t, x, window_seconds=1.0).clipwise
    assert abs(s.sum() - 1) < 1e-4, s
    with torch.no_grad(): ref = r['model'].eval()(torch.from_numpy(x)[None])['clipwise_output'][0].numpy()
    np.testing.assert_allclose(s, ref, atol=1e-4)

def test_training_reads_samples_not_codecs(tmp, folder, monkeypatch):
    "After the decode pass, drawing training crops decodes nothing."
    clips = read_folder(folder)
    audio, rows = decode_files(clips.paths, 16000, tmp/'dec_once.h5', num_workers=1)
    spilled, _ = decode_files(clips.paths, 16000, tmp/'dec_once2.h5', max_mb=0.05, num_workers=1)
    assert spilled.on_disk and (tmp/'dec_once2.h5').is_file()
    assert np.array_equal(spilled.read(3), audio.read(3))
    calls = []
    monkeypatch.setattr(data_mod, 'load_audio', lambda *a, **k: calls.append(a) or np.zeros(16000, np.float32))
    ds = CropDataset(clips.paths, clips.targets, 16000, 16000, audio)
    for i in range(len(ds)): assert ds[i]['waveform'].shape == (16000,)
    assert calls == []
    spilled_ds = CropDataset(clips.paths, clips.targets, 16000, 16000, spilled)
    for i in range(len(ds)): assert spilled_ds[i]['waveform'].shape == (16000,)

def test_evaluation_streams_windows(folder, monkeypatch):
    "Windows go through the model a batch at a time: the first batch is scored before the third file is read."
    clips = read_folder(folder).subset(range(6))
    read, seen = [], []
    real = data_mod.load_audio
    monkeypatch.setattr(data_mod, 'load_audio', lambda p, sr: read.append(p) or real(p, sr)[:8000])  # one window each
    class Spy(torch.nn.Module):
        front = FrontEnd(**FRONT)
        def forward(self, x):
            seen.append((len(x), len(read)))
            return {'clipwise_output': torch.ones(len(x), 4)/4}
    out = predict_clips(Spy(), clips, 16000, 16000, batch_size=2)
    assert out.shape == (6, 4) and seen[0] == (2, 2) and max(n for n, _ in seen) <= 2

def test_bad_files_cost_only_themselves(tmp, folder):
    "A broken and a NaN file with --num_workers 1: the run finishes, each named in one warning, no worker traceback."
    bad = tmp/'bad_files'
    shutil.copytree(folder, bad)
    (bad/'hiss'/'broken.wav').write_bytes(b'RIFF not really audio')
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)*0.1
    x[100:200] = np.nan
    sf.write(bad/'knock'/'nan.wav', x, 16000, subtype='FLOAT')
    p = cli('audioset_finetune', '--data', bad, '--workspace', tmp/'ws_badfiles', '--model_type', MODEL,
            *[a for k, v in FRONT.items() for a in (f'--{k}',
                                                    v)], '--clip_seconds', 1, '--epochs', 1, '--batch_size', 12,
            '--num_workers', 1, '--no_progress', timeout=300)
    assert p.returncode == 0, p.stderr
    assert 'Traceback' not in p.stderr
    assert 'broken.wav' in p.stderr and 'left out' in p.stderr
    assert 'nan.wav' in p.stderr and 'NaN' in p.stderr
    line = json.loads(p.stdout.splitlines()[-1])
    assert 0 <= line['accuracy'] <= 1 and 0 <= line['baseline_accuracy'] <= 1

def test_one_file_per_class_is_one_sentence(tmp, folder):
    one = tmp/'one_each'
    for l, p in zip(*zip(*[(c, read_folder(folder).paths[i*12]) for i, c in enumerate(['drone', 'hiss', 'knock',
                                                                                       'trill'])])):
        (one/l).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, one/l/'a.wav')
    msg = _exit_message(data=str(one), model_type=MODEL, workspace=str(tmp/'ws_one'), epochs=1, batch_size=4,
                        clip_seconds=1.0, **FRONT)
    assert 'single file' in msg and 'concatenate' not in msg

def test_best_checkpoint_baseline_and_early_stop(tmp, folder):
    "final.pth holds the best validation score's weights; the statistics end with the CNN's and the baseline's scores."
    r = finetune(cfg(folder, tmp/'ws_best', epochs=6, batch_size=12, patience=1, ema=0.9))[0]
    d = r['checkpoint'].parent
    best, final = load_checkpoint(d/'best.pth'), load_checkpoint(d/'final.pth')
    assert all(torch.equal(best['model'][k], final['model'][k]) for k in best['model'])
    stats = read_statistics(d/'statistics.jsonl')
    evals = [s for s in stats if 'valid_accuracy' in s and not s.get('final')]
    accs = [s['valid_accuracy'] for s in evals]
    assert r['scores'].accuracy == max(accs) and best['iteration'] == r['best_iteration']
    last = stats[-1]
    assert last['final'] and last['valid_accuracy'] == r['scores'].accuracy and 'baseline_accuracy' in last
    assert r['baseline'].accuracy == last['baseline_accuracy']
    if r['iteration'] < 6*3:  # stopped early: one evaluation without improvement after the best
        assert evals[-1]['iteration'] == r['iteration'] and accs[-1] <= accs[-2]
        assert load_checkpoint(d/'latest.pth')['hooks']['best']['stopped'] == r['iteration']

def test_torchrun_two_processes(tmp):
    "Under torchrun (2 CPU processes, gloo): each rank trains on its share, rank 0 evaluates and writes final.pth."
    import subprocess, sys
    from conftest import cli_env
    data = make_sound_folder(tmp/'ddp_sounds', per_class=4, seed=3)
    ws = tmp/'ws_ddp'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m',
                        'audioset_nb.finetune',
                        f'--data={data}', f'--workspace={ws}', f'--model_type={MODEL}',
                        *[f'--{k}={v}' for k, v in FRONT.items()],
                        '--clip_seconds=1', '--epochs=2', '--batch_size=4', '--num_workers=0', '--no_progress'],
                       env=cli_env({'OMP_NUM_THREADS': '1'}), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    assert len(lines) == 1 and 0 <= lines[0]['accuracy'] <= 1  # rank 0 alone reports
    d = Path(lines[0]['checkpoint']).parent
    ck = load_checkpoint(d/'latest.pth')
    # 12 training clips, 4 a step over both ranks: 3 steps an epoch
    assert len(ck['ranks']) == 2 and ck['iteration'] == 2*3
    its = [s['iteration'] for s in read_statistics(d/'statistics.jsonl') if 'loss' in s]
    assert its == sorted(set(its))  # one writer: every record once

def test_benchmarks_run_tiny(tmp_path):
    "The fine-tuning benchmarks run at tiny sizes, so that they cannot rot; no timing is asserted."
    import subprocess, sys
    from conftest import cli_env
    root = Path(__file__).resolve().parents[1]
    out = tmp_path/'ft.json'
    r = subprocess.run([sys.executable, 'benchmarks/finetune.py', '--files', '8', '--seconds', '2', '3', '--epochs',
                        '2',
                        '--batch', '4', '--out', str(out)], cwd=root, env=cli_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['torch'] and res['date'] and res['device']
    assert res['after']['data_wait'] <= 1 and res['before']['examples_per_s'] > 0
    assert res['loader']['new_crops_per_s'] > 0
    assert res['before']['examples_per_cpu_s'] > 0 and res['cpu_speedup'] > 0
    out = tmp_path/'rc.json'
    r = subprocess.run([sys.executable, 'benchmarks/finetune_recipes.py', '--per_class', '3', '--test_per_class', '2',
                        '--epochs', '1', '--seeds', '1', '--recipes', '+ random gain and EQ', '--out', str(out)],
                       cwd=root, env=cli_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())['recipes'].values()
    assert len(row['runs']) == 1 and 0 <= row['test_mean'] <= 1 and 0 <= row['baseline_test'] <= 1

def test_a_second_finetuning_into_the_same_run_folder_refuses(tmp, folder):
    "One writer per run folder: while another process holds it, the console script stops at once in one sentence."
    import subprocess, sys
    ws = tmp/'ws_busy'
    run = ws/'finetune'/folder.stem/MODEL
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time; from audioset_nb.fileio import output_lock\n'
                               'with output_lock(sys.argv[1]): print("held", flush=True); time.sleep(120)', str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        p = cli('audioset_finetune', '--data', folder, '--workspace', ws, '--model_type', MODEL,
                *[a for k, v in FRONT.items() for a in (f'--{k}',
                        v)], '--clip_seconds', 1, '--epochs', 1, '--no_progress', timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode != 0
    one_sentence(p.stderr, str(run), f'pid {holder.pid}')
    assert not list(run.rglob('*.pth'))  # nothing written beside the other run's files

def test_bad_file_without_decode_once_is_left_out(tmp, folder):
    "--no_decode_once with a loader worker: a broken file is named in one warning and left out, as with decode once."
    bad = tmp/'bad_no_decode'
    shutil.copytree(folder, bad)
    (bad/'hiss'/'broken.wav').write_bytes(b'RIFF not really audio')
    p = cli('audioset_finetune', '--data', bad, '--workspace', tmp/'ws_bad_no_decode', '--model_type', MODEL,
            *[a for k, v in FRONT.items() for a in (f'--{k}',
                                                    v)], '--clip_seconds', 1, '--epochs', 1, '--batch_size', 12,
            '--num_workers', 1, '--no_decode_once', '--no_baseline', '--no_progress', timeout=300)
    assert p.returncode == 0, p.stderr
    assert 'Traceback' not in p.stderr
    warned = [l for l in p.stderr.splitlines() if 'broken.wav' in l]
    assert len(warned) == 1 and 'left out' in warned[0], p.stderr
    assert 0 <= json.loads(p.stdout.splitlines()[-1])['accuracy'] <= 1

def test_resume_with_ema_continues_exactly(tmp, folder, monkeypatch):
    "A run with --ema stopped after its first epoch and rerun ends with the same weights as one never stopped."
    c = lambda ws: cfg(folder, tmp/ws, epochs=2, batch_size=12, ema=0.9, keep='last', num_workers=0, baseline=False)
    whole = load_checkpoint(finetune(c('ws_ema_whole'))[0]['checkpoint'])['model']
    import audioset_nb.train as train
    original = train.Run.save
    def save_then_die(self, it, *a, **kw):  # `fit` saves at iteration 0 too: die after the first epoch's save
        original(self, it, *a, **kw)
        if it > 0: raise KeyboardInterrupt('killed after the first epoch')
    monkeypatch.setattr(train.Run, 'save', save_then_die)
    with pytest.raises(KeyboardInterrupt): finetune(c('ws_ema_resumed'))
    monkeypatch.setattr(train.Run, 'save', original)
    assert load_checkpoint(tmp/'ws_ema_resumed'/'finetune'/folder.name/MODEL/'holdout'/'latest.pth')['iteration'] > 0
    resumed = load_checkpoint(finetune(c('ws_ema_resumed'))[0]['checkpoint'])['model']
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), [k for k in whole if not torch.equal(whole[k],
                                                                                                       resumed[k])][:3]

def test_earlier_flag_spellings(monkeypatch):
    "`--no_balanced` and `--mixup`, bools before audioset_train and audioset_finetune shared one config, still work."
    seen = []
    monkeypatch.setattr(ft, 'finetune', lambda cfg: seen.append(cfg) or [])
    finetune_cli(['--data', 'x', '--no_balanced', '--mixup'])
    finetune_cli(['--data', 'x', '--balanced', 'alternate', '--augmentation', 'none'])
    assert [(c.balanced, c.augmentation) for c in seen] == [('none', 'mixup'), ('alternate', 'none')]

def test_printed_accuracy_is_audioset_tags(tmp, folder):
    "The test accuracy audioset_finetune prints is the accuracy of audioset_tag's top label on the same files."
    test = make_sound_folder(tmp/'tag_test', per_class=4, seed=7)
    front = [a for k, v in FRONT.items() for a in (f'--{k}', v)]
    p = cli('audioset_finetune', '--data', folder, '--test_data', test, '--workspace', tmp/'ws_same', '--model_type',
            MODEL, *front, '--clip_seconds', 1.0, '--epochs', 2, '--batch_size', 12, '--no_progress', '--no_baseline')
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    out = tmp/'tag_test.jsonl'
    t = cli('audioset_tag', '--checkpoint_path', res['checkpoint'], '--audio_path', test, '--output', out, '--full')
    assert t.returncode == 0, t.stderr[-2000:]
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 16
    top1 = [r['top'][0][0] == Path(r['audio_path']).parent.name for r in rows]
    assert res['test_accuracy'] == np.mean(top1), (res, top1)
    # and file by file, the scores fine-tuning computes are the ones audioset_tag writes
    model, labels = load_finetuned(res['checkpoint'])
    clips = read_folder(test)
    ours = predict_clips(model, clips, 16000, 16000, batch_size=5)
    theirs = {r['audio_path']: r['clipwise'] for r in rows}
    np.testing.assert_allclose(ours, [theirs[p] for p in clips.paths], atol=1e-4)


# ---------------------------------------------------------------------------------------------------- issue 25
def test_a_csv_row_naming_a_folder_says_it_is_a_folder(tmp_path):
    "Before: a row naming a folder was called missing ('does not exist')."
    for d in ('dogs', 'cats'): (tmp_path/d).mkdir()
    (tmp_path/'data.csv').write_text(f'{tmp_path/"dogs"},dog\n{tmp_path/"cats"},cat\n')
    msg = _exit_message(data=str(tmp_path/'data.csv'), workspace=str(tmp_path/'ws'))
    assert f'{tmp_path/"dogs"}, listed in {tmp_path/"data.csv"}, is a folder, not an audio file' in msg
    assert 'does not exist' not in msg

def test_the_summary_lines_are_strict_json(monkeypatch, capsys, tmp_path):
    "Before: an undefined score printed as NaN or Infinity, which JSON readers refuse."
    class Scores:
        def __init__(self, v): self.v = v
        def summary(self): return {'mAP': self.v, 'accuracy': 0.5}
    res = [dict(split=f'fold{i}', scores=Scores(v), checkpoint=tmp_path/f'{i}.pth')
           for i, v in enumerate([float('inf'), float('nan')])]
    monkeypatch.setattr(ft, 'finetune', lambda cfg: res)
    finetune_cli(['--data', str(tmp_path), '--no_progress'])
    rows = [json.loads(l, parse_constant=lambda c: pytest.fail(f'{c} is not JSON')) for l in
            capsys.readouterr().out.splitlines()]
    assert [(r['split'], r['mAP'], r['accuracy']) for r in rows] == [('fold0', None, 0.5), ('fold1', None, 0.5),
                                                                      ('mean', None, 0.5)]

def test_a_reader_that_goes_ends_finetuning_quietly(tmp, folder):
    "`audioset_finetune ... | head -1`: the second summary line meets a closed pipe; no traceback, status 141."
    folds_csv(folder, tmp/'pipe.csv')
    argv = cli_cmd('audioset_finetune', '--data', tmp/'pipe.csv', '--audios_dir', folder, '--workspace', tmp/'ws_pipe',
                   '--model_type', MODEL,
                   *[a for k, v in FRONT.items() for a in (f'--{k}', v)], '--clip_seconds', 1, '--folds', 'all',
                   '--epochs', 1, '--batch_size', 12, '--no_progress')
    r = subprocess.run(['bash', '-c', '"$@" | head -1; echo "status ${PIPESTATUS[0]}" >&2', 'pipe', *argv],
                       capture_output=True, text=True, env=cli_env(), timeout=600)
    # was: "BrokenPipeError" traceback and status 1
    assert r.stdout and json.loads(r.stdout)['split'] == 'fold=1', r.stderr
    assert 'Traceback' not in r.stderr and 'Broken pipe' not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == 'status 141', r.stderr
