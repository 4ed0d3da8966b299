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

# ---- tools/env.sh: what each command installs, and when pip runs at all (a stand-in python records pip's calls) ----

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls"
[ -z "${FAIL_PIP:-}" ] || [ "$1" != -m ] || { echo "pip: no matching distribution" >&2; exit 1; }
"""

def env_sh(proj:Path, extras:str, **env):
    "Source tools/env.sh in `proj` asking for `extras`; returns the result and the pip installs it ran."
    calls = proj/'.venv'/'calls'
    before = calls.read_text().splitlines() if calls.exists() else []
    r = subprocess.run(['bash', '-c', f'source tools/env.sh "{extras}"'], cwd=proj, capture_output=True, text=True,
                       env={**os.environ, **env}, timeout=60)
    new = calls.read_text().splitlines()[len(before):] if calls.exists() else []
    return r, [c.split(' -q ', 1)[1] for c in new if c.startswith('-m pip install') and 'upgrade pip' not in c]

def fake_project(root:Path)->Path:
    for f in ('tools/env.sh', 'settings.ini', 'setup.py'):
        (root/f).parent.mkdir(parents=True, exist_ok=True)
        (root/f).write_bytes((ROOT/f).read_bytes())
    (root/'.venv'/'bin').mkdir(parents=True)
    (root/'.venv'/'bin'/'python').write_text(FAKE_PYTHON)
    (root/'.venv'/'bin'/'python').chmod(0o755)
    (root/'.venv'/'bin'/'activate').write_text(f'PATH="{root}/.venv/bin:$PATH"\n')
    return root

def test_env_installs_what_each_command_needs_and_never_downgrades(tmp_path):
    p = fake_project(tmp_path)
    r, pip = env_sh(p, '')  # ./runme.sh: the runtime requirements only
    assert r.returncode == 0 and pip == ['-e .'], r.stderr
    assert 'Installing audioset_nb and its dependencies' in r.stdout
    assert env_sh(p, '')[1] == []                     # again: nothing to do
    r, pip = env_sh(p, 'dev')  # ./test.sh after ./runme.sh: upgraded to dev, hearvalidator with it
    assert pip == ['-e .[dev]', "--no-deps hearvalidator==2021.0.2"], r.stdout + r.stderr
    assert env_sh(p, '')[1] == [] and env_sh(p, 'import')[1] == []  # ./runme.sh after ./test.sh: dev holds it all
    with open(p/'settings.ini', 'a') as f: f.write('# changed\n')
    assert env_sh(p, '')[1] == ['-e .[dev]', "--no-deps hearvalidator==2021.0.2"]  # new settings: dev kept
    assert env_sh(p, 'dev')[1] == []

def test_env_adds_extras_and_reports_a_failed_install(tmp_path):
    p = fake_project(tmp_path)
    assert env_sh(p, 'import')[1] == ['-e .[import]']
    assert env_sh(p, 'onnx')[1] == ['-e .[import,onnx]']  # what was there stays
    assert env_sh(p, 'import')[1] == []
    with open(p/'setup.py', 'a') as f: f.write('# changed\n')
    r, _ = env_sh(p, '', FAIL_PIP='1')
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == ('Installing failed; the whole log is in '
                                                                      '.venv/install.log.')
    assert env_sh(p, '')[1] == ['-e .[import,onnx]']  # the failed install left no stamp: it is tried again
