# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Judge a window of /stats samples against the SLO: pass, fail or inconclusive.

A sample is a dict {'t': seconds (monotonic), 'error': None or a scrape error kind, 'detail': str,
'parsed': ParsedStats or None}; build them with sample_from_body / sample_from_scrape /
sample_error, or take them live with take_sample / collect_window. judge_window needs no server.

Counters are cumulative, so the window is judged on their increase. Thresholds, their defaults
and where each default comes from are in DEFAULT_THRESHOLDS / THRESHOLD_SOURCES and
docs/slo-metrics.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.metrics import (
    COUNTER, GAUGE, build_table, normalize)
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.scrape import (
    DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, fetch)
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import StatsParseError, parse_stats

PASS = 'pass'
FAIL = 'fail'
INCONCLUSIVE = 'inconclusive'

DEFAULT_MAX_CONSECUTIVE_ERRORS = 2

DEFAULT_THRESHOLDS = {
    'min_success_rate': 0.98,
    'max_success_rate_drop': 0.02,
    'min_packets': 50,
    'max_bad_handshake_ratio': None,
    'max_bad_handshake_ratio_increase': 0.02,
    'min_connections': 50,
    'max_restarts': 0,
    'min_backend_healthy': 1,
    'max_accept_failures': None,
    'max_bad_value_samples': 0,
    'max_scrape_errors': None,
}

THRESHOLD_SOURCES = {
    'min_success_rate': 'Go port Phase 7 dual-run gate "go + 0.02 >= c" with C measured at 1.000 there',
    'max_success_rate_drop': 'Go port Phase 7 dual-run gate "go + 0.02 >= c" (success rate, absolute)',
    'min_packets': 'resolution of the 0.02 gate: one dropped packet in 50 is 0.02',
    'max_bad_handshake_ratio': 'none by default: scanners send junk to every proxy; set per fleet',
    'max_bad_handshake_ratio_increase': 'Go port Phase 7 dual-run connect success-rate gate, 0.02 absolute',
    'min_connections': 'resolution of the 0.02 gate: one bad handshake in 50 is 0.02',
    'max_restarts': 'issue: a restart inside the window is a failure',
    'min_backend_healthy': 'a proxy with no usable backend drops every client packet',
    'max_accept_failures': 'none by default: never non-zero in the lab, meaning differs per flavour',
    'max_bad_value_samples': 'a scrape that parses but lacks numbers for mapped keys is a defect',
    'max_scrape_errors': 'none by default: consecutive errors are limited by max_consecutive_errors',
}


def effective_thresholds(thresholds=None):
    """Defaults overlaid with the user's values; None disables a rule. ValueError on unknown names."""
    result = dict(DEFAULT_THRESHOLDS)
    for name, value in (thresholds or {}).items():
        if name not in DEFAULT_THRESHOLDS:
            raise ValueError('unknown threshold %s; known: %s' % (name, ', '.join(sorted(DEFAULT_THRESHOLDS))))
        if value is not None:
            if isinstance(value, bool):
                raise ValueError('threshold %s must be a number or null, not a boolean' % name)
            if not isinstance(value, (int, float)):
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise ValueError('threshold %s must be a number or null' % name)
            if value < 0:
                raise ValueError('threshold %s must not be negative' % name)
        result[name] = value
    return result


# --- samples ---------------------------------------------------------------------------------

def sample_error(kind, t, detail=''):
    return {'t': t, 'error': kind, 'detail': detail, 'parsed': None}


def sample_from_body(body, t):
    """A sample from a /stats body; parse failures become error samples of the parser's kind."""
    try:
        return {'t': t, 'error': None, 'detail': '', 'parsed': parse_stats(body)}
    except StatsParseError as exc:
        return sample_error(exc.kind, t, str(exc))


def sample_from_scrape(result, t=None):
    """A sample from a scrape.ScrapeResult; ``t`` defaults to its wall-clock start."""
    t = result.started_at if t is None else t
    if not result.ok:
        return sample_error(result.error, t, result.detail)
    return sample_from_body(result.body, t)


