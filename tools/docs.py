#!/usr/bin/env python
"""Build the documentation site from the notebooks, without Quarto: python tools/docs.py [OUT]  (default _docs/)
One HTML page per notebook, with its committed outputs, in reading order (the notebooks' numbers), each with the
same navigation; index.html comes from nbs/index.ipynb. Hidden cells and cell directives are left out, as nbdev's
site does; links between notebooks point at their pages."""
import copy, html, json, re, shutil, sys
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from pygments.formatters import HtmlFormatter

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
PAGES = [ROOT/'BENCHMARKS.md']  # repository documents the notebooks link to, after the notebooks
CSS = """body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#222;display:flex}
nav{width:15rem;flex:none;padding:1rem;border-right:1px solid #ddd;height:100vh;position:sticky;top:0;overflow:auto;
box-sizing:border-box}
nav a{display:block;padding:.15rem 0;color:#225;text-decoration:none} nav a.here{font-weight:bold}
main{max-width:60rem;padding:1rem 2rem;min-width:0} pre{background:#f6f6f6;padding:.5rem;overflow:auto;font-size:13px}
.jp-OutputArea pre,.output pre{background:none} img{max-width:100%} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px} .jp-InputPrompt,.jp-OutputPrompt{display:none}"""

def page_name(nb:Path)->str: return 'index.html' if nb.stem == 'index' else f'{nb.stem}.html'

def title(book)->str:
    for c in book.cells:
        if c.cell_type == 'markdown' and (m := re.search(r'^#\s+(.+)$', c.source, re.M)): return m[1].strip()
    return 'audioset_nb'

def directives(src): return set(re.findall(r'^#\|\s*([\w-]+)', src, re.M))

def for_reader(book):
    "The cells a reader sees: no hidden or default_exp cells, no directive lines, notebook links made page links."
    book = copy.deepcopy(book)
    cells = []
    for c in book.cells:
        ds = directives(c.source) if c.cell_type == 'code' else set()
        if ds & {'hide', 'default_exp'}: continue
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.lstrip().startswith('#|'))
        else: c.source = re.sub(r'\]\((?:\./|\.\./|nbs/)?([\w.]+)\.(ipynb|md)(#[^)]*)?\)',
                                lambda m: f']({page_name(Path(m[1]))}{m[3] or ""})', c.source)
        cells.append(c)
    book.cells = cells
    return book

def nav(pages, here)->str:
    return ''.join(f'<a href="{p}"{" class=here" if p == here else ""}>{html.escape(t)}</a>' for p, t in pages)

def markdown_book(md:Path):
    "A repository markdown file (BENCHMARKS.md) as a one-cell notebook, so it becomes a page like the others."
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(md.read_text())])

def build(out:Path=ROOT/'_docs')->list[Path]:
    "Write the site into `out` (replaced); the pages written."
    nbs = sorted(NBS.glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem))
    books = {nb: nbformat.read(nb, as_version=4) for nb in nbs} | {md: markdown_book(md) for md in PAGES}
    pages = [(page_name(nb), title(b)) for nb, b in books.items()]
    exporter = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    code_css = HtmlFormatter(style='default').get_style_defs('.highlight')
    tmp = out.with_name(out.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp/'site.css').write_text(CSS + '\n' + code_css)
    written = []
    for (nb, book), (page, t) in zip(books.items(), pages):
        body, _ = exporter.from_notebook_node(for_reader(book))
        head = (f'<meta charset="utf-8"><title>{html.escape(t)} · audioset_nb</title>'
                '<link rel="icon" href="data:,"><link rel="stylesheet" href="site.css">')
        (tmp/page).write_text(f'<!doctype html><html lang="en"><head>{head}</head><body><nav><b>audioset_nb</b>'
                              f'{nav(pages, page)}</nav><main>{body}</main></body></html>')
        written.append(out/page)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return written

if __name__ == '__main__':
    pages = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT/'_docs')
    print(f'{len(pages)} pages in {pages[0].parent}')
