"""Every relative link in the README and the docs points to a file or folder that exists.

Checked: ``[text](target)`` and ``![alt](target)`` links and ``[label]: target`` definitions in
README.md, docs/**/*.md and the README.md files of the top-level folders, outside fenced code
blocks and inline code. A ``#anchor`` is dropped (anchors are not checked); URLs with a scheme
(``https:``, ``mailto:`` ...) and pure anchors are skipped.
"""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS_WITH_README = ['configs', 'data', 'docker', 'ops', 'requirements', 'tests', 'tools']

_FENCE = re.compile(r'^\s*(```|~~~)')
_INLINE_CODE = re.compile(r'(`+).*?\1')
# the `](target "title")` / `](<target>)` part of [text](...) and ![alt](...), nested ones too
_INLINE_LINK = re.compile(r'\]\(\s*(<[^>]*>|[^)\s]+)[^)]*\)')
_DEFINITION = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)')
_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')


def markdown_files():
    files = [ROOT / 'README.md']
    files += sorted((ROOT / 'docs').rglob('*.md'))
    for folder in FOLDERS_WITH_README:
        files += sorted((ROOT / folder).rglob('README.md'))
    return [f for f in files if f.is_file()]


def relative_links(text: str):
    """``(line number, target)`` of the relative links of a markdown text (anchor dropped)."""
    links, in_fence = [], False
    for lineno, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = _INLINE_CODE.sub('', line)
        targets = [m.group(1) for m in _INLINE_LINK.finditer(line)]
        definition = _DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        for target in targets:
            target = target.strip('<>')
            if not target or target.startswith('#') or _SCHEME.match(target):
                continue
            target = unquote(target.split('#', 1)[0])
            if target:
                links.append((lineno, target))
    return links


def test_relative_links_parse():
    text = '\n'.join([
        'See [a](docs/a.md#sec), ![img](images/x.png "title") and [web](https://x.org/y).',
        '[anchor](#only) `[code](not/a/link.md)` [sp](<with space.md>)',
        '```bash', '[fenced](not/a/link.md)', '```',
        '[ref]: ../up.md',
        '[![badge](b.svg)](c.md)',
    ])
    assert relative_links(text) == [(1, 'docs/a.md'), (1, 'images/x.png'),
                                    (2, 'with space.md'), (6, '../up.md'),
                                    (7, 'b.svg'), (7, 'c.md')]


def broken_links(md: Path, root: Path = ROOT):
    """``'<file>:<line>: <target>'`` of every relative link of ``md`` that resolves to nothing
    (a leading ``/`` means the repository root)."""
    broken = []
    for lineno, target in relative_links(md.read_text(encoding='utf-8')):
        base = root if target.startswith('/') else md.parent
        if not (base / target.lstrip('/')).exists():
            broken.append(f'{md.relative_to(root)}:{lineno}: {target}')
    return broken


def test_broken_links_are_reported(tmp_path):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'there.md').write_text('x')
    md = tmp_path / 'docs' / 'index.md'
    md.write_text('[ok](there.md#a) [up](../docs/there.md) [root](/docs/there.md)\n'
                  '[gone](missing.md) [dir](../nowhere/)\n')
    assert broken_links(md, tmp_path) == ['docs/index.md:2: missing.md',
                                          'docs/index.md:2: ../nowhere/']


@pytest.mark.parametrize('md', markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    broken = broken_links(md)
    assert not broken, 'links to files that do not exist:\n' + '\n'.join(broken)
