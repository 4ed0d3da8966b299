"ONNX export end to end: ONNX Runtime gives torch's outputs for the zoo models; audioset_tag --onnx runs without torch."
import json, subprocess, sys
import numpy as np, pytest, soundfile as sf, torch
import onnxruntime as ort
from audioset_nb.models import build_model, demo_signal
from audioset_nb.fastpath import for_inference
from audioset_nb.export import export_onnx, calibrated
from audioset_nb.checkpoints import save_checkpoint
from audioset_nb.inference import load_tagger, tag
from audioset_nb.audio import write_wav
from audioset_nb.runtime import OnnxRunner
from audioset_nb.tagging import iter_tags
from conftest import cli, cli_env, one_sentence

def _audio(seconds, n=2, seed=0):
    # a -60 dB noise floor: digital silence puts the log-mel at its 1e-10 floor, where float32 rounding of the
    # two STFT formulations differs (see 41_models); recordings are not digitally silent
    x = np.stack([demo_signal(seconds, seed=seed + i) for i in range(n)])
    return torch.from_numpy(x + 1e-3*np.random.default_rng(seed).standard_normal(x.shape, np.float32))

def _model(name):
    torch.manual_seed(0)
    return calibrated(build_model(name), _audio(2., 4, seed=10))

def _ort(path, x):
    s = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {'waveform': x.numpy()})))

@pytest.mark.parametrize('name', ['Cnn6', 'MobileNetV1', 'Cnn14', 'Cnn6_DecisionLevelMax'])
def test_onnx_matches_torch(tmp_path, name):
    m = _model(name)
    export_onnx(m, tmp_path/'m.onnx')
    x = 0.7*_audio(1.53, 2, seed=3)  # a batch and length the trace did not see (it used 2 x 1 s)
    got = _ort(tmp_path/'m.onnx', x)
    m.fast_stft = False
    with torch.no_grad(): ref = m(x)
    with torch.inference_mode(): fast = for_inference(m)(x)
    want = {'clipwise_output', 'embedding'} | ({'framewise_output'} if 'DecisionLevel' in name else set())
    assert set(got) == want
    for k in want:  # probabilities within 1e-4; embeddings (up to ~10) within 1e-4 of their largest value
        assert got[k].shape == tuple(ref[k].shape)
        tol = 1e-4*max(1., float(ref[k].abs().max()))
        assert np.abs(got[k] - ref[k].numpy()).max() < tol, k
        assert np.abs(got[k] - fast[k].numpy()).max() < tol, k
    assert got['clipwise_output'].std(0).max() > 1e-3  # the two clips score differently: the match is not trivial

def test_export_cli(tmp_path):
    save_checkpoint(tmp_path/'sed.pth', _model('Cnn6_DecisionLevelMax'), model_type='Cnn6_DecisionLevelMax')
    (tmp_path/'keep.onnx').write_text('a file the user has')
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'sed.pth', '--output', tmp_path/'sed.onnx')
    assert r.returncode == 0, r.stderr
    assert 'matches torch within' in r.stdout
    meta = ort.InferenceSession(str(tmp_path/'sed.onnx')).get_modelmeta().custom_metadata_map
    got = (meta['model_type'], meta['sample_rate'], len(json.loads(meta['labels'])))
    assert got == ('Cnn6_DecisionLevelMax', '32000', 527)
    # bad input: one sentence, exit 1, nothing written or overwritten
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'missing.pth', '--output', tmp_path/'keep.onnx')
    assert r.returncode == 1 and one_sentence(r.stderr, 'missing.pth', 'does not exist')
    assert (tmp_path/'keep.onnx').read_text() == 'a file the user has'
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'sed.pth', '--output', tmp_path/'x.pt')
    assert r.returncode == 1 and one_sentence(r.stderr, '.onnx')
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'sed.pth', '--model_type', 'Cnn14', '--output',
            tmp_path/'y.onnx')
    assert r.returncode == 1 and one_sentence(r.stderr, 'does not fit model_type Cnn14')
    # the check compares ONNX Runtime with torch before anything is written: with no tolerance for rounding it refuses
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'sed.pth', '--output', tmp_path/'keep.onnx', '--tolerance',
            '0')
    assert r.returncode == 1 and one_sentence(r.stderr, 'differs from torch', 'nothing was written')
    assert (tmp_path/'keep.onnx').read_text() == 'a file the user has'
    assert not (tmp_path/'y.onnx').exists() and not list(tmp_path.glob('*.tmp*'))

