"Shared test helpers: run a console script of the package, check a one-sentence error, make and encode test audio."
import configparser, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
import audioset_nb
from audioset_nb.audio import ffmpeg_cmd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PKG_PATH = str(Path(audioset_nb.__file__).resolve().parents[1])

def _module_of(name):
    "The module of console script `name`, from settings.ini (e.g. 'audioset_nb.train')."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT/'settings.ini')
    return dict(s.split('=') for s in cfg['DEFAULT']['console_scripts'].split())[name].split(':')[0]

def cli_cmd(name, *args):
    "argv that runs console script `name` (e.g. 'audioset_train') with `args`."
    exe = BIN/name
    # without an installed script, `python -m` runs the same `call_parse` function (`python -c` would not parse argv)
    return [*([str(exe)] if exe.exists() else [sys.executable, '-m', _module_of(name)]), *map(str, args)]

def cli_env(env=None):
    "os.environ updated with `env`; PYTHONPATH starts with the package these tests import (scripts run the same code)."
    e = {**os.environ, **(env or {})}
    e['PYTHONPATH'] = os.pathsep.join(filter(None, [PKG_PATH, e.get('PYTHONPATH')]))
    return e

def cli(name, *args, env=None, timeout=None, cwd=None, input=None):
    "Run console script `name` with `args` to the end: a CompletedProcess with text stdout and stderr."
    return subprocess.run(cli_cmd(name, *args), env=cli_env(env), cwd=cwd, input=input, timeout=timeout,
                          capture_output=True, text=True)

def cli_popen(name, *args, env=None, **kw):
    "Start console script `name` with `args` (text pipes unless `kw` says otherwise), for tests that kill it."
    return subprocess.Popen(cli_cmd(name, *args), env=cli_env(env),
                            **{'stdout': subprocess.PIPE, 'stderr': subprocess.PIPE, 'text': True, **kw})

def one_sentence(stderr, *words):
    "Assert `stderr` is one line without a traceback that holds each of `words`; that line."
    assert 'Traceback' not in stderr, stderr
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    for w in words: assert w in lines[0], (w, lines[0])
    return lines[0].strip()

def ffmpeg(*args, input=None):
    "Run ffmpeg quietly with `args` (overwriting outputs); `input` is bytes for `pipe:0`."
    subprocess.run(ffmpeg_cmd('-y', *args), input=input, check=True)

def tone(freq, seconds, sr, channels=1, amp=0.5):
    "A sine of `freq` Hz: shape (samples,) for mono, else (samples, channels) all alike."
    t = np.arange(int(round(seconds*sr)))/sr
    x = amp*np.sin(2*np.pi*freq*t)
    return x if channels == 1 else np.repeat(x[:, None], channels, 1)

@pytest.fixture
def tmpfs():
    "`tmpfs(path, size)` mounts a small tmpfs at `path` (root only) and returns it; all are unmounted after the test."
    mounted = []
    def mount(path:Path, size='2m')->Path:
        path.mkdir(parents=True, exist_ok=True)
        cmd = ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: pytest.skip(f'cannot mount a tmpfs here (needs root): {r.stderr.strip()}')
        mounted.append(path)
        return path
    yield mount
    for p in reversed(mounted): subprocess.run(['umount', '-l', str(p)], capture_output=True)
