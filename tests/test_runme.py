"""The main job, ./runme.sh, end to end on the mini AudioSet: real yt-dlp download from the loopback mirror, packing,
training, evaluation, tagging and SED; and its refusals."""
import os, re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def runme(*args, **env):
    return subprocess.run(['bash', str(ROOT/'runme.sh'), *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=1500)

def test_mini_job_end_to_end(tmp_path):
    ws = tmp_path/'mini'
    r = runme(WORKSPACE=str(ws))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r'eval mAP (\d\.\d+)', r.stdout)
    assert m and float(m.group(1)) >= 0.9, r.stdout[-2000:]
    assert len(list((ws/'audios'/'balanced_train').glob('Y*.wav'))) == 600
    assert len(list((ws/'audios'/'eval').glob('Y*.wav'))) == 150
    assert (ws/'hdf5s'/'indexes'/'eval.h5').is_file()
    assert list((ws/'sed').glob('Y*.png')) and (ws/'sed'/'events.csv').read_text().count('\n') >= 2
    assert list(ws.glob('checkpoints/**/latest.pth')) and list(ws.glob('statistics/**/curve.png'))
    again = runme(WORKSPACE=str(ws))  # a rerun reuses everything: nothing is downloaded or trained again
    assert again.returncode == 0, again.stderr[-2000:]
    assert re.search(r'eval mAP (\d\.\d+)', again.stdout).group(1) == m.group(1)
    assert int(re.search(r'Done in (\d+) s', again.stdout).group(1)) < int(re.search(r'Done in (\d+) s',
                                                                                     r.stdout).group(1))

def test_unknown_option_is_refused():
    r = runme('--fast')
    assert r.returncode == 2 and "unknown option '--fast'" in r.stderr and r.stderr.count('\n') == 1

def test_full_refuses_without_youtube(tmp_path):
    r = runme('--full', WORKSPACE=str(tmp_path/'full'))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('runme.sh --full: YouTube cannot be reached from this machine')

def test_full_refuses_a_source_without_a_copy(tmp_path):
    (tmp_path/'src').mkdir()
    (tmp_path/'src'/'notes.txt').write_text('no audio here')
    r = runme('--full', '--source', str(tmp_path/'src'), WORKSPACE=str(tmp_path/'full'))
    assert r.returncode == 1, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f'runme.sh --full: {tmp_path/"src"} holds no parquet files, tar shards or clips')
    assert 'YouTube' not in r.stderr
