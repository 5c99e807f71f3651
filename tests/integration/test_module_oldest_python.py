"""The modules on the oldest Python 3 that the ansible-core running these tests manages on a host.

ansible-core 2.16 and 2.17 manage hosts with Python 3.6, 2.18 and 2.19 from 3.8, 2.20 and 2.21 from
3.9 (ansible-test's own list of the core, below); `make test` runs this file with 2.19, 2.16 and 2.21.
mtproxy_stats and mtproxy_slo (HTTP scrape, /stats parsing, the judge) run for real under that
interpreter against a local /stats server; the modules that need systemd run on the Debian 12
(Python 3.11) and 13 (3.13) test hosts, and all of them compile and import on 3.6 (ansible-test
sanity with 2.16).
"""
import json
import os
import subprocess
import sys

from conftest import COLLECTIONS_ROOT, REPO_ROOT
from stats_server import StatsServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'unit'))
from stats_fixtures import capture, go_body  # noqa: E402

from ansible_test._util.target.common.constants import CONTROLLER_PYTHON_VERSIONS, REMOTE_ONLY_PYTHON_VERSIONS

ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')
OLDEST = min((v for v in REMOTE_ONLY_PYTHON_VERSIONS + CONTROLLER_PYTHON_VERSIONS if v.startswith('3.')),
             key=lambda v: tuple(map(int, v.split('.'))))


def oldest_python():
    """The interpreter of OLDEST (tests/hosts/find-python.sh: on PATH or under pyenv)."""
    proc = subprocess.run([os.path.join(REPO_ROOT, 'tests', 'hosts', 'find-python.sh'), OLDEST],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, 'Python %s is needed for this test: %s' % (OLDEST, proc.stderr.strip())
    return proc.stdout.strip()


def run_module(module, args, tmp_path):
    """(failed, result, interpreter version) of mtproxy.cutover.<module> run by Python OLDEST."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_LOCAL_TEMP=str(tmp_path / 'local'),
               ANSIBLE_REMOTE_TEMP=str(tmp_path / 'remote'), ANSIBLE_NOCOLOR='1')
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    cmd = [ANSIBLE, 'localhost', '-i', 'localhost,', '-c', 'local', '-m', 'mtproxy.cutover.' + module,
           '-a', json.dumps(args), '-e', 'ansible_python_interpreter=' + oldest_python(), '-vvv']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    head, sep, payload = proc.stdout.rpartition('\nlocalhost | ')[2].partition(' => ')
    assert sep, 'unexpected ansible output: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:])
    # -vvv shows the interpreter the module was run with.
    assert "'%s" % oldest_python() in proc.stdout or oldest_python() + ' ' in proc.stdout, proc.stdout[-3000:]
    return 'FAILED' in head, json.loads(payload)


def test_stats_reads_both_binaries_on_the_oldest_host_python(tmp_path):
    with StatsServer([{'body': capture('c-M1-after-obf2x50-backend-down.txt')}]) as server:
        failed, result = run_module('mtproxy_stats', {'url': server.url}, tmp_path)
    assert not failed, result.get('msg')
    assert result['flavor'] == 'c' and result['metrics']['dropped_packets'] == 100
    assert result['raw']['aes_pwd_hash'] == '<redacted>'
    with StatsServer([{'body': capture('go-noM-after-burst200.txt')}]) as server:
        failed, result = run_module('mtproxy_stats', {'url': server.url}, tmp_path)
    assert not failed, result.get('msg')
    assert result['flavor'] == 'go' and result['metrics']['bad_handshakes'] == 200


def test_slo_judges_windows_on_the_oldest_host_python(tmp_path):
    def traffic(dropped_per_step):
        return [{'body': go_body(packets=i * 100, dropped=i * dropped_per_step, accepted=i * 10)} for i in range(4)]

    args = {'samples': 4, 'interval': 0.05, 'timeout': 1}
    with StatsServer(traffic(0)) as server:
        failed, result = run_module('mtproxy_slo', dict(args, url=server.url), tmp_path)
    assert not failed and result['verdict'] == 'pass', result.get('msg') or result['failures']
    assert [s['metrics']['client_packets'] for s in result['samples']] == [0, 100, 200, 300]
    # Go dropping 3 % against that window as the baseline.
    with StatsServer(traffic(3)) as server:
        failed, judged = run_module('mtproxy_slo', dict(args, url=server.url, baseline=result['summary'],
                                                        thresholds={'min_success_rate': None}), tmp_path)
    assert not failed and judged['verdict'] == 'fail', judged.get('msg')
    [failure] = judged['failures']
    assert (failure['metric'], failure['observed'], failure['limit']) == ('success_rate', 0.97, 0.98)
