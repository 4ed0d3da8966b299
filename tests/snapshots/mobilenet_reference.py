"""Reference outputs of EfficientAT's own mn04/mn10 (commit a425fdc) for tests/test_mobilenet.py.

To rerun: `git archive a425fdc models helpers metadata | tar -x -C /tmp/mn/efficientat` in a clone of
fschmid56/EfficientAT; `python -m venv /tmp/mn-venv && /tmp/mn-venv/bin/pip install torch==2.13.0 numpy` and, with
--no-deps, torchvision==0.28.0 and torchaudio==2.11.1 (only their pure-Python files are loaded); then, from
/tmp/mn/efficientat, `/tmp/mn-venv/bin/python <this file>` and copy /tmp/mn/mobilenet_* here."""
import importlib.util, json, os, sys, types
import numpy as np, torch
ROOT = '/tmp/mn/efficientat'
SITE = '/tmp/mn-venv/lib/python3.11/site-packages'

def load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m

# torchvision/torchaudio wheels for torch 2.13 do not load here (C extensions); only pure-Python pieces are used
tv, tvops, tvu = (types.ModuleType(n) for n in ('torchvision', 'torchvision.ops', 'torchvision.utils'))
tv.__path__, tvops.__path__ = [], []
tvu._log_api_usage_once = lambda *a, **k: None
tvu._make_ntuple = lambda x, n: tuple(x) if isinstance(x, (tuple, list)) else (x,)*n
sys.modules.update({'torchvision': tv, 'torchvision.ops': tvops, 'torchvision.utils': tvu})
load_file('torchvision.ops.misc', f'{SITE}/torchvision/ops/misc.py')
ta, tac = types.ModuleType('torchaudio'), types.ModuleType('torchaudio.compliance')
ta.__path__, tac.__path__ = [], []
sys.modules.update({'torchaudio': ta, 'torchaudio.compliance': tac})
ta.compliance = tac
tac.kaldi = load_file('torchaudio.compliance.kaldi', f'{SITE}/torchaudio/compliance/kaldi.py')
_stft = torch.stft
def stft(*a, return_complex=None, **k):  # torch 2.13 refuses return_complex=False; same numbers via view_as_real
    s = _stft(*a, return_complex=True, **k)
    return s if return_complex else torch.view_as_real(s)
torch.stft = stft
sys.path.insert(0, ROOT)
from models.mn.model import get_model
from models.preprocess import AugmentMelSTFT
from helpers.utils import NAME_TO_WIDTH

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mobilenet_weights import seeded_weights  # noqa: E402  (the test draws the same weights)

import contextlib, io
out, keys = {}, {}
g = torch.Generator().manual_seed(0)
t = torch.arange(32000)/32000
noise = 0.1*torch.randn(32000, generator=g)
x = torch.stack([noise, 0.3*torch.sin(2*np.pi*440*t) + 0.01*torch.randn(32000, generator=g)])
x = x[:, :31000]  # not a whole number of hops
mel = AugmentMelSTFT(n_mels=128, sr=32000, win_length=800, hopsize=320, freqm=0, timem=0).eval()
with torch.no_grad(): spec = mel(x)
out['input'], out['mel'] = x.numpy(), spec.numpy()
for name in ('mn04', 'mn10'):
    with contextlib.redirect_stdout(io.StringIO()): m = get_model(width_mult=NAME_TO_WIDTH(name))
    shapes = {k: list(v.shape) for k, v in m.state_dict().items()}
    keys[name] = shapes
    m.load_state_dict(seeded_weights(shapes, 1), strict=True)
    with torch.no_grad(): logits, feats = m.eval()(spec.unsqueeze(1))
    out[f'{name}_logits'], out[f'{name}_embedding'] = logits.numpy(), feats.numpy()
    print(name, sum(v.numel() for v in m.parameters()), logits.abs().max().item(), feats.abs().max().item())
np.savez_compressed('/tmp/mn/mobilenet_reference.npz', **out)
json.dump(keys, open('/tmp/mn/mobilenet_keys.json', 'w'), indent=0)
