# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill's envelope guard (runbook, "Automated Validation Drill"): startup and shutdown of both
binaries within the same run's baseline.

drill.yml measures three switches with mtproxy_switch (``timings``): a plain restart of the C binary
(the baseline), the flip C -> Go and the rollback Go -> C. Each start (Go's at the flip, C's at the
rollback) may take at most ``baseline start_ms x factor + slack_ms``, each stop (C's at the flip, Go's
at the rollback) at most ``baseline stop_ms x factor + slack_ms``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# (name in the report, switch, timing key, limit)
CHECKS = (
    ('go_start_ms', 'flip', 'start_ms', 'limit_start_ms'),
    ('c_stop_ms', 'flip', 'stop_ms', 'limit_stop_ms'),
    ('go_stop_ms', 'rollback', 'stop_ms', 'limit_stop_ms'),
    ('c_start_ms', 'rollback', 'start_ms', 'limit_start_ms'),
)


class EnvelopeError(ValueError):
    pass


def _ms(timings, key, what):
    value = (timings or {}).get(key)
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise EnvelopeError('%s %s is not a number of milliseconds: %r' % (what, key, value))


def judge_envelope(baseline, flip, rollback, factor=3, slack_ms=500):
    """{limit_start_ms, limit_stop_ms, baseline, go_start_ms, c_stop_ms, go_stop_ms, c_start_ms, ok, exceeded}.

    ``baseline``, ``flip`` and ``rollback`` are the ``timings`` of the three switches. ``ok`` is True
    when every start and stop was measured and is within its limit; ``exceeded`` names each one that
    is not (or was not measured), with its value and limit.
    """
    try:
        factor, slack_ms = float(factor), float(slack_ms)
    except (TypeError, ValueError):
        raise EnvelopeError('factor and slack_ms must be numbers, got %r and %r' % (factor, slack_ms))
    if factor < 1 or slack_ms < 0:
        raise EnvelopeError('factor must be at least 1 and slack_ms at least 0, got %s and %s' % (factor, slack_ms))
    base_start, base_stop = _ms(baseline, 'start_ms', 'baseline'), _ms(baseline, 'stop_ms', 'baseline')
    envelope = {
        'limit_start_ms': None if base_start is None else base_start * factor + slack_ms,
        'limit_stop_ms': None if base_stop is None else base_stop * factor + slack_ms,
        'baseline': dict(baseline or {}),
        'factor': factor,
        'slack_ms': slack_ms,
    }
    switches = {'flip': flip, 'rollback': rollback}
    exceeded = []
    for name, switch, key, limit_key in CHECKS:
        value = envelope[name] = _ms(switches[switch], key, switch)
        limit = envelope[limit_key]
        if value is None or limit is None:
            exceeded.append('%s not measured (%s)' % (name, 'baseline' if limit is None else switch))
        elif value > limit:
            exceeded.append('%s %.1f > limit %.1f' % (name, value, limit))
    envelope.update(ok=not exceeded, exceeded=exceeded)
    return envelope
