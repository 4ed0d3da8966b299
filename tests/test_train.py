"Training end to end: the CLI, kill-and-resume equivalence, DDP on two CPU processes, metrics, NaN and bad input."
import json, os, random, signal, subprocess, sys, time, warnings
from functools import partial
from pathlib import Path
import h5py, numpy as np, pytest, torch
from sklearn import metrics
from audioset_nb.pack import write_index
from audioset_nb.config import FrontEnd, parse_config
from audioset_nb.models import build_model, save_checkpoint, load_checkpoint
from audioset_nb.train import (TrainConfig, Dist, score, fit, clip_bce, checkpoint_path, statistics_path,
                               read_statistics, rng_state, lr_factor)
from conftest import FLAGS, FRONT, SR, THREADS, cfg_for, cli, cli_env, cli_popen, make_workspace, one_sentence

@pytest.fixture(scope='module')
def ws(tmp_path_factory): return make_workspace(tmp_path_factory.mktemp('ws'))

run = partial(cli, 'audioset_train', env=THREADS)

def losses(path): return {r['iteration']: r['loss'] for r in read_statistics(path) if 'loss' in r}

# ---------------------------------------------------------------------------------------------------- metrics
def test_score_equals_sklearn_and_skips_quietly():
    rng = np.random.default_rng(0)
    tgt = rng.random((50, 12)) < 0.3
    tgt[:, 3] = False
    tgt[:, 7] = True  # no positives / no negatives
    out = rng.random((50, 12))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        s = score(tgt, out)
    ok = [c for c in range(12) if c not in (3, 7)]
    assert s.skipped == [3, 7]
    np.testing.assert_allclose(s.ap[ok], [metrics.average_precision_score(tgt[:, c], out[:, c]) for c in ok])
    np.testing.assert_allclose(s.auc[ok], [metrics.roc_auc_score(tgt[:, c], out[:, c]) for c in ok])
    np.testing.assert_allclose(s.mAP, metrics.average_precision_score(tgt[:, ok], out[:, ok], average='macro'))
    np.testing.assert_allclose(s.mAUC, metrics.roc_auc_score(tgt[:, ok], out[:, ok], average='macro'))
    assert np.isnan(s.ap[3]) and np.isnan(s.auc[7])

# ---------------------------------------------------------------------------------------------------- NaN
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 3)
    def forward(self, x, mixup_lambda=None): return dict(clipwise_output=torch.sigmoid(self.fc(x)))

def test_nan_loss_stops_naming_iteration_and_never_saves_it():
    torch.manual_seed(0)
    model = _Tiny()
    opt = torch.optim.Adam(model.parameters())
    def batches():
        for i in range(100):
            x = torch.randn(4, 8)
            if i == 6: x[0, 0] = float('nan')  # the 7th step's loss is NaN
            yield dict(waveform=x, target=(torch.rand(4, 3) > .5).float())
    saved = []
    with pytest.raises(FloatingPointError, match='iteration 7;'):
        fit(model, opt, batches(), clip_bce, lambda m: {}, lambda it, keep: saved.append(it), lambda r: None,
            iterations=50, eval_every=10, save_every=4, log_every=100, progress=False)
    assert saved == [0, 4]  # the check before the save at 8 stopped the run; no checkpoint after the NaN

# ---------------------------------------------------------------------------------------------------- CLI errors
def _one_sentence_error(r, *words):
    assert r.returncode != 0
    one_sentence(r.stderr, *words)

def test_bad_model_type(ws):
    _one_sentence_error(run(f'--workspace={ws}', *FLAGS, '--model_type=Cnn99'), 'Cnn99', 'model_type')

