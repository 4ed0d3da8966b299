"Teacher files (issue 27, item 1): the CLI end to end, dense and top-k, kill and resume, parts, bad input."
import json, random, signal, time
from pathlib import Path
import h5py, numpy as np, pytest, torch
from audioset_nb.checkpoints import save_checkpoint
from audioset_nb.models import build_model
from audioset_nb.teacher import Teacher, to_logits
from audioset_nb.inference import load_tagger
from audioset_nb.data import AudioSetDataset
from conftest import FRONT, THREADS, cli, cli_popen, make_workspace, one_sentence

@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    "A waveform file of 96 one-second clips at 16 kHz, and two Cnn6 teachers with different weights."
    root = make_workspace(tmp_path_factory.mktemp('ws'), n_train=96, n_eval=4)
    for seed in (0, 1):
        torch.manual_seed(seed)
        save_checkpoint(root/f't{seed}.pth', build_model('Cnn6', FRONT), config=dict(model_type='Cnn6', **FRONT.dict()))
    return root

def wav(ws): return ws/'hdf5s'/'waveforms'/'balanced_train.h5'
def names(path):
    with h5py.File(path, 'r') as f: return [n.decode() for n in f['audio_name'][:]]
def teacher(*args, **kw): return cli('audioset_teacher', *args, env=THREADS, timeout=600, **kw)

def expected_logits(ws, rows):
    "The ensemble's mean logits for `rows`, computed here from the two checkpoints."
    ds = AudioSetDataset(wav(ws), 16000, 'evaluation')
    x = np.stack([ds[i]['waveform'] for i in rows])
    return np.mean([to_logits(load_tagger(ws/f't{s}.pth').forward(x)['clipwise_output']) for s in (0, 1)], 0)

def test_dense_round_trip(ws, tmp_path):
    r = teacher('--checkpoint_path', ws/'t0.pth', ws/'t1.pth', '--waveforms_hdf5_path', wav(ws),
                '--output', tmp_path/'t.h5', '--batch_size', '16', '--quiet')
    assert r.returncode == 0, r.stderr
    assert '96 of the 96 clips of the waveform file (100.0%' in r.stdout
    t = Teacher(tmp_path/'t.h5')
    assert len(t) == 96 and names(tmp_path/'t.h5') == names(wav(ws))
    want = expected_logits(ws, [3, 50])
    np.testing.assert_allclose(np.stack([t.logits(names(wav(ws))[i]) for i in (3, 50)]), want, atol=0.02)
    with h5py.File(tmp_path/'t.h5', 'r') as f:
        assert f['logits'].dtype == np.float16 and f['logits'].shape == (96, 527)
        assert [c['name'] for c in json.loads(f.attrs['checkpoints'])] == ['t0.pth', 't1.pth']

def test_top_k_round_trip(ws, tmp_path):
    r = teacher('--checkpoint_path', ws/'t0.pth', '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5',
                '--top_k', '7', '--quiet')
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path/'t.h5', 'r') as f:
        assert (f['values'].dtype, f['indices'].dtype, f['values'].shape) == (np.float16, np.int16, (96, 7))
        assert 'logits' not in f
    ds = AudioSetDataset(wav(ws), 16000, 'evaluation')
    z = to_logits(load_tagger(ws/'t0.pth').forward(ds[10]['waveform'][None])['clipwise_output'])[0]
    got = Teacher(tmp_path/'t.h5').logits(names(wav(ws))[10])
    top = np.argsort(-z)[:7]
    assert set(np.flatnonzero(np.isfinite(got))) == set(top)
    np.testing.assert_allclose(got[top], z[top], atol=0.02)

def test_parts_cover_every_clip_once(ws, tmp_path):
    for i in range(2):
        r = teacher('--checkpoint_path', ws/'t0.pth', '--waveforms_hdf5_path', wav(ws), '--output',
                    tmp_path/'parts'/f't{i}.h5', '--part', f'{i}/2', '--quiet')
        assert r.returncode == 0, r.stderr
        assert '48 of the 96 clips of the waveform file (50.0%' in r.stdout
    a, b = names(tmp_path/'parts'/'t0.h5'), names(tmp_path/'parts'/'t1.h5')
    assert not set(a) & set(b) and a + b == names(wav(ws))
    assert len(Teacher(tmp_path/'parts')) == 96

