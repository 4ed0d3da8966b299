"The model zoo: every model builds and runs, state-dict names stay the published checkpoints', checkpoint I/O is safe."
import functools, hashlib, http.server, io, json, os, threading, zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from audioset_nb.models import *
from audioset_nb.checkpoints import *
from audioset_nb.fileio import default_cache_dir
from audioset_nb.fastpath import FusedConvBlock, for_inference

SNAPSHOT = Path(__file__).parent/'snapshots'/'models_state_dict.json'
PAPER = {'Cnn6': (4_837_455, 21.99e9), 'Cnn10': (5_219_279, 28.17e9), 'Cnn14': (80_753_615, 42.22e9),
         'ResNet38': (73_783_247, 48.96e9), 'MobileNetV1': (4_796_303, 3.61e9),
         'Wavegram_Logmel_Cnn14': (81_065_487, 53.51e9)}
NAMES = [n for n in MODELS if n not in ('Cnn13', 'Cnn13_specaug')]

def key_shapes(model): return {k: list(v.shape) for k, v in model.state_dict().items()}

# ---------------------------------------------------------------- models
@pytest.mark.parametrize('name', NAMES)
def test_every_model_runs(name):
    m = build_model(name, classes_num=7)
    sr = m.config['sample_rate']
    with torch.no_grad(): out = m.eval()(torch.randn(2, sr)*0.1)
    assert out['clipwise_output'].shape == (2, 7)
    assert ((out['clipwise_output'] >= 0) & (out['clipwise_output'] <= 1)).all()
    assert out['embedding'].shape[0] == 2 and out['embedding'].dim() == 2
    frames = sr//m.config['hop_size'] + 1
    assert ('framewise_output' in out) == ('DecisionLevel' in name)
    if 'DecisionLevel' in name: assert out['framewise_output'].shape == (2, frames, 7)
    load_weights(m, {'model': m.state_dict()})  # strict, through our name/shape check

# ---------------------------------------------------------------- the fast CPU inference path
def _random_bn_stats(model):
    "Non-trivial BatchNorm statistics, so that folding them into the convolutions is really tested."
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g)*0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g)*1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g)*0.1)
    return model.eval()

def _agree(out, ref):
    for k in ref:
        tol = 1e-4 if k.endswith('_output') else 1e-4*ref[k].abs().max().item()
        assert (out[k] - ref[k]).abs().max().item() < tol, k

@pytest.mark.parametrize('name,batch,seconds', [('Cnn14', 5, 10.), ('Cnn14', 1, 10.), ('Cnn10', 2, 3.3),
                                                ('Cnn6', 2, 3.3),
                                                ('Cnn14_DecisionLevelAtt', 1, 2.1), ('Wavegram_Logmel_Cnn14', 2, 1.7),
                                                ('Cnn14_16k', 1, 1.), ('Cnn6_mini_DecisionLevelMax', 3, 2.)])
def test_for_inference_agrees_with_the_reference_path(name, batch, seconds):
    torch.manual_seed(0)
    ref_model = _random_bn_stats(build_model(name, classes_num=11, fast_stft=False))
    sr = ref_model.config['sample_rate']
    x = torch.from_numpy(np.stack([demo_signal(seconds, sr, seed=i) for i in range(batch)]))
    with torch.no_grad(): ref = ref_model(x)
    fast = for_inference(build_model(name, classes_num=11))
    fast.load_state_dict(ref_model.state_dict())
    assert not any(isinstance(m, (ConvBlock, ConvBlock5x5)) for m in fast.modules())  # every block was swapped
    blocks = [m for m in fast.modules() if isinstance(m, FusedConvBlock)]
    calls = []
    for b in blocks:
        for conv in (b.conv1, getattr(b, 'conv2', None)):
            if conv is not None: conv.register_forward_hook(lambda *a: calls.append(1))
    with torch.inference_mode(): out = fast(x)
    _agree(out, ref)
    assert blocks and not calls  # every block took the fast path, none ran its Conv2d modules
    assert all(b.prepared for b in blocks)