TAG = ('import sys; from audioset_nb.stream import tag_cli; tag_cli(); '
       'assert "torch" not in sys.modules, "torch imported"')

def test_onnx_tag_without_torch(tmp_path):
    m = _model('Cnn6')
    save_checkpoint(tmp_path/'cnn6.pth', m, model_type='Cnn6')
    export_onnx(m, tmp_path/'cnn6.onnx')
    write_wav(tmp_path/'a.wav', demo_signal(13., seed=5), 32000)
    # stereo at 44.1 kHz: resampled by the package's loader, as the torch path does
    write_wav(tmp_path/'b.wav', np.stack([demo_signal(4., sample_rate=44100, seed=6)]*2), 44100)
    r = subprocess.run([sys.executable, '-c', TAG, '--onnx', tmp_path/'cnn6.onnx', '--audio_path', tmp_path/'a.wav',
                        tmp_path/'b.wav', '--top_k', '5', '--output', tmp_path/'tags.jsonl'],
                       env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path/'tags.jsonl').read_text().splitlines()]
    tagger = load_tagger(tmp_path/'cnn6.pth')
    for row, f in zip(rows, ['a.wav', 'b.wav']):
        t = tag(tagger, tmp_path/f)
        scores = dict(zip(t.labels, t.clipwise))
        np.testing.assert_allclose([s for _, s in row['top']], [scores[l] for l, _ in row['top']], atol=1e-4)
        np.testing.assert_allclose([s for _, s in row['top']], [s for _, s in t.top(5)], atol=1e-4)  # the best five
    assert abs(rows[0]['duration'] - 13.) < 1e-6
    r = subprocess.run([sys.executable, '-c', TAG, '--onnx', tmp_path/'cnn6.pth', '--audio_path', tmp_path/'a.wav'],
                       env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 1 and one_sentence(r.stderr, 'cnn6.pth', 'is not an ONNX model')

def _onnx_tag(*args):
    return subprocess.run([sys.executable, '-c', TAG, *map(str, args)], env=cli_env(), capture_output=True, text=True)

def test_onnx_refuses_non_finite_audio_by_name(tmp_path):
    "Before: `audioset_tag --onnx` printed 'Speech: nan' (exit 0) and wrote bare NaN tokens into the .jsonl."
    export_onnx(_model('Cnn6'), tmp_path/'cnn6.onnx')
    x = demo_signal(3., seed=1)
    x[1000:1010] = np.nan
    sf.write(tmp_path/'bad.wav', x, 32000, subtype='FLOAT')
    write_wav(tmp_path/'ok.wav', demo_signal(3., seed=2), 32000)
    r = _onnx_tag('--onnx', tmp_path/'cnn6.onnx', '--audio_path', tmp_path/'bad.wav')
    assert r.returncode == 1 and 'nan' not in r.stdout.lower(), r.stdout
    one_sentence(r.stderr, str(tmp_path/'bad.wav'), 'holds 10 NaN or infinite samples')
    r = _onnx_tag('--onnx', tmp_path/'cnn6.onnx', '--audio_path', tmp_path/'bad.wav', tmp_path/'ok.wav',
                  '--output', tmp_path/'tags.jsonl', '--full_scores')
    assert r.returncode == 1 and 'bad.wav holds 10 NaN' in r.stderr, r.stderr
    text = (tmp_path/'tags.jsonl').read_text()
    assert 'nan' not in text.lower()
    (row,) = map(json.loads, text.splitlines())
    assert row['audio_path'] == str(tmp_path/'ok.wav') and np.isfinite(row['clipwise']).all()

def test_an_opset_torch_cannot_write_is_one_sentence(tmp_path):
    "Before: `audioset_export --opset 9999` failed deep in torch.onnx with its own words."
    save_checkpoint(tmp_path/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'cnn6.pth', '--output', tmp_path/'m.onnx', '--opset', 9999)
    assert r.returncode == 1 and not (tmp_path/'m.onnx').exists()
    one_sentence(r.stderr, '--opset 9999 is newer than this torch can write', 'use 11 to')

def test_read_only_or_full_disks_name_the_output_and_the_fix(tmp_path, tmpfs):
    "Before: raw errno text naming a temporary file, and `audioset_tag --onnx --output` imported torch to say it."
    m = _model('Cnn6')
    save_checkpoint(tmp_path/'cnn6.pth', m, model_type='Cnn6')
    export_onnx(m, tmp_path/'cnn6.onnx')
    write_wav(tmp_path/'a.wav', demo_signal(1., seed=1), 32000)
    full, ro = tmpfs(tmp_path/'full', '64k'), tmpfs(tmp_path/'ro', '1m')
    (ro/'tags.csv').write_text('kept')
    subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
    with open(full/'filler', 'wb') as f:  # a disk with no room left at all
        with pytest.raises(OSError): f.write(b'0'*(1 << 20))
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'cnn6.pth', '--output', full/'m.onnx')
    assert r.returncode == 1 and [p.name for p in full.iterdir()] == ['filler']
    one_sentence(r.stderr, f'Cannot write {full/"m.onnx"}: the disk is full', 'free some space')
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'cnn6.pth', '--output', ro/'m.onnx')
    assert r.returncode == 1
    one_sentence(r.stderr, f'Cannot write {ro/"m.onnx"}: the file system is read-only', 'choose a folder')
    for out in (ro/'tags.csv', full/'tags.jsonl'):
        r = _onnx_tag('--onnx', tmp_path/'cnn6.onnx', '--audio_path', tmp_path/'a.wav', '--output', out,
                      '--full_scores')
        assert r.returncode == 1
        one_sentence(r.stderr, f'Cannot write {out}: ')
    assert (ro/'tags.csv').read_text() == 'kept' and [p.name for p in full.iterdir()] == ['filler']

