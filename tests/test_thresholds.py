"""Per-class thresholds end to end: audioset_thresholds writes them into a checkpoint; audioset_tag's "present"
labels, audioset_sed's events and the stream's hysteresis follow them; --thresholds 0.5 is the old behaviour; ONNX
files keep them."""
import csv, json
import h5py, numpy as np, pytest, torch
from audioset_nb.audio import write_wav
from audioset_nb.checkpoints import save_checkpoint
from audioset_nb.inference import load_tagger
from audioset_nb.models import build_model
from audioset_nb.thresholds import best_thresholds, class_f1, clip_scores, macro_f1
from conftest import FRONT, FREQS, cli, one_sentence

LABELS = [f'{f} Hz' for f in FREQS]

def _clips(n, seed):
    "`n` one-second clips at 16 kHz of one or two of FREQS in noise: (int16 waveforms, (n, 5) targets)."
    rng, t = np.random.default_rng(seed), np.arange(16000)/16000
    x, y = np.zeros((n, 16000), np.int16), np.zeros((n, 5), bool)
    for i in range(n):
        k = rng.choice(5, rng.integers(1, 3), replace=False)
        w = 0.02*rng.standard_normal(len(t)) + sum(rng.uniform(.1, .4)*np.sin(2*np.pi*FREQS[j]*t) for j in k)
        x[i], y[i, k] = (np.clip(w, -1, 1)*32767).astype(np.int16), True
    return x, y

@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    "A random 5-class Cnn6_mini (and a decision-level one), 24 labelled held-out clips (HDF5 and WAV files)."
    d = tmp_path_factory.mktemp('thr')
    torch.manual_seed(0)
    save_checkpoint(d/'m.pth', build_model('Cnn6_mini', FRONT, classes_num=5), model_type='Cnn6_mini', labels=LABELS,
                    config=FRONT.dict())
    save_checkpoint(d/'sed.pth', build_model('Cnn6_mini_DecisionLevelMax', FRONT, classes_num=5),
                    model_type='Cnn6_mini_DecisionLevelMax', labels=LABELS, config=FRONT.dict())
    x, y = _clips(24, 1)
    with h5py.File(d/'held_out.h5', 'w') as f:
        f['audio_name'], f['waveform'], f['target'] = np.array([f'c{i:02d}.wav'.encode() for i in range(24)]), x, y
        f.attrs['sample_rate'] = 16000
    (d/'wav').mkdir()
    for i, w in enumerate(x): write_wav(d/'wav'/f'c{i:02d}.wav', w/32768, 16000)
    return d

def _thresholds(ws, out='thr.pth', *more):
    r = cli('audioset_thresholds', '--checkpoint_path', ws/'m.pth', '--hdf5_path', ws/'held_out.h5', '--output',
            ws/out, *more)
    assert r.returncode == 0, r.stderr
    return r

def _present(ws, *args):
    "{file name: labels present} from audioset_tag's JSON lines."
    out = ws/'tags.jsonl'
    r = cli('audioset_tag', '--audio_path', ws/'wav', '--output', out, '--top_k', 5, *args)
    assert r.returncode == 0, r.stderr
    return {json.loads(l)['audio_path'].rsplit('/', 1)[-1]: json.loads(l)['present'] for l in open(out)}

def test_best_thresholds_known_optimum():
    # positives .9 .8 .45, negatives .5 .3 .1: calling the top 4 present (F1 6/7) beats the top 2 (0.8)
    y = np.array([[1, 1], [1, 0], [0, 0], [1, 0], [0, 0], [0, 0]])
    p = np.array([[.9, .9], [.8, .2], [.5, .2], [.45, .1], [.3, .1], [.1, .1]])
    th = best_thresholds(y, p, min_positives=2, fallback=.6)
    np.testing.assert_allclose(th, [.375, .6])  # midway between .45 and .3; class 1 has one positive: the fallback
    grid = np.linspace(0, 1, 1001)
    best = max(class_f1(y[:, :1], p[:, :1], g)[0] for g in grid)
    assert class_f1(y, p, th)[0] == pytest.approx(best) == pytest.approx(6/7)
    assert macro_f1(y, p, th) > macro_f1(y, p, .5)

def test_cli_thresholds_change_what_is_present(ws):
    r = _thresholds(ws)
    stored = torch.load(ws/'thr.pth', weights_only=True)['thresholds']
    scores, target = clip_scores(load_tagger(ws/'m.pth'), ws/'held_out.h5')
    np.testing.assert_allclose(stored, best_thresholds(target, scores), atol=1e-6)
    own = int((target.sum(0) >= 3).sum())
    assert f'{own} class(es) with their own threshold, {5 - own} with --fallback 0.5' in r.stdout
    mine = _present(ws, '--checkpoint_path', ws/'thr.pth')
    at_half = _present(ws, '--checkpoint_path', ws/'thr.pth', '--thresholds', 0.5)
    truth = {f'c{i:02d}.wav': [LABELS[c] for c in np.flatnonzero(t)] for i, t in enumerate(target)}
    f1 = lambda present: macro_f1(*(np.array([[l in d[k] for l in LABELS] for k in sorted(truth)]) for d in
                                    (truth, present)))
    assert mine != at_half  # the checkpoint's thresholds decide, not 0.5
    assert f1(mine) > f1(at_half)  # F1-optimal on these clips: better than 0.5 here
    for i, k in enumerate(sorted(truth)):  # each file: the classes at or above their threshold, best first
        assert set(mine[k]) == {LABELS[c] for c in np.flatnonzero(scores[i] >= np.array(stored))}

