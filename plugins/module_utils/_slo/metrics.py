# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one table mapping each flavour's /stats keys onto SLO metrics, and normalisation of a sample.

docs/slo-metrics.md is the operator-facing copy of this table; keep both in step. A flavour without
a signal for a metric says so (NoSignal with the reason) instead of reporting zero.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

COUNTER = 'counter'
GAUGE = 'gauge'
IDENTITY = 'identity'
FLAG = 'flag'
KINDS = (COUNTER, GAUGE, IDENTITY, FLAG)
FLAVORS = ('c', 'go')


class NoSignal:
    """The flavour has no key for this metric; ``reason`` says why."""

    def __init__(self, reason):
        self.reason = reason

    def describe(self):
        return 'no signal: %s' % self.reason


class Key:
    """The value of one key. ``optional``: absence is expected (``reason`` says when), not an error."""

    def __init__(self, key, optional=False, reason=None):
        self.key = key
        self.optional = optional
        self.reason = reason

    def describe(self):
        return self.key + (' (optional)' if self.optional else '')


class Sum:
    """Sum of several keys; a list value (C multi-value line) counts as the sum of its items."""

    def __init__(self, keys):
        self.keys = list(keys)

    def describe(self):
        return ' + '.join(self.keys)


class Derived:
    """Value computed by ``func(values)``; it may return NoSignal. ``text`` documents the formula."""

    def __init__(self, keys, func, text):
        self.keys = list(keys)
        self.func = func
        self.text = text

    def describe(self):
        return self.text


def _c_accepted(values):
    # With -M >= 1 client accepts happen in workers and are not aggregated into this counter.
    if values.get('workers', 0) not in (0, None):
        return NoSignal('C with -M >= 1 exposes no cumulative client-accept counter')
    # inbound_connections_accepted counts every accept twice and includes /stats requests.
    return (values['inbound_connections_accepted'] - 2 * values['http_queries']) / 2.0


def _c_ready(values):
    # C answers /stats only once its config is loaded (a missing/broken config exits 1).
    return 1 if 'config_md5' in values else 0


def _go_reload_failures(values):
    return values['config_reload_calls'] - values['config_reload_success']


_GO_CONFIG_ABSENT = 'Go omits the config_* keys while has_current_config is 0'