def take_sample(url, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES, clock=time.monotonic):
    t = clock()
    return sample_from_scrape(fetch(url, timeout=timeout, max_bytes=max_bytes), t)


def collect_window(url, samples, interval, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES,
                   max_consecutive_errors=DEFAULT_MAX_CONSECUTIVE_ERRORS, clock=time.monotonic,
                   sleep=time.sleep):
    """Take ``samples`` scrapes ``interval`` seconds apart (start to start).

    Stops early once the consecutive-error limit is exceeded: the verdict is then fail whatever
    follows. Bounded: at most samples * (interval + timeout) seconds.
    """
    taken = []
    consecutive = 0
    start = clock()
    for index in range(samples):
        if index:
            sleep(max(0.0, start + index * interval - clock()))
        sample = take_sample(url, timeout=timeout, max_bytes=max_bytes, clock=clock)
        taken.append(sample)
        consecutive = consecutive + 1 if sample['error'] else 0
        if max_consecutive_errors is not None and consecutive > max_consecutive_errors:
            break
    return taken


# --- window arithmetic -----------------------------------------------------------------------

def _increase(values):
    """Increase of a cumulative counter over the values; a drop is a reset that restarts from 0."""
    total = 0
    for prev, cur in zip(values, values[1:]):
        total += cur - prev if cur >= prev else cur
    return total


def _metric_summary(name, entry, ok_rows, span):
    values = [r['metrics'].get(name) for r in ok_rows]
    present = [v for v in values if v is not None]
    info = {'kind': entry['kind'], 'comparable': entry['comparable']}
    reasons = [r['no_signal'][name] for r in ok_rows if name in r['no_signal']]
    if not present:
        if reasons:
            info['no_signal'] = reasons[-1]
        info['last'] = None
        return info
    info['first'] = present[0]
    info['last'] = present[-1]
    if entry['kind'] == COUNTER:
        delta = _increase(present)
        info['delta'] = delta
        info['rate'] = round(delta / span, 6) if span > 0 else None
    elif entry['kind'] == GAUGE:
        info['min'] = min(present)
        info['max'] = max(present)
    else:
        info['changed'] = any(v != present[0] for v in present)
    return info


def _restart_evidence(prev, cur, table):
    """Reasons why the process behind ``cur`` is not the one behind ``prev``."""
    if prev['flavor'] != cur['flavor']:
        return ['flavour changed from %s to %s' % (prev['flavor'], cur['flavor'])]
    a, b = prev['metrics'], cur['metrics']
    evidence = []
    for name in ('process_id', 'process_start'):
        if a.get(name) is not None and b.get(name) is not None and a[name] != b[name]:
            evidence.append('%s changed %s -> %s' % (name, a[name], b[name]))
    if a.get('uptime') is not None and b.get('uptime') is not None and b['uptime'] < a['uptime']:
        evidence.append('uptime went back %s -> %s' % (a['uptime'], b['uptime']))
    for name, entry in table.items():
        if entry['kind'] != COUNTER:
            continue
        if a.get(name) is not None and b.get(name) is not None and b[name] < a[name]:
            evidence.append('counter %s went down %s -> %s (reset)' % (name, a[name], b[name]))
    # Go loads its config at start and on SIGHUP; a new load time without a new check is a restart.
    if (a.get('config_loaded_at') is not None and b.get('config_loaded_at') is not None
            and a['config_loaded_at'] != b['config_loaded_at']
            and a.get('config_checks') is not None and b.get('config_checks') is not None
            and b['config_checks'] <= a['config_checks']):
        evidence.append('config_loaded_at changed %s -> %s without a config check'
                        % (a['config_loaded_at'], b['config_loaded_at']))
    return evidence