def test_compiled_fast_path_agrees():
    "`compile=True` runs the fused blocks under torch.compile and gives the same outputs."
    torch.manual_seed(0)
    ref_model = _random_bn_stats(build_model('Cnn6_mini', classes_num=4, fast_stft=False))
    x = torch.from_numpy(np.stack([demo_signal(1.5, ref_model.config['sample_rate'], seed=i) for i in range(2)]))
    with torch.no_grad(): ref = ref_model(x)
    fast = build_model('Cnn6_mini', classes_num=4)
    fast.load_state_dict(ref_model.state_dict())
    compiled = for_inference(fast, compile=True)
    with torch.inference_mode(): _agree(compiled(x), ref)
    blocks = [b for b in fast.modules() if isinstance(b, FusedConvBlock)]
    assert blocks and all(b.prepared for b in blocks)  # the fast path ran, preparing its weights

def test_cnn14_fast_path_uses_each_algorithm(monkeypatch):
    "Block 1 starts with im2col, blocks 4-5 use Winograd, block 6 switches from im2col to Winograd above 256 positions."
    import audioset_nb.fastpath as M
    used = []
    for f in ('winograd_conv3x3', 'im2col_conv'):
        monkeypatch.setattr(M, f, (lambda g, n: lambda *a, **k: (used.append(n), g(*a, **k))[1])(getattr(M, f), f))
    m = for_inference(_random_bn_stats(build_model('Cnn14')))
    counts = []
    for batch in (1, 5):
        used.clear()
        with torch.inference_mode(): m(torch.zeros(batch, 32000*10))
        counts.append((used.count('im2col_conv'), used.count('winograd_conv3x3')))
    assert counts == [(3, 4), (1, 6)]  # 62 positions per clip in block 6: 62 ≤ 256 < 310

def test_fast_path_follows_new_weights_and_steps_aside():
    torch.manual_seed(0)
    a, b = _random_bn_stats(build_model('Cnn10', classes_num=5)), build_model('Cnn10', classes_num=5).eval()
    x = torch.from_numpy(demo_signal(2.))[None]
    fast = for_inference(build_model('Cnn10', classes_num=5))
    fast.load_state_dict(a.state_dict())
    with torch.inference_mode(): fast(x)
    fast.load_state_dict(b.state_dict())              # weights loaded after the first call are used
    with torch.no_grad(): ref = b(x)
    with torch.inference_mode(): _agree(fast(x), ref)
    with torch.no_grad(): fast.conv_block3.bn2.running_var.mul_(4)  # in-place changes, once the blocks are refreshed
    for_inference(fast)
    plain = build_model('Cnn10', classes_num=5).eval()
    plain.load_state_dict(fast.state_dict())
    with torch.no_grad(): ref = plain(x)
    with torch.inference_mode(): _agree(fast(x), ref)
    out = fast(x)                                     # gradients on: the plain modules, differentiable
    assert out['clipwise_output'].requires_grad
    out['clipwise_output'].sum().backward()
    assert fast.conv_block2.conv1.weight.grad is not None
    fast.train()                                      # training: the plain block, batch statistics and all
    plain.train().to(memory_format=torch.channels_last)
    plain.load_state_dict(fast.state_dict())  # same layouts, same dropout masks
    with torch.no_grad():
        a = (torch.manual_seed(0), fast(x))[1]
        _agree(a, (torch.manual_seed(0), plain(x))[1])
    assert not any(b.prepared for b in fast.modules() if isinstance(b, FusedConvBlock))

