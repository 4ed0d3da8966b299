"""Teacher files (issue 27, items 1 and 2): the CLI end to end, dense and top-k, kill and resume, parts, bad input;
converting EfficientAT's and CED's published outputs, matched by name."""
import io, json, os, pickle, random, signal, time
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

# ------------------------------------------------------------------------------------------------ consistent teaching
@pytest.fixture(scope='module')
def heard(ws, tmp_path_factory):
    "An --epochs 2 teacher file written by the CLI in this process, and what its ensemble heard: {(epoch, name): wave}."
    import audioset_nb.teacher as T
    out, seen, plain = tmp_path_factory.mktemp('epochs')/'t.h5', [], T.ensemble_logits
    def spy(runners, waves):
        seen.extend(waves[16000])
        return plain(runners, waves)
    T.ensemble_logits = spy
    try: T.teacher_cli(['--checkpoint_path', str(ws/'t0.pth'), str(ws/'t1.pth'), '--waveforms_hdf5_path', str(wav(ws)),
                        '--output', str(out), '--epochs', '2', '--top_k', '10', '--batch_size', '16', '--quiet'])
    finally: T.ensemble_logits = plain
    n = names(wav(ws))
    assert len(seen) == 2*len(n)
    return out, {(k//len(n), n[k % len(n)]): x for k, x in enumerate(seen)}

def test_the_student_replays_what_the_teacher_heard(ws, heard):
    from audioset_nb.teacher import Draw, WithTeacher, ensemble_logits, load_teachers
    path, seen = heard
    t = Teacher(path)
    data = WithTeacher(AudioSetDataset(ws/'hdf5s'/'indexes'/'balanced_train.h5', 16000), t)
    runners, mixed = load_teachers([ws/'t0.pth', ws/'t1.pth']), 0
    for e, row in [(0, 5), (1, 5), (1, 70), (3, 70)]:
        item = data[Draw(row, e)]
        name, x = item['audio_name'], item['waveform']
        np.testing.assert_array_equal(x, seen[e % 2, name])               # bit for bit what the teacher scored
        assert not np.array_equal(x, data.dataset[row]['waveform'])       # and not the plain clip
        z = ensemble_logits(runners, {16000: x[None]})[0]                  # epoch e's target is the teacher's on x
        got = t.logits(name, e)
        np.testing.assert_allclose(np.sort(got[np.isfinite(got)]), np.sort(z)[-10:], atol=0.02)
        np.testing.assert_allclose(item['teacher'][:-1], 1/(1 + np.exp(-got.astype(np.float64))), atol=1e-6)
        seed, partner, lam = t.draw(name, e)
        mixed += bool(partner)
        p = data.dataset[names(wav(ws)).index(partner)]                   # the partner and λ come from the file
        np.testing.assert_allclose(item['target'], lam*data.dataset[row]['target'] + (1 - lam)*p['target'], atol=1e-6)
    assert mixed == 4
    assert not np.array_equal(t.logits(names(wav(ws))[5], 0), t.logits(names(wav(ws))[5], 1))

def test_training_loader_replays_the_epoch_it_is_in(ws, heard, tmp_path):
    from conftest import cfg_for
    from audioset_nb.train import Dist, setup_audioset
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    cfg = cfg_for(ws, f'--workspace={tmp_path}', '--teacher', str(heard[0]), '--batch_size=8', '--num_workers=0',
                  '--balanced=none')
    run, _ = setup_audioset(cfg, Dist())
    assert run.mixup is None                                              # the file mixes; the model does not
    for b, batch in enumerate(run.loader):                                 # 96 clips: epoch 1 from batch 12 on
        assert len(batch['audio_name']) == 8
        for name, x in zip(batch['audio_name'], batch['waveform'].numpy()):
            np.testing.assert_array_equal(x, heard[1][b*8//96 % 2, name])
        if b == 13: break

def test_training_refuses_epochs_that_it_would_not_replay(ws, heard, tmp_path):
    from conftest import FLAGS
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    r = cli('audioset_train', f'--workspace={tmp_path}', *FLAGS, '--early_stop=1', '--augmentation=none',
            '--teacher', heard[0], env=THREADS, timeout=600)
    assert r.returncode != 0
    one_sentence(r.stderr, 't.h5', 'mixes clips in its epochs', '--augmentation mixup')
    flags = [f if not f.startswith('--sample_rate') else '--sample_rate=32000' for f in FLAGS]
    r = cli('audioset_train', f'--workspace={tmp_path}', *flags, '--early_stop=1', '--teacher', heard[0], env=THREADS,
            timeout=600)
    assert r.returncode != 0
    one_sentence(r.stderr, 't.h5', 'training reads clips at 32000 Hz')
    r = teacher('--efficientat', 'a.npy', 'b.pkl', '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'x.h5',
                '--epochs', '2')
    assert r.returncode != 0
    one_sentence(r.stderr, '--epochs')

# ---------------------------------------------------------------------------------------------------- published outputs
def stand_in(ws, seed=0):
    "Logits that agree with the labels of the waveform file's clips: a stand-in for a published ensemble's."
    with h5py.File(wav(ws), 'r') as f: y = f['target'][:]
    rng = np.random.default_rng(seed)
    return np.where(y, 4., -4.).astype(np.float32) + rng.normal(0, 1, y.shape).astype(np.float32)

def efficientat(ws, d, keep=90, foreign=4, shuffle_map=False):
    "EfficientAT's two files for the first `keep` clips and `foreign` others: rows shuffled, names in three spellings."
    z, rng, ids = stand_in(ws), np.random.default_rng(1), [n[1:12] for n in names(wav(ws))]
    ids, stored = ids[:keep] + [f'zz{i:09d}' for i in range(foreign)], np.concatenate([z[:keep], z[-foreign:]])
    order = rng.permutation(len(ids))            # row j of the .npy holds entry order[j]
    np.save(d/'logits.npy', stored[order])
    rows = np.argsort(order).tolist()
    if shuffle_map: rows = rng.permutation(rows).tolist()
    spell = [lambda k: k, lambda k: f'Y{k}.wav', lambda k: f'Y{k}.wav'.encode()]
    (d/'map.pkl').write_bytes(pickle.dumps({spell[i % 3](k): r for i, (k, r) in enumerate(zip(ids, rows))}))
    return z, d/'logits.npy', d/'map.pkl'

def test_efficientat_values_land_on_their_names(ws, tmp_path):
    z, npy, pkl = efficientat(ws, tmp_path)
    r = teacher('--efficientat', pkl, npy, '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    assert r.returncode == 0, r.stderr
    assert "entries for 90 of the 96 clips of the waveform file (93.8%); 4 of the source's 94 entries" in r.stdout
    t, clip = Teacher(tmp_path/'t.h5'), names(wav(ws))
    assert len(t) == 90 and not any(n in t for n in clip[90:])
    np.testing.assert_allclose(np.stack([t.logits(n) for n in clip[:90]]), z[:90], atol=0.02)
    index = ws/'hdf5s'/'indexes'/'balanced_train.h5'   # an index names the same clips; top-k kept as asked
    r = teacher('--efficientat', npy, pkl, '--waveforms_hdf5_path', index, '--output', tmp_path/'k.h5', '--top_k', '3')
    assert r.returncode == 0, r.stderr
    got = Teacher(tmp_path/'k.h5').logits(clip[7])
    top = np.argsort(-z[7])[:3]
    assert set(np.flatnonzero(np.isfinite(got))) == set(top)
    np.testing.assert_allclose(got[top], z[7][top], atol=0.02)

def test_a_mapping_that_pairs_rows_with_other_names_is_refused(ws, tmp_path):
    _, npy, pkl = efficientat(ws, tmp_path, shuffle_map=True)
    r = teacher('--efficientat', npy, pkl, '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    assert r.returncode != 0
    one_sentence(r.stderr, 'map.pkl', 'no better than with other clips', '--min_label_margin')
    assert not list(tmp_path.glob('*t.h5*'))

class Payload:
    def __init__(self, path): self.path = path
    def __reduce__(self): return (os.system, (f'touch {self.path}',))

def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(ws, tmp_path):
    from audioset_nb.teacher import SafeUnpickler
    _, npy, _ = efficientat(ws, tmp_path)
    ran = tmp_path/'ran'
    (tmp_path/'evil.pkl').write_bytes(pickle.dumps({'Yba000000000.wav': 0, 'x': Payload(ran)}))
    r = teacher('--efficientat', npy, tmp_path/'evil.pkl', '--waveforms_hdf5_path', wav(ws),
                '--output', tmp_path/'t.h5')
    assert r.returncode != 0
    one_sentence(r.stderr, 'evil.pkl', 'asks to run posix.system', 'refused')
    assert not ran.exists() and not list(tmp_path.glob('*t.h5*'))
    for raw in [f"cos\nsystem\n(S'touch {ran}'\ntR.".encode(), b'(i__builtin__\nexec\n.', b'P0\n.']:
        with pytest.raises(pickle.UnpicklingError): SafeUnpickler(io.BytesIO(raw)).load()
    assert not ran.exists()

def ced(ws, d, k=10, epoch=1, values=None):
    "CED's files for the waveform file's clips: two ranks, rows in reverse, `<id>.wav` and `<id>_0.000_10.000.wav`."
    import pyarrow as pa, pyarrow.parquet as pq
    p = 1/(1 + np.exp(-stand_in(ws).astype(np.float64)))
    ids, files = [n[1:12] for n in names(wav(ws))], []
    for rank, (rows, fmt) in enumerate([(range(47, -1, -1), '{}.wav'), (range(95, 47, -1), '{}_0.000_10.000.wav')]):
        rows = list(rows)
        idx = np.argsort(-p[rows], 1)[:, :k]
        files.append(d/f'logits_ep{epoch}_{rank}.h5')
        with h5py.File(files[-1], 'w') as f:
            f['topk_values'] = np.take_along_axis(p[rows], idx, 1).astype(np.float16) if values is None else values
            f['topk_indexes'] = idx.astype(np.int16)
            f['seeds'] = np.arange(len(rows), dtype=np.int32)
        pq.write_table(pa.table({'filename': [fmt.format(ids[i]) for i in rows],
                                 'start': np.zeros(len(rows), np.float32), 'end': np.full(len(rows), 10, np.float32)}),
                       files[-1].with_suffix('.parquet'))
    return p, files

def test_ced_values_land_on_their_names(ws, tmp_path):
    p, files = ced(ws, tmp_path)
    r = teacher('--ced', *files, '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    assert r.returncode == 0, r.stderr
    assert "entries for 96 of the 96 clips of the waveform file (100.0%); 0 of the source's 96 entries" in r.stdout
    with h5py.File(tmp_path/'t.h5', 'r') as f: assert f['values'].shape == (96, 10)   # the source's k
    t = Teacher(tmp_path/'t.h5')
    for i in (0, 30, 60, 95):
        got, top = t.logits(names(wav(ws))[i]), np.argsort(-p[i])[:10]
        assert set(np.flatnonzero(np.isfinite(got))) == set(top)
        np.testing.assert_allclose(got[top], to_logits(p[i][top].astype(np.float16)), atol=0.02)

def test_conversion_bad_input_is_one_sentence(ws, tmp_path):
    _, npy, pkl = efficientat(ws, tmp_path)
    run = lambda *a: teacher(*a, '--waveforms_hdf5_path', wav(ws), '--output', tmp_path/'t.h5')
    np.save(tmp_path/'ten.npy', np.zeros((94, 10), np.float32))
    nan = np.load(npy)
    nan[:, 5] = np.nan
    np.save(tmp_path/'nan.npy', nan)
    (tmp_path/'list.pkl').write_bytes(pickle.dumps(['Yba000000000.wav']))
    (tmp_path/'past.pkl').write_bytes(pickle.dumps({'ba000000000': 94}))
    others = {n[1:12]: i for i, n in enumerate(names(ws/'hdf5s'/'waveforms'/'eval.h5'))}
    (tmp_path/'others.pkl').write_bytes(pickle.dumps(others))
    (tmp_path/'ep2').mkdir()
    _, ep2 = ced(ws, tmp_path/'ep2', epoch=2)
    (tmp_path/'ep1').mkdir()
    _, ep1 = ced(ws, tmp_path/'ep1')
    (tmp_path/'raw').mkdir()
    _, raw = ced(ws, tmp_path/'raw', values=np.full((48, 10), 3., np.float16))
    ep1[1].with_suffix('.parquet').rename(tmp_path/'moved.parquet')
    cases = [(('--efficientat', tmp_path/'ten.npy', pkl), ['ten.npy', "not AudioSet's 527"]),
             (('--efficientat', tmp_path/'nan.npy', pkl), ['nan.npy', 'non-finite']),
             (('--efficientat', npy, tmp_path/'list.pkl'), ['list.pkl', 'not a dict']),
             (('--efficientat', npy, tmp_path/'past.pkl'), ['past.pkl', 'past the 94 rows']),
             (('--efficientat', npy, tmp_path/'others.pkl'), ['entries for 0 of the 96', '--min_coverage']),
             (('--efficientat', npy), ['--efficientat takes two files']),
             (('--efficientat', npy, pkl, '--checkpoint_path', ws/'t0.pth'), ['give one of']),
             (('--ced', *ep1), ['logits_ep1_1.h5', 'has no index']),
             (('--ced', ep1[0], *ep2), ['twice', 'one epoch']),
             (('--ced', *raw), ['outside 0 to 1', 'probabilities'])]
    for args, words in cases:
        r = run(*args)
        assert r.returncode != 0, args
        one_sentence(r.stderr, *words)
    assert not list(tmp_path.glob('*t.h5*'))
