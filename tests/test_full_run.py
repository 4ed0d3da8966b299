"""The full run's multi-part path (nbs/94_full_run.ipynb, tools/slurm/) end to end at small size, run as the plan runs
it: `tools/slurm/submit.sh` with a stand-in `sbatch` that runs each job at once (an array's tasks as concurrent
processes), against a mini AudioSet served by the loopback mirror; training is `torchrun` of 2 CPU processes (gloo)."""
import json, os, subprocess, sys
from pathlib import Path
import h5py, pytest
import soundfile as sf
from audioset_nb.download import read_log
from audioset_nb.metadata import read_segments
from audioset_nb.mini import make_mini
from audioset_nb.mirror import Mirror
from conftest import BIN, ROOT, cli_env, one_sentence

# A stand-in for Slurm's sbatch: runs the script now (each array index as its own process, all at once), its output
# in <SLURM_OUT>/<job>_<index>.out as Slurm would, and prints a job id (--parsable). A failed task fails the call.
SBATCH = r'''#!/usr/bin/env python3
import json, os, subprocess, sys
log, out = os.environ['SBATCH_LOG'], os.environ['SLURM_OUT']
with open(log, 'a') as f: f.write(json.dumps(sys.argv[1:]) + '\n')
job = str(len(open(log).readlines()))
opts = dict(a[2:].split('=', 1) for a in sys.argv[1:-1] if '=' in a)
lo, hi = map(int, opts['array'].split('%')[0].split('-')) if 'array' in opts else (0, 0)
procs = []
for i in range(lo, hi + 1):
    env = {**os.environ, 'SLURM_JOB_ID': job, **({'SLURM_ARRAY_TASK_ID': str(i)} if 'array' in opts else {})}
    with open(f'{out}/{job}_{i}.out', 'w') as f:
        procs.append(subprocess.Popen(['bash', sys.argv[-1]], env=env, stdout=f, stderr=subprocess.STDOUT))
codes = [p.wait() for p in procs]
if any(codes):
    failed = open(f'{out}/{job}_{lo + codes.index(max(codes))}.out').read()[-3000:]
    sys.exit(f'sbatch stand-in: {sys.argv[-1]} failed: {failed}')
print(job)
'''

N_BAL, N_UNBAL, N_EVAL, PARTS = 6, 9, 6, 3
TRAIN_ARGS = ['--model_type=Cnn6_mini_DecisionLevelMax', '--sample_rate=8000', '--window_size=1024', '--hop_size=512',
              '--mel_bins=32', '--fmin=50', '--fmax=4000', '--balanced=none', '--augmentation=none', '--batch_size=6',
              '--early_stop=5', '--eval_every=5', '--num_workers=0', '--no_progress']

def split_list(src:Path, n:int, heads:Path, tails:Path):
    "The first `n` rows of segment list `src` into `heads`, the rest into `tails`, each with its `#` header lines."
    lines = src.read_text().splitlines(keepends=True)
    head = [l for l in lines if l.startswith('#')]
    rows = [l for l in lines if not l.startswith('#')]
    heads.write_text(''.join(head + rows[:n]))
    tails.write_text(''.join(head + rows[n:]))

def names_in(path:Path)->list:
    with h5py.File(path, 'r') as f: return [n.decode() for n in f['audio_name'][:]]

@pytest.fixture(scope='module')
def lists(tmp_path_factory):
    "A mini AudioSet whose balanced_train list is cut in two: balanced_train (6 clips) and an 'unbalanced' list (9)."
    tmp = tmp_path_factory.mktemp('full_run')
    mini = make_mini(tmp/'mini', seed=0, n_train=N_BAL + N_UNBAL, n_eval=N_EVAL, num_workers=2)
    meta = tmp/'mini'/'metadata'
    split_list(mini.csv_path('balanced_train'), N_BAL, meta/'bal.csv', meta/'unbal.csv')
    return dict(tmp=tmp, sources=tmp/'mini'/'sources', eval=mini.csv_path('eval'), bal=meta/'bal.csv',
                unbal=meta/'unbal.csv', mini=mini)