def test_training_blocks_have_no_fast_path_state_and_names_stay():
    "The fast path lives in its fused blocks: a ConvBlock has no trace of it; `for_inference` keeps the names."
    blocks = [ConvBlock(1, 8), ConvBlock5x5(1, 8)]
    fresh = [set(vars(b)) for b in blocks]
    for b in blocks:
        b(torch.randn(2, 1, 4, 4))
        with torch.inference_mode(): b.eval()(torch.randn(1, 1, 4, 4))
    assert [set(vars(b)) for b in blocks] == fresh and not any(hasattr(b, 'fast_cpu') for b in blocks)
    for name in ('Cnn14', 'Cnn6'):
        ref = build_model(name)
        fast = for_inference(for_inference(build_model(name)))  # twice: idempotent
        assert type(fast.conv_block1) is FusedConvBlock and list(fast.state_dict()) == list(ref.state_dict())
        assert key_shapes(fast) == key_shapes(ref)
        fast.load_state_dict(ref.state_dict())  # strict, in the published format
        from audioset_nb.checkpoints import load_weights
        load_weights(fast, {'model': ref.state_dict()})  # and through its name/shape check

@pytest.mark.parametrize('name', ['Wavegram_Logmel_Cnn14', 'Cnn14_DecisionLevelAtt'])
def test_any_clip_length(name):
    m = build_model(name, classes_num=3).eval()
    for n in (33_000, 45_123):
        with torch.no_grad(): out = m(torch.randn(1, n)*0.1)
        assert out['clipwise_output'].shape == (1, 3)
        if 'framewise_output' in out: assert out['framewise_output'].shape == (1, n//320 + 1, 3)

def test_aliases_and_unknown_names():
    assert type(build_model('Cnn13')) is Cnn14 and type(build_model('Cnn13_specaug')) is Cnn14
    with pytest.raises(ValueError, match=r"Unknown model_type 'cnn14'; choose one of: Cnn6, Cnn10, Cnn14,"):
        build_model('cnn14')

def test_fixed_rate_models_refuse_other_front_ends():
    assert build_model('Cnn14_8k').config['sample_rate'] == 8000
    with pytest.raises(ValueError, match='Cnn14_8k was trained with'): build_model('Cnn14_8k', window_size=1024)

def test_state_dict_snapshot():
    "Key names and shapes of the six paper models are those checked in (the published checkpoints' layout)."
    got = {n: key_shapes(build_model(n)) for n in PAPER}
    if os.environ.get('UPDATE_SNAPSHOTS'): SNAPSHOT.write_text(json.dumps(got, indent=1))
    want = json.loads(SNAPSHOT.read_text())
    for n in PAPER: assert got[n] == want[n], n
    assert want['Cnn14']['spectrogram_extractor.stft.conv_real.weight'] == [513, 1, 1024]
    assert want['Cnn14']['logmel_extractor.melW'] == [513, 64]

def test_complexity_table():
    "Parameters of the six paper models; operations of two (the notebook checks all six)."
    for n, (params, flops) in PAPER.items():
        m = build_model(n)
        assert count_params(m) == params, n
        if n in ('Cnn14', 'MobileNetV1'): assert abs(count_flops(m) - flops) < 0.01*flops, n
    assert m.fast_stft is True  # count_flops restores the fast path it switched off

def test_mixup_halves_the_batch_in_training_only():
    m = build_model('Cnn6', classes_num=3)
    x, lam = torch.randn(4, 32000), torch.tensor([0.7, 0.3, 0.5, 0.5])
    assert m.train()(x, lam)['clipwise_output'].shape == (2, 3)
    with torch.no_grad(): assert m.eval()(x, lam)['clipwise_output'].shape == (4, 3)
    y = torch.eye(4)
    assert torch.allclose(do_mixup(y, lam), torch.tensor([[.7, .3, 0, 0], [0, 0, .5, .5]]))

def test_short_clips_in_training_fail_clearly():
    with pytest.raises(ValueError, match='training needs clips longer than 64 frames; got 51'):
        build_model('Cnn6').train()(torch.randn(2, 16000))
    assert build_model('Cnn14_no_specaug').train()(torch.randn(2, 16000))['clipwise_output'].shape == (2, 527)

def test_specaugment_only_in_training():
    m = build_model('Cnn6')
    x = torch.from_numpy(demo_signal(4.))[None].repeat(2, 1)
    with torch.no_grad():
        aug = m.train().spec_input(x)
        plain = m.eval().spec_input(x)
    assert torch.equal(m.eval().spec_input(x), plain)
    assert (aug == 0).float().mean() > (plain == 0).float().mean()  # stripes were zeroed

# ---------------------------------------------------------------- front end
@pytest.mark.parametrize('name', ['Cnn14', 'Cnn14_16k', 'Wavegram_Logmel_Cnn14', 'Cnn14_DecisionLevelAtt'])
def test_fast_and_conv_stft_models_agree(name):
    torch.manual_seed(0)
    m = build_model(name).eval()
    x = torch.from_numpy(demo_signal(2., sample_rate=m.config['sample_rate']))[None]
    with torch.no_grad():
        m.fast_stft = True
        fast = m(x)
        m.fast_stft = False
        conv = m(x)
    for k in fast: torch.testing.assert_close(fast[k], conv[k], rtol=1e-4, atol=1e-5)

@pytest.mark.parametrize('sr,win,hop,mels,fmax', [(32000, 1024, 320, 64, 14000), (16000, 512, 160, 64, 8000),
                                                  (32000, 1024, 320, 128, 14000)])
def test_logmel_matches_librosa(sr, win, hop, mels, fmax):
    librosa = pytest.importorskip('librosa')
    y = demo_signal(3., sample_rate=sr, seed=1)
    fe = LogmelFrontend(sample_rate=sr, window_size=win, hop_size=hop, mel_bins=mels, fmin=50, fmax=fmax).eval()
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y.astype(np.float64), sr=sr, n_fft=win, hop_length=hop,
            window='hann', center=True, pad_mode='reflect', power=2.0, n_mels=mels, fmin=50, fmax=fmax, htk=False,
            norm='slaney'), ref=1.0, amin=1e-10, top_db=None).T
    loud = ref > -70
    for fast in (True, False):
        fe.fast_stft = fast
        with torch.no_grad(): got = fe(torch.from_numpy(y)[None])[0, 0].numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref)[loud].max() < 1e-4*np.abs(ref).max()
        assert np.abs(got - ref).max() < 0.1

