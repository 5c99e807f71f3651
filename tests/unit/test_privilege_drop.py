"""privilege_drop (module_utils/_flow/privilege_drop.py): what the pre-warm and the flip do with Go's
privileges, on the /proc/PID/status lines of the real builds (test_privileges.tree)."""
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import privilege_drop as pd
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.pointing import render_dropin
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import service_setting
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import resolve_settings

from test_privileges import searchable_dir, tree  # noqa: F401 (a fixture)  pylint: disable=unused-import


def manifest(c_shape='c-root', client_ports=(443,), files=()):
    return {'unit_name': 'MTProxy.service', 'service': 'MTProxy', 'client_ports': list(client_ports),
            'privileges': pv.frozen_form(tree(c_shape)), 'files': list(files)}


def test_frozen_form_keeps_no_pid():
    frozen = pv.frozen_form(tree('c-root'))
    assert all('pid' not in proc for proc in frozen)
    assert [proc['role'] for proc in frozen] == ['main', 'worker']
    assert pv.main_identity(frozen) == (65534, 65534)


@pytest.mark.parametrize('mode', ['binary', 'ignore'])
def test_no_lines_but_for_service(mode):
    assert pd.service_lines(mode, manifest(), 'container', 'container') == []


def test_service_lines_are_c_user_and_group_with_the_bind_capability_below_the_start():
    lines = pd.service_lines('service', manifest(), 'systemd', 'dropin', port_start=1024)
    assert lines == ['User=%s' % pv.user_name(65534), 'Group=%s' % pv.group_name(65534),
                     'AmbientCapabilities=CAP_NET_BIND_SERVICE']
    assert pd.service_lines('service', manifest(client_ports=[8443]), 'systemd', None, port_start=1024)[2:] == []
    assert pd.service_lines('service', manifest(), 'systemd', None, port_start=0)[2:] == []


def test_service_lines_for_a_c_that_runs_as_root_are_none():
    assert pd.service_lines('service', manifest('go-root'), 'systemd', 'dropin', port_start=1024) == []


@pytest.mark.parametrize('kind, method, said', [
    ('container', None, 'a container service'), ('compose', None, 'a compose service'),
    ('systemd', 'symlink', 'pointed with method=symlink')])
def test_service_is_refused_where_no_drop_in_is_written(kind, method, said):
    with pytest.raises(pd.PrivilegeDropError) as err:
        pd.service_lines('service', manifest(), kind, method)
    assert said in str(err.value) and 'privilege_drop=binary' in str(err.value)


def test_service_needs_what_c_runs_as():
    old = manifest()
    del old['privileges']
    with pytest.raises(pd.PrivilegeDropError, match='refreeze=true'):
        pd.service_lines('service', old, 'systemd', 'dropin')


def test_binary_refuses_a_go_that_stays_root_naming_both_and_the_way_forward():
    judged = pd.judge('binary', manifest(), tree('go-root'))
    assert judged['refused'] and judged['verdict'] == 'more'
    assert 'uid 0 (root) where C runs as uid 65534' in judged['message']
    assert 'mtproxy_cutover_privilege_drop=service' in judged['message']
    assert 'mtproxy_cutover_privilege_drop=ignore' in judged['message']


def test_a_container_is_told_to_set_its_user():
    judged = pd.judge('binary', manifest(), tree('go-root'), runtime_kind='container')
    assert judged['refused'] and "container's user" in judged['message'] and 'nobody:nogroup' in judged['message']
    assert 'mtproxy_cutover_privilege_drop=service' not in judged['message']


def test_ignore_reports_and_does_not_refuse():
    judged = pd.judge('ignore', manifest(), tree('go-root'))
    assert judged['verdict'] == 'more' and not judged['refused'] and judged['mode'] == 'ignore'


def test_service_grants_only_the_bind_capability_of_its_own_lines():
    lines = ['User=nobody', 'Group=nogroup', 'AmbientCapabilities=CAP_NET_BIND_SERVICE']
    judged = pd.judge('service', manifest(), tree('go-user'), lines)
    assert not judged['refused'] and judged['granted'] == ['CAP_NET_BIND_SERVICE']
    # Without the line the same capability is more privilege than C's.
    assert pd.judge('service', manifest(), tree('go-user'), lines[:2])['refused']


def test_a_manifest_without_privileges_is_unknown_not_refused():
    old = manifest()
    del old['privileges']
    judged = pd.judge('binary', old, tree('go-root'))
    assert judged['verdict'] == 'unknown' and not judged['refused'] and 'not compared' in judged['message']


def test_file_problems_name_what_c_opened_as_root(searchable_dir):  # noqa: F811
    tmp_path = searchable_dir
    config = tmp_path / 'proxy-multi.conf'
    config.write_text('x')
    os.chmod(str(config), 0o600)
    secret = tmp_path / 'secret'
    secret.write_text('x')
    os.chmod(str(secret), 0o644)
    logs = tmp_path / 'logs'
    logs.mkdir()
    os.chmod(str(logs), 0o755)
    files = [{'role': 'config', 'path': str(config), 'resolved': str(config)},
             {'role': 'secret_file', 'path': str(secret), 'resolved': str(secret)},
             {'role': 'log', 'path': str(logs / 'mtproxy.log'), 'resolved': str(logs / 'mtproxy.log')}]
    problems = pd.file_problems('service', manifest(files=files))
    assert len(problems) == 2, problems
    assert problems[0].startswith('config %s: mode 0600' % config)
    assert problems[1].startswith('log %s: directory %s' % (logs / 'mtproxy.log', logs))
    assert pd.file_problems('binary', manifest(files=files)) == []
    os.chmod(str(logs), 0o777)
    os.chmod(str(config), 0o644)
    assert pd.file_problems('service', manifest(files=files)) == []


def test_render_dropin_appends_the_service_lines_after_exec_start():
    text = render_dropin('/opt/MTProxy/mtproto-proxy -u nobody -H 443 proxy-multi.conf', '/opt/go/mtproto-proxy',
                         ['User=nobody', 'Group=nogroup'])
    assert text.endswith('ExecStart=\nExecStart=/opt/go/mtproto-proxy -u nobody -H 443 proxy-multi.conf\n'
                         'User=nobody\nGroup=nogroup\n')
    assert render_dropin('/a -H 443 c', '/b').endswith('ExecStart=/b -H 443 c\n')


def test_service_setting_last_assignment_wins_and_empty_resets():
    texts = [('/lib/systemd/system/MTProxy.service', '[Unit]\nUser=unit\n[Service]\nUser=mtproxy\nGroup=mtproxy\n'),
             ('/etc/systemd/system/MTProxy.service.d/override.conf', '[Service]\nUser=proxy\nGroup=\n')]
    assert service_setting(texts, 'User') == 'proxy'
    assert service_setting(texts, 'Group') is None
    assert service_setting(texts[:1], 'Group') == 'mtproxy'
    assert service_setting([], 'User') is None


@pytest.mark.parametrize('method, refused', [(None, False), ('dropin', False), ('symlink', True),
                                             ('container', True)])
def test_settings_refuse_service_with_a_method_that_writes_no_drop_in(method, refused):
    given = {'mtproxy_cutover_privilege_drop': 'service'}
    if method:
        given['mtproxy_cutover_method'] = method
    problems = resolve_settings(given)['problems']
    assert bool([p for p in problems if 'privilege_drop=service' in p]) == refused, problems
    assert resolve_settings({})['settings']['privilege_drop'] == 'binary'