def test_torch_and_onnx_runners_tag_alike_through_the_core(tmp_path):
    "One core, two runners: the same windows, scores, embeddings and durations, within float tolerance."
    m = _model('Cnn6')
    save_checkpoint(tmp_path/'cnn6.pth', m, model_type='Cnn6')
    export_onnx(m, tmp_path/'cnn6.onnx')
    write_wav(tmp_path/'a.wav', np.stack([demo_signal(4., sample_rate=44100, seed=6)]*2), 44100)
    srcs = [demo_signal(13., seed=3), tmp_path/'a.wav', tmp_path/'gone.wav']
    kw = dict(window_seconds=4., hop_seconds=2., batch_size=3, pooling='mean')
    by_torch = list(iter_tags(load_tagger(tmp_path/'cnn6.pth'), srcs, **kw))
    by_onnx = list(iter_tags(OnnxRunner(tmp_path/'cnn6.onnx'), srcs, **kw))
    assert [type(r).__name__ for r in by_onnx] == ['Tags', 'Tags', 'Failed'] == [type(r).__name__ for r in by_torch]
    for a, b in zip(by_torch[:2], by_onnx[:2]):
        assert (a.path, a.duration, a.labels) == (b.path, b.duration, b.labels)
        np.testing.assert_array_equal(a.starts, b.starts)
        np.testing.assert_allclose(a.windows, b.windows, atol=1e-4)
        np.testing.assert_allclose(a.clipwise, b.clipwise, atol=1e-4)
        np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-3)
    assert by_torch[2] == by_onnx[2]

def test_export_benchmark_runs(tmp_path):
    "benchmarks/export.py at a tiny size, so that it cannot rot; no timing is asserted."
    from conftest import ROOT
    out = tmp_path/'ex.json'
    args = ['--models', 'Cnn6', '--batches', '1', '--reps', '1', '--seconds', '2', '--out', out]
    r = subprocess.run([sys.executable, 'benchmarks/export.py', *args], cwd=ROOT, env=cli_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['versions']['onnxruntime'] and res['date'] and res['device']
    (row,) = res['results']
    assert row['model'] == 'Cnn6' and 0 < row['onnx_max_diff_vs_fast'] < 1e-4 and row['onnx_vs_fast'] > 0