# name -> dict(kind, comparable, description, c, go). ``comparable``: the same stimulus moves both
# flavours' sources the same way, so values/ratios of a C host may be compared with a Go host.
METRICS = {
    'accepted_connections': dict(
        kind=COUNTER, comparable=False,
        description='client TCP connections accepted',
        c=Derived(['inbound_connections_accepted', 'http_queries', 'workers'], _c_accepted,
                  '(inbound_connections_accepted - 2 * http_queries) / 2, only without -M'),
        go=Key('ingress_accepted_connections')),
    'active_connections': dict(
        kind=GAUGE, comparable=True,
        description='client connections open now',
        c=Key('total_special_connections'),
        go=Key('ingress_active_connections')),
    'bad_handshakes': dict(
        kind=COUNTER, comparable=False,
        description='client connections whose first bytes are not a valid handshake for the secret',
        c=NoSignal('random-byte connections leave no trace in C /stats'),
        go=Key('ingress_invalid_frames')),
    'accept_failures': dict(
        kind=COUNTER, comparable=False,
        description='accepts refused or failed (limits, errors)',
        c=Sum(['total_accept_connections_failed']),
        go=Sum(['ingress_accept_rate_limited', 'dataplane_packets_rejected_limit'])),
    'client_packets': dict(
        kind=COUNTER, comparable=True,
        description='client packets received for forwarding',
        c=Sum(['tot_forwarded_queries', 'dropped_queries']),
        go=Key('dataplane_packets_total')),
    'dropped_packets': dict(
        kind=COUNTER, comparable=True,
        description='client packets dropped (no backend could take them)',
        c=Key('dropped_queries'),
        go=Key('dataplane_packets_dropped')),
    'forward_failures': dict(
        kind=COUNTER, comparable=False,
        description='packets that could not be routed/forwarded to a backend',
        c=Key('dropped_queries'),
        go=Key('forward_failed')),
    'backend_connect_failures': dict(
        kind=COUNTER, comparable=False,
        description='failed backend connects (C retries periodically, Go dials on demand)',
        c=Key('total_connect_failures'),
        go=Key('outbound_dial_errors')),
    'backend_healthy': dict(
        kind=GAUGE, comparable=False,
        description='backend targets usable now (C: unique host:port ready, Go: config entries healthy)',
        c=Key('total_ready_targets'),
        go=Key('targets_healthy')),
    'backend_targets': dict(
        kind=GAUGE, comparable=False,
        description='backend targets declared',
        c=Key('total_declared_targets'),
        go=Key('router_targets')),
    'uptime': dict(
        kind=GAUGE, comparable=False,
        description='seconds since the serving process started',
        c=Key('uptime'),
        go=NoSignal('Go /stats has no uptime; restarts show as counter resets')),
    'process_start': dict(
        kind=IDENTITY, comparable=False,
        description='start time (unix s) of the serving process',
        c=Key('start_time'),
        go=NoSignal('Go /stats has no start time; restarts show as counter resets')),
    'process_id': dict(
        kind=IDENTITY, comparable=False,
        description='pid of the process serving /stats (master with -M)',
        c=Key('pid'),
        go=NoSignal('Go /stats has no pid')),
    'config_checks': dict(
        kind=COUNTER, comparable=False,
        description='config loads since start (1 after start, +1 per SIGHUP)',
        c=NoSignal('C does not reload its config and has no such counter'),
        go=Key('config_check_calls')),
    'config_reload_failures': dict(
        kind=COUNTER, comparable=False,
        description='config reloads that failed (old config kept)',
        c=NoSignal('C does not reload its config on SIGHUP'),
        go=Derived(['config_reload_calls', 'config_reload_success'], _go_reload_failures,
                   'config_reload_calls - config_reload_success')),
    'config_md5': dict(
        kind=IDENTITY, comparable=True,
        description='md5 of the backend config in use',
        c=Key('config_md5'),
        go=Key('config_md5', optional=True, reason=_GO_CONFIG_ABSENT)),
    'config_loaded_at': dict(
        kind=IDENTITY, comparable=False,
        description='when the config in use was loaded (unix s)',
        c=Key('config_loaded_at'),
        go=Key('config_loaded_at', optional=True, reason=_GO_CONFIG_ABSENT)),
    'ready': dict(
        kind=FLAG, comparable=True,
        description='1 when the process has a config loaded and serves clients',
        c=Derived([], _c_ready, '1 when config_md5 is present (C answers only after loading)'),
        go=Key('has_current_config')),
}

METRIC_ORDER = tuple(METRICS)


def _source_from_override(spec, where):
    if spec is None or spec == 'no_signal':
        return NoSignal('disabled by metric_overrides')
    if isinstance(spec, str):
        return Key(spec)
    if isinstance(spec, dict):
        if set(spec) == {'key'} and isinstance(spec['key'], str):
            return Key(spec['key'])
        if set(spec) == {'sum'} and isinstance(spec['sum'], list) and spec['sum'] \
                and all(isinstance(k, str) for k in spec['sum']):
            return Sum(spec['sum'])
        if set(spec) == {'no_signal'}:
            return NoSignal(str(spec['no_signal']))
    raise ValueError('%s: expected a key name, {key: NAME}, {sum: [NAMES]}, {no_signal: REASON} '
                     'or null' % where)


