"""method=container, module by module, against a real fleet on this machine's Docker engine.

mtproxy_freeze, mtproxy_prewarm, mtproxy_switch and mtproxy_stats run as ansible-core runs them
(ad-hoc, connection local: the machine is the container host) against proxies made by
tests/hosts/container_fleet.py (stand-in images by default, the real builds with MTPROXY_*_BINARY).
Each test states what an operator would see: the freeze and its refusals, a pre-warm that quotes
an entrypoint's refusal, the flip and rollback proven from `docker inspect`, no secret in any output.
"""

import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTS_DIR = os.path.join(REPO, 'tests', 'hosts')
FLEET = os.path.join(HOSTS_DIR, 'container_fleet.py')
ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')
sys.path.insert(0, HOSTS_DIR)
import container_fleet as cf  # noqa: E402
from conftest import COLLECTIONS_ROOT  # noqa: E402
from systemd_host import c_without_secret_file  # noqa: E402

pytestmark = pytest.mark.slow


def sh(command, timeout=600):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    shown = (command, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.returncode == 0, '%s failed (%d): %s %s' % shown
    return proc.stdout


def run_module(module, args, workdir):
    """(failed, result, raw stdout) of one ad-hoc run of mtproxy.cutover.<module> on this machine."""
    env = dict(os.environ, ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'local'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_REMOTE_TEMP=os.path.join(workdir, 'remote'), ANSIBLE_DEPRECATION_WARNINGS='0')
    env.pop('ANSIBLE_STDOUT_CALLBACK', None)
    env['ANSIBLE_COLLECTIONS_PATH'] = COLLECTIONS_ROOT
    proc = subprocess.run([ANSIBLE, 'localhost', '-i', 'localhost,', '-c', 'local', '-m', 'mtproxy.cutover.' + module,
                           '-a', json.dumps(args), '-e', 'ansible_python_interpreter=' + sys.executable],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    head, sep, payload = proc.stdout.partition(' => ')
    assert sep, 'unexpected ansible output: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:])
    return 'FAILED' in head, json.loads(payload), proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def fleet():
    # The proxy image's run.sh reads the client secret with --mtproto-secret-file.
    reason = cf.engine_problem() or c_without_secret_file()
    if reason:
        pytest.skip(reason)
    prefix = 'modctr%s' % uuid.uuid4().hex[:4]
    sh([sys.executable, FLEET, 'up', '--prefix', prefix, '--count', '1', '--canaries', '1'], timeout=1800)
    record = cf.load_record(prefix)
    workdir = tempfile.mkdtemp(prefix='mtproxy-modctr-')
    yield {'prefix': prefix, 'host': prefix + '-h1', 'record': record, 'workdir': workdir,
           'state_dir': os.path.join(workdir, 'state')}
    subprocess.run([sys.executable, FLEET, 'down', '--prefix', prefix], capture_output=True, timeout=300, check=False)


def secrets_of(record):
    return [h['secret'] for h in record['hosts'] if h.get('secret')]


def freeze(fleet, **extra):
    args = dict(service=fleet['host'], state_dir=fleet['state_dir'], method='container', baseline_samples=2,
                baseline_interval=0.5, go_images=[fleet['record']['go_image_id']], **extra)
    return run_module('mtproxy_freeze', args, fleet['workdir'])


def test_freeze_records_the_spec_and_reads_stats_inside_the_namespace(fleet):
    failed, result, raw = freeze(fleet)
    assert not failed, result.get('msg')
    assert result['status'] in ('frozen', 'unchanged') and result['current'] == 'c' and result['flavor'] == 'c'
    spec = result['manifest']['container']
    assert spec['image_id'] == fleet['record']['c_image_id']
    assert spec['env']['SECRET'] == '<redacted>' and spec['cmd'] == ['/bin/sh', '-c', '/bin/bash /run.sh']
    assert [m['destination'] for m in spec['mounts']] == ['/data']
    assert result['container'] == fleet['host'] and result['stats_url'].startswith('http://127.0.0.1:')
    assert 'container_create' not in result['manifest']
    for secret in secrets_of(fleet['record']):
        assert secret not in raw


def test_a_drifted_container_stops_the_freeze_naming_the_field(fleet):
    assert not freeze(fleet)[0]
    sh(['docker', 'update', '--restart', 'no', fleet['host']])
    try:
        failed, result, _raw = freeze(fleet)
        assert failed and 'drifted' in result['msg'] and 'container.host.RestartPolicy' in result['msg']
    finally:
        sh(['docker', 'update', '--restart', 'unless-stopped', fleet['host']])
    assert not freeze(fleet)[0]


def test_a_compose_container_is_refused_with_the_way_forward(fleet):
    name = fleet['prefix'] + '-compose'
    sh(['docker', 'run', '-d', '--name', name, '--network', 'none', '--label', 'com.docker.compose.project=edge',
        '--label', 'com.docker.compose.service=mtproxy', '--label', '%s=%s' % (cf.FLEET_LABEL, fleet['prefix']),
        '-e', 'SECRET=' + 'ab' * 16, fleet['record']['c_image_id']])
    try:
        args = dict(service=name, state_dir=fleet['state_dir'], method='container')
        failed, result, _raw = run_module('mtproxy_freeze', args, fleet['workdir'])
        assert failed and "docker compose project 'edge'" in result['msg'] and 'docker compose up -d mtproxy' in result['msg']
        assert not os.path.exists(os.path.join(fleet['state_dir'], name, 'manifest.json'))
    finally:
        sh(['docker', 'rm', '-f', name])


def test_prewarm_quotes_an_entrypoint_that_refuses_the_frozen_environment(fleet):
    assert not freeze(fleet)[0]
    context = tempfile.mkdtemp(prefix='mtproxy-badimage-')
    with open(os.path.join(context, 'run.sh'), 'w') as handle:
        handle.write('#!/bin/bash\necho "[F] SECRET is not accepted by this build"\nexit 1\n')
    with open(os.path.join(context, 'Dockerfile'), 'w') as handle:
        handle.write('FROM %s\nCOPY run.sh /run.sh\n' % fleet['record']['go_image_id'])
    tag = 'mtproxy-cutover-badgo:%s' % fleet['prefix']
    sh(['docker', 'build', '--network', 'none', '-q', '-t', tag, context], timeout=600)
    try:
        failed, result, _raw = run_module('mtproxy_prewarm', dict(
            state='started', service=fleet['host'], state_dir=fleet['state_dir'], image=tag, ready_timeout=15),
            fleet['workdir'])
        assert failed and 'exited during start-up' in result['msg']
        assert 'SECRET is not accepted by this build' in result['msg']
        assert cf.inspect('container', fleet['host'] + '.mtproxy-cutover-prewarm') is None
    finally:
        sh(['docker', 'rmi', '-f', tag])


def test_prewarm_refuses_a_c_image_pinned_as_the_go_image(fleet):
    assert not freeze(fleet)[0]
    failed, result, _raw = run_module('mtproxy_prewarm', dict(
        state='started', service=fleet['host'], state_dir=fleet['state_dir'], image=fleet['record']['c_image_id'],
        ready_timeout=15), fleet['workdir'])
    assert failed and 'answers /stats as the C binary' in result['msg']
    assert cf.inspect('container', fleet['host'] + '.mtproxy-cutover-prewarm') is None


def test_prewarm_of_the_go_image_is_ready_and_leaves_nothing(fleet):
    assert not freeze(fleet)[0]
    common = dict(service=fleet['host'], state_dir=fleet['state_dir'])
    failed, started, _raw = run_module('mtproxy_prewarm', dict(common, state='started',
                                                               image=fleet['record']['go_image_id']), fleet['workdir'])
    assert not failed, started.get('msg')
    assert started['ready_ms'] > 0 and started['container'] == fleet['host'] + '.mtproxy-cutover-prewarm'
    failed, stopped, _raw = run_module('mtproxy_prewarm', dict(common, state='stopped'), fleet['workdir'])
    assert not failed and stopped['exited'] and stopped['stop_ms'] < 10000
    assert cf.inspect('container', started['container']) is None
    # The production container kept serving, untouched.
    assert cf.inspect('container', fleet['host'])['Image'] == fleet['record']['c_image_id']


def test_flip_and_rollback_are_proven_from_docker_inspect(fleet):
    assert not freeze(fleet)[0]
    before = cf.proxy_spec(fleet['host'])[0]
    common = dict(service=fleet['host'], state_dir=fleet['state_dir'])
    failed, flipped, raw = run_module('mtproxy_switch', dict(common, target='go', image=fleet['record']['go_image_id']),
                                      fleet['workdir'])
    assert not failed, flipped.get('msg')
    assert flipped['changed'] and flipped['argv_matches'] and flipped['stats_flavor'] == 'go'
    assert flipped['timings']['unavailable_ms'] > 0 and flipped['method'] == 'container'
    live = cf.inspect('container', fleet['host'])
    assert live['Image'] == fleet['record']['go_image_id']
    assert cf.spec_changes(before, cf.proxy_spec(fleet['host'])[0]) == {}
    assert cf.inspect('container', fleet['host'] + '.mtproxy-cutover-prev') is None
    failed, stats, _raw = run_module('mtproxy_stats', dict(url=flipped['stats_url'], container=fleet['host']),
                                     fleet['workdir'])
    assert not failed and stats['flavor'] == 'go'
    # Again: nothing to do. A contradicting method is refused before anything changes.
    failed, again, _raw = run_module('mtproxy_switch', dict(common, target='go', image=fleet['record']['go_image_id']),
                                     fleet['workdir'])
    assert not failed and not again['changed']
    failed, refused, _raw = run_module('mtproxy_switch', dict(common, target='c', method='dropin'), fleet['workdir'])
    assert failed and refused.get('refused') == 'method_mismatch'
    failed, back, raw_back = run_module('mtproxy_switch', dict(common, target='c'), fleet['workdir'])
    assert not failed, back.get('msg')
    assert back['stats_flavor'] == 'c' and back['argv_matches']
    # rollback.yml on a host already on C changes nothing and still proves it by /stats.
    failed, again_c, _raw = run_module('mtproxy_switch', dict(common, target='c'), fleet['workdir'])
    assert not failed and not again_c['changed'] and again_c['stats_flavor'] == 'c', again_c
    assert cf.inspect('container', fleet['host'])['Image'] == fleet['record']['c_image_id']
    assert cf.spec_changes(before, cf.proxy_spec(fleet['host'])[0]) == {}
    with open(os.path.join(fleet['state_dir'], fleet['host'], 'state.json')) as handle:
        state = json.load(handle)
    assert state['method'] == 'container' and state['current'] == 'c'
    for secret in secrets_of(fleet['record']):
        assert secret not in raw and secret not in raw_back
