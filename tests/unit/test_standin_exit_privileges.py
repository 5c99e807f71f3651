"""The stand-in ends and runs as the real builds do (tests/fixtures/real-stats/README.md, "Exit semantics and
privileges"): each case of module_utils/exit_semantics provoked with its own argv rewrite, compared with the
measured table; the processes' uid, groups and capabilities read with module_utils/privileges."""
import os
import signal
import socket

import pytest

import test_standin as ts
from loopback import free_port, wait_for

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import exit_semantics as es
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges

END_TIMEOUT_S = 10


@pytest.fixture
def lab(tmp_path):
    the_lab = ts.Lab(tmp_path)
    yield the_lab
    the_lab.cleanup()


def listening(host, port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1)
    return sock


def outcome_of(proxy, timeout=END_TIMEOUT_S):
    code = proxy.wait(timeout)
    return es.Outcome(es.KILLED, -code) if code < 0 else es.Outcome(es.EXITED, code)


def provoke(lab, flavour, workers, case):
    """The Outcome of ``case`` on the stand-in ``flavour`` with -M ``workers`` (None: no -M)."""
    stats_port, client_port = free_port(), free_port()
    argv = [lab.binary(flavour)] + lab.args(stats_port, client_port, workers)
    scratch = os.path.join(lab.dir, 'scratch')
    os.makedirs(scratch, exist_ok=True)
    argv = es.case_argv(case, argv, argv.index('backend.conf'), scratch)
    held = None
    if case == 'client_port_busy':
        held = listening('0.0.0.0', client_port)
    elif case == 'stats_port_busy':
        held = listening('127.0.0.1', stats_port)
    try:
        proxy = lab.start(flavour, argv[1:])
        if case == 'sigterm':
            key = 'has_current_config' if flavour == 'go' else 'pid'
            assert wait_for(lambda: (ts.try_stats(stats_port) or {}).get(key)), proxy.stderr()
            proxy.signal(signal.SIGTERM)
            return outcome_of(proxy)
        if case == 'stats_port_busy' and flavour == 'go':
            assert wait_for(lambda: 'runtime initialized' in proxy.stderr(), timeout=END_TIMEOUT_S), proxy.stderr()
            running = proxy.proc.poll() is None
            proxy.signal(signal.SIGTERM)
            assert outcome_of(proxy) == es.Outcome(es.EXITED, 0)
            return es.Outcome(es.RUNNING, None) if running else es.Outcome(es.UNKNOWN, None)
        return outcome_of(proxy)
    finally:
        if held:
            held.close()


@pytest.mark.parametrize('flavour, workers', [('c', 1), ('c', None), ('go', 1), ('go', None)])
@pytest.mark.parametrize('case', [case for case, _text in es.CASES])
def test_each_case_ends_as_measured_on_the_real_builds(lab, flavour, workers, case):
    expected = es.measured(flavour, workers or 0)[case]
    assert provoke(lab, flavour, workers, case) == expected


def test_the_stand_in_pair_compares_as_the_real_pair(lab):
    c = dict((case, provoke(lab, 'c', 1, case)) for case, _text in es.CASES)
    go = dict((case, provoke(lab, 'go', 1, case)) for case, _text in es.CASES)
    assert es.compare_all(c, go) == es.compare_all(es.measured('c'), es.measured('go'))


def test_config_directory_messages_as_measured(lab):
    scratch = os.path.join(lab.dir, 'scratch')
    os.makedirs(scratch)
    rc, proxy = lab.run('c', lab.args(free_port(), free_port())[:-3] + [scratch, '-c', '512'])
    assert rc == 2
    assert [ts.strip_c_prefix(line) for line in proxy.stderr().splitlines()[-3:]] == [
        'error reading configuration file (null): Is a directory',
        'error while re-reading config file %s, new configuration NOT applied' % scratch,
        'config check failed! (code -2)']
    rc, proxy = lab.run('go', lab.args(free_port(), free_port())[:-3] + [scratch, '-c', '512'])
    assert rc == 1
    assert proxy.stderr().splitlines()[-1] == (
        'signal loop error: cannot re-read config file %s: read %s: is a directory' % (scratch, scratch))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason='-u nobody drops privileges only when started as root')


def tree_when_ready(lab, flavour, workers):
    proxy = lab.serve(flavour, workers=workers, extra=['-u', 'nobody'])
    assert wait_for(lambda: len(ts.children_of(proxy.pid)) == workers)
    return proxy, privileges.snapshot_tree(proxy.pid)


@needs_root
def test_c_with_u_nobody_runs_as_nobody_master_and_workers(lab):
    os.chmod(lab.dir, 0o755)
    proxy, tree = tree_when_ready(lab, 'c', 2)
    assert [p['role'] for p in tree] == ['main', 'worker', 'worker']
    for proc in tree:
        assert proc['uid'] == [65534] * 4 and proc['gid'] == [65534] * 4 and proc['groups'] == [65534]
        assert proc['capeff'] == proc['capprm'] == proc['capamb'] == '0' * 16
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(END_TIMEOUT_S) == 0


@needs_root
def test_c_reads_root_only_files_before_it_drops_privileges(lab):
    for path in (lab.conf, lab.aes):
        os.chmod(path, 0o600)
    os.chmod(lab.dir, 0o700)
    proxy, tree = tree_when_ready(lab, 'c', 1)
    assert tree[0]['uid'][1] == 65534
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(END_TIMEOUT_S) == 0


@needs_root
def test_go_ignores_u_nobody_and_has_more_privilege_than_c(lab):
    os.chmod(lab.dir, 0o755)
    c_proxy, c_tree = tree_when_ready(lab, 'c', 1)
    go_proxy, go_tree = tree_when_ready(lab, 'go', 1)
    assert [p['uid'][1] for p in go_tree] == [0, 0]
    result = privileges.compare(c_tree, go_tree)
    assert result['verdict'] == 'more'
    assert result['more'][0].startswith('main pid %d and worker pid %d run as uid 0 (root) where C runs as uid 65534'
                                        % (go_tree[0]['pid'], go_tree[1]['pid']))
    assert 'Go would run with more privilege than C' in result['message']
    for proxy in (c_proxy, go_proxy):
        proxy.signal(signal.SIGTERM)
        assert proxy.wait(END_TIMEOUT_S) == 0