def resolve_baseline(baseline):
    """(flavor or None, derived dict) from a summary, a whole mtproxy_slo result or a flat dict."""
    if not baseline:
        return None, {}
    if not isinstance(baseline, dict):
        raise ValueError('baseline must be a dict (the summary of an earlier mtproxy_slo run)')
    if isinstance(baseline.get('summary'), dict):
        baseline = baseline['summary']
    flavor = baseline.get('flavor')
    derived = baseline.get('derived') if isinstance(baseline.get('derived'), dict) else baseline
    clean = {}
    for name in ('success_rate', 'packets', 'bad_handshake_ratio', 'connections'):
        value = derived.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError('baseline %s must be a number' % name)
        clean[name] = value
    if 'success_rate' in clean and not 0 <= clean['success_rate'] <= 1:
        raise ValueError('baseline success_rate must be between 0 and 1')
    if flavor not in (None, 'c', 'go'):
        raise ValueError('baseline flavor must be c or go')
    return flavor, clean


# --- the judge -------------------------------------------------------------------------------

class _Verdict:
    def __init__(self):
        self.failures = []
        self.inconclusive = []
        self.judged = []
        self.comparisons = []

    def fail(self, metric, observed, limit, rule, detail=None):
        failure = {'metric': metric, 'observed': observed, 'limit': limit, 'rule': rule}
        if detail:
            failure['detail'] = detail
        self.failures.append(failure)


def _row(index, sample, t0):
    row = {'index': index, 't': round(sample['t'] - t0, 3), 'ok': sample['error'] is None}
    if sample['error']:
        row.update(error=sample['error'], detail=sample.get('detail', ''))
    return row


def _judge_errors(v, rows, max_consecutive_errors, th):
    by_kind, run, longest = {}, 0, 0
    for row in rows:
        if row['ok']:
            run = 0
            continue
        by_kind[row['error']] = by_kind.get(row['error'], 0) + 1
        run += 1
        longest = max(longest, run)
    total = sum(by_kind.values())
    if max_consecutive_errors is not None and longest > max_consecutive_errors:
        v.fail('scrape_errors', longest, max_consecutive_errors,
               'no more than %d consecutive /stats scrapes may fail (refused, timeout, non-200, '
               'not /stats, truncated, too large, garbage)' % max_consecutive_errors,
               ', '.join('%s: %d' % kv for kv in sorted(by_kind.items())))
    if th['max_scrape_errors'] is not None and total > th['max_scrape_errors']:
        v.fail('scrape_errors', total, th['max_scrape_errors'],
               'no more than %g /stats scrapes may fail in the window' % th['max_scrape_errors'])
    if rows and total == len(rows):
        v.fail('scrape_success', 0, 1, 'at least one /stats scrape in the window must succeed')
    return {'total': total, 'by_kind': by_kind, 'max_consecutive': longest, 'limit': max_consecutive_errors}


def _judge_values_and_readiness(v, ok_rows, th, require_ready):
    bad_values = [{'index': r['index'], 'metric': m, 'problem': p}
                  for r in ok_rows for m, p in sorted(r['invalid'].items())]
    bad_samples = len(set(b['index'] for b in bad_values))
    if th['max_bad_value_samples'] is not None and bad_samples > th['max_bad_value_samples']:
        v.fail('bad_values', bad_samples, th['max_bad_value_samples'],
               'every /stats answer must carry numbers for the mapped keys',
               '; '.join('sample %(index)d %(metric)s: %(problem)s' % b for b in bad_values[:5]))
    if require_ready:
        not_ready = [r['index'] for r in ok_rows if r['metrics'].get('ready') != 1]
        if not_ready:
            v.fail('ready', '%d of %d scrapes not ready' % (len(not_ready), len(ok_rows)), 'ready in every scrape',
                   'the proxy must have its config loaded (Go: has_current_config 1) in every scrape',
                   'samples %s' % ', '.join(str(i) for i in not_ready[:10]))
    return bad_values