def test_thresholds_half_is_todays_output(ws, tmp_path):
    _thresholds(ws)
    def rows(*args):
        out = tmp_path/'t.csv'
        r = cli('audioset_tag', '--audio_path', ws/'wav', '--output', out, '--top_k', 3, *args)
        assert r.returncode == 0, r.stderr
        return list(csv.DictReader(open(out)))
    plain = rows('--checkpoint_path', ws/'m.pth')  # no thresholds stored: 0.5 for every class
    assert rows('--checkpoint_path', ws/'thr.pth', '--thresholds', '0.5') == plain
    tuned = rows('--checkpoint_path', ws/'thr.pth')
    assert list(tuned[0])[:-1] == list(plain[0])[:-1] and list(tuned[0])[-1] == 'present'  # today's columns first
    assert [{k: v for k, v in r.items() if k != 'present'} for r in tuned] == [
        {k: v for k, v in r.items() if k != 'present'} for r in plain]  # the scores do not change
    r = cli('audioset_tag', '--checkpoint_path', ws/'thr.pth', '--audio_path', ws/'wav'/'c00.wav')
    assert r.returncode == 0 and ', present: ' in r.stdout.splitlines()[0], r.stdout  # on the file's line

def test_onnx_keeps_thresholds(ws):
    _thresholds(ws)
    r = cli('audioset_export', '--checkpoint_path', ws/'thr.pth', '--output', ws/'thr.onnx')
    assert r.returncode == 0, r.stderr
    from audioset_nb.runtime import OnnxRunner
    from audioset_nb.tagging import stored_thresholds
    assert stored_thresholds(OnnxRunner(ws/'thr.onnx')).tolist() == torch.load(ws/'thr.pth',
                                                                                weights_only=True)['thresholds']
    assert _present(ws, '--onnx', ws/'thr.onnx') == _present(ws, '--checkpoint_path', ws/'thr.pth')

def test_sed_and_stream_use_per_class_thresholds(ws):
    ckpt = torch.load(ws/'sed.pth', weights_only=True)
    torch.save({**ckpt, 'thresholds': [0., 1., 1., 1., 1.]}, ws/'sed_thr.pth')  # only 300 Hz can sound
    wav = ws/'wav'/'c00.wav'
    r = cli('audioset_sed', '--checkpoint_path', ws/'sed_thr.pth', '--audio_path', wav, '--output', ws/'ev.jsonl')
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in open(ws/'ev.jsonl')]
    assert [(e['label'], e['onset'], e['offset']) for e in events] == [('300 Hz', 0., 1.)]
    r = cli('audioset_sed', '--checkpoint_path', ws/'sed_thr.pth', '--audio_path', wav, '--thresholds', 0, '--output',
            ws/'ev0.jsonl')
    assert r.returncode == 0 and len(open(ws/'ev0.jsonl').readlines()) == 5, r.stderr  # one number for all
    r = cli('audioset_tag', '--checkpoint_path', ws/'sed_thr.pth', '--stream', wav, '--window_seconds', 1,
            '--hop_seconds', .5)
    assert r.returncode == 0, r.stderr
    assert {json.loads(l)['label'] for l in r.stdout.splitlines()} == {'300 Hz'}

def test_bad_thresholds_are_one_sentence(ws):
    before = (ws/'m.pth').read_bytes()
    r = cli('audioset_thresholds', '--checkpoint_path', ws/'m.pth', '--hdf5_path', ws/'held_out.h5', '--output',
            ws/'m.pth')
    assert r.returncode == 1 and (ws/'m.pth').read_bytes() == before
    one_sentence(r.stderr, 'is the input checkpoint', '--overwrite')
    torch.save({**torch.load(ws/'m.pth', weights_only=True), 'thresholds': [.5, .5]}, ws/'short.pth')
    r = cli('audioset_tag', '--checkpoint_path', ws/'short.pth', '--audio_path', ws/'wav'/'c00.wav')
    assert r.returncode == 1
    one_sentence(r.stderr, 'short.pth holds thresholds that are not 5 numbers', 'audioset_thresholds')
    r = cli('audioset_tag', '--checkpoint_path', ws/'m.pth', '--audio_path', ws/'wav', '--thresholds', 'best')
    assert r.returncode == 1
    one_sentence(r.stderr, "--thresholds 'best' must be 'checkpoint' or a number in [0, 1]")
    with h5py.File(ws/'other.h5', 'w') as f:
        f['audio_name'], f['waveform'] = np.array([b'a.wav']), np.zeros((1, 16000), np.int16)
        f['target'] = np.zeros((1, 527), bool)
    r = cli('audioset_thresholds', '--checkpoint_path', ws/'m.pth', '--hdf5_path', ws/'other.h5', '--output',
            ws/'o.pth')
    assert r.returncode == 1 and not (ws/'o.pth').exists()
    one_sentence(r.stderr, 'labels its clips with 527 classes, the model has 5')

def test_onnx_with_damaged_thresholds(ws):
    import onnx
    _thresholds(ws)
    if not (ws/'thr.onnx').exists():
        assert cli('audioset_export', '--checkpoint_path', ws/'thr.pth', '--output', ws/'thr.onnx').returncode == 0
    m = onnx.load(str(ws/'thr.onnx'))
    for p in m.metadata_props:
        if p.key == 'thresholds': p.value = '[0.5, 0.5]'
    onnx.save(m, str(ws/'bad.onnx'))
    r = cli('audioset_tag', '--onnx', ws/'bad.onnx', '--audio_path', ws/'wav'/'c00.wav')
    assert r.returncode == 1
    one_sentence(r.stderr, 'bad.onnx holds thresholds that are not 5 numbers')
