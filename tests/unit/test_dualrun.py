"""The Phase 7 dual-run gate (plugin_utils/dualrun.py) on reports in the Go port's format.

tests/fixtures/dualrun/*.json were written by Go's encoding/json from structs of the same shape as the
Go port's harness (integration/cli/dual_run_integration_test.go: dualRunReportFile, dualRunReportEntry,
metricSnapshot), figures made up: pass.json holds every guard; arm64.json is the same for go_arch arm64;
missing-load.json lacks dataplane_load_slo; guard-fails.json was edited after the harness (control
plane shutdown 230 ms > 9.5*2 + 200, canary stats p95 120 ms > 31*2.5 + 40); rate-fails.json has a Go
connect success rate of 152/160; canary-p99-over.json has a canary connect p99 over the line the report
states but the harness does not enforce.
"""
import copy
import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import dualrun

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'dualrun')
GENERATED = datetime.datetime(2026, 11, 30, 8, 15, tzinfo=datetime.timezone.utc)
NOW = GENERATED + datetime.timedelta(days=1)
HOSTS = {'proxy-1': 'x86_64', 'proxy-2': 'amd64'}


def fixture(name):
    return os.path.join(FIXTURES, name)


def load(name):
    with open(fixture(name)) as handle:
        return json.load(handle)


def judged(path, hosts=None, now=NOW, **kwargs):
    return dualrun.judge(path, HOSTS if hosts is None else hosts, now=now, **kwargs)


def kinds(evidence):
    return [f['kind'] for f in evidence['failures']]


def write(tmp_path, doc, name='report.json'):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def guard(evidence, entry, name):
    for item in evidence['entries']:
        if item['name'] == entry:
            for figures in item['guards']:
                if figures['name'] == name:
                    return figures
    raise AssertionError('%s %s not judged' % (entry, name))


def test_passing_report_is_evidence_with_every_guard():
    evidence = judged(fixture('pass.json'))
    assert evidence['verdict'] == 'pass' and evidence['failures'] == [] and evidence['warnings'] == []
    with open(fixture('pass.json'), 'rb') as handle:
        assert evidence['sha256'] == hashlib.sha256(handle.read()).hexdigest()
    assert (evidence['generated_at'], evidence['go_os'], evidence['go_arch'], evidence['age_s']) == (
        '2026-11-30T08:15:00Z', 'linux', 'amd64', 86400)
    assert [e['name'] for e in evidence['entries']] == list(dualrun.EXPECTED_ENTRIES)
    shutdown = guard(evidence, 'control_plane_slo', 'shutdown')
    assert (shutdown['go'], shutdown['c'], shutdown['limit'], shutdown['held']) == (7.25, 9.5, 219.0, True)
    assert shutdown['formula'] == shutdown['stated'] == 'go <= c*2 + 200ms'
    rate = guard(evidence, 'dataplane_load_slo', 'connect_success_rate')
    assert rate['go'] == 1.0 and rate['c'] == 419 / 420 and rate['held'] and rate['unit'] == 'rate'
    assert not guard(evidence, 'dataplane_canary_slo', 'connect_p99')['enforced']
    assert sum(len(e['guards']) for e in evidence['entries']) == 1 + 7 + 7


def test_every_threshold_the_harness_writes_is_a_guard_this_gate_knows():
    doc = load('pass.json')
    for entry in doc['entries']:
        stated = dict(entry['thresholds'])
        stated.pop('profile', None)
        assert stated == dict((g.name, g.text) for g in dualrun.GUARDS[entry['name']])


def test_guard_failures_are_named_with_their_figures():
    evidence = judged(fixture('guard-fails.json'))
    assert evidence['verdict'] == 'fail' and kinds(evidence) == ['guard', 'guard']
    messages = [f['message'] for f in evidence['failures']]
    assert messages == [
        'control_plane_slo shutdown: go 230 ms > c 9.5 ms * 2 + 200 ms = 219 ms (go <= c*2 + 200ms)',
        'dataplane_canary_slo stats_p95: go 120 ms > c 31 ms * 2.5 + 40 ms = 117.5 ms (go <= c*2.5 + 40ms)']
    text = dualrun.refusal(evidence)
    assert text.startswith('Phase 7 dual-run evidence %s (sha256 %s, generated_at 2026-11-30T08:15:00Z) does not '
                           'let the cutover start: control_plane_slo shutdown' % (fixture('guard-fails.json'),
                                                                                  evidence['sha256'][:16]))
    assert 'make go-dualrun-report' in text and 'mtproxy_cutover_dualrun_gate: skip' in text


