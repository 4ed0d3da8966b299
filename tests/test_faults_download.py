"""Downloading under faults, through the real CLI: a second downloader, SIGKILL of the main pid, clips cut short,
a full disk, a read-only folder."""
import contextlib, os, signal, subprocess, time
from pathlib import Path
import numpy as np, pytest
from audioset_nb.download import Segment, is_finished, read_log, write_segments
from audioset_nb.mirror import Fault, Mirror
from conftest import (SINE_LABEL as LABEL, alive, children, cli, cli_popen, make_source, one_sentence, runs_ffmpeg,
                      wait_for)

SR = 32000

@pytest.fixture(scope='module')
def src(tmp_path_factory):
    "Eight 14-s mp3 'videos' (hard links to one file) and a list asking for [2, 12] s of each."
    d = tmp_path_factory.mktemp('videos')
    s = d/'src'
    s.mkdir()
    make_source(d/'one.mp3', 44100, 1, ['-c:a', 'libmp3lame', '-b:a', '64k'])
    ytids = [f'vid{i:08d}' for i in range(8)]
    for y in ytids: os.link(d/'one.mp3', s/f'{y}.mp3')
    write_segments(d/'list.csv', [Segment(y, 2., 12., LABEL) for y in ytids])
    return d

def dl(d, audios, m, *more): return ('--csv_path', d/'list.csv', '--audios_dir', audios, '--url_template',
                                     m.url_template, '--quiet', *more)

def ffmpegs(pid): return [k for k in children(pid) if runs_ffmpeg(k)]

def test_second_downloader_into_the_same_folder_is_refused(src, tmp_path):
    audios = tmp_path/'a'
    with Mirror(src/'src', delay=0.3) as m:
        first = cli_popen('audioset_download', *dl(src, audios, m, '--workers', '1'))
        wait_for(lambda: (audios/'.download_log.csv.lock').exists() and (audios/'.download_log.csv.lock').read_text())
        second = cli('audioset_download', *dl(src, audios, m, '--workers', '1'), timeout=60)
        assert first.poll() is None
        assert second.returncode != 0
        one_sentence(second.stderr, str(audios/'download_log.csv'), 'another process')
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert '8 clips: 8 ok' in out and all(is_finished(w, 10*SR) for w in audios.glob('Y*.wav'))

def test_a_second_downloader_of_the_same_clips_with_another_log_is_refused(src, tmp_path):
    audios = tmp_path/'a'
    audios.mkdir()
    (audios/'.Yvid00000001.wav.k3j4h5.tmp').write_bytes(b'half a clip')  # left by a killed run
    with Mirror(src/'src', delay=0.3) as m:
        first = cli_popen('audioset_download', *dl(src, audios, m, '--workers', '1', '--log_path', audios/'one.csv'))
        wait_for(lambda: list(audios.glob('.clips-*.lock')) and list(audios.glob('.clips-*.lock'))[0].read_text())
        second = cli('audioset_download', *dl(src, audios, m, '--workers', '1', '--log_path', audios/'two.csv'),
                     timeout=60)
        # was: both ran, fetching the same clips into one folder
        assert first.poll() is None
        assert second.returncode != 0
        one_sentence(second.stderr, f'The clip folder {audios} is being filled', 'another download')
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    # was: a temporary of a killed run stayed for ever
    assert not list(audios.glob('*.tmp')) and not list(audios.glob('.*.tmp'))
    assert '8 clips: 8 ok' in out and all(is_finished(w, 10*SR) for w in audios.glob('Y*.wav'))

def test_downloads_of_two_parts_into_one_folder_run_side_by_side(src, tmp_path):
    audios = tmp_path/'a'
    with Mirror(src/'src', delay=0.3) as m:
        first = cli_popen('audioset_download', *dl(src, audios, m, '--workers', '1', '--part', '0/2'))
        wait_for(lambda: list(audios.glob('.clips-*.lock')))
        second = cli('audioset_download', *dl(src, audios, m, '--workers', '1', '--part', '1/2'), timeout=120)
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert len([w for w in audios.glob('Y*.wav') if is_finished(w, 10*SR)]) == 8

