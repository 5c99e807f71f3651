"""Run mtproxy_stats and mtproxy_slo for real (ansible-core ad-hoc) against a scripted local /stats server."""
import json
import os
import subprocess
import sys

import pytest

from conftest import COLLECTIONS_ROOT
from stats_server import StatsServer, free_port

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'unit'))
from stats_fixtures import c_body, capture, go_body, go_not_ready  # noqa: E402

ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')


def run_module(module, args, tmp_path, check=False):
    """(failed, result) of one ad-hoc run of mtproxy.cutover.<module> on localhost."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_LOCAL_TEMP=str(tmp_path / 'local'),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / 'remote'), ANSIBLE_HOST_KEY_CHECKING='0',
               ANSIBLE_NOCOLOR='1', ANSIBLE_DEPRECATION_WARNINGS='0')
    cmd = [ANSIBLE, 'localhost', '-i', 'localhost,', '-c', 'local', '-m', 'mtproxy.cutover.' + module,
           '-a', json.dumps(args), '-e', 'ansible_python_interpreter=' + sys.executable]
    if check:
        cmd.append('--check')
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    # Ad-hoc output is 'localhost | SUCCESS => {json}' or 'localhost | FAILED! => {json}'.
    head, sep, payload = proc.stdout.partition(' => ')
    assert sep, 'unexpected ansible output: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:])
    result = json.loads(payload)
    return 'FAILED' in head, result


def slo(server, tmp_path, samples, check=False, **args):
    args = dict(url=server.url, samples=samples, interval=0.05, timeout=1, **args)
    failed, result = run_module('mtproxy_slo', args, tmp_path, check=check)
    assert not failed, result.get('msg')
    return result


def go_traffic(steps, dropped_per_step=0):
    return [{'body': go_body(packets=i * 100, dropped=i * dropped_per_step, accepted=i * 10)} for i in range(steps)]


# --- mtproxy_stats ----------------------------------------------------------------------------

def test_stats_reads_c_and_redacts(tmp_path):
    with StatsServer([{'body': capture('c-M1-after-obf2x50-backend-down.txt')}]) as server:
        failed, result = run_module('mtproxy_stats', {'url': server.url}, tmp_path)
    assert not failed and result['changed'] is False
    assert result['flavor'] == 'c'
    assert result['raw']['aes_pwd_hash'] == '<redacted>'
    assert 'ed8123f2649f53eb2c67037ed971f93a' not in json.dumps(result)
    assert result['raw']['total_accept_connections_failed'] == [0, 0, 0, 0, 0]
    assert result['metrics']['dropped_packets'] == 100
    assert result['metrics']['accepted_connections'] is None
    assert '-M' in result['no_signal']['accepted_connections']
    assert 'connections' in result['sections']


def test_stats_reads_go_in_check_mode(tmp_path):
    with StatsServer([{'body': capture('go-noM-after-burst200.txt')}]) as server:
        failed, result = run_module('mtproxy_stats', {'url': server.url}, tmp_path, check=True)
    assert not failed
    assert result['flavor'] == 'go'
    assert result['metrics']['bad_handshakes'] == 200
    assert result['raw']['config_reload_last_error'] == ''


def test_stats_fails_with_error_class(tmp_path):
    failed, result = run_module('mtproxy_stats', {'url': 'http://127.0.0.1:%d/stats' % free_port()}, tmp_path)
    assert failed and result['error'] == 'refused'
    with StatsServer([{'body': '<html><body>404 Not Found</body></html>', 'status': 404}]) as server:
        failed, result = run_module('mtproxy_stats', {'url': server.url}, tmp_path)
    assert failed and result['error'] == 'http_status'


def test_stats_refuses_non_loopback_url(tmp_path):
    failed, result = run_module('mtproxy_stats', {'url': 'http://192.0.2.1:8888/stats'}, tmp_path)
    assert failed
    assert 'not a loopback address' in result['msg']


# --- mtproxy_slo ------------------------------------------------------------------------------

def test_slo_pass_and_summary_as_baseline(tmp_path):
    with StatsServer(go_traffic(4)) as server:
        result = slo(server, tmp_path, 4)
        assert len(server.requests) == 4
    assert result['verdict'] == 'pass', result['failures']
    assert result['changed'] is False
    assert result['flavor'] == 'go'
    assert result['summary']['metrics']['client_packets']['delta'] == 300
    assert [s['metrics']['client_packets'] for s in result['samples']] == [0, 100, 200, 300]
    # The summary of one run is the baseline of the next: Go dropping 3% against a perfect window.
    with StatsServer(go_traffic(4, dropped_per_step=3)) as server:
        judged = slo(server, tmp_path, 4, baseline=result['summary'], thresholds={'min_success_rate': None})
    assert judged['verdict'] == 'fail'
    [failure] = judged['failures']
    assert (failure['metric'], failure['observed'], failure['limit']) == ('success_rate', 0.97, 0.98)


def test_slo_fail_on_dropped_packets_real_backend_down(tmp_path):
    steps = [{'body': capture('c-noM-after-burst200.txt')}, {'body': capture('c-noM-after-obf2x50-backend-down.txt')}]
    with StatsServer(steps) as server:
        result = slo(server, tmp_path, 2)
    assert result['verdict'] == 'fail'
    assert {f['metric'] for f in result['failures']} == {'success_rate', 'backend_healthy'}
    for failure in result['failures']:
        assert set(failure) >= {'metric', 'observed', 'limit', 'rule'}


def test_slo_inconclusive_without_traffic(tmp_path):
    with StatsServer([{'body': capture('go-M1-idle-plus2s.txt')}]) as server:
        result = slo(server, tmp_path, 3)
    assert result['verdict'] == 'inconclusive'
    assert result['inconclusive_reasons']
    assert 'uptime' in result['no_signal']


def test_slo_restart_inside_window(tmp_path):
    steps = [{'body': c_body(forwarded=100, uptime=40)}, {'body': c_body(forwarded=200, uptime=41)},
             {'body': c_body(forwarded=20, uptime=0, pid=4242)}]
    with StatsServer(steps) as server:
        result = slo(server, tmp_path, 3)
    assert result['verdict'] == 'fail'
    failure = [f for f in result['failures'] if f['metric'] == 'restart'][0]
    assert 'process_id changed' in failure['detail']
    assert result['restarts'][0]['between'] == [1, 2]


def test_slo_go_not_ready(tmp_path):
    steps = [{'body': go_not_ready(go_body())}] + go_traffic(3)[1:]
    with StatsServer(steps) as server:
        result = slo(server, tmp_path, 3)
    assert result['verdict'] == 'fail'
    assert [f['metric'] for f in result['failures']] == ['ready']
    with StatsServer(steps) as server:
        relaxed = slo(server, tmp_path, 3, require_ready=False)
    assert relaxed['verdict'] == 'pass', relaxed['failures']


def test_slo_scrape_error_limit_ends_window_early(tmp_path):
    steps = [{'body': go_body()}, {'fault': 'close'}, {'body': 'x', 'status': 500}, {'fault': 'truncate',
             'body': capture('go-M1-idle-start.txt')}, {'body': go_body(packets=500)}]
    with StatsServer(steps) as server:
        result = slo(server, tmp_path, 10, max_consecutive_errors=2)
        assert len(server.requests) == 4
    assert result['verdict'] == 'fail'
    assert result['scrape_errors']['by_kind'] == {'connection': 1, 'http_status': 1, 'truncated': 1}
    [failure] = [f for f in result['failures'] if f['metric'] == 'scrape_errors']
    assert (failure['observed'], failure['limit']) == (3, 2)


def test_slo_check_mode_judges_the_same(tmp_path):
    with StatsServer(go_traffic(3, dropped_per_step=10)) as server:
        result = slo(server, tmp_path, 3, check=True)
    assert result['verdict'] == 'fail'
    assert result['changed'] is False


@pytest.mark.parametrize('args, words', [
    ({'thresholds': {'min_sucess_rate': 0.9}}, 'unknown threshold'),
    ({'baseline': {'success_rate': 7}}, 'between 0 and 1'),
    ({'metric_overrides': {'nope': {'go': 'x'}}}, 'not a known metric'),
    ({'samples': 0}, 'samples'),
    ({'url': 'http://203.0.113.9/stats'}, 'loopback'),
])
def test_slo_bad_options_fail_before_sampling(tmp_path, args, words):
    with StatsServer([{'body': go_body()}]) as server:
        args = dict(dict(url=server.url, samples=2, interval=0.05), **args)
        failed, result = run_module('mtproxy_slo', args, tmp_path)
        assert server.requests == []
    assert failed
    assert words in result['msg']