def _judge_restarts(v, ok_rows, table, th):
    restarts = []
    for prev, cur in zip(ok_rows, ok_rows[1:]):
        evidence = _restart_evidence(prev, cur, table)
        if evidence:
            restarts.append({'between': [prev['index'], cur['index']], 'evidence': evidence})
    if th['max_restarts'] is not None and len(restarts) > th['max_restarts']:
        v.fail('restart', len(restarts), th['max_restarts'],
               'the proxy must not restart inside the window (C: pid, start_time, uptime; Go: counter resets)',
               '; '.join('samples %d->%d: %s' % (r['between'][0], r['between'][1], ', '.join(r['evidence']))
                         for r in restarts))
    return restarts


def _derived(summary_metrics):
    def delta(name):
        return summary_metrics.get(name, {}).get('delta')
    packets, dropped = delta('client_packets'), delta('dropped_packets')
    connections, bad = delta('accepted_connections'), delta('bad_handshakes')
    return {
        'packets': packets,
        'dropped_packets': dropped,
        'success_rate': round(1.0 - float(dropped) / packets, 6) if packets and dropped is not None else None,
        'connections': connections,
        'bad_handshakes': bad,
        'bad_handshake_ratio': round(float(bad) / connections, 6) if connections and bad is not None else None,
    }


def _judge_traffic(v, derived, summary_metrics, flavor, th, base_flavor, base):
    packets, connections = derived['packets'], derived['connections']
    active_max = summary_metrics.get('active_connections', {}).get('max')
    if not packets and not connections and not active_max:
        v.inconclusive.append('no client traffic in the window (no packets, no accepted or open connections)')
        return
    min_packets = th['min_packets'] or 0
    if packets is None:
        v.inconclusive.append('no client packet signal for %s' % flavor)
    elif packets < max(min_packets, 1):
        v.inconclusive.append('only %s client packets in the window; the success rate needs at least %s'
                              % (packets, max(min_packets, 1)))
    else:
        rate = derived['success_rate']
        if th['min_success_rate'] is not None:
            v.judged.append('min_success_rate')
            if rate < th['min_success_rate']:
                v.fail('success_rate', rate, th['min_success_rate'],
                       'at least this share of client packets must be forwarded, not dropped',
                       '%s of %s packets dropped' % (derived['dropped_packets'], packets))
        if th['max_success_rate_drop'] is not None and base.get('success_rate') is not None:
            _compare(v, 'success_rate', rate, base['success_rate'], -th['max_success_rate_drop'], base,
                     'packets', min_packets,
                     'client packet success rate must not be more than %g below the baseline'
                     % th['max_success_rate_drop'])
    _judge_handshakes(v, derived, flavor, th, base_flavor, base)


def _judge_handshakes(v, derived, flavor, th, base_flavor, base):
    ratio, connections = derived['bad_handshake_ratio'], derived['connections']
    min_connections = max(th['min_connections'] or 0, 1)
    if ratio is None or connections < min_connections:
        return
    if th['max_bad_handshake_ratio'] is not None:
        v.judged.append('max_bad_handshake_ratio')
        if ratio > th['max_bad_handshake_ratio']:
            v.fail('bad_handshake_ratio', ratio, th['max_bad_handshake_ratio'],
                   'at most this share of accepted connections may fail the handshake')
    if th['max_bad_handshake_ratio_increase'] is not None and base.get('bad_handshake_ratio') is not None:
        if base_flavor not in (None, flavor):
            v.comparisons.append({'metric': 'bad_handshake_ratio', 'result': 'skipped',
                                  'reason': 'baseline is %s, this is %s: accept counts differ' % (base_flavor, flavor)})
            return
        _compare(v, 'bad_handshake_ratio', ratio, base['bad_handshake_ratio'],
                 th['max_bad_handshake_ratio_increase'], base, 'connections', min_connections,
                 'share of bad handshakes must not be more than %g above the baseline'
                 % th['max_bad_handshake_ratio_increase'])


