"Inference under faults, through the CLIs: code-running pickles, non-finite audio, one bad file among good ones."
import csv, os, pickle
from functools import partial
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch
from audioset_nb.inference import load_tagger, sed, find_events
from audioset_nb.models import build_model, save_checkpoint
from conftest import cli, one_sentence, tone

SR = 32000
run = partial(cli, timeout=300)

class _Evil:
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

@pytest.fixture(scope='module')
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp('faults')
    torch.manual_seed(0)
    save_checkpoint(d/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    save_checkpoint(d/'sed.pth', build_model('Cnn14_DecisionLevelMax'), model_type='Cnn14_DecisionLevelMax')
    sf.write(d/'tone.wav', tone(440, 2, SR), SR)
    return d

# ---------------------------------------------------------------------------------------------------- unsafe pickles
@pytest.mark.parametrize('protocol', [0, 2])
def test_a_code_running_pickle_is_refused_without_torchs_unsafe_advice(d, protocol):
    "A protocol-0 pickle made torch's WeightsUnpickler fail before naming a global; its advice (weights_only=False) leaked."
    marker, p = d/f'pwned{protocol}', d/f'evil{protocol}.pth'
    with open(p, 'wb') as f: pickle.dump({'model': {}, 'x': _Evil(marker)}, f, protocol=protocol)
    r = run('audioset_tag', '--checkpoint_path', p, '--audio_path', d/'tone.wav')
    assert r.returncode != 0 and not marker.exists()
    line = one_sentence(r.stderr, 'Refusing to load', str(p))
    assert 'weights_only' not in line and 'will likely succeed' not in line, line