# ---------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path):
    m = build_model('MobileNetV1', classes_num=5).eval()
    sampler = {'indexes_per_class': [np.arange(4, dtype=np.int32), np.arange(2)], 'queue': [np.int64(3), 1],
               'random_state': np.random.RandomState(1).get_state(), 'mask': np.array([True, False])}
    p = save_checkpoint(tmp_path/'sub'/'m.pth', m, iteration=7, sampler=sampler)
    assert [f.name for f in p.parent.iterdir()] == ['m.pth']  # no temporary file left behind
    ck = load_checkpoint(p)
    assert ck['iteration'] == 7 and np.array_equal(ck['sampler']['indexes_per_class'][0], np.arange(4))
    assert ck['sampler']['random_state'][0] == 'MT19937'
    x = torch.randn(2, 32000)
    for source in (p, ck, ck['model'], {f'module.{k}': v for k, v in ck['model'].items()}):
        m2 = load_weights(build_model('MobileNetV1', classes_num=5).eval(), source)
        with torch.no_grad(): assert torch.equal(m2(x)['clipwise_output'], m(x)['clipwise_output'])

def test_loads_numpy1_pickles(tmp_path):
    "Published checkpoints were pickled by numpy 1 (numpy.core.multiarray), in torch's legacy format."
    buf = io.BytesIO()
    torch.save({'iteration': 1, 'model': {'w': torch.ones(3)}, 'sampler': {'q': [np.arange(3)], 's': np.float64(2.5)}},
               buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue().replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
    assert b'cnumpy.core.multiarray\n_reconstruct' in data
    (tmp_path/'old.pth').write_bytes(data)
    ck = load_checkpoint(tmp_path/'old.pth')
    assert np.array_equal(ck['sampler']['q'][0], np.arange(3)) and ck['sampler']['s'] == 2.5

class _Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def test_refuses_code_running_pickles(tmp_path):
    marker = tmp_path/'pwned'
    torch.save({'model': {}, 'x': _Evil(marker)}, tmp_path/'evil.pth')
    with pytest.raises(ValueError) as e: load_checkpoint(tmp_path/'evil.pth')
    msg = str(e.value)
    assert msg.startswith(f'Refusing to load {tmp_path/"evil.pth"}') and 'system' in msg and '\n' not in msg
    assert not marker.exists()

def test_unreadable_and_missing_checkpoints(tmp_path):
    (tmp_path/'junk.pth').write_bytes(b'not a checkpoint at all')
    with pytest.raises(ValueError, match='junk.pth is not a readable PyTorch checkpoint'):
        load_checkpoint(tmp_path/'junk.pth')
    with pytest.raises(FileNotFoundError, match='No checkpoint at'): load_checkpoint(tmp_path/'nope.pth')

def test_wrong_checkpoint_is_one_sentence(tmp_path):
    p = save_checkpoint(tmp_path/'cnn14_16k.pth', build_model('Cnn14_16k'))
    with pytest.raises(ValueError) as e: load_weights(build_model('Cnn14'), p)
    msg = str(e.value)
    assert 'cnn14_16k.pth does not fit Cnn14(sample_rate=32000' in msg and '\n' not in msg
    assert 'spectrogram_extractor.stft.conv_real.weight is (257, 1, 512) in the checkpoint but (513, 1, 1024)' in msg
    p = save_checkpoint(tmp_path/'cnn6_10.pth', build_model('Cnn6', classes_num=10))
    with pytest.raises(ValueError,
                       match=r'fc_audioset.weight is \(10, 512\) in the checkpoint but \(527, 512\) in the model'):
        load_weights(build_model('Cnn6'), p)
    said = r'does not fit Cnn10\(.*conv_block1.conv1.weight is \(64, 1, 5, 5\) in the checkpoint.*and 4 more'
    with pytest.raises(ValueError, match=said):
        load_weights(build_model('Cnn10'), {'model': build_model('Cnn6').state_dict()})
    with pytest.raises(ValueError, match=r'does not fit Cnn6\(.*: \d+ weights are missing from the checkpoint \(e.g. '):
        load_weights(build_model('Cnn6'), {})

# ---------------------------------------------------------------- fetching
class _Handler(http.server.BaseHTTPRequestHandler):
    "Serves `files`; honours Range unless `no_range`; cuts the first response of `cut` short."
    files, requests, cut, no_range = {}, [], set(), False
    def log_message(self, *a): pass
    def do_GET(self):
        name = self.path.lstrip('/').split('?')[0]
        type(self).requests.append((name, self.headers.get('Range')))
        if name not in self.files: return self.send_error(404)
        data, start = self.files[name], 0
        rng = self.headers.get('Range')
        if rng and not self.no_range:
            start = int(rng.split('=')[1].rstrip('-'))
            if start >= len(data): return self.send_error(416)
            self.send_response(206)
            self.send_header('Content-Range', f'bytes {start}-{len(data)-1}/{len(data)}')
        else: self.send_response(200)
        self.send_header('Content-Length', str(len(data) - start))
        self.end_headers()
        if name in self.cut:
            self.cut.discard(name)
            self.wfile.write(data[start:start + len(data)//3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(data[start:])

@pytest.fixture
def server():
    handler = type('H', (_Handler,), {'files': {}, 'requests': [], 'cut': set(), 'no_range': False})
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield handler, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()
    srv.server_close()

def test_fetch_resumes_an_interrupted_download(tmp_path, server):
    handler, base = server
    data = os.urandom(300_000)
    md5 = hashlib.md5(data).hexdigest()
    handler.files['Cnn6_mAP=0.343.pth'] = data
    handler.cut.add('Cnn6_mAP=0.343.pth')
    url = f'{base}/Cnn6_mAP=0.343.pth'
    part = tmp_path/'Cnn6_mAP=0.343.pth.part'
    with pytest.raises(ConnectionError, match='kept breaking off; run again to resume from'):  # one try: cut, kept
        fetch_checkpoint('Cnn6_mAP=0.343.pth', cache_dir=tmp_path, url=url, md5=md5, tries=1)
    assert 0 < part.stat().st_size < len(data) and not (tmp_path/'Cnn6_mAP=0.343.pth').exists()
    got = fetch_checkpoint('Cnn6_mAP=0.343.pth', cache_dir=tmp_path, url=url, md5=md5)
    assert got.read_bytes() == data and not part.exists()
    assert handler.requests[-1] == ('Cnn6_mAP=0.343.pth', f'bytes={len(data)//3}-')
    n = len(handler.requests)
    assert fetch_checkpoint('Cnn6_mAP=0.343.pth', cache_dir=tmp_path, url=url, md5=md5) == got
    assert len(handler.requests) == n  # cached: no request

def test_fetch_restarts_when_server_ignores_range(tmp_path, server):
    handler, base = server
    handler.no_range = True
    data = os.urandom(50_000)
    handler.files['a.pth'] = data
    (tmp_path/'a.pth.part').write_bytes(b'stale bytes')
    got = fetch_checkpoint('a.pth', cache_dir=tmp_path, url=f'{base}/a.pth', md5=hashlib.md5(data).hexdigest())
    assert got.read_bytes() == data

def test_fetch_verifies_the_checksum(tmp_path, server):
    handler, base = server
    handler.files['Cnn14_mAP=0.431.pth'] = b'corrupted'
    with pytest.raises(ValueError, match='has MD5 .*, not 541141fa2ee191a88f24a3219fff024e; it was deleted'):
        fetch_checkpoint('Cnn14_mAP=0.431.pth', cache_dir=tmp_path, url=f'{base}/Cnn14_mAP=0.431.pth')
    assert list(tmp_path.iterdir()) == []

def test_fetch_offline_and_bad_names(tmp_path, server):
    handler, base = server
    with pytest.raises(ConnectionError, match='Could not download .*/missing.pth: HTTP 404'):
        fetch_checkpoint('missing.pth', cache_dir=tmp_path, url=f'{base}/missing.pth', md5='0'*32)
    with pytest.raises(ConnectionError,
                       match='Could not reach http://127.0.0.1:9/x .*put the file at .*Cnn10_mAP=0.380.pth yourself'):
        fetch_checkpoint('Cnn10_mAP=0.380.pth', cache_dir=tmp_path, url='http://127.0.0.1:9/x', timeout=5)
    for bad in ('../x.pth', '.hidden.pth', 'a/b.pth', 'x.exe'):
        with pytest.raises(ValueError, match='is not a checkpoint file name'): fetch_checkpoint(bad, cache_dir=tmp_path)

def test_fetch_default_url_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('AUDIOSET_NB_CACHE', str(tmp_path/'c'))
    assert default_cache_dir() == tmp_path/'c'
    seen = []
    monkeypatch.setattr('audioset_nb.fileio._fetch_once', lambda url, part,
                        timeout: seen.append(url) or part.write_bytes(b'x') or True)
    with pytest.warns(UserWarning, match='No known MD5'): p = fetch_checkpoint('Cnn14_16k_mAP=0.438.pth')
    assert p == tmp_path/'c'/'Cnn14_16k_mAP=0.438.pth'
    assert seen == ['https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1']
