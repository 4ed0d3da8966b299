"""Packing under faults, through the real CLI: a second packer, SIGKILL of the main pid, a full disk, a read-only
folder, bad input."""
import contextlib, os, signal, subprocess, time
from pathlib import Path
import h5py, numpy as np, pytest, soundfile as sf
from audioset_nb.metadata import Segment, clip_name, load_labels, write_segments
from conftest import alive, children, cli, cli_popen, ffmpeg, one_sentence, runs_ffmpeg, tone, wait_for

SR = 32000

@pytest.fixture(scope='module')
def many(tmp_path_factory):
    "100 one-second AAC clips (ffmpeg decodes them, so packing has ffmpeg children): slow enough to interrupt."
    d = tmp_path_factory.mktemp('many')
    a = d/'audios'
    a.mkdir()
    src = d/'src.m4a'
    sf.write(d/'src.wav', tone(440, 1.0, SR), SR)
    ffmpeg('-i', d/'src.wav', '-c:a', 'aac', src)
    mid = load_labels().mids[0]
    segs = []
    for i in range(100):
        y = f'many{i:07d}'
        os.link(src, a/clip_name(y))
        segs.append(Segment(y, 0., 1., (mid,)))
    write_segments(d/'s.csv', segs)
    return d

def pack_args(d, out, *more): return ('--csv_path', d/'s.csv', '--audios_dir', d/'audios', '--waveforms_hdf5_path', out,
                                      '--clip_seconds', '1', '--quiet', *more)

def rows_of(path):
    with h5py.File(path, 'r') as f: return f['audio_name'][:], f['waveform'][:]

def test_second_packer_is_refused_and_the_first_finishes(many, tmp_path):
    out = tmp_path/'w.h5'
    first = cli_popen('audioset_pack', *pack_args(many, out, '--workers', '1'))
    wait_for(lambda: (tmp_path/'.w.h5.partial').exists())
    second = cli('audioset_pack', *pack_args(many, out, '--workers', '1'), timeout=60)
    assert first.poll() is None, 'the first packer should still be running'
    assert second.returncode != 0
    one_sentence(second.stderr, str(out), 'another process', f'pid {first.pid}')
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    names, wave = rows_of(out)
    assert len(names) == 100 and wave.shape == (100, SR)

