"""EfficientAT's MobileNetV3 family: its checkpoints' names and numbers (against its own code), and every surface.

tests/snapshots/mobilenet_reference.py ran EfficientAT's model and front end (commit a425fdc) with the weights that
`seeded_weights` draws; its key names and shapes, input, log-mel, logits and embeddings are the fixture."""
import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch
from audioset_nb.models import build_model
from audioset_nb.checkpoints import load_weights
from conftest import cli, cli_env, one_sentence, tone
from snapshots.mobilenet_weights import seeded_weights

SNAP = Path(__file__).parent/'snapshots'
REF = np.load(SNAP/'mobilenet_reference.npz')
KEYS = json.loads((SNAP/'mobilenet_keys.json').read_text())
SR = 32000

@pytest.mark.parametrize('name', ['mn04', 'mn10'])
def test_state_dict_is_efficientats(name):
    "Every key, in order, and every shape of EfficientAT's model: its published checkpoints load strictly."
    for n in (name, f'{name}_DecisionLevel'):
        got = {k: list(v.shape) for k, v in build_model(n).state_dict().items()}
        assert list(got.items()) == list(KEYS[name].items()), n

@pytest.mark.parametrize('fast_stft', [True, False])
@pytest.mark.parametrize('name', ['mn04', 'mn10'])
def test_outputs_are_efficientats(name, fast_stft):
    "Same weights, same audio: EfficientAT's log-mel, logits and features within 1e-4 (both STFT paths)."
    m = load_weights(build_model(name, fast_stft=fast_stft), seeded_weights(KEYS[name], 1)).eval()  # strict
    x = torch.from_numpy(REF['input'])  # 31000 samples: not a whole number of hops
    with torch.no_grad():
        spec, out = m.logmel(x), m(x)
        logits = m.classifier(m.features(spec))
    np.testing.assert_allclose(spec[:, 0].numpy(), REF['mel'], atol=1e-4)
    np.testing.assert_allclose(logits.numpy(), REF[f'{name}_logits'], atol=1e-4)
    np.testing.assert_allclose(out['embedding'].numpy(), REF[f'{name}_embedding'], atol=1e-4)
    np.testing.assert_allclose(out['clipwise_output'].numpy(), 1/(1 + np.exp(-REF[f'{name}_logits'])), atol=1e-5)
    assert REF[f'{name}_logits'].std() > 0.05  # the reference is not a constant

# ---------------------------------------------------------------- the surfaces, with an EfficientAT-format mn04
@pytest.fixture(scope='module')
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp('mn')
    torch.save(seeded_weights(KEYS['mn04'], 1), d/'mn04_as.pt')  # a bare state dict, as EfficientAT publishes
    rng = np.random.default_rng(0)
    x = tone(440, 3, SR)*(np.arange(3*SR) >= SR) + 0.05*rng.standard_normal(3*SR)  # noise, then a tone from 1 s
    sf.write(d/'clip.wav', x.astype(np.float32), SR)
    return d

def _model(d, name='mn04'): return load_weights(build_model(name), d/'mn04_as.pt').eval()

