"audioset_tag --stream end to end: a stream with a known tone gives one start and one end line, at the right times."
import json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np, pytest, soundfile as sf, torch, torch.nn as nn, torch.nn.functional as F
from audioset_nb.audio import write_wav
from audioset_nb.config import FrontEnd
from audioset_nb.export import export_onnx
from audioset_nb.checkpoints import save_checkpoint
from audioset_nb.models import build_model
from conftest import children, cli_env, cli_popen, one_sentence, runs_ffmpeg, wait_for

class Loudness(nn.Module):
    "A model whose output we know: class 'Tone' scores each 10-ms frame by its energy (0.5 at -30 dBFS)."
    front = FrontEnd(sample_rate=16000, window_size=320, hop_size=160)
    def forward(self, x):
        e = F.avg_pool1d(F.pad(x[:, None]**2, (80, 80)), 160, 160)[:, 0]
        fw = torch.sigmoid(2*(10*torch.log10(e + 1e-10) + 30))[..., None]
        return {'clipwise_output': fw.amax(1), 'embedding': e.mean(1, keepdim=True), 'framewise_output': fw}

# `audioset_tag` (its dispatcher), in a process that must not import torch on the ONNX path
TAG = ('import sys; from audioset_nb.stream import tag_cli; tag_cli(); '
       'assert "torch" not in sys.modules, "torch imported"')

@pytest.fixture(scope='module')
def loud(tmp_path_factory):
    d = tmp_path_factory.mktemp('stream')
    export_onnx(Loudness(), d/'loud.onnx', labels=['Tone'], model_type='Loudness')
    sr, rng = 44100, np.random.default_rng(0)  # the file is at 44.1 kHz: ffmpeg delivers the model's 16 kHz
    t = np.arange(int(6*sr))/sr
    x = 1e-3*rng.standard_normal(len(t)) + 0.5*np.sin(2*np.pi*440*t)*((t >= 2.2) & (t < 3.7))
    write_wav(d/'tone.wav', x.astype(np.float32), sr)
    return d

def _tag(*args, input=None):
    return subprocess.run([sys.executable, '-c', TAG, *map(str, args)], env=cli_env(), capture_output=True, input=input,
                          timeout=300)

def _events(stdout):
    return [json.loads(l) for l in stdout.decode().splitlines()]

def _check(events, onset=2.2, offset=3.7, tol=0.05):
    assert [(e['event'], e['label']) for e in events] == [('start', 'Tone'), ('end', 'Tone')], events
    assert abs(events[0]['time'] - onset) < tol and abs(events[1]['time'] - offset) < tol, events
    assert events[1]['onset'] == events[0]['time']

@pytest.mark.parametrize('hop', [0.25, 1.0])
def test_stream_file(loud, hop):
    r = _tag('--stream', loud/'tone.wav', '--onnx', loud/'loud.onnx', '--window_seconds', 2, '--hop_seconds', hop)
    assert r.returncode == 0, r.stderr
    _check(_events(r.stdout))

def test_stream_stdin(loud):
    r = _tag('--stream', '-', '--onnx', loud/'loud.onnx', '--hop_seconds', 0.5, input=(loud/'tone.wav').read_bytes())
    assert r.returncode == 0, r.stderr
    _check(_events(r.stdout))

def test_stream_realtime_lines_as_they_happen(loud):
    "Played in real time, the start line is out while the stream is still playing, and not before the tone."
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, '-c', TAG, '--stream', str(loud/'tone.wav'), '--realtime', '--onnx',
                          str(loud/'loud.onnx'),
                          '--hop_seconds', '0.25'], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    start = json.loads(p.stdout.readline())
    t_start = time.monotonic() - t0
    rest = p.stdout.read()
    p.wait()
    t_end = time.monotonic() - t0
    assert p.returncode == 0, p.stderr.read()
    _check([start, *map(json.loads, rest.splitlines())])
    assert t_start >= 2.2 and t_end >= 6.  # -re: the tone cannot be heard before it is played, nor the file end early
    assert t_start < t_end - 1.  # the start line came out while the file was still playing (it ends 2.3 s later)

def test_stream_reader_gone(loud):
    "`audioset_tag --stream ... | head -1`: when the reader goes, the stream stops quietly, exit 141 (as SIGPIPE)."
    p = subprocess.Popen([sys.executable, '-c', TAG, '--stream', str(loud/'tone.wav'), '--realtime', '--onnx',
                          str(loud/'loud.onnx')],
                         env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline())['event'] == 'start'
    p.stdout.close()  # the end line (1.5 s later) has nowhere to go
    assert p.wait(timeout=60) == 141
    assert p.stderr.read() == ''

