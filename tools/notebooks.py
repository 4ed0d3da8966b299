#!/usr/bin/env python
"""Keep the notebooks' outputs: run them, count their examples, check their figures.
  python tools/notebooks.py run [--slow] [NB ...]   run notebooks top to bottom (as nbdev_test does), save outputs
  python tools/notebooks.py stats [NB ...]    lines of example or test per exported line, per notebook
  python tools/notebooks.py check [NB ...]    fail if a cell that draws a figure was committed without it
Cells flagged `#| slow`, `#| gpu` or `#| eval: false` are not run by `run` (`--slow` runs the slow ones too): they keep
the outputs of their last real run."""
import json, os, re, sys, tempfile
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'
def skipped(slow=False): return re.compile(rf'^#\|\s*({"" if slow else "slow|"}gpu|eval:\s*false)\b', re.M)
DRAWS = re.compile(r'\bplot_\w+\(|\bplt\.|\.plot\(|\bimshow\(|\bspecshow\(|\bsubplots\(')

def notebooks(names): return [Path(n) for n in names] if names else sorted(NBS.glob('*.ipynb'))
def source(cell): return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def directives(src): return re.findall(r'^#\|\s*([\w-]+)', src, re.M)
def code_lines(src):
    return [l for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|')]

def kind(cell):
    "'export', 'setup' (default_exp, imports), or 'example' (examples and tests, shown or hidden)."
    if cell['cell_type'] != 'code': return 'markdown'
    src, ds = source(cell), directives(source(cell))
    if {'export', 'exports', 'exporti'} & set(ds): return 'export'
    if 'default_exp' in ds or all(re.match(r'\s*(import|from)\s', l) for l in code_lines(src)): return 'setup'
    return 'example'

def stats(nb):
    "(exported lines, example/test lines) of notebook `nb`."
    cells = json.loads(Path(nb).read_text())['cells']
    count = lambda k: sum(len(code_lines(source(c))) for c in cells if kind(c) == k)
    return count('export'), count('example')

def missing_figures(nb):
    "Indexes of cells that draw a figure but hold no image output (skipped cells included: they keep a real run's)."
    cells = json.loads(Path(nb).read_text())['cells']
    return [i for i, c in enumerate(cells) if kind(c) == 'example' and DRAWS.search(source(c))
            and not images(c)]

def images(cell): return [o for o in cell.get('outputs', []) if {'image/png', 'image/svg+xml'} & set(o.get('data', {}))]

def figures(nb)->int:
    "Images a reader of `nb`'s page sees (hidden cells left out)."
    return sum(len(images(c)) for c in json.loads(Path(nb).read_text())['cells'] if 'hide' not in directives(source(c)))

WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'

def run(nb, slow=False):
    "Execute `nb` as nbdev_test does (its folder as cwd, IN_TEST set, flagged cells skipped) and save the outputs."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    nb, skip = Path(nb).resolve(), skipped(slow)
    book = read_nb(nb)
    for c in book.cells:  # execnb leaves a cell's old outputs in place when it now prints nothing
        if c.cell_type == 'code' and not skip.search(c.source): c['outputs'] = []
    os.environ['IN_TEST'] = '1'
    cwd = os.getcwd()
    os.chdir(nb.parent)
    # The examples' scratch folders go under one temporary folder, removed after the run, so none is left in /tmp.
    with tempfile.TemporaryDirectory(prefix=f'{nb.stem}-') as scratch:
        old_tmp, old_env = tempfile.tempdir, os.environ.get('TMPDIR')
        tempfile.tempdir = os.environ['TMPDIR'] = scratch  # TMPDIR for the subprocesses the examples start
        try:
            shell = CaptureShell(path=nb.parent, mpl_format='png')
            ok = shell.run_all(book, exc_stop=True,
                               preproc=lambda c: c.cell_type == 'code' and bool(skip.search(c.source)))
        finally:
            os.chdir(cwd)
            tempfile.tempdir = old_tmp
            if old_env is None: os.environ.pop('TMPDIR')
            else: os.environ['TMPDIR'] = old_env
    for c in book.cells:
        c.pop('execution_count', None)
        if c.cell_type == 'code': c['execution_count'] = None
        for o in c.get('outputs', []):  # a widget's view names a model id, new each run, whose state is not saved:
            o.get('data', {}).pop(WIDGET_VIEW, None)  # it cannot show without that state, so its text stands alone
    write_nb(book, nb)
    return ok

def main(cmd='stats', *names):
    slow = '--slow' in names
    nbs = notebooks([n for n in names if n != '--slow'])
    if cmd == 'run':
        for nb in nbs:
            print(f'running {nb.name}', flush=True)
            run(nb, slow)
    elif cmd == 'stats':
        for nb in nbs:
            e, x = stats(nb)
            print(f'{nb.name:28} exported {e:5}  example/test {x:5}  ratio {x/e if e else float("nan"):.2f}')
    elif cmd == 'check':
        bad = {nb.name: m for nb in nbs if (m := missing_figures(nb))}
        for name, cells in bad.items():
            print(f'{name}: cells {cells} draw a figure but were committed without it; '
                  f'run `python tools/notebooks.py run nbs/{name}` and commit.', file=sys.stderr)
        return 1 if bad else 0
    else:
        print(__doc__, file=sys.stderr)
        return 2

if __name__ == '__main__': sys.exit(main(*sys.argv[1:]))