def _direct(d, name='mn04'):
    "The model's outputs on the clip as tagging windows it: zero-padded to 10 s, framewise cropped to the clip."
    x = sf.read(d/'clip.wav', dtype='float32')[0]
    with torch.no_grad(): out = _model(d, name)(torch.from_numpy(np.pad(x, (0, 7*SR)))[None])
    out = {k: v[0].numpy() for k, v in out.items()}
    if 'framewise_output' in out: out['framewise_output'] = out['framewise_output'][:len(x)//320 + 1]
    return out

def test_tag_cli(d):
    r = cli('audioset_tag', '--model_type', 'mn04', '--checkpoint_path', d/'mn04_as.pt', '--audio_path', d/'clip.wav',
            '--top_k', 3, timeout=300)
    assert r.returncode == 0, r.stderr
    from audioset_nb.metadata import load_labels
    want, labels = _direct(d)['clipwise_output'], load_labels().names
    top = np.argsort(-want)[:3]
    lines = r.stdout.strip().splitlines()[1:]
    assert [l.rsplit(': ', 1)[0] for l in lines] == [labels[i] for i in top]
    assert np.allclose([float(l.rsplit(': ', 1)[1]) for l in lines], want[top], atol=1e-3), (lines, want[top])

def test_efficientat_file_needs_no_model_type(d):
    "Before: without --model_type an EfficientAT file was read as Cnn14 ('does not fit model_type Cnn14'), exit 1."
    args = ('--checkpoint_path', d/'mn04_as.pt', '--audio_path', d/'clip.wav', '--top_k', 3)
    r, want = cli('audioset_tag', *args, timeout=300), cli('audioset_tag', '--model_type', 'mn04', *args, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == want.stdout and len(r.stdout.splitlines()) == 4

def test_sed(d, tmp_path):
    from audioset_nb.inference import load_tagger, sed
    t = sed(load_tagger(d/'mn04_as.pt', 'mn04_DecisionLevel'), d/'clip.wav')
    want = _direct(d, 'mn04_DecisionLevel')['framewise_output']
    assert t.framewise.shape == want.shape == (301, 527)  # 3 s at 100 frames a second, plus one
    np.testing.assert_allclose(t.framewise, want, atol=1e-4)
    assert np.abs(want[:50] - want[-50:]).max() > 1e-3  # noise and tone score differently
    r = cli('audioset_sed', '--model_type', 'mn04_DecisionLevel', '--checkpoint_path', d/'mn04_as.pt', '--audio_path',
            d/'clip.wav', '--figure_dir', tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    r = cli('audioset_sed', '--model_type', 'mn04', '--checkpoint_path', d/'mn04_as.pt', '--audio_path', d/'clip.wav')
    assert r.returncode != 0
    one_sentence(r.stderr, 'mn04 gives no framewise output')

def test_export_onnx(d, tmp_path):
    import onnxruntime as ort
    r = cli('audioset_export', '--checkpoint_path', d/'mn04_as.pt', '--model_type', 'mn04_DecisionLevel', '--output',
            tmp_path/'mn04.onnx', timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'matches torch within' in r.stdout
    s = ort.InferenceSession(str(tmp_path/'mn04.onnx'), providers=['CPUExecutionProvider'])
    x = sf.read(d/'clip.wav', dtype='float32')[0][None, :int(2.37*SR)]  # a length the trace did not see
    got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {'waveform': x})))
    with torch.no_grad(): want = _model(d, 'mn04_DecisionLevel')(torch.from_numpy(x))
    assert set(got) == {'clipwise_output', 'embedding', 'framewise_output'}
    for k in got: np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-4, err_msg=k)
    assert s.get_modelmeta().custom_metadata_map['model_type'] == 'mn04_DecisionLevel'

def test_stream(d):
    "A file streamed through torch: threshold 0 puts every class on from the first hop to the end."
    code = 'from audioset_nb.stream import tag_cli; tag_cli()'
    r = subprocess.run([sys.executable, '-c', code, '--stream', d/'clip.wav', '--checkpoint_path', d/'mn04_as.pt',
                        '--model_type', 'mn04_DecisionLevel', '--labels', 'Speech', '--on_threshold', '0',
                        '--off_threshold', '0'], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in r.stdout.splitlines()]
    assert [(e['event'], e['label'], e['time']) for e in events] == [('start', 'Speech', 0.0), ('end', 'Speech', 3.0)]

def test_hear(d):
    from audioset_nb.hear import load_model, get_scene_embeddings, get_timestamp_embeddings
    m = load_model(str(d/'mn04_as.pt'), 'mn04')
    assert (m.sample_rate, m.scene_embedding_size, m.timestamp_embedding_size) == (48000, 384, 384)
    x = torch.from_numpy(np.stack([sf.read(d/'clip.wav', dtype='float32')[0][:2*SR]]*2))
    x48 = torch.from_numpy(np.stack([np.interp(np.arange(96000)/48000, np.arange(64000)/SR, v) for v in x.numpy()]))
    scene = get_scene_embeddings(x48.float(), m)
    emb, ts = get_timestamp_embeddings(x48.float(), m)
    assert scene.shape == (2, 384) and emb.shape == (2, 41, 384) and ts.shape == (2, 41)  # 0, 50, ..., 2000 ms
    assert torch.allclose(scene[0], scene[1]) and emb[0].std(0).mean() > 1e-4  # the steps differ over time