def _compare(v, metric, observed, baseline_value, margin, base, volume_key, min_volume, rule):
    """Compare with the baseline: margin < 0 means observed >= baseline + margin, else <=."""
    if base.get(volume_key) is not None and base[volume_key] < min_volume:
        v.comparisons.append({'metric': metric, 'baseline': baseline_value, 'observed': observed,
                              'result': 'skipped', 'reason': 'baseline has only %s %s' % (base[volume_key], volume_key)})
        return
    limit = round(baseline_value + margin, 6)
    bad = observed < limit if margin < 0 else observed > limit
    v.judged.append('baseline_' + metric)
    v.comparisons.append({'metric': metric, 'baseline': baseline_value, 'observed': observed, 'limit': limit,
                          'result': FAIL if bad else PASS})
    if bad:
        v.fail(metric, observed, limit, rule, 'baseline %s' % baseline_value)


def _judge_levels(v, summary_metrics, th):
    healthy = summary_metrics.get('backend_healthy', {}).get('last')
    if th['min_backend_healthy'] is not None and healthy is not None:
        v.judged.append('min_backend_healthy')
        if healthy < th['min_backend_healthy']:
            v.fail('backend_healthy', healthy, th['min_backend_healthy'],
                   'at least this many backend targets must be usable at the end of the window')
    failures = summary_metrics.get('accept_failures', {}).get('delta')
    if th['max_accept_failures'] is not None and failures is not None:
        v.judged.append('max_accept_failures')
        if failures > th['max_accept_failures']:
            v.fail('accept_failures', failures, th['max_accept_failures'],
                   'no more than this many accepts may fail in the window')


def _events(ok_rows):
    events = []
    for prev, cur in zip(ok_rows, ok_rows[1:]):
        a, b = prev['metrics'].get('config_md5'), cur['metrics'].get('config_md5')
        if a is not None and b is not None and a != b:
            events.append({'between': [prev['index'], cur['index']], 'event': 'config_md5 changed'})
    return events


def _per_sample_rates(ok_rows, table):
    for prev, cur in zip(ok_rows, ok_rows[1:]):
        span = cur['t'] - prev['t']
        rates = {}
        for name, entry in table.items():
            a, b = prev['metrics'].get(name), cur['metrics'].get(name)
            if entry['kind'] == COUNTER and a is not None and b is not None and span > 0 and b >= a:
                rates[name] = round((b - a) / span, 6)
        cur['rates'] = rates