def test_missing_hdf5(tmp_path):
    # the seed README's command, program name changed: it parses, and stops at the missing full_train index
    r = run('train', f'--workspace={tmp_path}', "--data_type=full_train", '--window_size=1024', '--hop_size=320',
            '--mel_bins=64', '--fmin=50', '--fmax=14000', '--model_type=Cnn13_specaug', '--loss_type=clip_bce',
            '--balanced=balanced', '--augmentation=mixup', '--batch_size=32', '--learning_rate=1e-3',
            '--resume_iteration=0', '--early_stop=1000000', '--cuda')
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 2 and 'full_train.h5' in lines[-1] and 'audioset_pack' in lines[-1], r.stderr
    assert torch.cuda.is_available() or 'no GPU' in lines[0]

def test_checkpoint_of_another_model(ws, tmp_path):
    cfg = cfg_for(ws, f'--workspace={tmp_path}')
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    other = build_model('MobileNetV1', FRONT)
    save_checkpoint(checkpoint_path(cfg, 10), other, iteration=10)
    _one_sentence_error(run(f'--workspace={tmp_path}', *FLAGS, '--resume_iteration=10'), '10_iterations.pth',
                        'does not fit')

def test_bad_flag_value(ws):
    _one_sentence_error(run(f'--workspace={ws}', *FLAGS, '--balanced=yes'), '--balanced')

# ---------------------------------------------------------------------------------------------------- resume
RESUME = ['--batch_size=4', '--early_stop=14', '--eval_every=1000', '--save_every=3', '--log_every=1',
          '--max_eval_clips=8',
          '--num_workers=1', '--deterministic']

def test_sigkill_and_resume_logs_the_same_losses(ws, tmp_path):
    a, b = tmp_path/'a', tmp_path/'b'
    for d in (a, b):
        d.mkdir()
        (d/'hdf5s').symlink_to(ws/'hdf5s')
    r = run(f'--workspace={a}', *FLAGS, *RESUME, timeout=600)
    assert r.returncode == 0, r.stderr
    ref = losses(statistics_path(cfg_for(a, f'--workspace={a}', *RESUME)))
    assert sorted(ref) == list(range(1, 15))

    cfg = cfg_for(b, f'--workspace={b}', *RESUME)
    latest, stats, seed = checkpoint_path(cfg, 'latest'), statistics_path(cfg), random.randrange(10**6)
    rng = random.Random(seed)
    after = rng.randint(4, 11)  # kill during iteration `after`+1 or so, at a random point of it
    p = cli_popen('audioset_train', f'--workspace={b}', *FLAGS, *RESUME, env=THREADS,
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    logged = lambda: stats.exists() and stats.read_text().count('"loss"') >= after
    while p.poll() is None and time.time() - t0 < 300 and not logged():
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.2))
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, f'run ended before it was killed (seed {seed})'
    k = load_checkpoint(latest)['iteration']
    assert 3 <= k < 14 and k % 3 == 0

    r = run(f'--workspace={b}', *FLAGS, *RESUME, '--resume_latest', timeout=600)
    assert r.returncode == 0, r.stderr
    got = losses(statistics_path(cfg))
    assert sorted(got) == list(range(1, 15)), f'seed {seed}, resumed from {k}'
    np.testing.assert_allclose([got[i] for i in range(k+1, 15)], [ref[i] for i in range(k+1, 15)], rtol=1e-6,
                               err_msg=f'seed {seed}, resumed from {k}')

def test_resume_iteration_reference_flag(ws, tmp_path):
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    base = [f'--workspace={tmp_path}', *FLAGS, '--batch_size=4', '--eval_every=1000', '--log_every=1',
            '--max_eval_clips=8',
            '--num_workers=0', '--save_every=2']
    assert run(*base, '--early_stop=2').returncode == 0
    r = run(*base, '--early_stop=4', '--resume_iteration=2')
    assert r.returncode == 0, r.stderr
    cfg = cfg_for(tmp_path, f'--workspace={tmp_path}', '--batch_size=4')
    assert sorted(losses(statistics_path(cfg))) == [1, 2, 3, 4]
    assert {p.name for p in checkpoint_path(cfg, 0).parent.glob('*.pth')} == {'0_iterations.pth', '2_iterations.pth',
                                                                              '4_iterations.pth', 'latest.pth'}
    ck = load_checkpoint(checkpoint_path(cfg, 4))
    assert ck['iteration'] == 4 and ck['config']['model_type'] == 'Cnn6' and 'optimizer' in ck and len(ck['ranks']) == 1
    assert 'conv_block1.conv1.weight' in ck['model'] and 'fc_audioset.weight' in ck['model']