def test_success_rate_guard():
    evidence = judged(fixture('rate-fails.json'))
    assert [f['message'] for f in evidence['failures']] == [
        'dataplane_canary_slo connect_success_rate: go 0.9500 + 0.02 < c 1.0000 (go + 0.02 >= c)']


def test_a_side_without_success_fails_the_rate_guard(tmp_path):
    doc = load('pass.json')
    snap = doc['entries'][1]['metrics']['c_stats']
    snap.update(successes=0, failures=snap['attempts'], success_rate=0, avg_ms=0, p50_ms=0, p95_ms=0, p99_ms=0,
                max_ms=0)
    evidence = judged(write(tmp_path, doc))
    assert 'dataplane_canary_slo stats_success_rate: C had no successful attempt (0/120)' in \
        evidence['failures'][0]['message']


def test_stated_but_unenforced_p99_only_warns():
    evidence = judged(fixture('canary-p99-over.json'))
    assert evidence['verdict'] == 'pass'
    assert [w['message'] for w in evidence['warnings']] == [
        'dataplane_canary_slo connect_p99: go 200 ms > c 41.25 ms * 3 + 60 ms = 183.75 ms (go <= c*3.0 + 60ms); '
        'stated in the report, not enforced by the harness']


def test_missing_entry():
    evidence = judged(fixture('missing-load.json'))
    assert kinds(evidence) == ['missing_entry']
    assert evidence['failures'][0]['message'] == (
        'entry dataplane_load_slo is missing (the harness writes it only when TestDualRunDataplaneLoadSLO passed)')


def test_stale_and_future_reports():
    stale = judged(fixture('pass.json'), now=GENERATED + datetime.timedelta(days=8))
    assert kinds(stale) == ['stale']
    assert stale['failures'][0]['message'] == (
        'generated_at 2026-11-30T08:15:00Z is 8.0 days old, more than the 7.0 days allowed '
        '(mtproxy_cutover_dualrun_max_age_s 604800)')
    assert judged(fixture('pass.json'), now=GENERATED + datetime.timedelta(days=8),
                  max_age_s=9 * 86400)['verdict'] == 'pass'
    future = judged(fixture('pass.json'), now=GENERATED - datetime.timedelta(hours=1))
    assert kinds(future) == ['future'] and '3600 s in the future' in future['failures'][0]['message']
    skewed = judged(fixture('pass.json'), now=GENERATED - datetime.timedelta(seconds=60))
    assert skewed['verdict'] == 'pass'


def test_wrong_architecture_names_the_host():
    evidence = judged(fixture('arm64.json'))
    assert kinds(evidence) == ['arch', 'arch']
    assert evidence['failures'][0]['message'] == (
        "go_arch is arm64 but host proxy-1 runs x86_64 (GOARCH amd64) (the Go port's dual-run harness runs only "
        "on linux/amd64)")
    arm_hosts = judged(fixture('pass.json'), hosts={'edge-7': 'aarch64', 'edge-8': 'x86_64'})
    assert [f['message'].split(' but ')[1].split(' runs')[0] for f in arm_hosts['failures']] == ['host edge-7']
    assert judged(fixture('arm64.json'), hosts={'edge-7': 'aarch64'})['verdict'] == 'pass'


def test_another_os_is_refused(tmp_path):
    doc = load('pass.json')
    doc['go_os'] = 'darwin'
    evidence = judged(write(tmp_path, doc))
    assert kinds(evidence) == ['os']


def malformed(doc_change):
    doc = load('pass.json')
    doc_change(doc)
    return doc


MALFORMED = [
    ('not JSON', lambda tmp: '{"generated_at": "2026-11-30T08:15:00Z", "entries": [', 'it is not JSON'),
    ('a list', lambda tmp: '[]', 'it is not a JSON object'),
    ('no entries', lambda tmp: malformed(lambda d: d.pop('entries')), 'the field entries is missing'),
    ('entries not a list', lambda tmp: malformed(lambda d: d.update(entries={})), 'entries is not a list'),
    ('no time zone', lambda tmp: malformed(lambda d: d.update(generated_at='2026-11-30T08:15:00')),
     "generated_at '2026-11-30T08:15:00' has no time zone offset"),
    ('not a time', lambda tmp: malformed(lambda d: d.update(generated_at='yesterday')), 'is not an RFC 3339 time'),
    ('empty go_arch', lambda tmp: malformed(lambda d: d.update(go_arch='')), "go_arch is '', not a name"),
    ('duplicate entry', lambda tmp: malformed(lambda d: d['entries'].append(copy.deepcopy(d['entries'][0]))),
     'entry control_plane_slo appears twice'),
    ('threshold not text', lambda tmp: malformed(lambda d: d['entries'][0]['thresholds'].update(shutdown=2)),
     'control_plane_slo.thresholds is not an object of strings'),
]


