"""The drill_phase8_report filter: what drill.yml writes as phase8-cutover-report.json."""
import json

from ansible_collections.mtproxy.cutover.plugins.filter.drill_phase8_report import drill_phase8_report
from ansible_collections.mtproxy.cutover.plugins.plugin_utils import drill_report as dr

C_STATS = 'pid\t4242\nstart_time\t1796500000\naes_pwd_hash\t<redacted>\n'
GO_STATS = 'stats_generated_at\t1796500001\nhas_current_config\t1\n'
BODIES = {'baseline_c': C_STATS, 'cutover_go': GO_STATS, 'rollback_c': C_STATS}
BASELINE = {'stop_ms': 14.5, 'start_ms': 20.25}
FLIP = {'stop_ms': 16.0, 'start_ms': 41.5}
ROLLBACK = {'stop_ms': 212.0, 'start_ms': 19.75}


def _report(**changes):
    args = dict(baseline=BASELINE, flip=FLIP, rollback=ROLLBACK, c_binary='/opt/MTProxy/mtproto-proxy',
                go_binary='/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go', bodies=BODIES,
                factor=3, slack_ms=500, machine='x86_64')
    args.update(changes)
    return drill_phase8_report(**args)


def test_a_drill_within_its_envelope_gives_the_go_ports_report():
    result = _report()
    assert result['failures'] == []
    document = json.loads(result['text'])
    assert dr.validate(document) == []
    assert (document['go_os'], document['go_arch']) == ('linux', 'amd64')
    assert document['thresholds'] == {'shutdown': 'cutover_go and rollback_c <= baseline_c*3 + 500ms',
                                      'startup': 'cutover_go and rollback_c <= baseline_c*3 + 500ms'}
    steps = dict((s['name'], s) for s in document['steps'])
    assert steps['cutover_go'] == {'name': 'cutover_go', 'binary': 'mtproto-proxy-go', 'startup_latency_ms': 41.5,
                                   'shutdown_latency_ms': 212.0, 'stats_line_count': 2,
                                   'stats_sample': 'stats_generated_at\t1796500001'}
    assert (steps['rollback_c']['startup_latency_ms'], steps['rollback_c']['shutdown_latency_ms']) == (19.75, 16.0)
    assert steps['baseline_c']['stats_line_count'] == 3 and steps['baseline_c']['binary'] == 'mtproto-proxy'


def test_no_report_when_the_envelope_does_not_hold_and_the_failure_says_which():
    result = _report(rollback={'stop_ms': 600.0, 'start_ms': 19.75}, factor=3, slack_ms=10)
    assert result['text'] is None
    assert [f.split(' ')[:2] for f in result['failures']] == [['cutover_go', 'shutdown']]


def test_no_report_when_a_switch_measured_nothing():
    result = _report(flip={'stop_ms': None, 'start_ms': None})
    assert result['text'] is None and 'did not measure start_ms' in result['failures'][0]
    assert _report(bodies={'baseline_c': C_STATS})['failures'] == ['step cutover_go has no /stats body']
