import json

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo import judge
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import (
    DEFAULT_THRESHOLDS, THRESHOLD_SOURCES, collect_window, effective_thresholds, judge_window,
    resolve_baseline, sample_error, sample_from_body)

from stats_fixtures import c_body, capture, go_body, go_not_ready, with_values


def window(*bodies, step=1.0):
    return [sample_from_body(body, i * step) for i, body in enumerate(bodies)]


def real_window(*names):
    return window(*[capture(n) for n in names], step=5.0)


def go_traffic(dropped_per_step=0, steps=3, per_step=100):
    return window(*[go_body(packets=i * per_step, dropped=i * dropped_per_step, accepted=i * 10)
                    for i in range(steps)])


def metrics_of(result, name):
    return [f for f in result['failures'] if f['metric'] == name]


# --- pass / fail / inconclusive ---------------------------------------------------------------

def test_go_window_with_traffic_passes():
    result = judge_window(go_traffic())
    assert result['verdict'] == 'pass', result['failures']
    assert result['flavor'] == 'go'
    assert result['summary']['metrics']['client_packets']['delta'] == 200
    assert result['summary']['metrics']['client_packets']['rate'] == 100.0
    assert result['summary']['derived']['success_rate'] == 1.0
    assert 'min_success_rate' in result['judged']
    json.dumps(result)


def test_c_noM_window_with_traffic_passes():
    result = judge_window(window(*[c_body(forwarded=i * 100, uptime=10 + i) for i in range(3)]))
    assert result['verdict'] == 'pass', result['failures']
    assert result['flavor'] == 'c'


def test_c_M1_reports_accepts_as_no_signal_and_still_judges_packets():
    bodies = [c_body(forwarded=i * 100, uptime=10 + i, base='c-M1-idle-plus2s.txt') for i in range(3)]
    result = judge_window(window(*bodies))
    assert result['verdict'] == 'pass', result['failures']
    assert 'accepted_connections' in result['no_signal']
    assert result['summary']['metrics']['accepted_connections']['last'] is None
    assert result['summary']['derived']['connections'] is None


def test_dropped_packets_fail_with_metric_observed_limit_rule():
    result = judge_window(go_traffic(dropped_per_step=5))
    assert result['verdict'] == 'fail'
    [failure] = metrics_of(result, 'success_rate')
    assert failure['observed'] == 0.95
    assert failure['limit'] == 0.98
    assert 'packets' in failure['rule']
    assert '10 of 200' in failure['detail']


@pytest.mark.parametrize('mode', ['c-M1', 'c-noM', 'go-M1', 'go-noM'])
def test_real_backend_down_window_fails(mode):
    result = judge_window(real_window('%s-idle-plus2s.txt' % mode, '%s-after-burst200.txt' % mode,
                                      '%s-after-obf2x50-backend-down.txt' % mode))
    assert result['verdict'] == 'fail'
    assert metrics_of(result, 'success_rate')[0]['observed'] == 0.0
    # C counts reachable host:port (0 here); Go reports targets healthy until a dial fails.
    assert bool(metrics_of(result, 'backend_healthy')) == mode.startswith('c')


@pytest.mark.parametrize('mode', ['c-M1', 'c-noM', 'go-M1', 'go-noM'])
def test_real_idle_window_is_inconclusive(mode):
    result = judge_window(real_window('%s-idle-start.txt' % mode, '%s-idle-plus2s.txt' % mode),
                          thresholds={'min_backend_healthy': None})
    assert result['verdict'] == 'inconclusive'
    assert any('no client traffic' in r for r in result['inconclusive_reasons'])


def test_real_c_M1_junk_burst_moves_nothing_so_inconclusive():
    result = judge_window(real_window('c-M1-idle-plus2s.txt', 'c-M1-after-burst200.txt'),
                          thresholds={'min_backend_healthy': None})
    assert result['verdict'] == 'inconclusive'


def test_real_go_junk_burst_is_judged_on_handshakes_only_when_asked():
    names = ('go-M1-idle-plus2s.txt', 'go-M1-after-burst200.txt')
    assert judge_window(real_window(*names))['verdict'] == 'inconclusive'
    result = judge_window(real_window(*names), thresholds={'max_bad_handshake_ratio': 0.5})
    assert result['verdict'] == 'fail'
    assert metrics_of(result, 'bad_handshake_ratio')[0]['observed'] == 1.0


def test_too_few_packets_is_inconclusive():
    result = judge_window(go_traffic(per_step=10))
    assert result['verdict'] == 'inconclusive'
    assert any('only 20 client packets' in r for r in result['inconclusive_reasons'])


