import os

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.metrics import (
    METRICS, Derived, Key, NoSignal, Sum, build_table, describe_table, normalize)
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import parse_stats

from stats_fixtures import FIXTURE_DIR, capture, capture_names, go_not_ready, with_values

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'docs', 'slo-metrics.md')


def _norm(name, overrides=None):
    return normalize(parse_stats(capture(name)), overrides=overrides)


def _tsv_keys(flavor):
    with open(os.path.join(FIXTURE_DIR, 'stats-keys-%s.tsv' % flavor), encoding='utf-8') as handle:
        return {line.split('\t')[1] for line in handle if line[:1].isdigit()}


@pytest.mark.parametrize('flavor', ['c', 'go'])
def test_every_mapped_key_exists_in_the_real_format(flavor):
    known = _tsv_keys(flavor)
    for name, entry in METRICS.items():
        source = entry[flavor]
        keys = [source.key] if isinstance(source, Key) else getattr(source, 'keys', [])
        assert set(keys) <= known, (name, keys)
        assert isinstance(source, (Key, Sum, Derived, NoSignal))


@pytest.mark.parametrize('name', capture_names())
def test_every_capture_normalises_without_invalid_values(name):
    result = _norm(name)
    assert result['flavor'] == name.split('-')[0]
    assert result['invalid'] == {}
    assert set(result['metrics']) == set(METRICS)
    assert result['metrics']['ready'] == 1
    for metric, reason in result['no_signal'].items():
        assert result['metrics'][metric] is None
        assert reason


def test_c_with_workers_has_no_accept_signal():
    result = _norm('c-M1-after-burst200.txt')
    assert result['metrics']['accepted_connections'] is None
    assert '-M' in result['no_signal']['accepted_connections']
    assert result['metrics']['bad_handshakes'] is None
    assert 'bad_handshakes' in result['no_signal']


def test_c_without_workers_accepts_corrected_for_double_count_and_stats_requests():
    before = _norm('c-noM-idle-plus2s.txt')['metrics']['accepted_connections']
    after = _norm('c-noM-after-burst200.txt')['metrics']['accepted_connections']
    # Real run: 200 client connects moved the raw counter by 402 (2 per accept + one /stats GET).
    assert after - before == 200


def test_go_accepts_and_bad_handshakes():
    before = _norm('go-M1-idle-plus2s.txt')['metrics']
    after = _norm('go-M1-after-burst200.txt')['metrics']
    assert after['accepted_connections'] - before['accepted_connections'] == 200
    assert after['bad_handshakes'] - before['bad_handshakes'] == 200


@pytest.mark.parametrize('mode', ['M1', 'noM'])
def test_dropped_packets_agree_across_flavours(mode):
    c = _norm('c-%s-after-obf2x50-backend-down.txt' % mode)['metrics']
    go = _norm('go-%s-after-obf2x50-backend-down.txt' % mode)['metrics']
    assert c['dropped_packets'] == go['dropped_packets'] == 100
    assert c['client_packets'] == go['client_packets'] == 100
    assert METRICS['dropped_packets']['comparable'] and METRICS['client_packets']['comparable']


def test_go_identity_has_no_signal_and_c_has_values():
    go = _norm('go-noM-idle-start.txt')
    for metric in ('uptime', 'process_start', 'process_id'):
        assert go['metrics'][metric] is None and metric in go['no_signal']
    c = _norm('c-noM-idle-start.txt')['metrics']
    assert (c['process_id'], c['process_start'], c['uptime']) == (29952, 1795744426, 0)


def test_go_not_ready_reports_ready_0_and_config_absent_as_no_signal():
    result = normalize(parse_stats(go_not_ready(capture('go-M1-idle-start.txt'))))
    assert result['metrics']['ready'] == 0
    assert result['metrics']['config_md5'] is None
    assert 'has_current_config' in result['no_signal']['config_md5']
    assert result['invalid'] == {}


def test_go_reload_failures():
    same = _norm('go-M1-after-sighup-same-config.txt')['metrics']
    broken = _norm('go-M1-after-sighup-broken-config.txt')['metrics']
    assert broken['config_checks'] == same['config_checks'] + 2
    assert broken['config_reload_failures'] >= same['config_reload_failures']


def test_missing_and_non_numeric_keys_are_invalid_not_zero():
    body = with_values(capture('go-M1-idle-start.txt'), dataplane_packets_dropped=None,
                       ingress_accepted_connections='n/a')
    result = normalize(parse_stats(body))
    assert result['metrics']['dropped_packets'] is None
    assert 'missing' in result['invalid']['dropped_packets']
    assert 'not a number' in result['invalid']['accepted_connections']
    assert 'dropped_packets' not in result['no_signal']


def test_c_multi_value_sum():
    body = with_values(capture('c-M1-idle-start.txt'), total_accept_connections_failed='1 2 0 0 3')
    assert normalize(parse_stats(body))['metrics']['accept_failures'] == 6


def test_overrides_key_sum_and_no_signal():
    overrides = {
        'forward_failures': {'go': 'dataplane_packets_route_errors'},
        'dropped_packets': {'c': {'sum': ['dropped_queries', 'dropped_responses']}},
        'backend_healthy': {'c': None},
    }
    go = _norm('go-M1-after-obf2x50-backend-down.txt', overrides)
    assert go['metrics']['forward_failures'] == 99
    c = _norm('c-M1-after-obf2x50-backend-down.txt', overrides)
    assert c['metrics']['dropped_packets'] == 100
    assert c['metrics']['backend_healthy'] is None
    assert 'override' in c['no_signal']['backend_healthy']
    # The built-in table is untouched by overrides.
    assert isinstance(METRICS['backend_healthy']['c'], Key)


def test_override_adds_a_metric_with_kind():
    result = _norm('go-M1-after-burst200.txt', {'frames_failed': {'kind': 'counter', 'go': 'ingress_frames_failed'}})
    assert result['metrics']['frames_failed'] == 200
    c = _norm('c-M1-after-burst200.txt', {'frames_failed': {'kind': 'counter', 'go': 'ingress_frames_failed'}})
    assert c['metrics']['frames_failed'] is None and 'frames_failed' in c['no_signal']


@pytest.mark.parametrize('overrides', [
    {'nonexistent': {'go': 'x'}},
    {'dropped_packets': {'solaris': 'x'}},
    {'dropped_packets': {'go': 42}},
    {'dropped_packets': {'go': {'sum': []}}},
    {'dropped_packets': 'x'},
    {'dropped_packets': {'kind': 'histogram'}},
])
def test_bad_overrides_raise(overrides):
    with pytest.raises(ValueError):
        build_table(overrides)


def test_doc_lists_every_metric_with_both_sources():
    with open(DOC, encoding='utf-8') as handle:
        doc = handle.read()
    for row in describe_table():
        assert '`%s`' % row['metric'] in doc, row['metric']
