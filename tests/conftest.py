"""Shared test helpers (run a console script, check a one-sentence error, make and encode test audio, watch processes)
and the fixtures built on them (`run_cli`, `tones`, `tmpfs`). Test modules import from here, never from each other."""
import configparser, os, subprocess, sys, time
from pathlib import Path
import h5py, numpy as np, pytest
import audioset_nb
from audioset_nb.config import FrontEnd, parse_config
from audioset_nb.pack import write_index
from audioset_nb.train import TrainConfig
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

SINE_LABEL = ('/m/01v_m0',)  # AudioSet's "Sine wave"
SOURCE_S = 14.               # seconds of a source video made by `make_source`

def synth(t):
    "The test signal at times `t` (s): two chirps, one amplitude-modulated, all below 1 kHz so every codec keeps them."
    return (0.3*np.sin(2*np.pi*(150*t + 30*t**2))
            + 0.2*np.sin(2*np.pi*(700*t - 20*t**2))*(1 + 0.5*np.sin(2*np.pi*0.7*t))/1.5)

def make_source(path:Path, sr:int, channels:int, args:list, video=False):
    "A `SOURCE_S`-second 'video' of `synth` at `sr` with `channels`, encoded by ffmpeg with `args` (and a picture)."
    t = np.arange(int(SOURCE_S*sr))/sr
    pcm = (np.tile(synth(t)[:, None], (1, channels))*32767).astype('<i2')
    picture = ['-f', 'lavfi', '-i', f'color=c=blue:s=64x64:r=2:d={SOURCE_S}', '-c:v', 'mpeg4'] if video else []
    ffmpeg('-f', 's16le', '-ar', sr, '-ac', channels, '-i', 'pipe:0', *picture, *args, path, input=pcm.tobytes())

def children(pid):
    "Pids of all living descendants of `pid`, from /proc."
    kids = {}
    for d in Path('/proc').iterdir():
        if d.name.isdigit():
            try: kids.setdefault(int((d/'stat').read_text().rsplit(')', 1)[1].split()[1]), []).append(int(d.name))
            except (OSError, IndexError): pass
    out, todo = [], [pid]
    while todo:
        todo += (k := kids.get(todo.pop(), []))
        out += k
    return out

def alive(pid):
    "Whether process `pid` exists and is not a zombie."
    try: return (Path('/proc')/str(pid)/'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def runs_ffmpeg(pid):
    "Whether process `pid` is alive and is an ffmpeg (False once it has gone, even between the two checks)."
    try: return alive(pid) and Path(f'/proc/{pid}/exe').resolve().name.startswith('ffmpeg')
    except OSError: return False

def wait_for(cond, timeout=60):
    "Poll `cond()` until it is true; TimeoutError after `timeout` seconds."
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise TimeoutError
        time.sleep(0.05)

@pytest.fixture
def run_cli():
    "`run_cli(name, *args, timeout=..., env=..., cwd=...)`: run a console script to the end (a CompletedProcess)."
    return cli

@pytest.fixture
def tones(tmp_path):
    "`tones({stem: freq}, seconds=1, sr=32000, fmt='wav', folder=None)`: mono tone files `<stem>.<fmt>`; {stem: path}."
    def write(freqs:dict, seconds=1., sr=32000, fmt='wav', folder=None)->dict:
        d = Path(folder or tmp_path/'tones')
        d.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, f in freqs.items():
            pcm = (tone(f, seconds, sr)*32767).astype('<i2')
            out[name] = d/f'{name}.{fmt}'
            ffmpeg('-f', 's16le', '-ar', sr, '-ac', 1, '-i', 'pipe:0', out[name], input=pcm.tobytes())
        return out
    return write

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

# ---------------------------------------------------------------------------------------------------- training
# Small enough for 2 shared cores: 1-s clips at 16 kHz, 32 mel bins (101 frames, the least SpecAugment's
# 64-frame time stripes allow), Cnn6. Five tones in noise, one or two per clip.
SR, FREQS = 16000, [300, 600, 1200, 2400, 4800]
FLAGS = ['--sample_rate=16000', '--window_size=512', '--hop_size=160', '--mel_bins=32', '--fmin=50', '--fmax=8000',
         '--model_type=Cnn6', '--no_progress']
THREADS = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
FRONT = FrontEnd(16000, 512, 160, 32, 50, 8000)

def _clips(n, seed, seconds=1.0):
    rng, t = np.random.default_rng(seed), np.arange(int(SR*seconds))/SR
    x, y = np.zeros((n, len(t)), np.int16), np.zeros((n, 527), bool)
    for i in range(n):
        w = 0.02*rng.standard_normal(len(t))
        for k in rng.choice(len(FREQS), rng.integers(1, 3), replace=False):
            w += rng.uniform(.1, .4)*np.sin(2*np.pi*FREQS[k]*rng.uniform(.97, 1.03)*t)
            y[i, k] = True
        x[i] = (np.clip(w, -1, 1)*32767).astype(np.int16)
    return x, y

def make_workspace(root:Path, n_train:int=64, n_eval:int=16)->Path:
    "Waveform and index HDF5s in the reference layout: balanced_train, eval (and full_train = balanced_train)."
    for sub, n, seed in [('balanced_train', n_train, 0), ('eval', n_eval, 1)]:
        x, y = _clips(n, seed)
        p = root/'hdf5s'/'waveforms'/f'{sub}.h5'
        p.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(p, 'w') as f:
            names = [f'Y{sub[:2]}{i:09d}.wav'.encode() for i in range(n)]
            f.create_dataset('audio_name', data=np.array(names, dtype='S20'))
            f.create_dataset('waveform', data=x)
            f.create_dataset('target', data=y)
            f.attrs['sample_rate'] = SR
        write_index(p, root/'hdf5s'/'indexes'/f'{sub}.h5')
    return root

def cfg_for(ws, *flags)->TrainConfig:
    "The TrainConfig a command line with FLAGS + `flags` gives (for its paths)."
    return parse_config(TrainConfig, [*FLAGS, *flags])

@pytest.fixture(scope='module')
def train_workspace(tmp_path_factory):
    "A small packed workspace (balanced_train 32 clips, eval 8) shared by a test module."
    return make_workspace(tmp_path_factory.mktemp('ws'), n_train=32, n_eval=8)
