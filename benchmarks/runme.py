"""The main job's own cost: `./runme.sh` from a fresh clone in a fresh directory, set-up (venv + pip) and each of its
six steps, for each git ref given (default: a7fd6fa, main before the install split, then HEAD), in one run.

For each ref: clone A runs runme.sh with an empty pip cache and is stopped when step 1 starts (the cold set-up: a
first run on a machine); clone B, fresh, runs it to the end with the cache A filled (the warm set-up: CI on a machine
that has run it before) and its step times are recorded. Writes benchmarks/results/runme-cpu.json.

    python benchmarks/runme.py [--refs a7fd6fa HEAD] [--iterations N] [--no-cold] [--setup-only]

--setup-only stops clone B at step 1 too: the comparison of what the install split changes (the six steps run the
same code in both refs), in a quarter of the time, for a loaded machine.
"""
import argparse, datetime, json, os, platform, re, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP = re.compile(r'^== (\d)/6 (.*) \((\d+)s\)$')

def clean_env(**extra)->dict:
    "This shell's environment without the caller's venv or PYTHONPATH, so that the clone uses its own .venv."
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME')}
    venv = os.environ.get('VIRTUAL_ENV')
    if venv: env['PATH'] = os.pathsep.join(p for p in env['PATH'].split(os.pathsep) if not p.startswith(venv))
    return {**env, **extra}

def clone(ref:str, dest:Path)->str:
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(dest)], check=True)
    subprocess.run(['git', '-C', str(dest), 'checkout', '-q', ref], check=True)
    return subprocess.run(['git', '-C', str(dest), 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()

def run_job(repo:Path, env:dict, stop_at_step1:bool=False)->dict:
    "Run ./runme.sh in `repo`, timestamping its lines; returns the set-up and per-step seconds (wall, as measured)."
    t0, marks, tail = time.perf_counter(), {}, []
    p = subprocess.Popen(['bash', 'runme.sh'], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    for line in p.stdout:
        t, line = time.perf_counter() - t0, line.rstrip('\n')
        tail = (tail + [line])[-40:]
        if line.startswith('Installing audioset_nb'): marks['pip'] = t
        m = STEP.match(line)
        if m:
            marks[f'step{m.group(1)}'] = t
            marks[f'name{m.group(1)}'] = m.group(2)
            if stop_at_step1:
                os.killpg(p.pid, signal.SIGTERM)
                break
        if line.startswith('Done in'): marks['done'] = t
    rc = p.wait()
    end = time.perf_counter() - t0
    if 'step1' not in marks or (not stop_at_step1 and rc != 0):
        sys.exit(f'runme.sh in {repo} failed (exit {rc}); its last lines:\n' + '\n'.join(tail))
    r = dict(setup_s=round(marks['step1'], 1), venv_s=round(marks.get('pip', 0.), 1),
             pip_and_probe_s=round(marks['step1'] - marks.get('pip', 0.), 1))
    if stop_at_step1: return r
    ends = [marks.get(f'step{i + 1}', marks.get('done', end)) for i in range(1, 7)]
    r['steps'] = [dict(step=f'{i}/6 {marks[f"name{i}"]}', seconds=round(ends[i - 1] - marks[f'step{i}'], 1))
                  for i in range(1, 7)]
    r['total_s'] = round(end, 1)
    r['mAP'] = next((float(m.group(1)) for m in re.finditer(r'eval mAP (\d\.\d+)', '\n'.join(tail))), None)
    return r

def venv_facts(repo:Path)->dict:
    "What the job's venv holds, and what importing torch costs in it (the CUDA probe before step 1)."
    py = str(repo/'.venv'/'bin'/'python')
    pkgs = json.loads(subprocess.run([py, '-m', 'pip', 'list', '--format', 'json'], capture_output=True,
                                     text=True).stdout)
    t = time.perf_counter()
    subprocess.run([py, '-c', 'import torch'], check=True)
    du = subprocess.run(['du', '-sm', str(repo/'.venv')], capture_output=True, text=True).stdout.split()[0]
    versions = {p['name']: p['version'] for p in pkgs
                if p['name'].lower() in ('torch', 'numpy', 'pip', 'pyarrow', 'onnxruntime', 'jupyterlab', 'nbdev')}
    return dict(packages=len(pkgs), venv_mb=int(du), torch_import_s=round(time.perf_counter() - t, 2),
                versions=versions)

def load()->list: return [round(x, 2) for x in os.getloadavg()]

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--refs', nargs='+', default=['a7fd6fa', 'HEAD'])
    ap.add_argument('--iterations', type=int, help="ITERATIONS for runme.sh (default: each ref's own recipe)")
    ap.add_argument('--no-cold', action='store_true', help='skip the cold-cache set-up (clone A)')
    ap.add_argument('--setup-only', action='store_true', help='stop clone B at step 1 as well')
    ap.add_argument('--out', default=str(ROOT/'benchmarks'/'results'/'runme-cpu.json'))
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='runme-bench-'))
    runs = []
    try:
        for ref in a.refs:
            cache = work/f'pip-cache-{len(runs)}'  # empty: nothing from an earlier ref or from this machine
            env = clean_env(PIP_CACHE_DIR=str(cache), **({'ITERATIONS': str(a.iterations)} if a.iterations else {}))
            run = dict(ref=ref)
            if not a.no_cold:
                run['commit'] = clone(ref, work/f'cold{len(runs)}')
                l0 = load()
                run['cold_cache'] = dict(run_job(work/f'cold{len(runs)}', env, stop_at_step1=True), load_before=l0,
                                         load_after=load())
                shutil.rmtree(work/f'cold{len(runs)}')
                print(ref, 'cold set-up', run['cold_cache'], flush=True)
            repo = work/f'warm{len(runs)}'
            run['commit'] = clone(ref, repo)
            l0 = load()
            job = run_job(repo, env, stop_at_step1=a.setup_only)
            run['warm_cache' if not a.no_cold else 'job'] = job = dict(job, load_before=l0, load_after=load())
            run['venv'] = venv_facts(repo)
            print(ref, json.dumps(job), run['venv'], flush=True)
            shutil.rmtree(repo)
            runs.append(run)
            write(a, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print('wrote', a.out)

def write(a, runs):
    "The results so far (after each ref, so that an interrupted run keeps what it measured)."
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               device=f'CPU: {cpu}, {os.cpu_count()} cores (shared with other jobs)', python=platform.python_version(),
               iterations=a.iterations, setup_only=a.setup_only, loadavg_end=load(), runs=runs,
               note='Wall seconds on a shared machine; load is the 1/5/15-min load average before and after each '
                    'job. A ratio taken at load > 3 is not a speed claim.')
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')

if __name__ == '__main__': main()
