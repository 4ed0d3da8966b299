"A real browser: Voila serves the demo notebook, headless Chromium picks a clip, presses Tag and reads the labels."
import os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path('/usr/bin/chromium')
FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']
ARTIFACTS = ROOT/'artifacts'/'browser'

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason='Debian chromium is not installed (/usr/bin/chromium); apt-get install chromium'),
    pytest.mark.timeout(600)]
sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install playwright)')
if not (shutil.which('voila') or (Path(sys.executable).parent/'voila').exists()): pytest.skip('voila is not installed', allow_module_level=True)

from audioset_nb.inference import example_clips, load_tagger, tag
from audioset_nb.models import build_model, save_checkpoint

LOADED = "sel => { const e = document.querySelector(sel); const i = e && (e.tagName == 'IMG' ? e : e.querySelector('img')); return i && i.complete && i.naturalWidth > 100; }"

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def wait_for_port(port, proc, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None: raise RuntimeError(f'voila exited with {proc.returncode}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0: return
        time.sleep(0.5)
    raise TimeoutError(f'voila did not listen on port {port} within {timeout} s')

@pytest.fixture(scope='module')
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp('browser')
    (d/'ckpts').mkdir(); (d/'tmp').mkdir()
    torch.manual_seed(0)
    save_checkpoint(d/'ckpts'/'cnn6.pth', build_model('Cnn6'), model_type='Cnn6')
    save_checkpoint(d/'sed.pth', build_model('Cnn14_DecisionLevelMax'), model_type='Cnn14_DecisionLevelMax')
    env = {**os.environ, 'AUDIOSET_NB_CHECKPOINTS': str(d/'ckpts'), 'TMPDIR': str(d/'tmp'), 'MPLBACKEND': 'Agg'}
    port = free_port()
    voila = shutil.which('voila') or str(Path(sys.executable).parent/'voila')
    log = open(d/'voila.log', 'w')
    proc = subprocess.Popen([voila, str(ROOT/'nbs'/'05a_demo.ipynb'), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                             '--ServerApp.ip=127.0.0.1'], cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        yield d, f'http://127.0.0.1:{port}/'
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True); shutil.copy(d/'voila.log', ARTIFACTS/'voila.log')

def test_pick_a_clip_press_tag_see_the_top_label(served):
    d, url = served
    clips = example_clips(d/'tmp'/'audioset_nb_examples')
    want = tag(load_tagger(d/'ckpts'/'cnn6.pth'), clips['chirp.wav']).top(10)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={'width': 1200, 'height': 1400})
            page.goto(url, timeout=120_000)
            button = page.get_by_role('button', name='Tag')
            button.wait_for(timeout=180_000)
            page.locator('select').first.select_option('chirp.wav')
            button.click()
            top = page.locator('ol.audioset-top li .label')
            top.first.wait_for(timeout=180_000)
            page.wait_for_function(LOADED, arg='.audioset-chart', timeout=60_000)
            page.screenshot(path=str(ARTIFACTS/'demo.png'), full_page=True)
            shown = top.all_inner_texts()
            assert 'chirp.wav' in page.inner_text('body')
            assert shown == [l for l, _ in want], (shown, want)
            # a decision-level checkpoint, typed in: the SED picture appears as well
            page.get_by_placeholder('path/to/checkpoint.pth').fill(str(d/'sed.pth'))
            button.click()
            page.wait_for_function(LOADED, arg='.audioset-sed', timeout=180_000)
            page.screenshot(path=str(ARTIFACTS/'demo-sed.png'), full_page=True)
            assert 'model Cnn14_DecisionLevelMax' in page.inner_text('body')
            want_sed = tag(load_tagger(d/'sed.pth'), clips['chirp.wav']).top(1)[0][0]
            assert top.first.inner_text() == want_sed
        finally: browser.close()
    assert (ARTIFACTS/'demo.png').stat().st_size > 10_000