# ---------------------------------------------------------------------------------------------------- recipe flags
SHORT = ['--batch_size=4', '--max_eval_clips=8', '--num_workers=0', '--log_every=1']

def _short_run(ws, tmp_path, *flags):
    "Train with FLAGS + SHORT + `flags` in a workspace beside `ws`'s data; the statistics and the run's TrainConfig."
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    r = run(f'--workspace={tmp_path}', *FLAGS, *SHORT, *flags, timeout=600)
    assert r.returncode == 0, r.stderr
    cfg = cfg_for(tmp_path, f'--workspace={tmp_path}', *SHORT, *flags)
    return read_statistics(statistics_path(cfg)), cfg

def test_warmup_and_cosine_schedule_flags(ws, tmp_path):
    stats, cfg = _short_run(ws, tmp_path, '--schedule=cosine', '--warmup_iterations=2', '--early_stop=6',
                            '--eval_every=1000')
    lrs = {r['iteration']: r['lr'] for r in stats if 'lr' in r}
    np.testing.assert_allclose([lrs[i] for i in range(1, 7)], [1e-3*lr_factor(i, 6, 2) for i in range(1, 7)], rtol=1e-6)
    assert lrs[2] == 1e-3 and lrs[6] == 0  # warm-up done at 2, the half cosine reaches zero at the end
    assert load_checkpoint(checkpoint_path(cfg, 'latest'))['hooks']['schedule']['last_epoch'] == 6

def test_default_recipe_is_the_reference(ws, tmp_path):
    "Without the recipe flags: constant learning rate, no average, no best.pth, no early stop (no hooks at all)."
    stats, cfg = _short_run(ws, tmp_path, '--early_stop=3', '--eval_every=1')
    assert {r['lr'] for r in stats if 'lr' in r} == {1e-3}
    assert load_checkpoint(checkpoint_path(cfg, 'latest'))['hooks'] == {}
    assert not checkpoint_path(cfg, 'best').exists() and max(r['iteration'] for r in stats) == 3

def test_ema_flag(ws, tmp_path):
    stats, cfg = _short_run(ws, tmp_path, '--ema=0.5', '--early_stop=4', '--eval_every=2')
    ck = load_checkpoint(checkpoint_path(cfg, 'latest'))
    avg = ck['hooks']['ema']
    assert int(avg['n_averaged']) == 4  # one update per step
    w = 'fc_audioset.weight'
    assert avg[f'module.{w}'].shape == ck['model'][w].shape and not torch.equal(avg[f'module.{w}'], ck['model'][w])

def test_keep_best_flag(ws, tmp_path):
    stats, cfg = _short_run(ws, tmp_path, '--keep=best', '--early_stop=6', '--eval_every=2', '--learning_rate=3e-3')
    ev = [(r['iteration'], r['test_mAP']) for r in stats if 'test_mAP' in r]
    best = max(ev, key=lambda e: e[1])  # the first of equals
    ck = load_checkpoint(checkpoint_path(cfg, 'best'))
    assert ck['iteration'] == best[0] and 'conv_block1.conv1.weight' in ck['model']
    assert load_checkpoint(checkpoint_path(cfg, 'latest'))['hooks']['best']['best_iteration'] == best[0]

