"`--precision`: int8 exports (static quantization, calibrated on the user's audio or a pack) and bf16 torch tagging."
import json
import h5py, numpy as np, pytest, torch
import onnx, onnxruntime as ort
from audioset_nb.models import build_model, demo_signal
from audioset_nb.export import calibrated
from audioset_nb.checkpoints import save_checkpoint
from audioset_nb.inference import load_tagger
from audioset_nb.tagging import tag
from audioset_nb.audio import write_wav
from conftest import cli, one_sentence

SR = 16000
TINY = ['--sample_rate', SR, '--window_size', 512, '--hop_size', 160, '--mel_bins', 32, '--fmin', 50, '--fmax', 8000]
LABELS = [f'class{i}' for i in range(12)]

def _clip(seconds, seed):
    "Four kinds of sound (a glide with bursts, a tone, noise, a chirp) that the model scores apart; -60 dB noise floor."
    rng = np.random.default_rng(seed)
    n = int(seconds*SR)
    t = np.arange(n)/SR
    x = [0.5*demo_signal(seconds, SR, seed=seed), 0.3*np.sin(2*np.pi*(200 + 300*(seed % 7))*t),
         0.2*rng.standard_normal(n), 0.5*np.sin(2*np.pi*(100*t + 800*t**2))][seed % 4]
    return (x + 1e-3*rng.standard_normal(n)).astype(np.float32)

@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    "A Cnn6_mini with a tiny front end (BatchNorm statistics from test signals), its checkpoint, audio to tag it on."
    d = tmp_path_factory.mktemp('precision')
    torch.manual_seed(0)
    m = build_model('Cnn6_mini', sample_rate=SR, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000,
                    classes_num=len(LABELS))
    calibrated(m, torch.from_numpy(np.stack([_clip(2., 100 + i) for i in range(8)])))
    front = dict(sample_rate=SR, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
    save_checkpoint(d/'mini.pth', m, model_type='Cnn6_mini', labels=LABELS, config=front)
    for i in range(6): write_wav(d/'calibration'/f'c{i}.wav', _clip(2., 200 + i), SR)
    for i in range(5): write_wav(d/'audio'/f'a{i}.wav', _clip(3., 300 + i), SR)
    return d

def _export(d, out, *args):
    return cli('audioset_export', '--checkpoint_path', d/'mini.pth', '--output', d/out, *TINY, *args)

def _scores(path, x):
    s = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return s.run(['clipwise_output'], {'waveform': x})[0], s.get_modelmeta().custom_metadata_map

def _tag_json(d, *args):
    r = cli('audioset_tag', '--audio_path', d/'audio', '--output', d/'tags.jsonl', *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(l) for l in (d/'tags.jsonl').read_text().splitlines()], r

def test_int8_export_close_to_fp32(mini):
    assert _export(mini, 'fp32.onnx').returncode == 0
    r = _export(mini, 'int8.onnx', '--precision', 'int8', '--calibration', mini/'calibration')
    assert r.returncode == 0, r.stderr
    assert 'int8, calibrated on 6 clip(s)' in r.stdout
    x = np.stack([_clip(3., 300 + i) for i in range(5)])  # held out: not the calibration clips
    p32, meta32 = _scores(mini/'fp32.onnx', x)
    p8, meta8 = _scores(mini/'int8.onnx', x)
    assert (meta8['precision'], meta8['calibration_clips'], meta8['model_type']) == ('int8', '6', 'Cnn6_mini')
    assert 'precision' not in meta32
    assert np.abs(p8 - p32).max() < 0.05  # found: 0.032 on such clips
    assert np.abs(p32 - p32.mean(0)).max() > 0.1  # the clips score apart (0.29): the closeness is not trivial
    assert (p8.argmax(1) == p32.argmax(1)).all()
    ops = [n.op_type for n in onnx.load(str(mini/'int8.onnx')).graph.node]
    assert ops.count('QLinearConv') == 3 and ops.count('Conv') == 3  # the STFT's two and the first conv stay fp32
    # audioset_tag runs it, says it is int8, and tags like the fp32 file
    # windows of the files' length: zero padding saturates this random model (all scores near 1, ties)
    t8, r = _tag_json(mini, '--onnx', mini/'int8.onnx', '--precision', 'int8', '--top_k', 1, '--window_seconds', 3)
    assert 'int8' in r.stderr
    t32, r = _tag_json(mini, '--onnx', mini/'fp32.onnx', '--top_k', 1, '--window_seconds', 3)
    assert r.stderr == ''
    assert [t['top'][0][0] for t in t8] == [t['top'][0][0] for t in t32]

def test_int8_calibration_from_pack(mini):
    pack = mini/'pack.h5'
    with h5py.File(pack, 'w') as f:
        f.create_dataset('waveform', data=(np.stack([_clip(2., 400 + i) for i in range(10)])*32767).astype(np.int16))
        f.attrs['sample_rate'] = SR
    r = _export(mini, 'pack8.onnx', '--precision', 'int8', '--calibration', pack, '--calibration_clips', 4)
    assert r.returncode == 0, r.stderr
    x = np.stack([_clip(3., 300 + i) for i in range(5)])
    assert _scores(mini/'pack8.onnx', x)[1]['calibration_clips'] == '4'
    with h5py.File(mini/'pack22k.h5', 'w') as f:
        f.create_dataset('waveform', data=np.zeros((2, 100), np.int16))
        f.attrs['sample_rate'] = 22050
    r = _export(mini, 'bad.onnx', '--precision', 'int8', '--calibration', mini/'pack22k.h5')
    assert r.returncode == 1 and one_sentence(r.stderr, 'packed at 22050 Hz', '16000 Hz')
    assert not (mini/'bad.onnx').exists()

def test_bad_precision_and_empty_calibration(mini):
    (mini/'empty').mkdir(exist_ok=True)
    (mini/'keep.onnx').write_text('a file the user has')
    r = _export(mini, 'keep.onnx', '--precision', 'int8', '--calibration', mini/'empty')
    assert r.returncode == 1 and one_sentence(r.stderr, 'empty', 'holds no audio', '--calibration')
    assert (mini/'keep.onnx').read_text() == 'a file the user has'
    r = _export(mini, 'keep.onnx', '--precision', 'int8')
    assert r.returncode == 1 and one_sentence(r.stderr, '--precision int8 needs --calibration')
    r = _export(mini, 'keep.onnx', '--precision', 'bf16')
    assert r.returncode == 1 and one_sentence(r.stderr, 'audioset_tag --precision bf16')
    ckpt = ['--checkpoint_path', mini/'mini.pth', '--audio_path', mini/'audio']
    r = cli('audioset_tag', *ckpt, '--precision', 'fp16')
    assert r.returncode == 1 and one_sentence(r.stderr, "--precision 'fp16' is not one of fp32, bf16, int8")
    r = cli('audioset_tag', *ckpt, '--precision', 'int8')
    assert r.returncode == 1 and one_sentence(r.stderr, 'audioset_export --precision int8', '--onnx')
    r = cli('audioset_sed', *ckpt, '--model_type', 'Cnn6_mini_DecisionLevelMax', '--precision', 'int8')
    assert r.returncode == 1 and one_sentence(r.stderr, 'audioset_export --precision int8')

def test_bf16_tags_like_fp32(mini):
    fp32, bf16 = (load_tagger(mini/'mini.pth', precision=p) for p in ('fp32', 'bf16'))
    assert (fp32.amp, bf16.amp, bf16.precision) == (False, True, 'bf16')
    x = np.stack([_clip(3., 300 + i) for i in range(5)])
    a, b = fp32.forward(x)['clipwise_output'], bf16.forward(x)['clipwise_output']
    assert 0 < np.abs(a - b).max() < 0.05  # bf16 did run (not the same numbers), and it is close
    assert (a.argmax(1) == b.argmax(1)).all()
    for i in range(2):  # windows of the clips' length: no zero padding, whose near-ties a random model flips
        assert tag(bf16, x[i], window_seconds=3.).top(1)[0][0] == tag(fp32, x[i], window_seconds=3.).top(1)[0][0]
    # the CLI: the same top label for every file
    ckpt = ['--checkpoint_path', mini/'mini.pth', '--top_k', 1, '--window_seconds', 3]
    t32, _ = _tag_json(mini, *ckpt)
    t16, _ = _tag_json(mini, *ckpt, '--precision', 'bf16')
    assert len(t16) == 5 and t16 != t32  # the scores differ a little ...
    assert [t['top'][0][0] for t in t16] == [t['top'][0][0] for t in t32]  # ... the top labels do not

def test_export_coarse_front_end(tmp_path):
    "A front end so coarse (8 kHz, hop 1024) that 1 s is 8 frames: the export's trace used to pool them to nothing."
    front = dict(sample_rate=8000, window_size=2048, hop_size=1024, mel_bins=32, fmin=50, fmax=4000)
    m = build_model('Cnn6_mini', **front, classes_num=len(LABELS))
    save_checkpoint(tmp_path/'coarse.pth', m, model_type='Cnn6_mini', labels=LABELS, config=front)
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'coarse.pth', '--output', tmp_path/'coarse.onnx')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    p, meta = _scores(tmp_path/'coarse.onnx', 0.1*np.random.default_rng(0).standard_normal((2, 80000), np.float32))
    assert p.shape == (2, len(LABELS)) and meta['hop_size'] == '1024'