def test_sigkill_of_the_main_pid_leaves_no_ffmpeg(src, tmp_path):
    audios = tmp_path/'a'
    with Mirror(src/'src', delay=0.5) as m:
        p = cli_popen('audioset_download', *dl(src, audios, m, '--workers', '2'))
        wait_for(lambda: ffmpegs(p.pid))
        kids = ffmpegs(p.pid)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()  # the main pid only, not its process group
        with contextlib.suppress(TimeoutError): wait_for(lambda: not any(alive(k) for k in kids), timeout=5)
        assert not [k for k in kids if alive(k)], 'ffmpeg outlived the killed downloader'
        r = cli('audioset_download', *dl(src, audios, m, '--workers', '4'), timeout=120)
    assert r.returncode == 0, r.stderr
    assert '8 clips: 8 ok' in r.stdout and [p.suffix for p in audios.glob('.*')] == ['.lock', '.lock']  # log, clips

def test_a_clip_cut_short_is_downloaded_again(src, tmp_path):
    audios = tmp_path/'a'
    with Mirror(src/'src') as m:
        assert cli('audioset_download', *dl(src, audios, m), timeout=120).returncode == 0
        w = audios/'Yvid00000003.wav'
        good = w.read_bytes()
        w.write_bytes(good[:len(good)//2])                         # the header still says 10 s
        r = cli('audioset_download', *dl(src, audios, m), timeout=120)
    assert r.returncode == 0, r.stderr
    assert w.read_bytes() == good
    latest = {x['ytid']: x for x in read_log(audios/'download_log.csv')}
    assert latest['vid00000003']['message'] != 'already downloaded'
    assert latest['vid00000002']['message'] == 'already downloaded'

def test_full_disk_is_one_sentence_and_keeps_whole_clips(src, tmp_path, tmpfs):
    disk = tmpfs(tmp_path/'small', '2m')                                  # room for 3 of the 8 640-kB clips
    with Mirror(src/'src') as m:
        r = cli('audioset_download', *dl(src, disk, m, '--workers', '1'), timeout=120)
        assert r.returncode == 1, r.stderr
        one_sentence(r.stderr, str(disk), 'disk is full')
        done = list(disk.glob('Y*.wav'))
        assert done and all(is_finished(w, 10*SR) for w in done)
        assert [p.name for p in disk.glob('.*') if p.suffix != '.lock'] == []    # no temporary file left

def test_read_only_folder_is_one_sentence(src, tmp_path, tmpfs):
    d = tmpfs(tmp_path/'ro')
    with Mirror(src/'src') as m:
        subprocess.run(['mount', '-o', 'remount,ro', str(d)], check=True)
        r = cli('audioset_download', *dl(src, d/'audios', m), timeout=60)
        assert r.returncode == 1
        one_sentence(r.stderr, str(d/'audios'), 'read-only')

def test_a_row_longer_than_a_segment_is_logged_not_fetched(src, tmp_path):
    (tmp_path/'long.csv').write_text(f'vid00000000, 0, 1e9, "{LABEL[0]}"\nvid00000001, 2, 12, "{LABEL[0]}"\n')
    with Mirror(src/'src') as m:
        r = cli('audioset_download', '--csv_path', tmp_path/'long.csv', '--audios_dir', tmp_path/'a',
                '--url_template', m.url_template, '--quiet', timeout=120)
    assert r.returncode == 0, r.stderr
    assert '2 clips: 1 ok, 1 other' in r.stdout
    rows = read_log(tmp_path/'a'/'download_log.csv')
    assert any('more than the 10 s' in x['message'] for x in rows) and not (tmp_path/'a'/'Yvid00000000.wav').exists()

def test_clips_follow_the_umask(src, tmp_path):
    with Mirror(src/'src') as m:
        old = os.umask(0o022)
        try: r = cli('audioset_download', *dl(src, tmp_path/'a', m), timeout=120)
        finally: os.umask(old)
    assert r.returncode == 0, r.stderr
    assert {oct(w.stat().st_mode & 0o777) for w in (tmp_path/'a').glob('Y*.wav')} == {oct(0o644)}
