"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which is not available here).

    python tools/readme.py          # rewrite README.md
    python tools/readme.py --check  # exit 1 if README.md is not what index.ipynb gives
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    "Markdown cells as they are, code cells fenced as python; `#| hide` cells left out."
    parts = []
    for c in json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        parts.append(src if c['cell_type'] == 'markdown' else f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    want, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != want:
            sys.exit('README.md is out of step with nbs/index.ipynb: run `python tools/readme.py` and commit both.')
    else: readme.write_text(want, encoding='utf-8')
