"""The Phase 8 drill report in the Go port's format (plugin_utils/drill_report.py).

tests/fixtures/phase8/go-encoded.json was written by Go's json.MarshalIndent(v, "", "  ") plus a newline
(as integration/cli/phase8_cutover_integration_test.go writes it) from structs of the same shape as the
Go port's phase8DrillReport / phase8StepResult, figures made up; the float and string cases below are
what Go's encoding/json printed for the same values.
"""
import datetime
import json
import os
import stat

import pytest

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import drill_report as dr

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'phase8', 'go-encoded.json')
NOW = datetime.datetime(2026, 11, 30, 9, 0, 5, 250000, tzinfo=datetime.timezone.utc)
C_STATS = 'pid\t4242\nstart_time\t1796500000\nuptime\t3\n'
GO_STATS = 'stats_generated_at\t1796500001\nhas_current_config\t1\n'
BASELINE = {'stop_ms': 14.5, 'start_ms': 20.25, 'unavailable_ms': 35.0}
FLIP = {'stop_ms': 16.0, 'start_ms': 41.5}
ROLLBACK = {'stop_ms': 212.0, 'start_ms': 19.75}


def read_fixture():
    with open(FIXTURE) as handle:
        return handle.read()


def steps(baseline=None, flip=None, rollback=None, bodies=None):
    baseline, flip, rollback = baseline or BASELINE, flip or FLIP, rollback or ROLLBACK
    bodies = bodies or {'baseline_c': C_STATS, 'cutover_go': GO_STATS, 'rollback_c': C_STATS}
    return dr.steps_from_switches(baseline, flip, rollback, '/opt/MTProxy/mtproto-proxy',
                                  '/opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go', bodies)


def test_dumps_is_byte_for_byte_what_go_writes():
    text = 'cutover_go and rollback_c <= baseline_c*3 + 500ms'
    document = dr.OrderedDict([
        ('generated_at', '2026-11-30T09:00:05Z'), ('go_os', 'linux'), ('go_arch', 'amd64'),
        ('thresholds', dr.OrderedDict([('shutdown', text), ('startup', text)])),
        ('steps', [
            dr.step('baseline_c', '/opt/MTProxy/mtproto-proxy', 12.625, 9.5, 'pid\t4242\n' * 201),
            dr.step('cutover_go', '/x/mtproto-proxy-go', 31.0000125, 211.75,
                    'stats_generated_at\t1796500000\n' + 'k\t1\n' * 65),
            dr.step('rollback_c', 'mtproto-proxy', 11, 0.000125, 'pid\t4318 <&> \u2028\n' + 'k\t1\n' * 200),
        ])])
    assert dr.dumps(document) == read_fixture()


@pytest.mark.parametrize('value, go_text', [
    (0.0, '0'), (11.0, '11'), (0.000125, '0.000125'), (31.0000125, '31.0000125'), (1e21, '1e+21'),
    (1.5e-7, '1.5e-7'), (1e-6, '0.000001'), (123456789.125, '123456789.125'), (1e20, '100000000000000000000'),
    (2011.75, '2011.75'), (5e-324, '5e-324'),
])
def test_floats_as_go_encodes_them(value, go_text):
    assert dr.go_float(value) == go_text


def test_strings_as_go_encodes_them():
    assert dr.dumps('tab\tq"b\\ \x01 \b \f é <>&\u2028\u2029 \x7f') == \
        '"tab\\tq\\"b\\\\ \\u0001 \\b \\f é \\u003c\\u003e\\u0026\\u2028\\u2029 \x7f"\n'
    with pytest.raises(dr.DrillReportError):
        dr.go_float(float('nan'))


def test_steps_map_the_three_switches():
    result = steps()
    assert [s['name'] for s in result] == list(dr.STEP_NAMES)
    assert [(s['binary'], s['startup_latency_ms'], s['shutdown_latency_ms']) for s in result] == [
        ('mtproto-proxy', 20.25, 14.5),          # baseline restart of C
        ('mtproto-proxy-go', 41.5, 212.0),       # Go started at the flip, stopped at the rollback
        ('mtproto-proxy', 19.75, 16.0)]          # C started at the rollback; C's stop at the flip
    assert [(s['stats_line_count'], s['stats_sample']) for s in result] == [
        (3, 'pid\t4242'), (2, 'stats_generated_at\t1796500001'), (3, 'pid\t4242')]
    assert list(result[0]) == list(dr.STEP_FIELDS)


def test_stats_facts_count_lines_as_the_go_drill():
    assert dr.stats_facts('a\tb\r\nc\td\r\n\n') == (2, 'a\tb\r')
    assert dr.stats_facts('\n\n') == (1, '')
    assert dr.stats_facts('\x1fk\t1\n') == (1, '\x1fk\t1')
    with pytest.raises(dr.DrillReportError):
        dr.stats_facts(None)