def test_no_traffic_but_a_failure_is_fail_not_inconclusive():
    result = judge_window(window(go_body(), go_not_ready(go_body())))
    assert result['verdict'] == 'fail'


def test_single_sample_is_inconclusive():
    result = judge_window(window(go_body(packets=100)))
    assert result['verdict'] == 'inconclusive'
    assert any('fewer than 2' in r for r in result['inconclusive_reasons'])


def test_no_samples_is_inconclusive():
    assert judge_window([])['verdict'] == 'inconclusive'


def test_level_rules_alone_do_not_pass():
    result = judge_window(window(go_body(), go_body()), thresholds={'max_accept_failures': 0})
    assert result['verdict'] == 'inconclusive'


# --- restarts ---------------------------------------------------------------------------------

def test_real_c_restart_pid_change_fails():
    result = judge_window(real_window('c-noM-after-obf2x50-backend-down.txt', 'c-noM-after-20-held-conns-closed.txt'),
                          thresholds={'min_backend_healthy': None})
    [failure] = metrics_of(result, 'restart')
    assert failure['observed'] == 1 and failure['limit'] == 0
    assert 'process_id changed 29952 -> 325' in failure['detail']
    assert result['restarts'][0]['between'] == [0, 1]


def test_c_uptime_going_back_with_same_pid_is_a_restart():
    result = judge_window(window(c_body(forwarded=100, uptime=50), c_body(forwarded=300, uptime=2)))
    assert 'uptime went back 50 -> 2' in metrics_of(result, 'restart')[0]['detail']


def test_counter_going_down_is_a_reset():
    bodies = [c_body(forwarded=f, uptime=10 + i) for i, f in enumerate((100, 200, 50, 150))]
    result = judge_window(window(*bodies))
    assert result['verdict'] == 'fail'
    evidence = result['restarts'][0]['evidence']
    assert any('client_packets went down 200 -> 50' in e for e in evidence)
    # Increase over the reset counts the new process from zero: 100 + 50 + 100.
    assert result['summary']['metrics']['client_packets']['delta'] == 250


def test_real_go_restart_shows_as_counter_reset():
    result = judge_window(real_window('go-M1-after-obf2x50-backend-down.txt', 'go-M1-idle-plus2s.txt'))
    assert metrics_of(result, 'restart')
    assert any('reset' in e for e in result['restarts'][0]['evidence'])


def test_go_idle_restart_shows_as_new_config_load_without_check():
    first = go_body()
    second = with_values(first, config_loaded_at=1795744999)
    result = judge_window(window(first, second))
    assert any('config_loaded_at changed' in e for e in result['restarts'][0]['evidence'])


def test_real_go_sighup_reload_is_not_a_restart():
    result = judge_window(real_window('go-M1-after-obf2x50-backend-down.txt', 'go-M1-after-sighup-same-config.txt',
                                      'go-M1-after-sighup-changed-config.txt', 'go-M1-after-sighup-broken-config.txt'))
    assert result['restarts'] == []
    assert result['summary']['events'] == [{'between': [1, 2], 'event': 'config_md5 changed'}]


def test_flavour_change_inside_window_is_a_restart():
    result = judge_window(window(c_body(forwarded=100), go_body(packets=100), go_body(packets=300)))
    assert 'flavour changed from c to go' in metrics_of(result, 'restart')[0]['detail']
    assert result['flavor'] == 'go'
    assert result['summary']['samples_ok'] == 3


def test_max_restarts_none_disables_rule():
    result = judge_window(window(c_body(forwarded=100, uptime=50), c_body(forwarded=300, uptime=2)),
                          thresholds={'max_restarts': None})
    assert not metrics_of(result, 'restart')
    assert result['restarts']


# --- readiness, bad values, scrape errors -----------------------------------------------------

def test_go_not_ready_fails_unless_not_required():
    bodies = [go_not_ready(go_body()), go_body(packets=100), go_body(packets=200)]
    result = judge_window(window(*bodies))
    [failure] = metrics_of(result, 'ready')
    assert failure['observed'] == '1 of 3 scrapes not ready'
    assert 'has_current_config' in failure['rule']
    assert judge_window(window(*bodies), require_ready=False)['verdict'] == 'pass'