def test_killed_run_resumes_and_scores_each_row_once(ws, tmp_path):
    ref = tmp_path/'ref.h5'
    args = ['--checkpoint_path', ws/'t0.pth', ws/'t1.pth', '--waveforms_hdf5_path', wav(ws), '--batch_size', '2',
            '--quiet']
    assert teacher(*args, '--output', ref).returncode == 0
    out, partial = tmp_path/'t.h5', tmp_path/'.t.h5.partial'
    seed = random.randrange(10**6)
    for attempt in range(5):
        p = cli_popen('audioset_teacher', *args, '--output', out, env=THREADS)
        t0 = time.time()
        while p.poll() is None and not partial.exists() and time.time() - t0 < 120: time.sleep(0.01)
        time.sleep(random.Random(seed + attempt).uniform(0.3, 1.5))
        p.send_signal(signal.SIGKILL)
        p.communicate()
        with h5py.File(partial, 'r') as f: done = int(f.attrs['rows_done'])
        if 0 < done < 96: break
    assert 0 < done < 96 and not out.exists(), f'seed {seed}: {done} rows done'
    r = teacher(*args, '--output', out)
    assert r.returncode == 0, r.stderr
    assert f'scored {96 - done} now' in r.stdout, (r.stdout, done)
    with h5py.File(out, 'r') as a, h5py.File(ref, 'r') as b:
        np.testing.assert_array_equal(a['logits'][:], b['logits'][:])
        assert a.attrs['rows_done'] == 96
    assert not partial.exists()

def test_bad_input_is_one_sentence(ws, tmp_path):
    r = teacher('--checkpoint_path', tmp_path/'none.pth', '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    assert r.returncode != 0
    one_sentence(r.stderr, 'none.pth', 'does not exist')
    other = tmp_path/'ten.pth'
    save_checkpoint(other, build_model('Cnn6', FRONT, classes_num=10), config=dict(model_type='Cnn6', **FRONT.dict()),
                    labels=[f'c{i}' for i in range(10)])
    r = teacher('--checkpoint_path', ws/'t0.pth', other, '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    assert r.returncode != 0
    one_sentence(r.stderr, 'ten.pth', 'one list of classes')
    r = teacher('--checkpoint_path', ws/'t0.pth', '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5',
                '--part', '2/2')
    assert r.returncode != 0
    one_sentence(r.stderr, '--part')
    assert not list(tmp_path.glob('*t.h5*'))

# ---------------------------------------------------------------------------------------------------- training
def opposite_teacher(ws, path):
    "A teacher file that says the opposite of the labels on the five tone classes (and agrees elsewhere)."
    from audioset_nb.teacher import TeacherWriter
    from audioset_nb.metadata import load_labels
    ix = ws/'hdf5s'/'indexes'/'balanced_train.h5'
    with h5py.File(ix, 'r') as f: y = f['target'][:]
    z = np.where(y, 8., -8.).astype(np.float32)
    z[:, :5] = -z[:, :5]
    with TeacherWriter(path, names(ix), load_labels().names, 0, dict(checkpoints=[])) as w:
        w.commit(z)
        w.finish()
    return path

TRAIN = ['--batch_size=8', '--early_stop=60', '--eval_every=60', '--save_every=60', '--num_workers=0']

def test_label_free_training_learns_the_teacher(ws, tmp_path):
    from conftest import FLAGS
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    t = opposite_teacher(ws, tmp_path/'opposite.h5')
    run = lambda *a: cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, *TRAIN, *a, env=THREADS, timeout=900)
    labels, taught = run(), run('--teacher', t, '--kd_weight=1')
    assert labels.returncode == 0 and taught.returncode == 0, (labels.stderr[-2000:], taught.stderr[-2000:])
    assert 'training clips have an entry (100.0%)' in taught.stdout
    mAP = [json.loads(r.stdout.strip().splitlines()[-1])['test']['mAP'] for r in (labels, taught)]
    print(mAP)
    assert mAP[0] > 0.7 and mAP[1] < 0.5, mAP

def test_training_refuses_a_teacher_of_other_clips(ws, tmp_path):
    from conftest import FLAGS
    from audioset_nb.teacher import TeacherWriter
    from audioset_nb.metadata import load_labels
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    other = names(ws/'hdf5s'/'waveforms'/'eval.h5')   # the eval clips' names: none is a training clip
    with TeacherWriter(tmp_path/'other.h5', other, load_labels().names, 0, dict(checkpoints=[])) as w:
        w.commit(np.zeros((len(other), 527), np.float32))
        w.finish()
    r = cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, '--early_stop=1', '--teacher', tmp_path/'other.h5',
            env=THREADS, timeout=600)
    assert r.returncode != 0
    one_sentence(r.stderr, 'other.h5', 'entries for 0 of the 96 training clips', 'fewer than half')
    r = cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, '--early_stop=1', '--teacher',
            ws/'hdf5s'/'waveforms'/'eval.h5', env=THREADS, timeout=600)
    assert r.returncode != 0
    one_sentence(r.stderr, 'eval.h5', 'is not a teacher file')
