"""Privilege parity (module_utils/privileges.py) on the /proc/PID/status lines of the real builds.

tests/fixtures/real-stats/proc-status-privileges.txt: C and the Go port run by systemd with -u nobody
(C drops to nobody, Go stays root) and the Go port with User=nobody, Group=nogroup and
AmbientCapabilities=CAP_NET_BIND_SERVICE (the way forward).
"""
import os
import pathlib
import shutil
import tempfile

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'real-stats',
                       'proc-status-privileges.txt')
NAMES = {'users': {0: 'root', 65534: 'nobody', 999: 'mtproxy'}, 'groups': {0: 'root', 65534: 'nogroup', 4: 'adm'}}


def sections():
    found, current = {}, None
    with open(FIXTURE) as handle:
        for line in handle:
            if line.startswith('#'):
                continue
            if line.startswith('== '):
                current = tuple(line[3:].split())
                found[current] = ''
            elif current:
                found[current] += line
    return found


SECTIONS = sections()


def tree(shape):
    procs = []
    for (name, role), text in sorted(SECTIONS.items(), key=lambda item: item[0][1]):
        if name == shape:
            procs.append(dict(pv.parse_status(text), role=role, pid=100 + len(procs)))
    assert procs, shape
    return procs


def compare(c, go, granted=()):
    return pv.compare(c, go, granted=granted, users=NAMES['users'], groups=NAMES['groups'])


def test_parse_status_fields():
    proc = pv.parse_status(SECTIONS[('c-root', 'main')])
    assert proc['uid'] == [65534] * 4 and proc['gid'] == [65534] * 4 and proc['groups'] == [65534]
    assert proc['capeff'] == '0' * 16 and proc['capbnd'] == '00000000a82425fb' and proc['no_new_privs'] == 0
    go = pv.parse_status(SECTIONS[('go-user', 'worker')])
    assert pv.cap_names(go['capeff']) == pv.cap_names(go['capamb']) == ['CAP_NET_BIND_SERVICE']


def test_not_a_status_text_is_refused():
    with pytest.raises(pv.PrivilegeError):
        pv.parse_status('Name:\tx\nUid:\tnot numbers\n')
    with pytest.raises(pv.PrivilegeError):
        pv.parse_status('')


def test_go_as_root_has_more_privilege_than_c_named_per_process():
    result = compare(tree('c-root'), tree('go-root'))
    assert result['verdict'] == 'more'
    assert result['more'][0] == 'main pid 100 and worker pid 101 run as uid 0 (root) where C runs as uid 65534 (nobody)'
    assert result['more'][1] == 'Go has group 0 (root), C has not'
    assert result['more'][2].startswith('Go holds 15 capabilities (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID')
    assert result['c'] == 'uid 65534 (nobody), gid 65534 (nogroup), groups 65534 (nogroup), no capability'
    assert result['message'].startswith('Go would run with more privilege than C: main pid 100 and worker pid 101')


def test_the_drop_in_way_forward_keeps_only_the_granted_bind_capability():
    result = compare(tree('c-root'), tree('go-user'), granted=['CAP_NET_BIND_SERVICE'])
    assert result['verdict'] == 'same' and result['message'] is None
    assert result['granted'] == ['CAP_NET_BIND_SERVICE']
    ungranted = compare(tree('c-root'), tree('go-user'))
    assert ungranted['verdict'] == 'more'
    assert ungranted['more'] == ['Go holds CAP_NET_BIND_SERVICE that C does not']


def test_another_user_differs_without_more_power():
    c = tree('c-root')
    other = [dict(p, uid=[999] * 4, gid=[999] * 4, groups=[999]) for p in tree('go-user')]
    result = compare(c, other, granted=['net_bind_service'])
    assert result['verdict'] == 'differs'
    assert result['differs'] == ['Go runs as uid 999 (mtproxy), C as uid 65534 (nobody)',
                                 'Go has group 999 that C has not']
    assert result['message'].startswith('Go would run as another identity than C')