def test_a_step_without_stats_or_timing_is_refused():
    with pytest.raises(dr.DrillReportError, match='step cutover_go has no /stats body'):
        steps(bodies={'baseline_c': C_STATS, 'rollback_c': C_STATS})
    with pytest.raises(dr.DrillReportError, match=r'the C -> Go switch did not measure start_ms \(got None\)'):
        steps(flip={'stop_ms': 1.0})


def test_secrets_never_reach_the_sample():
    secret = '00112233445566778899aabbccddeeff'
    step = dr.step('baseline_c', 'mtproto-proxy', 1, 1, 'secret\t%s\n' % secret, secrets=[secret, ''])
    assert step['stats_sample'] == 'secret\t<redacted>'


def test_build_passes_and_validates():
    document, failures = dr.build(steps(), 3, 500, 'x86_64', now=NOW)
    assert failures == []
    assert list(document) == list(dr.TOP_FIELDS)
    assert document['generated_at'] == '2026-11-30T09:00:05Z' and document['go_arch'] == 'amd64'
    assert document['thresholds'] == {'shutdown': 'cutover_go and rollback_c <= baseline_c*3 + 500ms',
                                      'startup': 'cutover_go and rollback_c <= baseline_c*3 + 500ms'}
    assert dr.validate(json.loads(dr.dumps(document))) == []
    assert dr.build(steps(), 2.5, 250.5, 'aarch64', now=NOW)[0]['thresholds']['startup'] == \
        'cutover_go and rollback_c <= baseline_c*2.5 + 250.5ms'


def test_envelope_exceeded_writes_no_report():
    slow = dict(FLIP, start_ms=BASELINE['start_ms'] * 3 + 500 + 0.5)
    document, failures = dr.build(steps(flip=slow), 3, 500, 'x86_64', now=NOW)
    assert document is None
    assert failures == ['cutover_go startup 561.250 ms > baseline_c 20.250 ms * 3 + 500 ms = 560.750 ms']
    at_limit = dict(FLIP, start_ms=BASELINE['start_ms'] * 3 + 500)
    assert dr.build(steps(flip=at_limit), 3, 500, 'x86_64', now=NOW)[1] == []


def test_build_refuses_wrong_steps_and_unknown_machine():
    with pytest.raises(dr.DrillReportError, match='the steps are cutover_go'):
        dr.build(steps()[1:], 3, 500, 'x86_64')
    with pytest.raises(dr.DrillReportError, match="no GOARCH is known for the machine 'sparc64'"):
        dr.build(steps(), 3, 500, 'sparc64')


def test_write_is_atomic_and_readable(tmp_path):
    document, _failures = dr.build(steps(), 3, 500, 'x86_64', now=NOW)
    path = str(tmp_path / 'phase8' / dr.REPORT_NAME)
    text = dr.write(path, document)
    with open(path) as handle:
        assert handle.read() == text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(str(tmp_path / 'phase8')) == [dr.REPORT_NAME]


def test_the_go_written_fixture_is_valid():
    assert dr.validate(json.loads(read_fixture())) == []


def damaged(change):
    doc = json.loads(read_fixture(), object_pairs_hook=dr.OrderedDict)
    change(doc)
    return dr.validate(doc)


@pytest.mark.parametrize('label, change, problem', [
    ('field order', lambda d: d.move_to_end('go_os'), 'fields are generated_at, go_arch, thresholds, steps, go_os'),
    ('a step missing', lambda d: d['steps'].pop(), 'steps are not baseline_c, cutover_go, rollback_c'),
    ('negative latency', lambda d: d['steps'][1].update(startup_latency_ms=-1),
     'cutover_go.startup_latency_ms -1 is not a non-negative number'),
    ('path as binary', lambda d: d['steps'][0].update(binary='/opt/mtproto-proxy'),
     "baseline_c.binary '/opt/mtproto-proxy' is not a base name"),
    ('no stats', lambda d: d['steps'][2].update(stats_line_count=0), 'rollback_c.stats_line_count 0'),
    ('guard text', lambda d: d['thresholds'].update(startup='fast enough'), "thresholds.startup 'fast enough'"),
    ('guard broken', lambda d: d['steps'][1].update(shutdown_latency_ms=600),
     'guard does not hold: cutover_go shutdown 600.000 ms > baseline_c 9.500 ms * 3 + 500 ms = 528.500 ms'),
    ('time', lambda d: d.update(generated_at='2026-11-30 09:00:05'), 'is not an RFC 3339 time'),
    ('extra field', lambda d: d['steps'][0].update(result='ok'), 'baseline_c has the fields'),
])
def test_validate_names_what_does_not_fit_the_schema(label, change, problem):
    problems = damaged(change)
    assert any(problem in p for p in problems), problems