def test_int8_keeps_output_layer_fp32(mini):
    "Quantized, the sigmoid gave 256 levels of probability: a trained model's confident classes tied at the top."
    r = _export(mini, 'head8.onnx', '--precision', 'int8', '--calibration', mini/'calibration')
    assert r.returncode == 0, r.stderr
    nodes = {n.name: n.op_type for n in onnx.load(str(mini/'head8.onnx')).graph.node}
    assert 'QLinearSigmoid' not in nodes.values() and 'Sigmoid' in nodes.values()
    assert nodes['/fc_audioset/Gemm'] == 'Gemm' and 'QLinearConv' in nodes.values()  # the body is still int8
    p, _ = _scores(mini/'head8.onnx', np.stack([_clip(3., 300 + i) for i in range(5)]))
    assert len(np.unique(p)) == p.size  # no ties: not 256 levels

def test_int8_fresh_model(mini, tmp_path):
    "Before: a just-initialised model (all biases zero, which the exporter shares) crashed ONNX Runtime's quantizer."
    torch.manual_seed(1)
    m = build_model('Cnn6_mini', sample_rate=SR, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000,
                    classes_num=len(LABELS))
    front = dict(sample_rate=SR, window_size=512, hop_size=160, mel_bins=32, fmin=50, fmax=8000)
    save_checkpoint(tmp_path/'fresh.pth', m, model_type='Cnn6_mini', labels=LABELS, config=front)
    r = cli('audioset_export', '--checkpoint_path', tmp_path/'fresh.pth', '--output', tmp_path/'fresh.onnx', *TINY,
            '--precision', 'int8', '--calibration', mini/'calibration')
    assert r.returncode == 0, r.stderr
    assert 'int8, calibrated on 6 clip(s)' in r.stdout
    ops = [n.op_type for n in onnx.load(str(tmp_path/'fresh.onnx')).graph.node]
    assert ops.count('QLinearConv') == 3 and 'Identity' not in ops
