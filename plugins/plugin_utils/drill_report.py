# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's "Phase 8 drill report JSON" in the Go port's own format, from what drill.yml measured.

The Go port's drill (skrashevich/MTProxy, branch golang, ``make go-phase8-drill``;
integration/cli/phase8_cutover_integration_test.go) writes ``artifacts/phase8/phase8-cutover-report.json``
only when its envelope guard held, and its acceptance document is written from that file::

    {"generated_at": RFC 3339 UTC, "go_os": GOOS, "go_arch": GOARCH,
     "thresholds": {"shutdown": str, "startup": str},
     "steps": [{"name", "binary", "startup_latency_ms", "shutdown_latency_ms", "stats_line_count",
                "stats_sample"}]}

for the steps baseline_c, cutover_go, rollback_c (``binary`` is the base name of the step's program,
``stats_line_count`` the lines of the step's /stats body after trimming white space, ``stats_sample``
its first line). This module writes the same document, byte for byte as Go's json.MarshalIndent would
(field order, sorted map keys, 2-space indent, HTML-safe escapes, Go's float format, final newline).

drill.yml measures three switches (mtproxy_switch ``timings``): the baseline restart of C, the flip
C -> Go and the rollback Go -> C. Each step's figures (``steps_from_switches``):

    baseline_c  startup = baseline.start_ms   shutdown = baseline.stop_ms
    cutover_go  startup = flip.start_ms       shutdown = rollback.stop_ms   (Go's own stop)
    rollback_c  startup = rollback.start_ms   shutdown = flip.stop_ms       (C's stop at the flip: the
                                                                             drill leaves C running)

so that the Go port's guard text "cutover_go and rollback_c <= baseline_c*F + Sms" states exactly the
envelope drill.yml applies (``mtproxy_drill_envelope_factor`` F, ``mtproxy_drill_envelope_slack_ms`` S).
start_ms is systemd's fork plus the program's start until its client port listens; the Go drill times
from its exec to the first /stats answer.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import decimal
import json
import math
import os
import re
from collections import OrderedDict

from ansible_collections.mtproxy.cutover.plugins.module_utils._host.elf import host_goarch
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report import atomic_write

STEP_NAMES = ('baseline_c', 'cutover_go', 'rollback_c')
STEP_FIELDS = ('name', 'binary', 'startup_latency_ms', 'shutdown_latency_ms', 'stats_line_count', 'stats_sample')
TOP_FIELDS = ('generated_at', 'go_os', 'go_arch', 'thresholds', 'steps')
GUARDED_STEPS = ('cutover_go', 'rollback_c')
REPORT_NAME = 'phase8-cutover-report.json'
_GUARD_TEXT = re.compile(r'^cutover_go and rollback_c <= baseline_c\*([0-9.]+) \+ ([0-9.]+)ms$')
# unicode.IsSpace: what Go's strings.TrimSpace trims (Python's str.strip() also trims \x1c-\x1f)
GO_SPACE = '\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a' \
           '\u2028\u2029\u202f\u205f\u3000'
_HTML_ESCAPES = (('<', '\\u003c'), ('>', '\\u003e'), ('&', '\\u0026'), ('\u2028', '\\u2028'), ('\u2029', '\\u2029'))


class DrillReportError(Exception):
    pass


def go_float(value):
    """A float64 as Go's encoding/json writes it: shortest digits, positional between 1e-6 and 1e21."""
    value = float(value)
    if not math.isfinite(value):
        raise DrillReportError('%r cannot be written as JSON' % value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        return repr(value).replace('e-0', 'e-')
    return format(decimal.Decimal(repr(value)).normalize(), 'f')


def _encode(value, indent):
    pad = '  ' * indent
    if isinstance(value, dict):
        if not value:
            return '{}'
        items = ['%s  %s: %s' % (pad, json.dumps(str(k), ensure_ascii=False), _encode(v, indent + 1))
                 for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + '\n' + pad + '}'
    if isinstance(value, (list, tuple)):
        if not value:
            return '[]'
        return '[\n' + ',\n'.join(pad + '  ' + _encode(v, indent + 1) for v in value) + '\n' + pad + ']'
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return '%d' % value
    if isinstance(value, float):
        return go_float(value)
    return json.dumps(str(value), ensure_ascii=False)


def dumps(document):
    """``document`` (dicts in the order they are to be written) as Go's json.MarshalIndent(v, "", "  ")
    plus the newline the Go drill appends."""
    text = _encode(document, 0)
    for char, escape in _HTML_ESCAPES:
        text = text.replace(char, escape)
    return text + '\n'


def _num(value):
    """3 -> '3', 2.5 -> '2.5' (as the guard text shows a factor or a slack)."""
    value = float(value)
    return '%d' % value if value == int(value) else repr(value)


def guard_text(factor, slack_ms):
    return 'cutover_go and rollback_c <= baseline_c*%s + %sms' % (_num(factor), _num(slack_ms))


def stats_facts(body):
    """(stats_line_count, stats_sample) of a /stats body as the Go drill counts them: the body trimmed of
    white space (Go's strings.TrimSpace), split on newlines; the sample is the first line."""
    if body is None:
        raise DrillReportError('no /stats body')
    lines = body.strip(GO_SPACE).split('\n')
    return len(lines), lines[0]


def _ms(timings, key, switch):
    value = (timings or {}).get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise DrillReportError('the %s switch did not measure %s (got %r)' % (switch, key, value))
    return float(value)


def step(name, binary, startup_ms, shutdown_ms, stats_body, secrets=()):
    """One step in the Go format; a secret found in the /stats sample is replaced by <redacted>."""
    try:
        count, sample = stats_facts(stats_body)
    except DrillReportError:
        raise DrillReportError('step %s has no /stats body' % name)
    for secret in secrets:
        if secret:
            sample = sample.replace(secret, '<redacted>')
    return OrderedDict([('name', name), ('binary', os.path.basename(binary)),
                        ('startup_latency_ms', float(startup_ms)), ('shutdown_latency_ms', float(shutdown_ms)),
                        ('stats_line_count', count), ('stats_sample', sample)])


def steps_from_switches(baseline, flip, rollback, c_binary, go_binary, stats_bodies, secrets=()):
    """The three steps from drill.yml's measurements: ``baseline`` / ``flip`` / ``rollback`` are the
    ``timings`` of its three mtproxy_switch results (start_ms, stop_ms), ``stats_bodies`` the /stats
    body read after each ({step name: body})."""
    return [
        step('baseline_c', c_binary, _ms(baseline, 'start_ms', 'baseline'), _ms(baseline, 'stop_ms', 'baseline'),
             stats_bodies.get('baseline_c'), secrets),
        step('cutover_go', go_binary, _ms(flip, 'start_ms', 'C -> Go'), _ms(rollback, 'stop_ms', 'Go -> C'),
             stats_bodies.get('cutover_go'), secrets),
        step('rollback_c', c_binary, _ms(rollback, 'start_ms', 'Go -> C'), _ms(flip, 'stop_ms', 'C -> Go'),
             stats_bodies.get('rollback_c'), secrets),
    ]


def judge(steps, factor, slack_ms):
    """The Go drill's envelope: each guarded step's startup and shutdown at most the baseline's times
    ``factor`` plus ``slack_ms``. Returns the failures (empty when it held), each a sentence."""
    by_name = dict((s['name'], s) for s in steps)
    base = by_name['baseline_c']
    failures = []
    for kind in ('startup', 'shutdown'):
        limit = base['%s_latency_ms' % kind] * float(factor) + float(slack_ms)
        for name in GUARDED_STEPS:
            value = by_name[name]['%s_latency_ms' % kind]
            if value > limit:
                failures.append('%s %s %.3f ms > baseline_c %.3f ms * %s + %s ms = %.3f ms' % (
                    name, kind, value, base['%s_latency_ms' % kind], _num(factor), _num(slack_ms), limit))
    return failures


def build(steps, factor, slack_ms, machine, go_os='linux', now=None):
    """(document, failures): the Go-format report, or None with the reasons when the envelope did not hold
    (the Go drill writes no report then either). ``machine``: the drilled host's ansible_architecture or
    uname -m (go_arch is its GOARCH)."""
    names = tuple(s['name'] for s in steps)
    if names != STEP_NAMES:
        raise DrillReportError('the steps are %s, not %s' % (', '.join(names), ', '.join(STEP_NAMES)))
    arch = host_goarch(machine)
    if arch is None:
        raise DrillReportError('no GOARCH is known for the machine %r' % (machine,))
    failures = judge(steps, factor, slack_ms)
    if failures:
        return None, failures
    now = now or datetime.datetime.now(datetime.timezone.utc)
    text = guard_text(factor, slack_ms)
    document = OrderedDict([
        ('generated_at', now.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')),
        ('go_os', go_os), ('go_arch', arch),
        ('thresholds', OrderedDict([('shutdown', text), ('startup', text)])),
        ('steps', list(steps))])
    return document, []


def write(path, document):
    """Write ``document`` atomically (mode 0644, as the Go drill does) and return the text written."""
    text = dumps(document)
    atomic_write(os.path.abspath(path), text)
    return text


def _is_ms(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def validate(document):
    """Problems of a parsed drill report against the Go port's schema and its own guard (empty: valid)."""
    problems = []
    if not isinstance(document, dict):
        return ['the report is not a JSON object']
    if tuple(document) != TOP_FIELDS:
        problems.append('fields are %s, not %s' % (', '.join(document), ', '.join(TOP_FIELDS)))
    for key in ('generated_at', 'go_os', 'go_arch'):
        if not isinstance(document.get(key), str) or not document.get(key):
            problems.append('%s is %r, not a string' % (key, document.get(key)))
    if isinstance(document.get('generated_at'), str) and not re.match(
            r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$', document['generated_at']):
        problems.append('generated_at %r is not an RFC 3339 time' % document['generated_at'])
    thresholds = document.get('thresholds')
    factor = slack = None
    if not isinstance(thresholds, dict) or sorted(thresholds) != ['shutdown', 'startup']:
        problems.append('thresholds is %r, not {shutdown, startup}' % (thresholds,))
    else:
        for key in ('shutdown', 'startup'):
            match = _GUARD_TEXT.match(thresholds[key]) if isinstance(thresholds[key], str) else None
            if not match:
                problems.append('thresholds.%s %r is not a guard of the form %r'
                                % (key, thresholds[key], guard_text(3, 500)))
            else:
                factor, slack = float(match.group(1)), float(match.group(2))
    steps = document.get('steps')
    if not isinstance(steps, list) or [s.get('name') if isinstance(s, dict) else None for s in steps] != list(STEP_NAMES):
        problems.append('steps are not %s' % ', '.join(STEP_NAMES))
        return problems
    for entry in steps:
        if tuple(entry) != STEP_FIELDS:
            problems.append('%s has the fields %s, not %s' % (entry['name'], ', '.join(entry), ', '.join(STEP_FIELDS)))
            continue
        if not isinstance(entry['binary'], str) or not entry['binary'] or '/' in entry['binary']:
            problems.append('%s.binary %r is not a base name' % (entry['name'], entry['binary']))
        for key in ('startup_latency_ms', 'shutdown_latency_ms'):
            if not _is_ms(entry[key]):
                problems.append('%s.%s %r is not a non-negative number' % (entry['name'], key, entry[key]))
        count = entry['stats_line_count']
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            problems.append('%s.stats_line_count %r is not a positive count' % (entry['name'], count))
        if not isinstance(entry['stats_sample'], str) or '\n' in entry['stats_sample']:
            problems.append('%s.stats_sample is not one line' % entry['name'])
    if not problems and factor is not None:
        problems.extend('guard does not hold: %s' % failure for failure in judge(steps, factor, slack))
    return problems
