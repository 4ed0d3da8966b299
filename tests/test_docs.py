"""The documentation site: built without Quarto, every page opened in headless Chromium; figures render, no console
errors, links resolve. Notebook outputs that a rerun does not change."""
import functools, http.server, importlib.util, json, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse
import pytest
from conftest import cli_env

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path('/usr/bin/chromium')
spec = importlib.util.spec_from_file_location('docs', ROOT/'tools'/'docs.py')
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)
spec = importlib.util.spec_from_file_location('notebooks', ROOT/'tools'/'notebooks.py')
notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(notebooks)

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp('site')/'_docs'
    pages = docs.build(out)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield out, pages, f'http://127.0.0.1:{srv.server_address[1]}/'
    srv.shutdown()

def test_pages_in_reading_order(site):
    out, pages, _ = site
    assert sorted(p.stem for p in pages) == sorted([p.stem for p in (ROOT/'nbs').glob('*.ipynb')] + ['BENCHMARKS'])
    assert pages[0].name == 'index.html'
    nav = re.findall(r'<a href="([^"]+)"', (out/'20_pack.html').read_text().split('</nav>')[0])
    assert nav == [p.name for p in pages]  # every page, in the notebooks' order
    text = (out/'20_pack.html').read_text()
    assert '#| export' not in text and 'default_exp' not in text  # directives and hidden cells are not shown

def test_figures_committed():
    bad = {nb.name: notebooks.missing_figures(nb) for nb in notebooks.notebooks([])}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, 'cells draw figures but were committed without them: run tools/notebooks.py run'

@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason='Debian chromium is not installed (/usr/bin/chromium); apt-get install chromium')
@pytest.mark.timeout(600)
def test_every_page_in_a_browser(site):
    sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install playwright)')
    out, pages, base = site
    figures = 0
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=['--no-sandbox'])
        page = browser.new_page()
        errors = []
        page.on('console', lambda m: errors.append(f'{page.url}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f'{page.url}: {e}'))
        for f in pages:
            resp = page.goto(base + f.name)
            assert resp.status == 200, f
            widths = page.eval_on_selector_all('main img', 'imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)')
            assert all(w > 0 for w in widths), (f.name, widths)
            figures += len(widths)
            for href in page.eval_on_selector_all('a[href]', 'as => as.map(a => a.href)'):
                u = urlparse(href)
                if u.netloc != urlparse(base).netloc: continue
                assert (out/(u.path.lstrip('/') or 'index.html')).exists(), (f.name, href)
                if u.fragment and u.path.endswith(f.name):
                    assert page.locator(f'[id="{u.fragment}"]').count(), (f.name, href)
        browser.close()
    assert not errors, errors
    # every committed figure is on a page
    assert figures == sum(notebooks.figures(nb) for nb in notebooks.notebooks([]))

def saved_outputs(nb:Path)->list:
    "The outputs a notebook file keeps, cell by cell."
    return [c.get('outputs', []) for c in json.loads(nb.read_text())['cells']]

@pytest.mark.parametrize('name', ['00_fileio', '91_mirror'])
def test_a_rerun_leaves_the_outputs_unchanged(name, tmp_path):
    "Examples print paths relative to their own folder and no ports or times, so a rerun changes no output."
    nb = tmp_path/f'{name}.ipynb'
    shutil.copy(ROOT/'nbs'/nb.name, nb)
    runs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, str(ROOT/'tools'/'notebooks.py'), 'run', str(nb)], env=cli_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs.append(saved_outputs(nb))
    assert any(runs[0]), 'the notebook printed nothing'
    changed = [i for i, (a, b) in enumerate(zip(*runs)) if a != b]
    assert not changed, f'{name}: cells {changed} print something that changes between runs: {runs[1][changed[0]]}'

def test_a_widget_leaves_no_model_id(tmp_path):
    "A widget's saved view names a model id that is new each run (and whose state is not saved): its text stays."
    nb = tmp_path/'w.ipynb'
    cell = dict(cell_type='code', execution_count=None, id='c0', metadata={}, outputs=[],
                source='import ipywidgets\nipywidgets.IntSlider(value=3, description="n")')
    nb.write_text(json.dumps(dict(cells=[cell], metadata={}, nbformat=4, nbformat_minor=5)))
    runs = []
    for _ in range(2):
        notebooks.run(nb)
        runs.append(saved_outputs(nb))
    data = runs[0][0][0]['data']
    assert notebooks.WIDGET_VIEW not in data and 'IntSlider(value=3' in ''.join(data['text/plain'])
    assert runs[0] == runs[1]
