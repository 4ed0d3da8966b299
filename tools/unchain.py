"""Split `a; b` into one statement per line in .py files and notebook code cells, proving each change safe.

    python tools/unchain.py FILE...   # rewrites the files in place; prints what it could not split

A line `if c: a; b` becomes a block. A change is kept only if the code's syntax tree is unchanged
(`ast.dump` ignores positions), so the rewrite cannot alter what the code does.
"""
import ast, io, json, sys, tokenize
from pathlib import Path

COMPOUND = {'if', 'elif', 'else', 'for', 'while', 'with', 'try', 'except', 'finally', 'def', 'class', 'async'}


def _header_colon(toks:list) -> int|None:
    "Index in `toks` of the colon that ends a compound statement's header, if the line starts one."
    if not toks or toks[0].type != tokenize.NAME or toks[0].string not in COMPOUND: return None
    depth = lambdas = 0
    for i, t in enumerate(toks):
        if t.type != tokenize.OP and not (t.type == tokenize.NAME and t.string == 'lambda'): continue
        if t.string == 'lambda' and depth == 0: lambdas += 1
        elif t.string in '([{': depth += 1
        elif t.string in ')]}': depth -= 1
        elif t.string == ':' and depth == 0:
            if lambdas: lambdas -= 1
            else: return i
    return None


def _split_line(line:str) -> str|None:
    "`line` (one physical line holding one logical line) with its `;`-chained statements on lines of their own."
    try: toks = [t for t in tokenize.generate_tokens(io.StringIO(line).readline)
                 if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, IndentationError, SyntaxError): return None
    depth, semis = 0, []
    for i, t in enumerate(toks):
        if t.type != tokenize.OP: continue
        if t.string in '([{': depth += 1
        elif t.string in ')]}': depth -= 1
        elif t.string == ';' and depth == 0: semis.append(i)
    if not semis: return None
    comment = toks[-1].string if toks[-1].type == tokenize.COMMENT else ''
    code = [t for t in toks if t.type != tokenize.COMMENT]
    indent = line[:len(line) - len(line.lstrip())]
    col = lambda t: t.start[1]
    hc = _header_colon(code)
    head, body_start, body_indent = '', 0, indent
    if hc is not None and hc < semis[0]:
        head = line[:code[hc].end[1]].rstrip()
        body_start, body_indent = code[hc + 1].start[1], indent + '    '
    cuts = [body_start] + [col(toks[i]) + 1 for i in semis]
    ends = [col(toks[i]) for i in semis] + [code[-1].end[1]]
    stmts = [line[a:b].strip() for a, b in zip(cuts, ends)]
    stmts = [s for s in stmts if s]
    if comment: stmts[-1] += '  ' + comment
    out = ([head] if head else []) + [body_indent + s for s in stmts]
    return '\n'.join(out) + '\n'


def unchain(src:str) -> tuple:
    "(`src` with chained statements split, lines that could not be split)."
    try: before = ast.dump(ast.parse(src))
    except SyntaxError: return src, []
    lines, failed = src.splitlines(keepends=True), []
    for i, line in enumerate(lines):
        if ';' not in line: continue
        new = _split_line(line)
        if new is None: continue
        trial = lines[:i] + [new] + lines[i + 1:]
        try: ok = ast.dump(ast.parse(''.join(trial))) == before
        except SyntaxError: ok = False
        if ok: lines[i] = new
        else: failed.append(line.rstrip())
    out = ''.join(lines)
    if src.endswith('\n') is False and out.endswith('\n'): out = out[:-1]
    return out, failed


def fix_file(path:Path) -> list:
    if path.suffix == '.ipynb':
        nb = json.loads(path.read_text())
        failed = []
        for c in nb['cells']:
            if c['cell_type'] != 'code': continue
            src = ''.join(c['source'])
            new, f = unchain(src)
            failed += f
            if new != src: c['source'] = new.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        return failed
    src = path.read_text()
    new, failed = unchain(src)
    if new != src: path.write_text(new)
    return failed


if __name__ == '__main__':
    for p in sys.argv[1:]:
        for line in fix_file(Path(p)): print(f'{p}: not split: {line.strip()}')