def test_tag_files_reader_gone(loud, tmp_path):
    "Before: `audioset_tag ... | head -1` decoded every other file and said 'Broken pipe'. Now: it stops, quiet, 141."
    for i in range(12): (tmp_path/f'{i:02}.wav').write_bytes((loud/'tone.wav').read_bytes())
    (tmp_path/'99.wav').write_text('not audio')  # reached only if the command went on after its reader left
    p = subprocess.Popen([sys.executable, '-c', TAG, '--audio_path', str(tmp_path), '--onnx', str(loud/'loud.onnx')],
                         env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith(str(tmp_path/'00.wav'))
    p.stdout.close()
    assert p.wait(timeout=120) == 141
    assert p.stderr.read() == ''

@pytest.fixture
def stalling(loud):
    """A loopback URL that sends the first 3 s of tone.wav (the tone starts at 2.2 s), then nothing, the connection
    open (at /mute.wav: nothing at all)."""
    data, gone = (loud/'tone.wav').read_bytes(), threading.Event()
    class Stall(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header('Content-Type', 'audio/wav')
            self.end_headers()
            self.wfile.write(b'' if self.path == '/mute.wav' else data[:44 + 3*44100*2])
            self.wfile.flush()
            gone.wait(60)
        def log_message(self, *args): pass
    server = ThreadingHTTPServer(('127.0.0.1', 0), Stall)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_port}/live.wav'
    gone.set()
    server.shutdown()
    server.server_close()

def test_a_stalled_stream_is_a_network_fault(loud, stalling):
    "Before: a source that stopped sending, its connection open, blocked `audioset_tag --stream` for ever."
    r = _tag('--stream', stalling, '--onnx', loud/'loud.onnx', '--timeout', 2)
    assert r.returncode == 1
    one_sentence(r.stderr.decode(), f'The stream {stalling} sent no audio for 2 s', 'check the source and the network')
    events = _events(r.stdout)  # what was heard before the stall is printed, its open event closed
    assert [(e['event'], e['label']) for e in events] == [('start', 'Tone'), ('end', 'Tone')], events
    assert abs(events[0]['time'] - 2.2) < 0.05

def test_killing_the_stream_leaves_no_ffmpeg(loud, stalling):
    "SIGKILL gives the command no chance to stop its ffmpeg: the ffmpeg, waiting on the network, must die with it."
    # a source that sends nothing: its ffmpeg writes nothing either, so no broken pipe would end it
    p = cli_popen('audioset_tag', '--stream', stalling.replace('live', 'mute'), '--onnx', loud/'loud.onnx')
    wait_for(lambda: any(runs_ffmpeg(c) for c in children(p.pid)))
    ff = [c for c in children(p.pid) if runs_ffmpeg(c)]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    wait_for(lambda: not any(runs_ffmpeg(c) for c in ff), timeout=10)
    assert ff

def test_stream_torch_checkpoint(tmp_path, loud):
    "A .pth checkpoint streams through torch; --labels limits the classes."
    torch.manual_seed(0)
    save_checkpoint(tmp_path/'sed.pth', build_model('Cnn6_DecisionLevelMax', classes_num=2), labels=['a', 'b'],
                    model_type='Cnn6_DecisionLevelMax')
    code = 'from audioset_nb.stream import tag_cli; tag_cli()'
    r = subprocess.run([sys.executable, '-c', code, '--stream', loud/'tone.wav',
                        '--checkpoint_path', tmp_path/'sed.pth',
                        '--labels', 'b', '--on_threshold', '0', '--off_threshold', '0'],
                       env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    events = [json.loads(l) for l in r.stdout.splitlines()]  # threshold 0: on from the first frame to the end
    assert [(e['event'], e['label'], e['time']) for e in events] == [('start', 'b', 0.0), ('end', 'b', 6.0)]

def test_stream_reports_non_finite_audio(loud, tmp_path):
    "Before: a stream holding NaN gave no events and no warning. Now one line names it; the other windows are scored."
    sr = 16000
    t = np.arange(6*sr)/sr
    x = (1e-3*np.random.default_rng(0).standard_normal(len(t)) + 0.5*np.sin(2*np.pi*440*t)*((t >= 2.2) & (t < 3.7)))
    x = x.astype(np.float32)
    x[int(2.8*sr):int(2.8*sr) + 50] = np.nan
    sf.write(tmp_path/'holes.wav', x, sr, subtype='FLOAT')
    r = _tag('--stream', tmp_path/'holes.wav', '--onnx', loud/'loud.onnx', '--window_seconds', 2, '--hop_seconds', 0.5)
    assert r.returncode == 0, r.stderr
    one_sentence(r.stderr.decode(), f'{tmp_path/"holes.wav"} at 2.50-3.00 s holds 50 NaN or infinite samples')
    assert b'nan' not in r.stdout.lower()
    events = _events(r.stdout)
    assert [(e['event'], e['label']) for e in events] == [('start', 'Tone'), ('end', 'Tone')], events
    assert abs(events[0]['time'] - 2.2) < 0.05 and events[1]['time'] >= 3.7

@pytest.mark.parametrize('args,words', [
    (['--stream', 'concat:a.wav|b.wav'], ["protocol 'concat' is not allowed"]),
    (['--stream=-i'], ['is not a source']),  # argparse already refuses `--stream -i`
    (['--stream', 'missing.wav'], ['missing.wav', 'is not a file']),
    (['--stream', '{wav}', '--hop_seconds', '2'], ['at most 1']),
    (['--stream', '{wav}', '--labels', 'Dog'], ["'Dog' is not a class"]),
    (['--stream', '{txt}'], ['ffmpeg could not read']),
])
def test_stream_bad_input(loud, args, words):
    (loud/'notes.txt').write_text('not audio')
    args = [a.format(wav=loud/'tone.wav', txt=loud/'notes.txt') for a in args]
    r = _tag(*args, '--onnx', loud/'loud.onnx')
    assert r.returncode == 1
    one_sentence(r.stderr.decode(), *words)

def test_stream_benchmark_runs(tmp_path):
    "benchmarks/stream.py at a tiny size, so that it cannot rot; no timing is asserted, only that events were timed."
    from conftest import ROOT
    out = tmp_path/'st.json'
    args = ['--models', 'Cnn6_DecisionLevelMax', '--seconds', '3', '--tones', '1', '2', '--startup', '3', '--out', out]
    r = subprocess.run([sys.executable, 'benchmarks/stream.py', *args], cwd=ROOT, env=cli_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(out.read_text())['results']
    assert max(map(abs, row['event_time_error_s'])) <= 0.02  # onset and offset placed on the right frame
    assert all(l > 0 for l in row['start_latency_s'] + row['end_latency_s']) and row['cpu_cores_busy'] > 0