def test_submit_runs_the_multi_part_path(lists, tmp_path):
    """submit.sh: lists, 5 array tasks (eval, balanced_train, 3 parts) at once, combine, torchrun of 2; every count.
    A clip YouTube refuses keeps its part unpacked and the later jobs unsubmitted; the next submission finishes it."""
    fake = tmp_path/'bin'
    fake.mkdir()
    (fake/'sbatch').write_text(SBATCH)
    (fake/'sbatch').chmod(0o755)
    (tmp_path/'out').mkdir()
    ws, rec = tmp_path/'ws', tmp_path/'seen'
    audios, wf, ix = ws/'audios'/'unbalanced_train', ws/'hdf5s'/'waveforms', ws/'hdf5s'/'indexes'
    unbal = [s.ytid for s in read_segments(lists['unbal'])]
    refused = unbal[N_UNBAL//PARTS]  # the first clip of part 1/3
    with Mirror(lists['sources'], faults={refused: '429'}) as m:
        env = cli_env({'PATH': os.pathsep.join([str(fake), str(BIN), os.environ['PATH']]),
                       'SBATCH_LOG': str(tmp_path/'sbatch.log'), 'SLURM_OUT': str(tmp_path/'out'),
                       'WORKSPACE': str(ws), 'PARTS': str(PARTS), 'URL_TEMPLATE': m.url_template, 'DL_WORKERS': '2',
                       'DOWNLOAD_ARGS': '--retries 0',
                       'LISTS_ARGS': f"--eval_csv {lists['eval']} --balanced_csv {lists['bal']} "
                                     f"--unbalanced_csv {lists['unbal']}",
                       'TRAIN_ARGS': ' '.join([*TRAIN_ARGS, f'--record_names={rec}']), 'NPROC': '2',
                       'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
        submit = lambda: subprocess.run(['bash', 'tools/slurm/submit.sh'], cwd=ROOT, env=env, capture_output=True,
                                        text=True, timeout=900)
        r = submit()
        assert r.returncode != 0, r.stdout
        assert f'data.sbatch: 1 clips of part 1/{PARTS} are not downloaded yet (1 rate-limited' in r.stderr, r.stderr
        assert len((tmp_path/'sbatch.log').read_text().splitlines()) == 1  # no combine, no training
        assert not (wf/'unbalanced_train_part01.h5').exists() and not (ix/'full_train.h5').exists()
        done = {p: p.stat().st_mtime_ns for p in [*wf.glob('*.h5'), *audios.glob('Y*.wav')]}
        assert len(done) == 4 + N_UNBAL - 1  # eval, balanced_train, parts 0 and 2; every clip but the refused one
        m.faults.clear()
        r = submit()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[-1] == 'submitted: data array 2 (5 tasks), combine 3, train 4'
    calls = [json.loads(l) for l in (tmp_path/'sbatch.log').read_text().splitlines()]
    assert calls[1][:2] == ['--parsable', '--array=0-4%41'] and calls[2][1] == '--dependency=afterok:2'
    assert calls[3][1] == '--dependency=afterok:3'
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # what the first submission finished stays

    # every clip of the unbalanced list is in exactly one part: downloaded by one task, packed into one file
    logged = [read_log(audios/f'download_log_part{i}of{PARTS}.csv') for i in range(PARTS)]
    packed = [names_in(wf/f'unbalanced_train_part{i:02d}.h5') for i in range(PARTS)]
    assert sorted(r['ytid'] for rows in logged for r in rows) == sorted(unbal)
    assert [len(rows) for rows in logged] == [N_UNBAL//PARTS]*PARTS
    assert {r['status'] for rows in logged for r in rows} == {'ok'}
    assert sorted(sum(packed, [])) == sorted(f'Y{y}.wav' for y in unbal)

    # one index per part; the combined index holds their rows (and balanced_train's), not eval's
    parts = [ix/f'unbalanced_train_part{i:02d}.h5' for i in range(PARTS)] + [ix/'balanced_train.h5']
    full = names_in(ix/'full_train.h5')
    assert len(full) == sum(len(names_in(p)) for p in parts) == N_BAL + N_UNBAL
    assert sorted(full) == sorted(sum(map(names_in, parts), []))
    assert not set(full) & set(names_in(ix/'eval.h5')) and len(names_in(ix/'eval.h5')) == N_EVAL

    # training drew from the combined index on both ranks (two epochs: every clip), and rank 0 evaluated
    seen = [Path(f'{rec}.{k}').read_text().split() for k in range(2)]
    assert all(seen) and set(sum(seen, [])) == set(full)
    (stats,) = ws.glob('statistics/**/statistics.jsonl')
    evals = [json.loads(l) for l in stats.read_text().splitlines() if 'test_mAP' in l]
    assert evals[-1]['iteration'] == 5 and 0 <= evals[-1]['test_mAP'] <= 1

def test_lists_refuse_another_split(lists, tmp_path):
    "The lists step keeps a workspace's split: another --parts is one sentence and a non-zero exit; nothing changes."
    run = lambda parts: subprocess.run(
        [sys.executable, '-m', 'audioset_nb.plan', '--workspace', str(tmp_path/'ws'), '--parts', str(parts),
         '--eval_csv', str(lists['eval']), '--balanced_csv', str(lists['bal']),
         '--unbalanced_csv', str(lists['unbal'])],
        env=cli_env(), capture_output=True, text=True, timeout=120)
    r = run(3)
    assert r.returncode == 0 and r.stdout.strip().startswith('5 array tasks in '), r.stderr
    before = (tmp_path/'ws'/'metadata'/'tasks.tsv').read_bytes()
    r = run(4)
    assert r.returncode != 0
    one_sentence(r.stderr, 'splits the unbalanced list in 3 parts, not 4', 'give --parts 3')
    assert (tmp_path/'ws'/'metadata'/'tasks.tsv').read_bytes() == before

def test_data_task_outside_the_table(lists, tmp_path):
    "A task beyond the table (an array sized by hand) fails with one sentence and writes nothing."
    ws = tmp_path/'ws'
    r = subprocess.run([sys.executable, '-m', 'audioset_nb.plan', '--workspace', str(ws), '--parts', '3',
                        '--eval_csv', str(lists['eval']), '--balanced_csv', str(lists['bal']),
                        '--unbalanced_csv', str(lists['unbal'])], env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(['bash', 'tools/slurm/data.sbatch'], cwd=ROOT, capture_output=True, text=True,
                       env=cli_env({'WORKSPACE': str(ws), 'SLURM_ARRAY_TASK_ID': '5'}))
    assert r.returncode == 1
    one_sentence(r.stderr, f'data.sbatch: {ws}/metadata/tasks.tsv has no task 5.')
    assert sorted(p.name for p in ws.iterdir()) == ['metadata']

def test_the_array_imports_a_local_copy(lists, tmp_path):
    "SOURCE=DIR: the same tasks import a copy (folders of clips by subset) in parts instead; combine joins them all."
    copy, ws = tmp_path/'copy', tmp_path/'ws'
    labels = tmp_path/'all.csv'
    for folder, key in [('eval', 'eval'), ('bal_train', 'bal'), ('unbal_train', 'unbal')]:
        (copy/folder).mkdir(parents=True)
        for s in read_segments(lists[key]):
            sf.write(copy/folder/f'Y{s.ytid}.wav', lists['mini'].reference_segment(s.ytid), 32000, subtype='PCM_16')
    rows = [l for k in ('eval', 'bal', 'unbal') for l in lists[k].read_text().splitlines(keepends=True)]
    labels.write_text(''.join(l for l in rows if not l.startswith('#')))
    r = subprocess.run([sys.executable, '-m', 'audioset_nb.plan', '--workspace', str(ws), '--parts', str(PARTS),
                        '--source', str(copy)], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith('5 array tasks'), r.stderr
    env = cli_env({'WORKSPACE': str(ws), 'IMPORT_ARGS': f'--csv_path {labels} --workers 1', 'OMP_NUM_THREADS': '1'})
    tasks = [subprocess.Popen(['bash', 'tools/slurm/data.sbatch'], cwd=ROOT, env={**env, 'SLURM_ARRAY_TASK_ID': str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(5)]
    outs = [t.communicate(timeout=600)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0]*5, outs
    r = subprocess.run(['bash', 'tools/slurm/combine.sbatch'], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (ws/'audios').exists()  # nothing downloaded
    wf, ix = ws/'hdf5s'/'waveforms', ws/'hdf5s'/'indexes'
    unbal = sorted(f'Y{s.ytid}.wav' for s in read_segments(lists['unbal']))
    packed = [names_in(wf/f'unbalanced_train_part{i:02d}.h5') for i in range(PARTS)]
    assert all(packed) and sorted(sum(packed, [])) == unbal  # each clip in exactly one part
    full = names_in(ix/'full_train.h5')
    assert len(full) == N_BAL + N_UNBAL and sorted(full) == sorted(names_in(ix/'balanced_train.h5') + unbal)
    assert len(names_in(ix/'eval.h5')) == N_EVAL