def test_hearvalidator(tmp_path):
    "hearvalidator's own checks on an mn04 checkpoint (TensorFlow stood in for, as tests/test_hear.py explains)."
    from audioset_nb.checkpoints import save_checkpoint
    (tmp_path/'tf'/'tensorflow').mkdir(parents=True)
    (tmp_path/'tf'/'tensorflow'/'__init__.py').write_text(
        'class Module: "Nothing is a TensorFlow module here."\n'
        'def device(name): raise RuntimeError("TensorFlow is not installed")\n')
    save_checkpoint(tmp_path/'mn04.pth', load_weights(build_model('mn04'), seeded_weights(KEYS['mn04'], 1)),
                    model_type='mn04')
    env = cli_env()
    env['PYTHONPATH'] += f':{tmp_path/"tf"}'
    r = subprocess.run([sys.executable, '-m', 'hearvalidator.validate', 'audioset_nb.hear', '--model',
                        str(tmp_path/'mn04.pth'), '--device', 'cpu'], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and 'Looks good!' in r.stdout, r.stdout + r.stderr
    assert 'Received embedding of shape: torch.Size([16, 41, 384])' in r.stdout  # 16 sounds of 2 s, every 50 ms

def test_finetune(tmp_path):
    "EfficientAT's body under a new classifier (its whole MLP head): trained from the checkpoint, then tagging with it."
    from audioset_nb.scenes import make_sound_folder
    from audioset_nb.checkpoints import load_checkpoint
    from audioset_nb.inference import load_tagger, tag
    folder = make_sound_folder(tmp_path/'sounds', per_class=3, seed=1)
    pretrained = seeded_weights(KEYS['mn04'], 1)
    torch.save(pretrained, tmp_path/'mn04_as.pt')
    p = cli('audioset_finetune', '--data', folder, '--workspace', tmp_path/'ws', '--model_type', 'mn04',
            '--pretrained_checkpoint_path', tmp_path/'mn04_as.pt', '--clip_seconds', 1, '--epochs', 1,
            '--warmup_epochs', 0, '--keep', 'last', '--batch_size', 4, '--no_progress', timeout=600)
    assert p.returncode == 0, p.stderr
    line = json.loads(p.stdout.splitlines()[-1])
    ck = load_checkpoint(line['checkpoint'])
    assert ck['model_type'] == 'mn04' and ck['model']['classifier.5.weight'].shape[0] == len(ck['labels'])
    w, w0 = ck['model']['features.1.block.0.0.weight'], pretrained['features.1.block.0.0.weight']
    assert not torch.equal(w, w0) and (w - w0).abs().max() < 0.1*w0.abs().max()  # trained, from the checkpoint
    t = tag(load_tagger(line['checkpoint']), next(folder.rglob('*.wav')))
    assert t.clipwise.shape == (len(ck['labels']),) and abs(t.clipwise.sum() - 1) < 1e-4  # single-label: softmax

def test_benchmark_runs_tiny(tmp_path):
    out = tmp_path/'mn.json'
    r = subprocess.run([sys.executable, 'benchmarks/mobilenet.py', '--models', 'mn04', 'Cnn6', '--batch', '1',
                        '--seconds', '1', '--reps', '1', '--out', out], cwd=Path(__file__).parents[1],
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res['versions']['torch'] and res['date'] and res['device']
    rows = {x['model']: x for x in res['results']}
    assert rows['mn04']['params'] == 983_599 and rows['Cnn6']['cpu_ratio_vs_last'] == 1.0
    assert rows['mn04']['cpu_s_per_clip'] > 0

def test_panns_sound_event_detection(d):
    "Before: panns_inference's SoundEventDetection refused an EfficientAT mn checkpoint (it has no framewise output)."
    from audioset_nb.panns_compat import SoundEventDetection
    x = sf.read(d/'clip.wav', dtype='float32')[0]
    sed = SoundEventDetection(checkpoint_path=d/'mn04_as.pt', device='cpu')
    got = sed.inference(x[None])
    with torch.no_grad(): want = _model(d, 'mn04_DecisionLevel')(torch.from_numpy(x)[None])['framewise_output']
    assert got.shape == (1, 301, 527)  # 3 s at 100 frames a second, plus one
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert np.abs(got[0, :50] - got[0, -50:]).max() > 1e-3  # noise and tone score differently

def test_finetune_specaugment_reaches_mn():
    "Before: fine-tuning's SpecAugment (sized by `scale_specaug`) found no `spec_augmenter` on an mn model: no masks."
    from audioset_nb.finetune import Transfer, scale_specaug
    torch.manual_seed(0)
    model = scale_specaug(Transfer('mn04', 3), SR)  # as fine-tuning builds it for 1-s crops
    x = 0.1*torch.randn(4, SR)
    spec = model.base.logmel(x)  # (B, 1, mel, T), unmasked
    seen = []
    model.base.features.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    model.train()(x)
    masked = (seen[0] == 0) & (spec != 0)
    assert masked.any() and torch.equal(seen[0][~masked], spec[~masked])  # only stripes changed, to zeros
    assert masked[:, 0].all(1).any() and masked[:, 0].all(2).any()  # whole time steps and whole mel bins: stripes
    model.eval()(x)
    assert torch.equal(seen[1], spec)  # no masks at evaluation