def test_non_numeric_values_are_bad_values_not_scrape_errors():
    bodies = [go_body(packets=0), with_values(go_body(packets=100), dataplane_packets_dropped='NaN?'),
              go_body(packets=200)]
    result = judge_window(window(*bodies))
    assert result['scrape_errors']['total'] == 0
    assert result['bad_values'] == [{'index': 1, 'metric': 'dropped_packets',
                                     'problem': 'key dataplane_packets_dropped is not a number'}]
    assert metrics_of(result, 'bad_values')[0]['observed'] == 1


def test_missing_keys_are_bad_values():
    bodies = [go_body(), with_values(go_body(packets=100), ingress_accepted_connections=None), go_body(packets=200)]
    result = judge_window(window(*bodies))
    assert result['bad_values'][0]['problem'] == 'key ingress_accepted_connections missing'
    assert result['verdict'] == 'fail'


def test_scrape_errors_counted_by_kind_and_limited_when_consecutive():
    ok = go_traffic(steps=5)
    samples = [ok[0], sample_error('timeout', 1.5), sample_error('refused', 1.7), ok[2], ok[3], ok[4]]
    result = judge_window(samples)
    assert result['verdict'] == 'pass', result['failures']
    assert result['scrape_errors'] == {'total': 2, 'by_kind': {'timeout': 1, 'refused': 1},
                                       'max_consecutive': 2, 'limit': 2}
    samples.insert(3, sample_error('http_status', 1.8, 'HTTP 404 Not Found'))
    result = judge_window(samples)
    [failure] = metrics_of(result, 'scrape_errors')
    assert (failure['observed'], failure['limit']) == (3, 2)
    assert 'http_status: 1' in failure['detail']


def test_all_scrapes_failing_is_fail():
    result = judge_window([sample_error('refused', 0), sample_error('refused', 1)], max_consecutive_errors=5)
    assert result['verdict'] == 'fail'
    assert metrics_of(result, 'scrape_success')
    assert result['flavor'] is None


@pytest.mark.parametrize('body, kind', [
    ('', 'empty'),
    ('<html><body><h1>404 Not Found</h1></body></html>\n', 'not_stats'),
    (capture('go-M1-idle-start.txt')[:700], 'truncated'),
    ('\x01\x02garbage without tabs\n', 'garbage'),
])
def test_bad_bodies_become_error_samples(body, kind):
    sample = sample_from_body(body, 0.0)
    assert sample['error'] == kind and sample['parsed'] is None


def test_per_sample_rows_carry_metrics_rates_and_errors():
    ok = go_traffic()
    result = judge_window([ok[0], sample_error('timeout', 0.5, 'slow'), ok[1], ok[2]])
    rows = result['samples']
    assert [r['ok'] for r in rows] == [True, False, True, True]
    assert rows[1]['error'] == 'timeout' and rows[1]['t'] == 0.5
    assert rows[2]['metrics']['client_packets'] == 100
    assert rows[2]['rates']['client_packets'] == 100.0
    assert 'rates' not in rows[0]


# --- baseline ---------------------------------------------------------------------------------

def test_baseline_summary_from_c_host_judges_go_success_rate():
    c_result = judge_window(window(*[c_body(forwarded=i * 1000, uptime=i) for i in range(3)]))
    assert c_result['summary']['derived']['success_rate'] == 1.0
    go = go_traffic(dropped_per_step=3)  # 0.97
    relaxed = {'min_success_rate': None}
    for baseline in (c_result['summary'], c_result):
        result = judge_window(go, thresholds=relaxed, baseline=baseline)
        [failure] = metrics_of(result, 'success_rate')
        assert (failure['observed'], failure['limit']) == (0.97, 0.98)
        assert result['baseline_comparison'][0]['result'] == 'fail'
    result = judge_window(go, thresholds=relaxed, baseline={'success_rate': 0.985})
    assert result['verdict'] == 'pass'
    assert result['baseline_comparison'][0]['limit'] == 0.965


def test_baseline_with_too_few_packets_is_skipped():
    result = judge_window(go_traffic(), baseline={'success_rate': 1.0, 'packets': 3})
    assert result['baseline_comparison'][0]['result'] == 'skipped'
    assert result['verdict'] == 'pass'


def test_bad_handshake_ratio_compared_only_with_same_flavour():
    def go_window(invalid_step):
        return window(*[go_body(packets=i * 100, accepted=i * 100, invalid=i * invalid_step) for i in range(3)])
    baseline = judge_window(go_window(1))['summary']
    result = judge_window(go_window(10), baseline=baseline)
    [failure] = metrics_of(result, 'bad_handshake_ratio')
    assert (failure['observed'], failure['limit']) == (0.1, 0.03)
    c_like = dict(baseline, flavor='c')
    result = judge_window(go_window(10), baseline=c_like)
    assert not metrics_of(result, 'bad_handshake_ratio')
    assert any(c['result'] == 'skipped' for c in result['baseline_comparison'])


