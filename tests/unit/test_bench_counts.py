"""The fleet bench's measurement (tests/bench): the callback's counts from a real ansible-playbook run
on the controller, and the fleet model's batch arithmetic."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(os.path.dirname(HERE), 'bench')
sys.path.insert(0, BENCH)
import fleet_model  # noqa: E402
import fleet_scale  # noqa: E402

PLAYBOOK = """
- name: Counted play
  hosts: all
  gather_facts: false
  tasks:
    - name: Controller only
      ansible.builtin.set_fact:
        answer: 42
    - name: One module run on the host
      ansible.builtin.command: "true"
      changed_when: false
    - name: Skipped on every host
      ansible.builtin.command: "true"
      when: false
    - name: Two module runs on the host
      ansible.builtin.command: "true"
      changed_when: false
      loop: [1, 2]
    - name: A module run on the controller
      ansible.builtin.ping:
      delegate_to: localhost
    - name: Include
      ansible.builtin.include_tasks: included.yml
"""
# A connection that runs commands on this machine but is not `local`: what the callback counts
# as a round trip to the host (the bench's hosts use community.docker.docker).
CONNECTION = '''
from ansible.plugins.connection.local import Connection as Local

DOCUMENTATION = """
name: fake_remote
short_description: local commands, counted as remote
description: [test only]
author: test
"""


class Connection(Local):
    transport = 'fake_remote'
'''


@pytest.fixture(scope='module')
def counted(tmp_path_factory):
    work = tmp_path_factory.mktemp('bench-counts')
    (work / 'pb.yml').write_text(PLAYBOOK)
    (work / 'included.yml').write_text('- name: Included\n  ansible.builtin.debug:\n    msg: hi\n')
    (work / 'connection_plugins').mkdir()
    (work / 'connection_plugins' / 'fake_remote.py').write_text(CONNECTION)
    python = sys.executable
    (work / 'inventory').write_text(textwrap.dedent('''\
        h1 ansible_connection=fake_remote ansible_python_interpreter=%s
        h2 ansible_connection=fake_remote ansible_python_interpreter=%s
        localhost ansible_connection=local ansible_python_interpreter=%s
        ''' % (python, python, python)))
    cpu_stat = work / 'cpu.stat'
    cpu_stat.write_text('usage_usec 5000000\nuser_usec 1\nsystem_usec 1\n')
    out = work / 'counts.json'
    env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=os.path.join(BENCH, 'callback_plugins'),
               ANSIBLE_CALLBACKS_ENABLED='bench_counts', ANSIBLE_CONNECTION_PLUGINS=str(work / 'connection_plugins'),
               ANSIBLE_PIPELINING='1', BENCH_COUNTS_OUT=str(out), BENCH_CPU_STAT=str(cpu_stat),
               ANSIBLE_LOCAL_TEMP=str(work / 'tmp'), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([os.path.join(os.path.dirname(python), 'ansible-playbook'), '-i', str(work / 'inventory'),
                           '--limit', 'h1,h2', str(work / 'pb.yml')], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_executions_per_host_by_status_and_kind(counted):
    for host in ('h1', 'h2'):
        h = counted['hosts'][host]
        assert h['executions'] == 7
        assert (h['ok'], h['skipped'], h['failed']) == (6, 1, 0)
        # command and the looped command reached the host; set_fact, the delegated ping and debug did not
        assert (h['remote'], h['controller'], h['include']) == (2, 3, 1)


def test_round_trips_are_counted_in_the_worker(counted):
    for host in ('h1', 'h2'):
        # pipelining: one connection command per module run (1 + 2 loop items); the delegated ping
        # ran on the controller's local connection
        assert counted['hosts'][host]['remote_round_trips'] == 3
        assert counted['hosts'][host]['local_execs'] == 1
    tasks = counted['tasks']
    loop = [t for label, t in tasks.items() if label.startswith('Two module runs')][0]
    assert loop['remote_round_trips'] == 4 and loop['executions'] == 2
    skipped = [t for label, t in tasks.items() if label.startswith('Skipped on every host')][0]
    assert skipped['skipped'] == 2 and skipped['remote_round_trips'] == 0


def test_cpu_and_batches(counted):
    # The fake cgroup never moves: every task gets 0 s, but every task was read.
    assert counted['cgroup_cpu_s'] == 0.0
    assert all(t['cpu_s'] == 0.0 for t in counted['tasks'].values())
    assert counted['main_process_cpu_s'] > 0
    assert [(b['play'], b['hosts']) for b in counted['batches']] == [('Counted play', 2)]
    assert counted['recap']['skipped'] == 2


@pytest.mark.parametrize('hosts, serial, batches', [
    (19, [1, '25%', '100%'], [1, 4, 14]),     # the bench's 20 hosts after 1 canary
    (999, [1, '25%', '100%'], [1, 249, 749]),
    (4, [1, '25%', '100%'], [1, 1, 2]),         # 25% of 4 is 1
    (10, [1, 10, 100], [1, 9]),
    (7, 3, [3, 3, 1]),                          # the last item repeats
])
def test_serial_batches_as_ansible_forms_them(hosts, serial, batches):
    assert fleet_model.serial_batches(hosts, serial) == batches


def test_a_wave_larger_than_forks_waits_its_window_once_per_slice():
    kinds = ('start', 'preflight', 'freeze', 'stage', 'canary', 'wave', 'fleet_rollback', 'report')
    model = {kind: {'L': 1.0, 'C': 0.0, 'M': 0.0} for kind in kinds}
    windows = {'baseline': 0, 'prewarm': 0, 'canary': 0, 'wave': 100}
    wide = fleet_model.predict(model, 'cutover', 20, 25, 2, windows)
    narrow = fleet_model.predict(model, 'cutover', 20, 5, 2, windows)
    # waves of 1, 4, 14 hosts: 3 windows with 25 forks, 1 + 1 + 3 with 5 forks
    assert wide['windows'] == 300 and narrow['windows'] == 500


def test_slope_is_the_cost_of_one_more_host():
    assert fleet_scale.slope([(1, 5.0), (5, 13.0), (10, 23.0)]) == (2.0, 3.0)
    assert fleet_scale.slope([(20, 1.0), (20, 2.0)]) == (None, None)
