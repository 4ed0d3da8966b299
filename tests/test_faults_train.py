"""Training under faults, through `audioset_train`: a second run on the same folder, a full disk, a read-only folder,
SIGKILL with DataLoader workers, non-finite statistics, and what the files it writes let others do."""
import json, os, shutil, signal, subprocess, time
from functools import partial
from pathlib import Path
import h5py, numpy as np, pytest
from audioset_nb.models import load_checkpoint
from audioset_nb.train import checkpoint_path, checkpoints_dir, statistics_path, read_statistics
from conftest import FLAGS, THREADS, cfg_for, cli, cli_popen, one_sentence, wait_for

run = partial(cli, 'audioset_train', env=THREADS, timeout=600)
SHORT = ['--batch_size=4', '--eval_every=1000', '--log_every=1', '--max_eval_clips=8', '--num_workers=0']

@pytest.fixture(scope='module')
def ws(train_workspace): return train_workspace

def _workspace(ws, d:Path)->Path:
    d.mkdir(parents=True, exist_ok=True)
    (d/'hdf5s').symlink_to(ws/'hdf5s')
    return d

def _run_folder(d:Path)->Path: return checkpoints_dir(cfg_for(d, f'--workspace={d}', '--batch_size=4'))
def _temporaries(folder:Path)->list: return sorted(p.name for p in folder.rglob('.*.tmp'))


# ---------------------------------------------------------------------------------------------------- one writer
def test_a_second_training_on_the_same_run_folder_refuses_at_once(ws, tmp_path):
    "Today both ran: checkpoints of the two seeds mixed, every iteration twice in statistics.jsonl."
    d = _workspace(ws, tmp_path/'w')
    cfg = cfg_for(d, f'--workspace={d}', '--batch_size=4')
    first = cli_popen('audioset_train', f'--workspace={d}', *FLAGS, *SHORT, '--early_stop=24', '--save_every=8',
                      '--seed=1',
                      env=THREADS)
    stats = statistics_path(cfg)
    wait_for(lambda: first.poll() is not None or (stats.exists() and '"loss"' in stats.read_text()), timeout=300)
    assert first.poll() is None, first.communicate()[1]
    second = run(f'--workspace={d}', *FLAGS, *SHORT, '--early_stop=24', '--save_every=8', '--seed=2', timeout=120)
    out, err = first.communicate(timeout=600)
    assert second.returncode != 0
    # naming the first run's pid shows that it held the folder while the second one started
    one_sentence(second.stderr, str(checkpoints_dir(cfg)), 'another process', f'pid {first.pid}')
    assert first.returncode == 0, err
    its = [r['iteration'] for r in read_statistics(stats) if 'loss' in r]
    assert its == list(range(1, 25))  # each iteration once: nothing of the second run
    for it in (0, 8, 16, 24, 'latest'):
        ck = load_checkpoint(checkpoint_path(cfg, it))
        assert ck['config']['seed'] == 1 and ck['iteration'] == (24 if it == 'latest' else it)

# ------------------------------------------------------------------------------------------ full disk, read-only
@pytest.fixture
def tmpfs():
    "Mount small tmpfs file systems on request (root only); unmount them all at the end."
    mounted = []
    def mount(path:Path, size:int):
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)], capture_output=True,
                           text=True)
        if r.returncode: pytest.skip(f'cannot mount a tmpfs here (needs root): {r.stderr.strip()}')
        mounted.append(path)
        return path
    yield mount
    for p in reversed(mounted): subprocess.run(['umount', '-l', str(p)], capture_output=True)

def _finished_run(ws, d:Path)->Path:
    "A workspace whose run folder holds checkpoints of iterations 0 and 2 (latest: 2)."
    _workspace(ws, d)
    r = run(f'--workspace={d}', *FLAGS, *SHORT, '--early_stop=2', '--save_every=2')
    assert r.returncode == 0, r.stderr
    return _run_folder(d)

