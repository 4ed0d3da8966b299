"panns_inference's documented example runs unchanged (but for the import) against audioset_nb.panns_compat, offline."
import hashlib, subprocess, sys, textwrap
import numpy as np, torch
from audioset_nb.models import build_model, demo_signal
from audioset_nb.audio import write_wav, load_audio
from audioset_nb.checkpoints import save_checkpoint
from conftest import cli_env, one_sentence

# panns_inference's README usage, as documented; only the import names this package
README = textwrap.dedent('''
    import librosa
    import audioset_nb.panns_compat as panns_inference
    from audioset_nb.panns_compat import AudioTagging, SoundEventDetection, labels

    audio_path = 'examples/R9_ZSCveAHg_7s.wav'
    (audio, _) = librosa.core.load(audio_path, sr=32000, mono=True)
    audio = audio[None, :]  # (batch_size, segment_samples)

    print('------ Audio tagging ------')
    at = AudioTagging(checkpoint_path=None, device='cuda')
    (clipwise_output, embedding) = at.inference(audio)

    print('------ Sound event detection ------')
    sed = SoundEventDetection(checkpoint_path=None, device='cuda')
    framewise_output = sed.inference(audio)
    ''')
SAVE = ("import numpy as np; np.savez('out.npz', clipwise=clipwise_output, embedding=embedding, "
        "framewise=framewise_output, n=len(labels))")

def _digests(folder):
    return {p.relative_to(folder): hashlib.md5(p.read_bytes()).hexdigest() for p in folder.rglob('*') if p.is_file()}

def test_readme_example(tmp_path):
    torch.manual_seed(0)
    cache, home, work = tmp_path/'cache', tmp_path/'home', tmp_path/'work'
    for d in (cache, home, work/'examples'): d.mkdir(parents=True)
    cnn14 = build_model('Cnn14').eval()
    torch.save({'model': cnn14.state_dict()}, cache/'Cnn14_mAP=0.431.pth')  # the published format
    sed = build_model('Cnn14_DecisionLevelMax').eval()
    torch.save({'model': sed.state_dict()}, cache/'Cnn14_DecisionLevelMax_mAP=0.385.pth')
    # stereo 44.1 kHz, as YouTube audio
    write_wav(work/'examples/R9_ZSCveAHg_7s.wav', np.stack([demo_signal(7., sample_rate=44100)]*2), 44100)
    before = _digests(cache)
    env = cli_env({'AUDIOSET_NB_CACHE': str(cache), 'HOME': str(home), 'CUDA_VISIBLE_DEVICES': ''})
    r = subprocess.run([sys.executable, '-c', README + SAVE], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    out = np.load(work/'out.npz')
    assert out['n'] == 527 and out['clipwise'].shape == (1, 527) and out['embedding'].shape == (1, 2048)
    assert out['framewise'].shape == (1, 701, 527)  # 7 s at 100 frames a second, plus one
    import librosa
    audio = torch.from_numpy(librosa.load(work/'examples/R9_ZSCveAHg_7s.wav', sr=32000, mono=True)[0][None])
    with torch.no_grad(): want, want_sed = cnn14(audio), sed(audio)
    np.testing.assert_allclose(out['clipwise'], want['clipwise_output'].numpy(), atol=1e-4)
    np.testing.assert_allclose(out['embedding'], want['embedding'].numpy(), atol=1e-4)
    np.testing.assert_allclose(out['framewise'], want_sed['framewise_output'].numpy(), atol=1e-4)
    assert _digests(cache) == before and not any(home.iterdir())  # nothing downloaded, written or overwritten

def test_offline_without_checkpoint(tmp_path):
    env = cli_env({'AUDIOSET_NB_CACHE': str(tmp_path), 'HOME': str(tmp_path)})
    code = 'from audioset_nb.panns_compat import AudioTagging, labels; assert len(labels) == 527; AudioTagging()'
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()[-1]
    assert 'Cnn14_mAP=0.431.pth is not in the cache' in err and 'pass checkpoint_path=' in err, r.stderr
    assert not list(tmp_path.rglob('*.pth'))

def test_small_user_checkpoint_is_kept(tmp_path):
    # panns_inference replaces a checkpoint under 300 MB with a download; a fine-tuned Cnn6 is ~20 MB
    from audioset_nb.panns_compat import AudioTagging
    save_checkpoint(tmp_path/'mine.pth', build_model('Cnn6', classes_num=3), labels=['a', 'b', 'c'], model_type='Cnn6')
    before = _digests(tmp_path)
    at = AudioTagging(checkpoint_path=tmp_path/'mine.pth', device='cuda')
    clip, emb = at.inference(np.zeros((2, 32000), np.float32))
    assert (clip.shape, emb.shape, at.labels) == ((2, 3), (2, 512), ['a', 'b', 'c'])
    assert _digests(tmp_path) == before

def test_bad_audio_is_refused_at_the_door(tmp_path):
    "Before: a 3-D or 10-sample array failed inside a convolution, and NaN audio gave NaN scores without a word."
    import pytest
    from audioset_nb.panns_compat import AudioTagging, SoundEventDetection
    save_checkpoint(tmp_path/'sed.pth', build_model('Cnn6_DecisionLevelMax', classes_num=2), labels=['a', 'b'],
                    model_type='Cnn6_DecisionLevelMax')
    at, sed = (cls(checkpoint_path=tmp_path/'sed.pth', device='cpu') for cls in (AudioTagging, SoundEventDetection))
    x = np.zeros((2, 32000), np.float32)
    nan = x.copy()
    nan[1, 5:9] = np.nan
    for model in (at, sed):
        with pytest.raises(ValueError, match=r'audio of shape \(1, 2, 32000\) is not a clip or a batch; pass'):
            model.inference(x[None])
        with pytest.raises(ValueError, match='audio of 10 samples is too short for the model; pass at least 10240'):
            model.inference(x[:, :10])
        with pytest.raises(ValueError, match='audio holds 4 NaN or infinite samples; it was not used'):
            model.inference(torch.from_numpy(nan))