def test_patience_flag_stops_and_stays_stopped(ws, tmp_path):
    flags = ['--patience=1', '--early_stop=40', '--eval_every=1', '--learning_rate=3e-3']
    stats, cfg = _short_run(ws, tmp_path, *flags)
    ev = [(r['iteration'], r['test_mAP']) for r in stats if 'test_mAP' in r]
    stopped = load_checkpoint(checkpoint_path(cfg, 'latest'))['hooks']['best']['stopped']
    assert 0 < stopped < 40 and ev[-1][0] == stopped  # stopped at an evaluation ...
    assert ev[-1][1] <= max(m for _, m in ev[:-1])  # ... that was no better than the best before it
    r = run(f'--workspace={tmp_path}', *FLAGS, *SHORT, *flags, '--resume_latest', timeout=600)
    assert r.returncode == 0, r.stderr
    assert max(s['iteration'] for s in read_statistics(statistics_path(cfg))) == stopped  # resumed: nothing more

# ---------------------------------------------------------------------------------------------------- DDP
def test_ddp_two_processes_disjoint_data_identical_weights(ws, tmp_path):
    (tmp_path/'hdf5s').symlink_to(ws/'hdf5s')
    rec = tmp_path/'names'
    # balanced=none: one epoch of 64 clips is 4 iterations of 2 ranks x 4 clips x 2 (mixup)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m',
                        'audioset_nb.train',
                        f'--workspace={tmp_path}', *FLAGS, '--batch_size=8', '--balanced=none', '--early_stop=4',
                        '--eval_every=1000',
                        '--save_every=4', '--max_eval_clips=8', '--num_workers=0', f'--record_names={rec}'],
                       env=cli_env(THREADS), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    n0, n1 = (Path(f'{rec}.{i}').read_text().split() for i in (0, 1))
    assert len(n0) == len(n1) == 32 and not set(n0) & set(n1) and len(set(n0) | set(n1)) == 64
    w0, w1 = (load_checkpoint(f'{rec}.{i}.pt')['model'] for i in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    start = build_model('Cnn6', FRONT).state_dict()
    assert not torch.equal(w0['fc_audioset.weight'], start['fc_audioset.weight'])
    ck = load_checkpoint(checkpoint_path(cfg_for(tmp_path, f'--workspace={tmp_path}', '--batch_size=8',
                                                 '--balanced=none'), 4))
    assert len(ck['ranks']) == 2 and ck['ranks'][0]['sampler']['batches'] == ck['ranks'][1]['sampler']['batches'] == 4

# ---------------------------------------------------------------------------------------------------- mini AudioSet
@pytest.mark.skipif(not os.environ.get('AUDIOSET_NB_SLOW'),
                    reason='about 3 minutes on one core; set AUDIOSET_NB_SLOW=1 to run')
def test_mini_audioset_learns(tmp_path):
    "The mini recipe by the CLI: Cnn6_mini_DecisionLevelMax at 8 kHz reaches eval mAP >= 0.9 in 1600 steps of 16 clips."
    from audioset_nb.mini import make_mini, SUBSETS
    from audioset_nb.audio import write_wav
    from audioset_nb.download import clip_name
    from audioset_nb.pack import pack_waveforms
    mini, ws = make_mini(tmp_path/'mini', sources=False), tmp_path/'workspace'
    for ytid, c in mini.clips.items():
        write_wav(tmp_path/'audios'/c.subset/clip_name(ytid), mini.reference_segment(ytid))
    for s in SUBSETS:
        p = pack_waveforms(mini.csv_path(s), tmp_path/'audios'/s, ws/'hdf5s'/'waveforms'/f'{s}.h5', sample_rate=8000,
                           progress=False).path
        write_index(p, ws/'hdf5s'/'indexes'/f'{s}.h5')
    r = run('train', f'--workspace={ws}', '--sample_rate=8000', '--window_size=1024', '--hop_size=512',
            '--mel_bins=32', '--fmin=50', '--fmax=4000', '--model_type=Cnn6_mini_DecisionLevelMax',
            '--augmentation=none', '--batch_size=16', '--early_stop=1600', '--eval_every=400', '--num_workers=0',
            '--no_progress')
    assert r.returncode == 0, r.stderr[-2000:]
    scores = json.loads(r.stdout.splitlines()[-1])
    assert scores['test']['mAP'] >= 0.9, scores
    assert scores['test']['skipped'] == 527 - 14, scores
