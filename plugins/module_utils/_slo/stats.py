# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse a /stats body of the C MTProxy or its Go port and tell which one wrote it.

Both write ``key<TAB>value`` lines. C adds section markers (``>>>>>>NAME>>>>>>\\tstart`` /
``<<<<<<NAME<<<<<<\\tend``), multi-value lines (numbers separated by one or two spaces) and text
values with spaces; Go writes text values that may be empty. Values are kept faithfully: the raw
text of every key is kept next to its typed value.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

FLAVOR_C = 'c'
FLAVOR_GO = 'go'

# Keys whose value is text even when it happens to look like a number (an md5 can be all digits).
TEXT_KEYS = frozenset((
    'PID', 'version', 'config_filename', 'config_md5', 'aes_pwd_hash',
    'config_reload_last_error', 'forward_last_error',
))

# Keys only one flavour writes; used to tell the flavour from the body itself.
C_ONLY_KEYS = frozenset(('pid', 'start_time', 'uptime', 'current_time', 'version', 'workers',
                         'total_special_connections', 'dropped_queries'))
GO_ONLY_KEYS = frozenset(('stats_generated_at', 'has_current_config', 'ingress_accepted_connections',
                          'dataplane_packets_total', 'targets_healthy', 'config_check_calls'))

# Values that must never leave the host verbatim (md5 of the --aes-pwd file).
SENSITIVE_KEYS = frozenset(('aes_pwd_hash',))
REDACTED = '<redacted>'

_SECTION_START = re.compile(r'^>>>>>>([A-Za-z0-9_]+)>>>>>>$')
_SECTION_END = re.compile(r'^<<<<<<([A-Za-z0-9_]+)<<<<<<$')
_INT = re.compile(r'^-?[0-9]+$')
_FLOAT = re.compile(r'^-?[0-9]+\.[0-9]+$')
_KEY = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


class StatsParseError(ValueError):
    """A body that is not a /stats answer. ``kind`` is one of KINDS."""

    KINDS = ('empty', 'not_stats', 'truncated', 'garbage', 'unknown_flavor')

    def __init__(self, kind, message):
        super(StatsParseError, self).__init__(message)
        self.kind = kind


class ParsedStats:
    """One parsed body: ``flavor``, typed ``values``, ``raw`` text per key, ``sections`` (name -> keys)."""

    def __init__(self, flavor, values, raw, sections, line_count):
        self.flavor = flavor
        self.values = values
        self.raw = raw
        self.sections = sections
        self.line_count = line_count

    def get(self, key, default=None):
        return self.values.get(key, default)

    def redacted_values(self):
        """Values safe to return from a module (sensitive keys masked)."""
        return dict((k, REDACTED if k in SENSITIVE_KEYS else v) for k, v in self.values.items())

    def __repr__(self):
        return 'ParsedStats(flavor=%r, keys=%d)' % (self.flavor, len(self.values))


def redacted_body(body):
    """``body`` with the value of every sensitive key replaced, its lines and their order kept."""
    lines = []
    for line in body.split('\n'):
        key, sep, dummy = line.partition('\t')
        lines.append(key + sep + REDACTED if sep and key.strip() in SENSITIVE_KEYS else line)
    return '\n'.join(lines)


def _number(token):
    if _INT.match(token):
        return int(token)
    if _FLOAT.match(token):
        return float(token)
    return None


def parse_value(key, text):
    """Typed value of one line: int, float, list of numbers, or the text unchanged."""
    if key in TEXT_KEYS:
        return text
    single = _number(text)
    if single is not None:
        return single
    tokens = text.split()
    if len(tokens) > 1:
        numbers = [_number(t) for t in tokens]
        if all(n is not None for n in numbers):
            return numbers
    return text


def detect_flavor(keys):
    """'c' or 'go' from the set of keys; StatsParseError when the body fits neither or both."""
    c_hits = len(C_ONLY_KEYS.intersection(keys))
    go_hits = len(GO_ONLY_KEYS.intersection(keys))
    if c_hits and not go_hits:
        return FLAVOR_C
    if go_hits and not c_hits:
        return FLAVOR_GO
    if c_hits and go_hits:
        raise StatsParseError('unknown_flavor', 'body has keys of both the C and the Go /stats format')
    raise StatsParseError('unknown_flavor', 'body has none of the keys of the C or the Go /stats format')


def _looks_like_html(text):
    head = text.lstrip()[:512].lower()
    return head.startswith('<') or '<html' in head or '<!doctype' in head


def parse_stats(body):
    """Parse one /stats body (str or bytes) into ParsedStats; raise StatsParseError otherwise."""
    if isinstance(body, bytes):
        try:
            body = body.decode('utf-8')
        except UnicodeDecodeError:
            raise StatsParseError('garbage', 'body is not UTF-8 text')
    if body is None or not body.strip():
        raise StatsParseError('empty', 'body is empty')
    if _looks_like_html(body):
        raise StatsParseError('not_stats', 'body is an HTML page, not /stats')
    if '\x00' in body:
        raise StatsParseError('garbage', 'body contains NUL bytes')
    if not body.endswith('\n'):
        # Both binaries end every line with a newline; a missing one means the body was cut.
        raise StatsParseError('truncated', 'body does not end with a newline (cut short)')

    values = {}
    raw = {}
    sections = {}
    section = None
    lines = body.split('\n')[:-1]
    for number, line in enumerate(lines, 1):
        key, sep, text = line.partition('\t')
        if not sep or not _KEY.match(key.strip('<>')):
            # Line content is not echoed: the body comes from whatever answers on the port.
            raise StatsParseError('garbage', 'line %d is not a key<TAB>value line' % number)
        start = _SECTION_START.match(key)
        end = _SECTION_END.match(key)
        if start:
            section = start.group(1)
            sections.setdefault(section, [])
            continue
        if end:
            section = None
            continue
        if not _KEY.match(key):
            raise StatsParseError('garbage', 'line %d has an invalid key' % number)
        if key in values:
            raise StatsParseError('garbage', 'line %d repeats key %s' % (number, key))
        raw[key] = text
        values[key] = parse_value(key, text)
        if section is not None:
            sections[section].append(key)
    if not values:
        raise StatsParseError('empty', 'body has no key/value lines')
    return ParsedStats(detect_flavor(values), values, raw, sections, len(lines))