def test_a_supplementary_group_c_has_not_is_more_privilege():
    # systemd's User= gives the user's groups (initgroups); C's setgroups() keeps only its gid.
    c = tree('c-root')
    go = [dict(p, groups=[65534, 4]) for p in tree('go-user')]
    result = compare(c, go, granted=['net_bind_service'])
    assert result['verdict'] == 'more' and result['more'] == ['Go has supplementary group 4 (adm) that C has not']


def test_a_saved_root_uid_counts_as_root():
    go = [dict(p, uid=[65534, 65534, 0, 65534]) for p in tree('c-root')]
    assert compare(tree('c-root'), go)['verdict'] == 'more'


def test_same_tree_is_same():
    assert compare(tree('go-root'), tree('go-root'))['verdict'] == 'same'


def test_cap_names_and_masks():
    assert pv.cap_names('0000000000000400') == ['CAP_NET_BIND_SERVICE']
    assert pv.cap_mask(['CAP_NET_BIND_SERVICE', 'net_admin']) == (1 << 10) | (1 << 12)
    assert pv.cap_names(1 << 45) == ['CAP_45']
    with pytest.raises(pv.PrivilegeError):
        pv.cap_mask(['CAP_BOGUS'])


@pytest.mark.parametrize('ports, start, lines', [
    ([443], 1024, ['User=nobody', 'Group=nogroup', 'AmbientCapabilities=CAP_NET_BIND_SERVICE']),
    ([8443, 9443], 1024, ['User=nobody', 'Group=nogroup']),
    ([443], 0, ['User=nobody', 'Group=nogroup']),
    ([], 1024, ['User=nobody', 'Group=nogroup']),
])
def test_dropin_lines(ports, start, lines):
    assert pv.dropin_lines('nobody', 'nogroup', ports, start) == lines


def test_unprivileged_port_start(tmp_path):
    path = tmp_path / 'start'
    path.write_text('0\n')
    assert pv.unprivileged_port_start(str(path)) == 0
    assert pv.unprivileged_port_start(str(tmp_path / 'none')) == 1024


@pytest.fixture
def searchable_dir():
    """A directory every user may search down to (pytest's own tmp_path sits in a 0700 directory)."""
    path = tempfile.mkdtemp(prefix='mtproxy-privileges-')
    os.chmod(path, 0o755)
    yield pathlib.Path(path)
    shutil.rmtree(path)


def test_unreadable_for_names_mode_and_directories(searchable_dir):
    tmp_path = searchable_dir
    me = os.stat(str(tmp_path)).st_uid
    other = 65534 if me != 65534 else 65533
    public = tmp_path / 'public.conf'
    public.write_text('x')
    public.chmod(0o644)
    private = tmp_path / 'private.conf'
    private.write_text('x')
    private.chmod(0o600)
    shared = tmp_path / 'group.conf'
    shared.write_text('x')
    shared.chmod(0o640)
    gid = os.stat(str(shared)).st_gid
    tmp_path.chmod(0o755)
    problems = dict(pv.unreadable_for([str(public), str(private), str(shared)], other, [gid + 1]))
    assert sorted(problems) == [str(shared), str(private)]
    assert problems[str(private)] == 'mode 0600, uid %d, gid %d' % (me, os.stat(str(private)).st_gid)
    assert pv.unreadable_for([str(shared)], other, [gid]) == []
    tmp_path.chmod(0o700)
    blocked = dict(pv.unreadable_for([str(public)], other, []))
    assert blocked[str(public)].startswith('directory %s (mode 0700' % tmp_path)
    assert dict(pv.unreadable_for([str(tmp_path / 'gone')], other, []))[str(tmp_path / 'gone')] == \
        'No such file or directory'


def test_snapshot_tree_of_this_process():
    snap = pv.snapshot_tree(os.getpid())
    assert snap[0]['role'] == 'main' and snap[0]['pid'] == os.getpid()
    assert snap[0]['uid'][1] == os.geteuid()
    with pytest.raises(pv.PrivilegeError):
        pv.read(2 ** 22 + 12345)
