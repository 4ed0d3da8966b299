"Inference under faults, through the CLIs: code-running pickles, non-finite audio, one bad file among good ones."
import csv, json, os, pickle, subprocess
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
    # small and fast
    save_checkpoint(d/'sed.pth', build_model('Cnn6_mini_DecisionLevelMax'), model_type='Cnn6_mini_DecisionLevelMax')
    sf.write(d/'tone.wav', tone(440, 2, SR), SR)
    return d

# ---------------------------------------------------------------------------------------------------- unsafe pickles
@pytest.mark.parametrize('protocol', [0, 2])
def test_a_code_running_pickle_is_refused_without_torchs_unsafe_advice(d, protocol):
    "A protocol-0 pickle made torch's WeightsUnpickler fail before naming a global; its weights_only=False tip showed."
    marker, p = d/f'pwned{protocol}', d/f'evil{protocol}.pth'
    with open(p, 'wb') as f: pickle.dump({'model': {}, 'x': _Evil(marker)}, f, protocol=protocol)
    r = run('audioset_tag', '--checkpoint_path', p, '--audio_path', d/'tone.wav')
    assert r.returncode != 0 and not marker.exists()
    line = one_sentence(r.stderr, 'Refusing to load', str(p))
    assert 'weights_only' not in line and 'will likely succeed' not in line, line

# ---------------------------------------------------------------------------------------------------- non-finite audio
def _nan_wav(path:Path, n_bad:int=100)->Path:
    x = tone(440, 2, SR).astype(np.float32)
    x[1000:1000 + n_bad] = np.nan
    x[5000] = np.inf
    sf.write(path, x, SR, subtype='FLOAT')  # float WAV keeps NaN as it is
    return path

def test_tagging_refuses_a_file_with_nan_samples_and_tags_the_others(d):
    "Today: `Speech: nan` and exit 0."
    bad = _nan_wav(d/'nan.wav')
    r = run('audioset_tag', '--checkpoint_path', d/'cnn6.pth', '--audio_path', bad, d/'tone.wav', '--top_k', 3)
    assert r.returncode == 1
    assert 'nan' not in r.stdout.lower().replace(str(bad).lower(), ''), r.stdout
    assert r.stdout.splitlines()[0].startswith(str(d/'tone.wav')) and len(r.stdout.splitlines()) == 4
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert 'Traceback' not in r.stderr and len(err) == 2, r.stderr
    assert err[0] == f'failed: {bad} holds 101 NaN or infinite samples; it was not used: repair or re-encode it.'
    assert '1 file(s) could not be processed' in err[1]
    r = run('audioset_tag', '--checkpoint_path', d/'cnn6.pth', '--audio_path', bad)
    assert r.returncode == 1
    one_sentence(r.stderr, str(bad), 'NaN or infinite')

# ---------------------------------------------------------------------------------------------------- one bad file
def test_sed_over_a_folder_with_a_10ms_file_and_a_nan_file_gives_the_others_their_events(d, tmp_path):
    "Today: the 10-ms file's figure ended the run in a traceback, and no events were written for the good files."
    folder, figs, out = tmp_path/'clips', tmp_path/'figs', tmp_path/'events.csv'
    folder.mkdir()
    sf.write(folder/'a_tone.wav', tone(440, 2, SR), SR)
    sf.write(folder/'b_short.wav', tone(440, 0.01, SR), SR)  # 10 ms: less than half an STFT window
    _nan_wav(folder/'c_nan.wav')
    sf.write(folder/'d_tone.wav', tone(880, 2, SR), SR)
    r = run('audioset_sed', '--checkpoint_path', d/'sed.pth', '--audio_path', folder, '--threshold', 0.3,
            '--output', out, '--figure_dir', figs)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 2 and err[0].startswith(f'failed: {folder/"c_nan.wav"} holds'), err
    assert 'could not be processed' in err[1], err
    tg = load_tagger(d/'sed.pth')
    want = [(str(folder/n), e.label, e.onset, e.offset) for n in ('a_tone.wav', 'b_short.wav', 'd_tone.wav')
            for e in find_events(sed(tg, folder/n), 0.3)]
    got = [(x['audio_path'], x['label'], float(x['onset']), float(x['offset'])) for x in csv.DictReader(open(out))]
    assert got == want and {g[0] for g in got} >= {str(folder/'a_tone.wav'), str(folder/'d_tone.wav')}
    assert sorted(p.name for p in figs.iterdir()) == ['a_tone.png', 'b_short.png', 'd_tone.png']

def test_a_figure_that_cannot_be_written_costs_only_its_own_file(d, tmp_path):
    "Whatever stops one file's output (here a folder where its figure should go), the other files get theirs."
    folder, figs, out = tmp_path/'clips', tmp_path/'figs', tmp_path/'events.jsonl'
    folder.mkdir()
    (figs/'a.png').mkdir(parents=True)
    for n in 'abc': sf.write(folder/f'{n}.wav', tone(440, 1, SR), SR)
    r = run('audioset_sed', '--checkpoint_path', d/'sed.pth', '--audio_path', folder, '--threshold', 0.3,
            '--output', out, '--figure_dir', figs)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 2 and err[0].startswith(f'failed: Cannot write the SED figure {figs/"a.png"}'), err
    assert sorted(p.name for p in figs.iterdir() if p.is_file()) == ['b.png',
                                                                     'c.png'] and list(figs.glob('.*.tmp')) == []
    assert {json.loads(l)['audio_path'] for l in open(out)} >= {str(folder/'b.wav'), str(folder/'c.wav')}

def test_an_output_that_cannot_be_written_is_one_sentence(d, tmp_path, tmpfs):
    "Today: '[Errno 30] Read-only file system' naming a temporary file, not the output, and no fix."
    ro = tmpfs(tmp_path/'ro', '1m')
    subprocess.run(['mount', '-o', 'remount,ro', str(ro)], check=True)
    r = run('audioset_tag', '--checkpoint_path', d/'cnn6.pth', '--audio_path', d/'tone.wav', '--output', ro/'tags.csv')
    assert r.returncode != 0
    one_sentence(r.stderr, f'Cannot write {ro/"tags.csv"}: the file system is read-only', 'choose a folder')

def test_a_full_disk_for_framewise_scores_fails_that_file_only(d, tmp_path, tmpfs):
    "Before: no --framewise_dir. A 5-MB framewise file on a 1-MB disk: one sentence, no temporary file, others fine."
    folder, out = tmp_path/'clips', tmp_path/'events.csv'
    folder.mkdir()
    sf.write(folder/'a_long.wav', tone(440, 25, SR), SR)
    sf.write(folder/'b_short.wav', tone(440, 1, SR), SR)
    fw = tmpfs(tmp_path/'fw', '1m')
    r = run('audioset_sed', '--checkpoint_path', d/'sed.pth', '--audio_path', folder, '--threshold', 0.3,
            '--output', out, '--framewise_dir', fw)
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert err[0] == (f'failed: Cannot write the framewise scores {fw/"a_long.npy"}: the disk is full; '
                      'free some space there or choose another place.'), err
    assert sorted(p.name for p in fw.iterdir()) == ['b_short.npy', 'labels.txt']
    rows = list(csv.DictReader(open(out)))
    assert {r['audio_path'] for r in rows} == {str(folder/'a_long.wav'), str(folder/'b_short.wav')}
