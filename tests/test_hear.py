"""The HEAR module passes hearvalidator (PyPI, 2021.0.2).

hearvalidator imports tensorflow at its top only to tell TensorFlow models from torch ones (`isinstance(model,
tf.Module)`, `tf.device`). Installing TensorFlow for that (~600 MB, with its own numpy and protobuf pins) is not
worth it, so hearvalidator is installed with --no-deps (tools/env.sh) and this test puts a stand-in `tensorflow` with
those two names on the validator's path; every check it runs on a torch model is its own."""
import subprocess, sys, textwrap
import torch
from audioset_nb.models import build_model
from audioset_nb.checkpoints import save_checkpoint
from conftest import cli_env

TF_STANDIN = textwrap.dedent('''
    class Module: "Nothing is a TensorFlow module here."
    def device(name): raise RuntimeError('TensorFlow is not installed')
    ''')

def _validate(tmp_path, ckpt):
    (tmp_path/'tf'/'tensorflow').mkdir(parents=True, exist_ok=True)
    (tmp_path/'tf'/'tensorflow'/'__init__.py').write_text(TF_STANDIN)
    env = cli_env()
    env['PYTHONPATH'] += f':{tmp_path/"tf"}'
    args = ['-m', 'hearvalidator.validate', 'audioset_nb.hear', '--model', str(ckpt), '--device', 'cpu']
    return subprocess.run([sys.executable, *args],
                          env=env, capture_output=True, text=True, timeout=600)

def test_hearvalidator(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    r = _validate(tmp_path, tmp_path/'cnn6.pth')
    assert r.returncode == 0 and 'Looks good!' in r.stdout, r.stdout + r.stderr
    assert 'Interval between timestamps is 50.0ms' in r.stdout
    assert 'Received embedding of shape: torch.Size([16, 41, 512])' in r.stdout  # 16 sounds of 2 s: 0, 50, ..., 2000 ms

def test_hearvalidator_16k_model(tmp_path):
    "Cnn14_16k runs at its own rate, which HEAR accepts; its scene embedding is Cnn14's 2048-d one."
    torch.manual_seed(0)
    save_checkpoint(tmp_path/'c16.pth', build_model('Cnn14_16k'), model_type='Cnn14_16k')
    r = _validate(tmp_path, tmp_path/'c16.pth')
    assert r.returncode == 0 and 'Looks good!' in r.stdout, r.stdout + r.stderr
    assert 'Model sample rate is: 16000' in r.stdout and 'torch.Size([8, 2048])' in r.stdout

def test_bad_batches_are_refused_at_the_door(tmp_path):
    "Before: an empty batch failed in torch.cat, a 1-D one with an IndexError, NaN gave NaN embeddings."
    import pytest
    from audioset_nb.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings
    model = HearModel(build_model('Cnn6'))
    nan = torch.zeros(2, 4800)
    nan[0, 7] = float('nan')
    for f in (get_scene_embeddings, get_timestamp_embeddings):
        for audio in (torch.zeros(0, 48000), torch.zeros(48000), torch.zeros(2, 0)):
            with pytest.raises(ValueError, match=rf'audio of shape \({", ".join(map(str, audio.shape))},?\) is not '
                                                 rf'a batch of sounds; pass \(n_sounds, n_samples\) at 48000 Hz'):
                f(audio, model)
        with pytest.raises(ValueError, match='audio holds 1 NaN or infinite samples; it was not used'):
            f(nan, model)