@pytest.mark.parametrize('baseline', [
    'text', {'success_rate': 'high'}, {'success_rate': 1.5}, {'flavor': 'java', 'success_rate': 1.0}])
def test_bad_baseline_raises(baseline):
    with pytest.raises(ValueError):
        judge_window(go_traffic(), baseline=baseline)


def test_resolve_baseline_shapes():
    assert resolve_baseline(None) == (None, {})
    assert resolve_baseline({'flavor': 'c', 'derived': {'success_rate': 1.0, 'packets': 9}}) == \
        ('c', {'success_rate': 1.0, 'packets': 9})


# --- thresholds and collection -----------------------------------------------------------------

def test_every_threshold_has_a_documented_source():
    assert set(THRESHOLD_SOURCES) == set(DEFAULT_THRESHOLDS)
    assert '0.02' in THRESHOLD_SOURCES['max_success_rate_drop']


@pytest.mark.parametrize('thresholds', [{'min_sucess_rate': 0.9}, {'min_success_rate': 'x'},
                                        {'min_packets': -1}, {'max_restarts': True}])
def test_bad_thresholds_raise(thresholds):
    with pytest.raises(ValueError):
        effective_thresholds(thresholds)


def test_threshold_values_accept_numeric_strings_from_yaml():
    assert effective_thresholds({'min_success_rate': '0.9'})['min_success_rate'] == 0.9


def test_min_backend_healthy_disabled():
    bodies = [c_body(forwarded=i * 100, ready_targets=0) for i in range(3)]
    assert judge_window(window(*bodies))['verdict'] == 'fail'
    assert judge_window(window(*bodies), thresholds={'min_backend_healthy': None})['verdict'] == 'pass'


def test_collect_window_stops_after_the_consecutive_error_limit(monkeypatch):
    calls = []

    def fake_take(url, timeout, max_bytes, clock):
        calls.append(url)
        return sample_error('refused', float(len(calls)))
    monkeypatch.setattr(judge, 'take_sample', fake_take)
    taken = collect_window('http://127.0.0.1:1/stats', samples=10, interval=0, max_consecutive_errors=2,
                           sleep=lambda s: None)
    assert len(taken) == 3


def test_collect_window_paces_from_window_start(monkeypatch):
    now = [100.0]
    slept = []

    def fake_take(url, timeout, max_bytes, clock):
        now[0] += 0.25  # each scrape takes a quarter second
        return sample_error('timeout', now[0])

    def fake_sleep(seconds):
        slept.append(round(seconds, 3))
        now[0] += seconds
    monkeypatch.setattr(judge, 'take_sample', fake_take)
    collect_window('http://127.0.0.1:1/stats', samples=3, interval=1.0, max_consecutive_errors=None,
                   clock=lambda: now[0], sleep=fake_sleep)
    assert slept == [0.75, 0.75]


def _summary(flavor, packets, dropped, connections=None, bad=None):
    derived = {'packets': packets, 'dropped_packets': dropped,
               'success_rate': round(1.0 - float(dropped) / packets, 6) if packets else None,
               'connections': connections, 'bad_handshakes': bad,
               'bad_handshake_ratio': round(float(bad) / connections, 6) if connections else None}
    return {'flavor': flavor, 'derived': derived}


def test_compare_summaries_fails_when_canary_drops_more_than_control():
    from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import compare_summaries
    result = compare_summaries(_summary('go', 200, 20), _summary('c', 200, 0))
    assert result['verdict'] == 'fail'
    assert result['failures'][0]['metric'] == 'success_rate'
    assert result['failures'][0]['limit'] == 0.98


def test_compare_summaries_passes_within_margin_and_skips_cross_flavour_handshakes():
    from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import compare_summaries
    result = compare_summaries(_summary('go', 200, 2, 100, 50), _summary('c', 200, 0, 100, 0))
    assert result['verdict'] == 'pass'
    assert [c['metric'] for c in result['comparisons']] == ['success_rate']


def test_compare_summaries_is_inconclusive_without_volume():
    from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import compare_summaries
    assert compare_summaries(_summary('go', 10, 5), _summary('c', 10, 0))['verdict'] == 'inconclusive'
    assert compare_summaries({}, {})['verdict'] == 'inconclusive'
