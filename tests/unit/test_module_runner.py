"""Every module whose code can start a program or move a file into place hands its AnsibleModule
helpers over first (_host.module.use_module); without it the host-side code fails at run time with
"no program runner" (mtproxy_info did, on every host, in CI)."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFIX = 'ansible_collections.mtproxy.cutover.plugins.module_utils.'
NEEDS_HELPERS = {'_host.process', '_host.files'}


def _imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            base = node.module[len(PREFIX):]
            names.add(base)
            # "from ..._host import process" names a module, not a function
            names.update(base + '.' + alias.name for alias in node.names)
    return {name for name in names if _source(name)}


def _source(name):
    path = ROOT / 'plugins' / 'module_utils' / (name.replace('.', '/') + '.py')
    return path if path.is_file() else None


def _reaches(path):
    seen, todo = set(), list(_imports(path))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_imports(_source(name)))
    return seen


def _calls_use_module(path):
    return any(isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'use_module'
               for node in ast.walk(ast.parse(path.read_text())))


MODULES = sorted((ROOT / 'plugins' / 'modules').glob('mtproxy_*.py'))


def test_the_walk_sees_the_runtimes_reach_the_program_runner():
    # guards the walk itself: the switch module reaches process through the runtimes
    assert NEEDS_HELPERS <= _reaches(ROOT / 'plugins' / 'modules' / 'mtproxy_switch.py')


@pytest.mark.parametrize('path', MODULES, ids=[p.stem for p in MODULES])
def test_a_module_that_reaches_the_runner_hands_it_over(path):
    if NEEDS_HELPERS & _reaches(path):
        assert _calls_use_module(path), '%s reaches %s but never calls use_module(module)' % (
            path.name, ', '.join(sorted(NEEDS_HELPERS & _reaches(path))))
