# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's first precondition, "Phase 7 dual-run acceptance is PASS", judged from the Go port's
own evidence file on the controller.

The Go port (skrashevich/MTProxy, branch golang, ``make go-dualrun-report``;
integration/cli/dual_run_integration_test.go) writes ``artifacts/dualrun/phase7-dualrun-report.json``::

    {"generated_at": RFC 3339 UTC, "go_os": GOOS, "go_arch": GOARCH,
     "entries": [{"name": str, "thresholds": {str: str}, "metrics": {str: number | snapshot}}]}

one entry per dual-run test, written only when that test's guards held; generated_at is rewritten with
each entry. A snapshot is ``{attempts, successes, failures, success_rate, avg_ms, p50_ms, p95_ms,
p99_ms, max_ms}`` of C (``c_connect``, ``c_stats``) or Go (``go_...``); ``go_shutdown_ms`` /
``c_shutdown_ms`` are the SIGTERM-to-exit times. The harness runs only on linux/amd64 (it skips
elsewhere) and records nothing about the Go binary it built.

``judge`` reads the file and recomputes every guard from the metrics with the harness's formulas
(GUARDS): a report that is missing an entry, fails a guard, is malformed, older than ``max_age_s``,
from the future, or for another OS/architecture than a host does not let the cutover start. Guards the
report states but the harness does not enforce (the canary profile's p99 lines) are recomputed and only
warned about. The result is the evidence the run report keeps: path, sha256, generated_at, every guard's
figures, the verdict and the reasons.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import hashlib
import json
import math
from collections import namedtuple

from ansible_collections.mtproxy.cutover.plugins.module_utils._host.elf import host_goarch

DEFAULT_MAX_AGE_S = 7 * 86400
FUTURE_SKEW_S = 300
MAX_BYTES = 4 * 1024 * 1024
# Go computes a latency limit in nanoseconds (time.Duration, truncated) and writes milliseconds as
# float64; recomputed in float milliseconds the limit may come out below Go's by less than 1 ns.
NS_TOLERANCE_MS = 1e-6
RATE_TOLERANCE = 1e-9
SNAPSHOT_INTS = ('attempts', 'successes', 'failures')
SNAPSHOT_MS = ('avg_ms', 'p50_ms', 'p95_ms', 'p99_ms', 'max_ms')
WAY_FORWARD = ('run `make go-dualrun-report` on the Go port\'s golang branch (linux/amd64) for the build you stage '
               'and set mtproxy_cutover_dualrun_report to its artifacts/dualrun/phase7-dualrun-report.json, or set '
               'mtproxy_cutover_dualrun_gate: skip to start without it (the run report records that)')

# kind 'latency': go <= c * factor + margin (ms), on ``series`` ('shutdown': the *_shutdown_ms numbers,
# else the p95_ms / p99_ms ``field`` of the snapshots); kind 'rate': C and Go each had a success and
# go + delta >= c on successes / attempts. ``text`` is the threshold string the harness writes.
Guard = namedtuple('Guard', 'name kind series field factor margin delta text enforced')


def _lat(name, series, field, factor, margin, text, enforced=True):
    return Guard(name, 'latency', series, field, factor, margin, None, text, enforced)


def _rate(name, series):
    return Guard(name, 'rate', series, 'success_rate', None, None, 0.02, 'go + 0.02 >= c', True)


GUARDS = {
    'control_plane_slo': (
        _lat('shutdown', 'shutdown', None, 2, 200, 'go <= c*2 + 200ms'),
    ),
    'dataplane_canary_slo': (
        _rate('connect_success_rate', 'connect'),
        _lat('connect_p95', 'connect', 'p95_ms', 2.0, 25, 'go <= c*2.0 + 25ms'),
        _lat('connect_p99', 'connect', 'p99_ms', 3.0, 60, 'go <= c*3.0 + 60ms', enforced=False),
        _rate('stats_success_rate', 'stats'),
        _lat('stats_p95', 'stats', 'p95_ms', 2.5, 40, 'go <= c*2.5 + 40ms'),
        _lat('stats_p99', 'stats', 'p99_ms', 3.5, 100, 'go <= c*3.5 + 100ms', enforced=False),
        _lat('shutdown', 'shutdown', None, 2, 250, 'go <= c*2 + 250ms'),
    ),
    'dataplane_load_slo': (
        _rate('connect_success_rate', 'connect'),
        _lat('connect_p95', 'connect', 'p95_ms', 2.0, 25, 'go <= c*2.0 + 25ms'),
        _lat('connect_p99', 'connect', 'p99_ms', 3.0, 80, 'go <= c*3.0 + 80ms'),
        _rate('stats_success_rate', 'stats'),
        _lat('stats_p95', 'stats', 'p95_ms', 2.5, 60, 'go <= c*2.5 + 60ms'),
        _lat('stats_p99', 'stats', 'p99_ms', 4.0, 150, 'go <= c*4.0 + 150ms'),
        _lat('shutdown', 'shutdown', None, 2, 300, 'go <= c*2 + 300ms'),
    ),
}
EXPECTED_ENTRIES = ('control_plane_slo', 'dataplane_canary_slo', 'dataplane_load_slo')
ENTRY_TESTS = {'control_plane_slo': 'TestDualRunControlPlaneSLO',
               'dataplane_canary_slo': 'TestDualRunDataplaneCanarySLO',
               'dataplane_load_slo': 'TestDualRunDataplaneLoadSLO'}
# Thresholds that are not guards: the load profile's name.
FIXED_THRESHOLDS = {'dataplane_load_slo': {'profile': 'load'}}


class Malformed(Exception):
    pass


def parse_time(text):
    """An RFC 3339 time with an offset (Go's time.RFC3339) -> aware datetime; Malformed otherwise."""
    if not isinstance(text, str) or 'T' not in text:
        raise Malformed('generated_at %r is not an RFC 3339 time' % (text,))
    value = text[:-1] + '+00:00' if text.endswith(('Z', 'z')) else text
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise Malformed('generated_at %r is not an RFC 3339 time' % (text,))
    if parsed.tzinfo is None:
        raise Malformed('generated_at %r has no time zone offset' % (text,))
    return parsed


def _number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise Malformed('%s is %r, not a non-negative number' % (where, value))
    return value


def _snapshot(metrics, key, where):
    snap = metrics.get(key)
    if not isinstance(snap, dict):
        raise Malformed('%s.%s is %s, not a snapshot object' % (where, key, 'missing' if snap is None else repr(snap)))
    for field in SNAPSHOT_INTS:
        value = _number(snap.get(field), '%s.%s.%s' % (where, key, field))
        if value != int(value):
            raise Malformed('%s.%s.%s is %r, not a count' % (where, key, field, value))
    for field in ('success_rate',) + SNAPSHOT_MS:
        _number(snap.get(field), '%s.%s.%s' % (where, key, field))
    attempts, successes, failures = (int(snap[f]) for f in SNAPSHOT_INTS)
    if successes + failures != attempts:
        raise Malformed('%s.%s: successes %d + failures %d != attempts %d' % (where, key, successes, failures, attempts))
    rate = float(successes) / float(attempts) if attempts else 0.0
    if abs(rate - snap['success_rate']) > RATE_TOLERANCE:
        raise Malformed('%s.%s: success_rate %r is not successes/attempts %d/%d' % (
            where, key, snap['success_rate'], successes, attempts))
    if successes and not snap['p50_ms'] <= snap['p95_ms'] <= snap['p99_ms'] <= snap['max_ms']:
        raise Malformed('%s.%s: percentiles are not in order (p50 %r, p95 %r, p99 %r, max %r)' % (
            where, key, snap['p50_ms'], snap['p95_ms'], snap['p99_ms'], snap['max_ms']))
    return dict(snap, rate=rate)


def _fmt(value):
    return ('%.3f' % value).rstrip('0').rstrip('.') if value != int(value) else '%d' % value


def evaluate(guard, metrics, where):
    """The figures of one guard recomputed from an entry's metrics (Malformed when they are missing)."""
    if guard.kind == 'rate':
        go = _snapshot(metrics, 'go_' + guard.series, where)
        c = _snapshot(metrics, 'c_' + guard.series, where)
        held = c['successes'] > 0 and go['successes'] > 0 and go['rate'] + guard.delta >= c['rate']
        figures = {'go': go['rate'], 'c': c['rate'], 'limit': c['rate'] - guard.delta, 'unit': 'rate',
                   'go_successes': int(go['successes']), 'c_successes': int(c['successes'])}
        if held:
            why = None
        elif not c['successes'] or not go['successes']:
            why = '%s had no successful attempt (%d/%d)' % (
                'C' if not c['successes'] else 'Go', 0, int((c if not c['successes'] else go)['attempts']))
        else:
            why = 'go %.4f + %s < c %.4f' % (go['rate'], _fmt(guard.delta), c['rate'])
    else:
        if guard.series == 'shutdown':
            go_value = _number(metrics.get('go_shutdown_ms'), where + '.go_shutdown_ms')
            c_value = _number(metrics.get('c_shutdown_ms'), where + '.c_shutdown_ms')
        else:
            go_value = _snapshot(metrics, 'go_' + guard.series, where)[guard.field]
            c_value = _snapshot(metrics, 'c_' + guard.series, where)[guard.field]
        limit = c_value * guard.factor + guard.margin
        held = go_value <= limit + NS_TOLERANCE_MS
        figures = {'go': go_value, 'c': c_value, 'limit': limit, 'unit': 'ms'}
        why = None if held else 'go %s ms > c %s ms * %s + %s ms = %s ms' % (
            _fmt(go_value), _fmt(c_value), _fmt(guard.factor), _fmt(guard.margin), _fmt(limit))
    return dict(figures, held=held, why=why)


def _entries(doc):
    for key in ('generated_at', 'go_os', 'go_arch', 'entries'):
        if key not in doc:
            raise Malformed('the field %s is missing' % key)
    for key in ('go_os', 'go_arch'):
        if not isinstance(doc[key], str) or not doc[key]:
            raise Malformed('%s is %r, not a name' % (key, doc[key]))
    if not isinstance(doc['entries'], list):
        raise Malformed('entries is not a list')
    by_name = {}
    for index, entry in enumerate(doc['entries']):
        if not isinstance(entry, dict) or not isinstance(entry.get('name'), str):
            raise Malformed('entries[%d] is not an object with a name' % index)
        name = entry['name']
        if name in by_name:
            raise Malformed('entry %s appears twice' % name)
        thresholds = entry.get('thresholds', {})
        if not isinstance(thresholds, dict) or not all(isinstance(v, str) for v in thresholds.values()):
            raise Malformed('%s.thresholds is not an object of strings' % name)
        if not isinstance(entry.get('metrics', {}), dict):
            raise Malformed('%s.metrics is not an object' % name)
        by_name[name] = entry
    return by_name


def _failure(kind, message, entry=None, guard=None):
    return {'kind': kind, 'entry': entry, 'guard': guard, 'message': message}


def judge(path, hosts=None, now=None, max_age_s=DEFAULT_MAX_AGE_S):
    """The evidence of the dual-run report at ``path`` (on the controller) for ``hosts`` ({inventory
    host: ansible_architecture, uname -m or GOARCH}); never raises for the file's content.

    Returns ``verdict`` (pass / fail), ``failures`` and ``warnings`` ([{kind, entry, guard, message}];
    kinds: unreadable, malformed, missing_entry, guard, stale, future, os, arch, threshold; ``unset()``: unset), and the
    evidence: ``path``, ``sha256``, ``size``, ``generated_at``, ``age_s``, ``max_age_s``, ``go_os``,
    ``go_arch``, ``entries`` [{name, guards: [{name, formula, stated, enforced, go, c, limit, unit, held,
    why}]}], ``skipped`` False."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    evidence = _unjudged(path, max_age_s)
    failures, warnings = evidence['failures'], evidence['warnings']
    try:
        with open(path, 'rb') as handle:
            raw = handle.read(MAX_BYTES + 1)
    except (IOError, OSError) as exc:
        failures.append(_failure('unreadable', 'cannot read %s: %s' % (path, exc.strerror or exc)))
        return evidence
    evidence['sha256'] = hashlib.sha256(raw).hexdigest()
    evidence['size'] = len(raw)
    try:
        if len(raw) > MAX_BYTES:
            raise Malformed('it is larger than %d bytes' % MAX_BYTES)
        try:
            doc = json.loads(raw.decode('utf-8'))
        except ValueError as exc:
            raise Malformed('it is not JSON (%s)' % exc)
        if not isinstance(doc, dict):
            raise Malformed('it is not a JSON object')
        by_name = _entries(doc)
        generated = parse_time(doc['generated_at'])
    except Malformed as exc:
        failures.append(_failure('malformed', '%s is not a dual-run report of the Go port: %s' % (path, exc)))
        return evidence
    evidence.update(generated_at=doc['generated_at'], go_os=doc['go_os'], go_arch=doc['go_arch'])
    age = (now - generated).total_seconds()
    evidence['age_s'] = int(age)
    if age < -FUTURE_SKEW_S:
        failures.append(_failure('future', 'generated_at %s is %d s in the future of the controller\'s clock'
                                 % (doc['generated_at'], -age)))
    elif age > max_age_s:
        failures.append(_failure('stale', 'generated_at %s is %.1f days old, more than the %.1f days allowed '
                                 '(mtproxy_cutover_dualrun_max_age_s %d)'
                                 % (doc['generated_at'], age / 86400.0, max_age_s / 86400.0, max_age_s)))
    if doc['go_os'] != 'linux':
        failures.append(_failure('os', 'go_os is %s: the dual run did not run on Linux' % doc['go_os']))
    for host, arch in sorted((hosts or {}).items()):
        goarch = host_goarch(arch)
        if goarch != doc['go_arch']:
            failures.append(_failure('arch', 'go_arch is %s but host %s runs %s%s (the Go port\'s dual-run harness '
                                     'runs only on linux/amd64)'
                                     % (doc['go_arch'], host, arch, ' (GOARCH %s)' % goarch if goarch and goarch != arch
                                        else '')))
    for name in EXPECTED_ENTRIES:
        entry = by_name.get(name)
        if entry is None:
            failures.append(_failure('missing_entry', 'entry %s is missing (the harness writes it only when %s passed)'
                                     % (name, ENTRY_TESTS[name]), entry=name))
            continue
        _judge_entry(name, entry, evidence, failures, warnings)
    for name in sorted(set(by_name) - set(EXPECTED_ENTRIES)):
        warnings.append(_failure('threshold', 'entry %s is not one this gate knows; it was not judged' % name, entry=name))
    evidence['verdict'] = 'fail' if failures else 'pass'
    return evidence


def _judge_entry(name, entry, evidence, failures, warnings):
    thresholds, metrics = entry.get('thresholds', {}), entry.get('metrics', {})
    judged = {'name': name, 'guards': []}
    evidence['entries'].append(judged)
    for key, expected in sorted(FIXED_THRESHOLDS.get(name, {}).items()):
        if thresholds.get(key) != expected:
            failures.append(_failure('malformed', '%s.thresholds.%s is %r, not %r' % (name, key, thresholds.get(key),
                                                                                      expected), entry=name))
    for guard in GUARDS[name]:
        stated = thresholds.get(guard.name)
        try:
            figures = evaluate(guard, metrics, name + '.metrics')
        except Malformed as exc:
            failures.append(_failure('malformed', str(exc), entry=name, guard=guard.name))
            continue
        judged['guards'].append(dict(figures, name=guard.name, formula=guard.text, stated=stated,
                                     enforced=guard.enforced))
        if stated != guard.text:
            warnings.append(_failure('threshold', '%s states %s for %s; this gate judges it by %s' % (
                name, repr(stated) if stated is not None else 'no threshold', guard.name, guard.text),
                entry=name, guard=guard.name))
        if not figures['held']:
            text = '%s %s: %s (%s)' % (name, guard.name, figures['why'], guard.text)
            if guard.enforced:
                failures.append(_failure('guard', text, entry=name, guard=guard.name))
            else:
                warnings.append(_failure('guard', text + '; stated in the report, not enforced by the harness',
                                         entry=name, guard=guard.name))


def _unjudged(path, max_age_s=DEFAULT_MAX_AGE_S):
    """The evidence of ``path`` before anything of it is read: a fail with no failure yet."""
    return {'path': path, 'sha256': None, 'size': None, 'generated_at': None, 'age_s': None,
            'max_age_s': max_age_s, 'go_os': None, 'go_arch': None, 'entries': [], 'skipped': False,
            'verdict': 'fail', 'failures': [], 'warnings': []}


def unset():
    """The evidence of a cutover that names no dual-run report (mtproxy_cutover_dualrun_report empty)."""
    evidence = _unjudged(None)
    evidence['failures'].append(_failure('unset', 'mtproxy_cutover_dualrun_report names no file'))
    return evidence


def skipped(reason, path=None):
    """The evidence of a run that opted out of the gate (mtproxy_cutover_dualrun_gate: skip)."""
    return {'path': path or None, 'sha256': None, 'generated_at': None, 'entries': [], 'skipped': True,
            'verdict': 'skipped', 'reason': reason, 'failures': [], 'warnings': []}


def refusal(evidence):
    """The preflight's error for a failed gate: file, sha256, every failure, the way forward."""
    head = 'Phase 7 dual-run evidence %s' % (evidence['path'] or '(none)')
    if evidence.get('sha256'):
        head += ' (sha256 %s, generated_at %s)' % (evidence['sha256'][:16], evidence.get('generated_at') or '?')
    return '%s does not let the cutover start: %s. Way forward: %s.' % (
        head, '; '.join(f['message'] for f in evidence['failures']), WAY_FORWARD)


def gate(path, gate_setting='enforce', machines=None, max_age_s=DEFAULT_MAX_AGE_S, now=None):
    """What cutover.yml's gate decides on (the lookup dualrun_evidence): the evidence of ``path`` for the
    hosts' ``machines``, the opt-out's record with ``gate_setting`` skip, or the refusal of a run that names
    no report; ``refusal`` is the preflight's error when the verdict is fail, else None."""
    path = path or None
    if gate_setting == 'skip':
        evidence = skipped('mtproxy_cutover_dualrun_gate: skip', path)
    elif path is None:
        evidence = unset()
    else:
        evidence = judge(path, machines or {}, now=now, max_age_s=max_age_s)
    evidence['refusal'] = refusal(evidence) if evidence['verdict'] == 'fail' else None
    return evidence