@pytest.mark.parametrize('label, make, text', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_reports_are_refused_with_the_reason(tmp_path, label, make, text):
    evidence = judged(write(tmp_path, make(tmp_path)))
    assert kinds(evidence) == ['malformed'] and text in evidence['failures'][0]['message']
    assert evidence['sha256'] and evidence['verdict'] == 'fail'


METRIC_DAMAGE = [
    ('rate not successes/attempts', lambda m: m['go_connect'].update(success_rate=0.5),
     'dataplane_canary_slo.metrics.go_connect: success_rate 0.5 is not successes/attempts 160/160'),
    ('counts do not add up', lambda m: m['c_stats'].update(failures=3),
     'dataplane_canary_slo.metrics.c_stats: successes 120 + failures 3 != attempts 120'),
    ('percentiles out of order', lambda m: m['go_stats'].update(p95_ms=99.0),
     'dataplane_canary_slo.metrics.go_stats: percentiles are not in order'),
    ('negative', lambda m: m.update(go_shutdown_ms=-1), 'dataplane_canary_slo.metrics.go_shutdown_ms is -1'),
    ('a boolean', lambda m: m['c_connect'].update(p95_ms=True), 'c_connect.p95_ms is True'),
    ('a fraction of an attempt', lambda m: m['c_connect'].update(attempts=160.5), 'c_connect.attempts is 160.5'),
    ('missing', lambda m: m.pop('c_shutdown_ms'), 'dataplane_canary_slo.metrics.c_shutdown_ms is None'),
]


@pytest.mark.parametrize('label, damage, text', METRIC_DAMAGE, ids=[m[0] for m in METRIC_DAMAGE])
def test_inconsistent_metrics_are_malformed(tmp_path, label, damage, text):
    doc = load('pass.json')
    damage(doc['entries'][1]['metrics'])
    evidence = judged(write(tmp_path, doc))
    assert 'malformed' in kinds(evidence)
    assert any(text in f['message'] for f in evidence['failures']), evidence['failures']


def test_load_entry_must_be_the_load_profile(tmp_path):
    doc = load('pass.json')
    doc['entries'][2]['thresholds']['profile'] = 'canary'
    evidence = judged(write(tmp_path, doc))
    assert evidence['failures'][0]['message'] == "dataplane_load_slo.thresholds.profile is 'canary', not 'load'"


def test_changed_threshold_text_is_judged_by_the_gate_and_warned(tmp_path):
    doc = load('pass.json')
    doc['entries'][0]['thresholds']['shutdown'] = 'go <= c*10 + 200ms'
    doc['entries'][0]['metrics']['go_shutdown_ms'] = 500
    evidence = judged(write(tmp_path, doc))
    assert kinds(evidence) == ['guard']
    assert evidence['warnings'][0]['message'] == (
        "control_plane_slo states 'go <= c*10 + 200ms' for shutdown; this gate judges it by go <= c*2 + 200ms")


def test_unknown_entries_are_listed_not_judged(tmp_path):
    doc = load('pass.json')
    doc['entries'].append({'name': 'dataplane_burst_slo', 'thresholds': {}, 'metrics': {}})
    evidence = judged(write(tmp_path, doc))
    assert evidence['verdict'] == 'pass'
    assert evidence['warnings'][0]['message'] == 'entry dataplane_burst_slo is not one this gate knows; it was not judged'


def test_limit_tolerates_go_nanosecond_truncation_only(tmp_path):
    doc = load('pass.json')
    metrics = doc['entries'][0]['metrics']
    metrics.update(c_shutdown_ms=9.5, go_shutdown_ms=219.0)
    assert judged(write(tmp_path, doc))['verdict'] == 'pass'
    metrics['go_shutdown_ms'] = 219.0000005
    assert judged(write(tmp_path, doc))['verdict'] == 'pass'
    metrics['go_shutdown_ms'] = 219.000002
    assert judged(write(tmp_path, doc))['verdict'] == 'fail'


def test_unreadable_and_oversized_files(tmp_path):
    missing = judged(str(tmp_path / 'none.json'))
    assert kinds(missing) == ['unreadable'] and 'No such file or directory' in missing['failures'][0]['message']
    assert missing['sha256'] is None
    big = write(tmp_path, ' ' * (dualrun.MAX_BYTES + 1))
    assert 'larger than' in judged(big)['failures'][0]['message']


def test_opt_out_is_recorded_as_skipped():
    evidence = dualrun.skipped('mtproxy_cutover_dualrun_gate: skip', fixture('pass.json'))
    assert evidence['verdict'] == 'skipped' and evidence['skipped'] is True
    assert evidence['reason'] == 'mtproxy_cutover_dualrun_gate: skip'