def build_table(overrides=None):
    """The metric table with the user's overrides applied. Raises ValueError on a bad override.

    overrides: {metric: {c: SPEC, go: SPEC, kind: KIND, comparable: BOOL}} where SPEC is a key name,
    {key: NAME}, {sum: [NAMES]}, {no_signal: REASON} or null (no signal). A metric not in the table
    may be added when ``kind`` is given (flavours left out have no signal).
    """
    table = dict((name, dict(entry)) for name, entry in METRICS.items())
    for name, override in (overrides or {}).items():
        if not isinstance(override, dict):
            raise ValueError('metric_overrides.%s must be a dict' % name)
        unknown = set(override) - {'c', 'go', 'kind', 'comparable'}
        if unknown:
            raise ValueError('metric_overrides.%s: unknown fields %s' % (name, ', '.join(sorted(unknown))))
        if name not in table:
            if override.get('kind') not in (COUNTER, GAUGE, FLAG, IDENTITY):
                raise ValueError('metric_overrides.%s is not a known metric; give kind (one of %s) to add it'
                                 % (name, ', '.join(KINDS)))
            table[name] = dict(kind=override['kind'], comparable=False, description='user-defined metric',
                               c=NoSignal('not defined for C'), go=NoSignal('not defined for Go'))
        entry = table[name]
        if 'kind' in override:
            if override['kind'] not in KINDS:
                raise ValueError('metric_overrides.%s.kind must be one of %s' % (name, ', '.join(KINDS)))
            entry['kind'] = override['kind']
        if 'comparable' in override:
            entry['comparable'] = bool(override['comparable'])
        for flavor in FLAVORS:
            if flavor in override:
                entry[flavor] = _source_from_override(override[flavor], 'metric_overrides.%s.%s' % (name, flavor))
    return table


def _numeric(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return sum(value)
    return None


def _read(source, values, kind):
    """(value, no_signal_reason, invalid_reason) for one source."""
    if isinstance(source, NoSignal):
        return None, source.reason, None
    if isinstance(source, Key):
        if source.key not in values:
            if source.optional:
                return None, source.reason or ('key %s absent' % source.key), None
            return None, None, 'key %s missing' % source.key
        value = values[source.key]
        if kind == IDENTITY:
            return value, None, None
        number = _numeric(value)
        if number is None:
            return None, None, 'key %s is not a number' % source.key
        return number, None, None
    keys = source.keys
    missing = [k for k in keys if k not in values]
    if missing:
        return None, None, 'key %s missing' % ', '.join(missing)
    bad = [k for k in keys if _numeric(values[k]) is None and not isinstance(source, Derived)]
    if bad:
        return None, None, 'key %s is not a number' % ', '.join(bad)
    if isinstance(source, Sum):
        return sum(_numeric(values[k]) for k in keys), None, None
    try:
        result = source.func(values)
    except (TypeError, ValueError, KeyError):
        return None, None, 'keys %s do not give a number' % ', '.join(keys)
    if isinstance(result, NoSignal):
        return None, result.reason, None
    if isinstance(result, float) and result.is_integer():
        result = int(result)
    return result, None, None


def normalize(parsed, overrides=None, table=None):
    """SLO metrics of one parsed sample.

    Returns {'flavor', 'metrics': {name: value or None}, 'no_signal': {name: reason},
    'invalid': {name: reason}}. A metric is None either because the flavour has no signal for it
    (listed in no_signal) or because its key is missing / not a number (listed in invalid).
    """
    if table is None:
        table = build_table(overrides)
    values = parsed.values
    metrics, no_signal, invalid = {}, {}, {}
    for name, entry in table.items():
        value, reason, problem = _read(entry[parsed.flavor], values, entry['kind'])
        metrics[name] = value
        if reason is not None:
            no_signal[name] = reason
        if problem is not None:
            invalid[name] = problem
    return {'flavor': parsed.flavor, 'metrics': metrics, 'no_signal': no_signal, 'invalid': invalid}


def describe_table(table=None):
    """Rows for documentation/reports: name, kind, comparable, C source, Go source."""
    table = table or METRICS
    return [dict(metric=name, kind=e['kind'], comparable=e['comparable'], description=e['description'],
                 c=e['c'].describe(), go=e['go'].describe()) for name, e in table.items()]
