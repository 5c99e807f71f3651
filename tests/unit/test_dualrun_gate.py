"""What cutover.yml's dual-run gate decides on (dualrun.gate, behind the lookup dualrun_evidence that
playbooks/tasks/dualrun_gate.yml calls)."""
import json
import os

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import dualrun

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'dualrun')
EVERY_DAY = 10 ** 9


def _run(path, gate='enforce', machines=None, max_age_s=dualrun.DEFAULT_MAX_AGE_S):
    return dualrun.gate(path, gate, machines, max_age_s)


def test_a_passing_report_for_the_hosts_architecture_lets_the_cutover_start():
    evidence = _run(os.path.join(FIXTURES, 'pass.json'), machines={'h1': 'x86_64'}, max_age_s=EVERY_DAY)
    assert (evidence['verdict'], evidence['failures'], evidence['refusal']) == ('pass', [], None)
    names = [entry['name'] for entry in evidence['entries']]
    assert names == ['control_plane_slo', 'dataplane_canary_slo', 'dataplane_load_slo']
    json.dumps(evidence)  # kept as dualrun.json in the run directory


def test_a_report_for_another_architecture_is_refused_naming_the_host():
    evidence = _run(os.path.join(FIXTURES, 'arm64.json'), machines={'h1': 'x86_64'}, max_age_s=EVERY_DAY)
    assert evidence['verdict'] == 'fail'
    assert [f['kind'] for f in evidence['failures']] == ['arch']
    assert 'host h1 runs x86_64' in evidence['refusal'] and 'Way forward' in evidence['refusal']


def test_a_stale_report_is_refused_with_the_setting_that_allows_more():
    evidence = _run(os.path.join(FIXTURES, 'pass.json'), machines={'h1': 'x86_64'}, max_age_s=60)
    assert [f['kind'] for f in evidence['failures']] == ['stale']
    assert 'mtproxy_cutover_dualrun_max_age_s 60' in evidence['refusal']


def test_no_report_set_is_refused_with_the_way_forward():
    evidence = _run('')
    assert evidence['verdict'] == 'fail' and [f['kind'] for f in evidence['failures']] == ['unset']
    assert evidence['refusal'].startswith('Phase 7 dual-run evidence (none) does not let the cutover start: '
                                          'mtproxy_cutover_dualrun_report names no file. Way forward: ')
    assert 'mtproxy_cutover_dualrun_gate: skip' in evidence['refusal']


def test_the_opt_out_is_recorded_and_judges_nothing():
    evidence = _run(os.path.join(FIXTURES, 'guard-fails.json'), gate='skip')
    assert (evidence['verdict'], evidence['skipped'], evidence['refusal']) == ('skipped', True, None)
    assert evidence['reason'] == 'mtproxy_cutover_dualrun_gate: skip' and evidence['failures'] == []