def test_a_full_disk_stops_training_in_one_sentence_and_keeps_the_last_checkpoint(ws, tmp_path, tmpfs):
    done = _finished_run(ws, tmp_path/'a')
    d = _workspace(ws, tmp_path/'b')
    size = (done/'latest.pth').stat().st_size
    tmpfs(d/'checkpoints', size + size//2)  # room for the old checkpoint, not for a second one beside it
    folder = _run_folder(d)
    folder.mkdir(parents=True)
    shutil.copy(done/'latest.pth', folder/'latest.pth')
    r = run(f'--workspace={d}', *FLAGS, *SHORT, '--early_stop=4', '--save_every=2', '--resume_latest')
    assert r.returncode != 0
    one_sentence(r.stderr, 'Cannot write', str(folder/'latest.pth'), 'disk is full', 'free some space')
    assert load_checkpoint(folder/'latest.pth')['iteration'] == 2  # the earlier checkpoint is whole
    assert _temporaries(d/'checkpoints') == []

def test_a_read_only_run_folder_is_one_sentence(ws, tmp_path, tmpfs):
    done = _finished_run(ws, tmp_path/'a')
    d = _workspace(ws, tmp_path/'b')
    tmpfs(d/'checkpoints', 3*(done/'latest.pth').stat().st_size)
    folder = _run_folder(d)
    folder.mkdir(parents=True)
    shutil.copy(done/'latest.pth', folder/'latest.pth')
    # root ignores chmod, not a read-only mount
    subprocess.run(['mount', '-o', 'remount,ro', str(d/'checkpoints')], check=True)
    r = run(f'--workspace={d}', *FLAGS, *SHORT, '--early_stop=4', '--save_every=2', '--resume_latest')
    assert r.returncode != 0
    line = one_sentence(r.stderr, 'Cannot write', 'read-only', 'choose a folder')
    assert str(folder) in line
    assert load_checkpoint(folder/'latest.pth')['iteration'] == 2

# ---------------------------------------------------------------------------------------------------- SIGKILL
def _children(pid:int)->list:
    "Pids whose parent is `pid` (from /proc)."
    out = []
    for p in Path('/proc').iterdir():
        if p.name.isdigit():
            try: stat = (p/'stat').read_text()
            except OSError: continue
            if int(stat.rsplit(')', 1)[1].split()[1]) == pid: out.append(int(p.name))
    return out

def _alive(pid:int)->bool:
    try: return (Path('/proc')/str(pid)/'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def test_sigkill_with_workers_leaves_no_worker_and_the_rerun_resumes(ws, tmp_path):
    d = _workspace(ws, tmp_path/'w')
    cfg = cfg_for(d, f'--workspace={d}', '--batch_size=4')
    flags = [*FLAGS, '--batch_size=4', '--eval_every=1000', '--log_every=1', '--max_eval_clips=8', '--early_stop=12',
             '--save_every=3', '--num_workers=2']
    p = cli_popen('audioset_train', f'--workspace={d}', *flags, env=THREADS, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)
    stats = statistics_path(cfg)
    wait_for(lambda: p.poll() is not None or (stats.exists() and stats.read_text().count('"loss"') >= 4),
             timeout=300)
    workers = _children(p.pid)
    assert len(workers) >= 2, workers  # the two DataLoader workers
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    k = load_checkpoint(checkpoint_path(cfg, 'latest'))['iteration']
    stale = checkpoints_dir(cfg)/'.latest.pth.killed01.tmp'  # what a save killed half-way leaves
    stale.write_bytes(b'\0'*1000)
    (stats.parent/'.statistics.jsonl.killed02.tmp').write_text('{"iteration": 1')
    # at once, while the orphaned workers may still live: they do not hold the run folder's lock
    r = run(f'--workspace={d}', *flags, '--resume_latest')
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not any(map(_alive, workers)), timeout=30)  # they watch their parent and exit
    assert [r['iteration'] for r in read_statistics(stats) if 'loss' in r] == list(range(1, 13))
    assert load_checkpoint(checkpoint_path(cfg, 'latest'))['iteration'] == 12 and k >= 3
    assert _temporaries(d/'checkpoints') == [] and _temporaries(d/'statistics') == []

# ---------------------------------------------------------------------------------------------------- outputs
def _strict(line:str):
    def bad(c): raise ValueError(f'{c} is not JSON')
    return json.loads(line, parse_constant=bad)

def test_statistics_are_strict_json_and_outputs_follow_the_umask(ws, tmp_path):
    "One evaluation clip: every class lacks positives or negatives, so mAP is undefined; it is written as null."
    d = _workspace(ws, tmp_path/'w')
    cfg = cfg_for(d, f'--workspace={d}', '--batch_size=4')
    p = cli_popen('audioset_train', f'--workspace={d}', *FLAGS, '--batch_size=4', '--eval_every=2', '--log_every=1',
                  '--max_eval_clips=1', '--num_workers=0', '--early_stop=2', '--save_every=2', env=THREADS,
                  preexec_fn=lambda: os.umask(0o027))
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    recs = [_strict(l) for l in statistics_path(cfg).read_text().splitlines()]
    assert [r['iteration'] for r in recs if 'test_mAP' in r] == [0, 2]
    assert all(r['test_mAP'] is None and r['bal_d_prime'] is None for r in recs if 'test_mAP' in r)
    for f in (checkpoint_path(cfg, 'latest'), checkpoint_path(cfg, 2), statistics_path(cfg),
              statistics_path(cfg).parent/'per_class_ap.tsv', statistics_path(cfg).parent/'curve.png'):
        assert f.stat().st_mode & 0o777 == 0o640, (f, oct(f.stat().st_mode))

# ---------------------------------------------------------------------------------------------------- bad data
def _copy_workspace(ws, d:Path)->Path:
    "A workspace of its own (the HDF5s copied, not linked) to damage."
    shutil.copytree(ws/'hdf5s', d/'hdf5s')
    for p in (d/'hdf5s'/'indexes').glob('*.h5'):  # point the indexes at the copies
        with h5py.File(p, 'a') as f:
            f['hdf5_path'][:] = [s.replace(str(ws).encode(), str(d).encode()) for s in f['hdf5_path'][:]]
    return d

def test_nan_samples_in_training_and_evaluation_clips_are_replaced_with_a_warning(ws, tmp_path):
    "Today: the loss became NaN in training; evaluation stopped with sklearn's 'Input contains NaN.', naming no file."
    d = _copy_workspace(ws, tmp_path/'w')
    for sub, row in [('balanced_train', 5), ('eval', 2)]:  # early reference files hold float32 rows
        with h5py.File(d/'hdf5s'/'waveforms'/f'{sub}.h5', 'a') as f:
            x = f['waveform'][:].astype(np.float32)/32767
            x[row, 100:200] = np.nan
            x[row, 300] = np.inf
            del f['waveform']
            f['waveform'] = x
    # one epoch of 32 clips without class balancing: row 5 is drawn for sure
    r = run(f'--workspace={d}', *FLAGS, *SHORT, '--balanced=none', '--early_stop=4', '--save_every=4', '--eval_every=4')
    assert r.returncode == 0, r.stderr[-3000:]
    warned = [l for l in r.stderr.splitlines() if l.startswith('warning:')]
    assert any('balanced_train.h5 row 5 holds 101 NaN or infinite samples' in l for l in warned), r.stderr
    assert any('eval.h5 row 2 holds 101 NaN or infinite samples' in l for l in warned), r.stderr
    recs = [x for x in read_statistics(statistics_path(cfg_for(d, f'--workspace={d}', '--batch_size=4',
                                                               '--balanced=none')))]
    assert all(np.isfinite(x['loss']) for x in recs if 'loss' in x)
    assert all(x['test_mAP'] is not None and 0 < x['test_mAP'] <= 1 for x in recs if 'test_mAP' in x)

def test_an_index_row_past_the_end_of_its_waveform_file_names_the_file(ws, tmp_path):
    "Today: an IndexError traceback from h5py, wrapped in the DataLoader worker's."
    d = _copy_workspace(ws, tmp_path/'w')
    with h5py.File(d/'hdf5s'/'indexes'/'eval.h5', 'a') as f: f['index_in_hdf5'][0] = 1000
    r = run(f'--workspace={d}', *FLAGS, *SHORT[:-1], '--num_workers=1', '--early_stop=2', '--save_every=2')
    assert r.returncode != 0
    one_sentence(r.stderr, str(d/'hdf5s'/'waveforms'/'eval.h5'), 'row 1000', 'which holds 8 clips', 'rebuild the index')