def judge_window(samples, thresholds=None, baseline=None, max_consecutive_errors=DEFAULT_MAX_CONSECUTIVE_ERRORS,
                 require_ready=True, metric_overrides=None):
    """Verdict over a window of samples (see module docstring for the sample shape).

    Returns a JSON-safe dict: verdict, failures [{metric, observed, limit, rule, detail?}], flavor,
    samples (per-sample metrics, rates and errors), summary (window deltas/rates; pass it as
    ``baseline`` to another judge), scrape_errors, bad_values, restarts, no_signal,
    notes, inconclusive_reasons, judged, baseline_comparison, thresholds. ValueError on bad arguments.
    """
    th = effective_thresholds(thresholds)
    table = build_table(metric_overrides)
    base_flavor, base = resolve_baseline(baseline)
    v = _Verdict()
    t0 = samples[0]['t'] if samples else 0.0
    rows, ok_rows = [], []
    for index, sample in enumerate(samples):
        row = _row(index, sample, t0)
        if row['ok']:
            norm = normalize(sample['parsed'], table=table)
            row.update(flavor=norm['flavor'], metrics=norm['metrics'], no_signal=norm['no_signal'],
                       invalid=norm['invalid'])
            ok_rows.append(row)
        rows.append(row)

    if not samples:
        v.inconclusive.append('no samples taken')
    scrape_errors = _judge_errors(v, rows, max_consecutive_errors, th)
    bad_values = _judge_values_and_readiness(v, ok_rows, th, require_ready)
    restarts = _judge_restarts(v, ok_rows, table, th)
    _per_sample_rates(ok_rows, table)

    flavor = ok_rows[-1]['flavor'] if ok_rows else None
    # Deltas only over the samples of the final flavour: a C -> Go change is already a restart failure.
    same = [r for r in ok_rows if r['flavor'] == flavor]
    span = round(same[-1]['t'] - same[0]['t'], 3) if same else 0.0
    summary_metrics = dict((name, _metric_summary(name, entry, same, span))
                           for name, entry in table.items()) if same else {}
    derived = _derived(summary_metrics)
    if len(same) < 2 and ok_rows:
        v.inconclusive.append('fewer than 2 successful scrapes: counters need a start and an end')
    elif same:
        _judge_traffic(v, derived, summary_metrics, flavor, th, base_flavor, base)
    if same:
        _judge_levels(v, summary_metrics, th)

    # Level rules (backends, accept failures) say nothing about served traffic: alone they cannot pass.
    traffic_rules = [j for j in v.judged if j not in ('min_backend_healthy', 'max_accept_failures')]
    if v.failures:
        verdict = FAIL
    elif not traffic_rules:
        verdict = INCONCLUSIVE
        if not v.inconclusive:
            v.inconclusive.append('no traffic rule could be judged (all disabled or without data)')
    else:
        verdict = PASS
    no_signal = dict((name, info['no_signal']) for name, info in summary_metrics.items() if 'no_signal' in info)
    summary = {'flavor': flavor, 'samples_total': len(rows), 'samples_ok': len(ok_rows), 'window_s': span,
               'metrics': summary_metrics, 'derived': derived, 'events': _events(same)}
    for row in ok_rows:
        row.pop('no_signal', None)
    return {'verdict': verdict, 'failures': v.failures, 'flavor': flavor, 'samples': rows, 'summary': summary,
            'scrape_errors': scrape_errors, 'bad_values': bad_values, 'restarts': restarts,
            'no_signal': no_signal, 'notes': v.inconclusive,
            'inconclusive_reasons': v.inconclusive if verdict == INCONCLUSIVE else [], 'judged': v.judged,
            'baseline_comparison': v.comparisons, 'thresholds': th}


def compare_summaries(summary, baseline, thresholds=None):
    """Judge one window's summary against another's, e.g. a canary against a C control host.

    Only the comparable, volume-gated rules apply (success rate drop, bad-handshake ratio increase
    between the same flavour). Returns {verdict, failures, comparisons}; inconclusive when no rule
    had enough data on both sides.
    """
    th = effective_thresholds(thresholds)
    base_flavor, base = resolve_baseline(baseline)
    flavor, derived = resolve_baseline(summary)
    v = _Verdict()
    min_packets = max(th['min_packets'] or 0, 1)
    if (th['max_success_rate_drop'] is not None and derived.get('success_rate') is not None
            and base.get('success_rate') is not None and derived.get('packets', 0) >= min_packets):
        _compare(v, 'success_rate', derived['success_rate'], base['success_rate'], -th['max_success_rate_drop'],
                 base, 'packets', min_packets,
                 'client packet success rate must not be more than %g below the control host'
                 % th['max_success_rate_drop'])
    min_connections = max(th['min_connections'] or 0, 1)
    if (th['max_bad_handshake_ratio_increase'] is not None and derived.get('bad_handshake_ratio') is not None
            and base.get('bad_handshake_ratio') is not None and derived.get('connections', 0) >= min_connections
            and base_flavor in (None, flavor)):
        _compare(v, 'bad_handshake_ratio', derived['bad_handshake_ratio'], base['bad_handshake_ratio'],
                 th['max_bad_handshake_ratio_increase'], base, 'connections', min_connections,
                 'share of bad handshakes must not be more than %g above the control host'
                 % th['max_bad_handshake_ratio_increase'])
    verdict = FAIL if v.failures else (PASS if v.judged else INCONCLUSIVE)
    return {'verdict': verdict, 'failures': v.failures, 'comparisons': v.comparisons}