def test_sigkill_of_the_main_pid_leaves_no_worker_and_the_rerun_resumes(many, tmp_path):
    clean = tmp_path/'clean.h5'
    assert cli('audioset_pack', *pack_args(many, clean, '--workers', '2'), timeout=300).returncode == 0
    out, partial = tmp_path/'w.h5', tmp_path/'.w.h5.partial'
    p = cli_popen('audioset_pack', *pack_args(many, out, '--workers', '2'))
    wait_for(lambda: partial.exists() and partial.stat().st_size > 64*2*SR)   # a chunk of rows is on disk
    wait_for(lambda: any(map(runs_ffmpeg, children(p.pid))))
    kids = children(p.pid)
    assert len(kids) >= 3                                                    # two workers and an ffmpeg at least
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with contextlib.suppress(TimeoutError): wait_for(lambda: not any(alive(k) for k in kids), timeout=10)
    assert not [k for k in kids if alive(k)], 'workers or ffmpeg outlived the killed packer'
    size = partial.stat().st_size
    assert size > 0 and not out.exists()
    r = cli('audioset_pack', *pack_args(many, out, '--workers', '2'), timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = rows_of(out), rows_of(clean)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not partial.exists()

@pytest.fixture
def six(tmp_path):
    "Six 10-s clips: 3.8 MB packed, more than a 2-MB disk holds."
    a = tmp_path/'audios'
    a.mkdir()
    segs = []
    for i in range(6):
        y = f'six{i:08d}'
        sf.write(a/clip_name(y), tone(200 + 100*i, 10, SR), SR, subtype='PCM_16')
        segs.append(Segment(y, 0., 10., (load_labels().mids[0],)))
    write_segments(tmp_path/'s.csv', segs)
    return tmp_path

def six_args(d, out): return ('--csv_path', d/'s.csv', '--audios_dir', d/'audios', '--waveforms_hdf5_path', out,
                              '--workers', '1', '--quiet')

def test_full_disk_is_one_sentence_not_a_crash(six, tmpfs):
    disk = tmpfs(six/'small')
    r = cli('audioset_pack', *six_args(six, disk/'w.h5'), timeout=120)
    # was 139: h5py segfaulted writing into a full disk
    assert r.returncode == 1, (r.returncode, r.stderr)
    one_sentence(r.stderr, str(disk/'w.h5'), 'disk is full')
    assert [p.name for p in disk.iterdir() if p.suffix != '.lock'] == []  # no temporary file left behind
    # an index into a full disk: the same sentence, and the waveform file written before stays valid
    r = cli('audioset_pack', '--csv_path', six/'s.csv', '--audios_dir', six/'audios',
            '--waveforms_hdf5_path', disk/'w1.h5', '--clip_seconds', '0.5', '--workers', '1', '--quiet')
    assert r.returncode == 0, r.stderr
    with open(disk/'filler', 'wb') as f:
        with contextlib.suppress(OSError): f.write(b'\0'*(4 << 20))
    r = cli('audioset_pack', '--waveforms_hdf5_path', disk/'w1.h5', '--indexes_hdf5_path', disk/'i.h5', timeout=60)
    assert r.returncode == 1
    one_sentence(r.stderr, str(disk/'i.h5'), 'disk is full')
    assert rows_of(disk/'w1.h5')[1].shape == (6, SR//2)

def test_read_only_folder_is_one_sentence(six, tmpfs):
    d = tmpfs(six/'ro')
    subprocess.run(['mount', '-o', 'remount,ro', str(d)], check=True)
    r = cli('audioset_pack', *six_args(six, d/'w.h5'), timeout=60)
    assert r.returncode == 1
    one_sentence(r.stderr, str(d/'w.h5'), 'read-only', 'choose a folder')

@pytest.mark.parametrize('flags,words', [
    (['--sample_rate', '0'], ['--sample_rate']), (['--clip_seconds', '-1'], ['--clip_seconds']),
    (['--clip_seconds', '1e7'], ['--clip_seconds']), (['--workers', '0'], ['--num_workers']),
])
def test_numeric_flags_are_checked(six, flags, words):
    r = cli('audioset_pack', *six_args(six, six/'w.h5'), *flags, timeout=60)
    assert r.returncode != 0
    one_sentence(r.stderr, *words)
    assert not (six/'w.h5').exists()

def test_bad_input_files_are_named(six):
    (six/'latin1.csv').write_bytes((six/'s.csv').read_bytes() + 'six00000000, 0, 10, "Caf\xe9"\n'.encode('latin-1'))
    r = cli('audioset_pack', '--csv_path', six/'latin1.csv', '--audios_dir', six/'audios', '--waveforms_hdf5_path',
            six/'w.h5', timeout=60)
    assert r.returncode == 1
    one_sentence(r.stderr, str(six/'latin1.csv'), 'not UTF-8')
    r = cli('audioset_pack', '--csv_path', six/'s.csv', '--audios_dir', six/'s.csv', '--waveforms_hdf5_path',
            six/'w.h5', timeout=60)
    assert r.returncode == 1
    one_sentence(r.stderr, str(six/'s.csv'), 'is a file, not a folder')

def test_long_rows_and_nan_clips_are_left_out_by_name(six):
    sf.write(six/'audios'/clip_name('six00000002'), np.full(SR, np.nan, np.float32), SR, subtype='FLOAT')
    (six/'long.csv').write_text((six/'s.csv').read_text() + f'longrow0000, 0, 1e9, "{load_labels().mids[0]}"\n')
    r = cli('audioset_pack', '--csv_path', six/'long.csv', '--audios_dir', six/'audios',
            '--waveforms_hdf5_path', six/'w.h5', '--workers', '1', '--quiet', timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'packed 5 clips' in r.stdout and '1 left out' in r.stdout
    assert 'more than the 10 s' in r.stderr                                   # the 1e9-s row, logged, not allocated
    # the NaN clip named, not packed as silence
    assert 'Ysix00000002.wav' in r.stderr and 'NaN' in r.stderr
    names, _ = rows_of(six/'w.h5')
    assert b'Ysix00000002.wav' not in list(names)

def test_packed_files_follow_the_umask_and_stale_temps_go(six):
    (six/'.w.h5.abc123.tmp').write_bytes(b'left by a killed save')
    old = os.umask(0o022)
    try: r = cli('audioset_pack', *six_args(six, six/'w.h5'), '--indexes_hdf5_path', six/'i.h5', timeout=120)
    finally: os.umask(old)
    assert r.returncode == 0, r.stderr
    assert [oct(p.stat().st_mode & 0o777) for p in (six/'w.h5', six/'i.h5')] == [oct(0o644)]*2
    assert not (six/'.w.h5.abc123.tmp').exists()
