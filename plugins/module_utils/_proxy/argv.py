# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Command line of the C MTProxy: getopt_long parsing, redaction, value rewriting.

The option table is the one the C binary prints in its usage text (see
tests/fixtures/real-stats/stderr/c-unknown-flag.stdout.txt). The C engine builds its short
option string without ``::`` (common/server-functions.c), so the short form of an option with
an optional argument (``-v``, ``-d``) takes no argument at all; only the long form accepts one,
and only as ``--opt=value``. Parsing follows glibc getopt_long: permutation (options after
positionals still count), attached short values (``-p8888``), clusters (``-6v``), ``--`` ends
the options, long options may be abbreviated to an unambiguous prefix.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

REDACTED = "<redacted>"

NONE = "none"
REQUIRED = "required"
OPTIONAL = "optional"


class Option(object):
    """One option of the proxy: short letter (or None), long name, argument kind, role."""

    __slots__ = ("short", "long", "kind", "role")

    def __init__(self, short, long_name, kind, role=None):
        self.short = short
        self.long = long_name
        self.kind = kind
        self.role = role

    def __repr__(self):
        return "Option(%r, %r, %r, %r)" % (self.short, self.long, self.kind, self.role)


# Roles are the names other code asks for; "secret" and "proxy_tag" values are redacted everywhere.
OPTIONS = (
    Option("6", "ipv6", NONE, "ipv6"),
    Option("C", "max-special-connections", REQUIRED, "max_special_connections"),
    Option("D", "domain", REQUIRED, "domain"),
    Option("H", "http-ports", REQUIRED, "client_ports"),
    Option("M", "slaves", REQUIRED, "workers"),
    Option("P", "proxy-tag", REQUIRED, "proxy_tag"),
    Option("S", "mtproto-secret", REQUIRED, "secret"),
    Option("T", "ping-interval", REQUIRED, "ping_interval"),
    Option("W", "window-clamp", REQUIRED, "window_clamp"),
    Option("b", "backlog", REQUIRED, "backlog"),
    Option("c", "connections", REQUIRED, "max_connections"),
    Option("d", "daemonize", OPTIONAL, "daemonize"),
    Option("h", "help", NONE, "help"),
    Option("l", "log", REQUIRED, "log"),
    Option("p", "port", REQUIRED, "stats_port"),
    Option("u", "user", REQUIRED, "user"),
    Option("v", "verbosity", OPTIONAL, "verbosity"),
    Option(None, "aes-pwd", REQUIRED, "aes_pwd"),
    Option(None, "nice", REQUIRED, "nice"),
    Option(None, "msg-buffers-size", REQUIRED, "msg_buffers_size"),
    Option(None, "disable-tcp", NONE, "disable_tcp"),
    Option(None, "crc32c", NONE, "crc32c"),
    Option(None, "cpu-threads", REQUIRED, "cpu_threads"),
    Option(None, "io-threads", REQUIRED, "io_threads"),
    Option(None, "allow-skip-dh", NONE, "allow_skip_dh"),
    Option(None, "force-dh", NONE, "force_dh"),
    Option(None, "max-accept-rate", REQUIRED, "max_accept_rate"),
    Option(None, "max-dh-accept-rate", REQUIRED, "max_dh_accept_rate"),
    Option(None, "multithread", OPTIONAL, "multithread"),
    Option(None, "tcp-cpu-threads", REQUIRED, "tcp_cpu_threads"),
    Option(None, "tcp-iothreads", REQUIRED, "tcp_iothreads"),
    Option(None, "nat-info", REQUIRED, "nat_info"),
    Option(None, "address", REQUIRED, "address"),
    Option(None, "http-stats", NONE, "http_stats"),
    Option(None, "mtproto-secret-file", REQUIRED, "secret_file"),
)

SECRET_ROLES = ("secret", "proxy_tag")

_BY_SHORT = dict((o.short, o) for o in OPTIONS if o.short)
_BY_LONG = dict((o.long, o) for o in OPTIONS)
_BY_ROLE = dict((o.role, o) for o in OPTIONS if o.role)


class ArgvError(ValueError):
    """The command line would make the C proxy exit with a usage error (exit code 2)."""


def find_option(role_or_name):
    """Option for a role ('stats_port'), a long name ('port'), '--port', '-p' or 'p'."""
    key = role_or_name
    if key in _BY_ROLE:
        return _BY_ROLE[key]
    if key.startswith("--"):
        key = key[2:]
    elif key.startswith("-") and len(key) == 2:
        key = key[1:]
    if key in _BY_LONG:
        return _BY_LONG[key]
    if len(key) == 1 and key in _BY_SHORT:
        return _BY_SHORT[key]
    raise KeyError("unknown proxy option or role: %s" % role_or_name)


class OptionUse(object):
    """One occurrence of an option in argv.

    name: canonical long name; spelled: the option as written ('-p', '--port', '--po');
    value: its argument or None; start/end: argv index span (end exclusive);
    value_index/value_offset: the value is argv[value_index][value_offset:] (None without value);
    form: 'short', 'short_attached', 'long', 'long_equals' or 'flag'.
    """

    __slots__ = ("option", "spelled", "value", "start", "end", "value_index", "value_offset", "form")

    def __init__(self, option, spelled, value, start, end, value_index, value_offset, form):
        self.option = option
        self.spelled = spelled
        self.value = value
        self.start = start
        self.end = end
        self.value_index = value_index
        self.value_offset = value_offset
        self.form = form

    @property
    def name(self):
        return self.option.long if self.option else None

    @property
    def role(self):
        return self.option.role if self.option else None

    def as_dict(self):
        return {"name": self.name, "role": self.role, "spelled": self.spelled, "value": self.value,
                "start": self.start, "end": self.end, "form": self.form}

    def __repr__(self):
        return "OptionUse(%s)" % self.as_dict()


def _to_int(value):
    if value is None:
        return None
    try:
        return int(value, 10)
    except ValueError:
        return None


class ParsedArgv(object):
    """Result of parse_argv: program, options in argv order, positionals."""

    def __init__(self, argv, program, options, positionals, unknown=None):
        self.argv = list(argv)
        self.program = program
        self.options = options
        self.positionals = positionals
        self.unknown = unknown or []

    def uses(self, role_or_name):
        option = find_option(role_or_name)
        return [use for use in self.options if use.option is option]

    def has(self, role_or_name):
        return bool(self.uses(role_or_name))

    def get(self, role_or_name, default=None):
        """Value of the last occurrence (getopt: the last one wins); True for a flag."""
        uses = self.uses(role_or_name)
        if not uses:
            return default
        last = uses[-1]
        return True if last.value is None else last.value

    def get_all(self, role_or_name):
        return [True if use.value is None else use.value for use in self.uses(role_or_name)]

    @property
    def stats_port(self):
        """-p as an int; None when absent or a '<start>:<end>' range."""
        return _to_int(self.get("stats_port"))

    @property
    def stats_port_range(self):
        value = self.get("stats_port")
        if value is None or ":" not in value:
            return None
        start, _sep, end = value.partition(":")
        return (_to_int(start), _to_int(end))

    @property
    def client_ports(self):
        # The C proxy appends the ports of every -H occurrence.
        ports = []
        for value in self.get_all("client_ports"):
            for part in value.split(","):
                port = _to_int(part.strip())
                if port is not None:
                    ports.append(port)
        return ports

    @property
    def workers(self):
        return _to_int(self.get("workers"))

    @property
    def http_stats(self):
        return self.has("http_stats")

    @property
    def config_path(self):
        # The C proxy requires exactly one positional argument.
        return self.positionals[0] if len(self.positionals) == 1 else None

    @property
    def aes_pwd_path(self):
        return self.get("aes_pwd")

    @property
    def secret_file_path(self):
        return self.get("secret_file")

    @property
    def has_inline_secret(self):
        return self.has("secret")

    @property
    def log_path(self):
        return self.get("log")

    @property
    def ipv6(self):
        """-6: the C proxy then aborts on any connection to its (IPv4) stats port."""
        return self.has("ipv6")

    @property
    def address(self):
        """--address: the one address the client ports are bound to (None: all addresses)."""
        return self.get("address")

    @property
    def user(self):
        return self.get("user")


def _long_candidates(name):
    if name in _BY_LONG:
        return [_BY_LONG[name]]
    return [o for o in OPTIONS if o.long.startswith(name)]


def _safe_long(word):
    # An unknown '--opt=value' may carry a secret after '=': never echo the value.
    return word.split("=", 1)[0]


def parse_argv(argv, strict=True, posixly_correct=False):
    """Parse argv (argv[0] = program) like the C proxy's getopt_long.

    strict=False never raises: unknown options are collected in .unknown and an ambiguous long
    prefix whose candidates all take an argument consumes one (used for redaction, which must
    hide a value whatever happens). posixly_correct stops at the first positional, like
    getopt with POSIXLY_CORRECT in the environment.
    """
    argv = list(argv)
    if not argv:
        raise ArgvError("empty argv")
    options = []
    positionals = []
    unknown = []

    def fail(message):
        if strict:
            raise ArgvError(message)
        unknown.append(message)

    i = 1
    n = len(argv)
    while i < n:
        word = argv[i]
        if word == "--":
            positionals.extend(argv[i + 1:])
            break
        if not word.startswith("-") or word == "-":
            if posixly_correct:
                positionals.extend(argv[i:])
                break
            positionals.append(word)
            i += 1
            continue
        if word.startswith("--"):
            i = _parse_long(argv, i, options, fail)
        else:
            i = _parse_short_cluster(argv, i, options, fail)
    return ParsedArgv(argv, argv[0], options, positionals, unknown)


def _parse_long(argv, i, options, fail):
    word = argv[i]
    body = word[2:]
    name, has_eq, attached = body.partition("=")
    candidates = _long_candidates(name)
    if not candidates:
        fail("unrecognized option '%s'" % _safe_long(word))
        return i + 1
    if len(candidates) > 1:
        fail("option '--%s' is ambiguous; possibilities: %s"
             % (name, " ".join("'--%s'" % o.long for o in candidates)))
        # Lenient mode: if every candidate takes an argument, consume it so it can be redacted.
        if all(o.kind == REQUIRED for o in candidates):
            secret = [o for o in candidates if o.role in SECRET_ROLES]
            option = secret[0] if secret else candidates[0]
            return _take_long_value(argv, i, options, option, word, has_eq, attached, fail)
        return i + 1
    option = candidates[0]
    spelled = "--" + name
    if option.kind == NONE:
        if has_eq:
            fail("option '--%s' doesn't allow an argument" % option.long)
        options.append(OptionUse(option, spelled, None, i, i + 1, None, None, "flag"))
        return i + 1
    if option.kind == OPTIONAL:
        if has_eq:
            options.append(OptionUse(option, spelled, attached, i, i + 1, i, len(word) - len(attached),
                                     "long_equals"))
        else:
            options.append(OptionUse(option, spelled, None, i, i + 1, None, None, "flag"))
        return i + 1
    return _take_long_value(argv, i, options, option, word, has_eq, attached, fail)


def _take_long_value(argv, i, options, option, word, has_eq, attached, fail):
    spelled = word.split("=", 1)[0]
    if has_eq:
        options.append(OptionUse(option, spelled, attached, i, i + 1, i, len(word) - len(attached),
                                 "long_equals"))
        return i + 1
    if i + 1 >= len(argv):
        fail("option '--%s' requires an argument" % option.long)
        options.append(OptionUse(option, spelled, None, i, i + 1, None, None, "long"))
        return i + 1
    # getopt takes the next element whatever it looks like ('-x', '--', ...).
    options.append(OptionUse(option, spelled, argv[i + 1], i, i + 2, i + 1, 0, "long"))
    return i + 2


def _parse_short_cluster(argv, i, options, fail):
    word = argv[i]
    pos = 1
    while pos < len(word):
        letter = word[pos]
        option = _BY_SHORT.get(letter)
        if option is None:
            fail("invalid option -- '%s'" % letter)
            pos += 1
            continue
        spelled = "-" + letter
        # Short forms of optional-argument options take no argument in the C proxy (see module doc).
        if option.kind in (NONE, OPTIONAL):
            options.append(OptionUse(option, spelled, None, i, i + 1, None, None, "flag"))
            pos += 1
            continue
        rest = word[pos + 1:]
        if rest:
            options.append(OptionUse(option, spelled, rest, i, i + 1, i, pos + 1, "short_attached"))
            return i + 1
        if i + 1 >= len(argv):
            fail("option requires an argument -- '%s'" % letter)
            options.append(OptionUse(option, spelled, None, i, i + 1, None, None, "short"))
            return i + 1
        options.append(OptionUse(option, spelled, argv[i + 1], i, i + 2, i + 1, 0, "short"))
        return i + 2
    return i + 1


def _lenient(argv):
    return parse_argv(argv, strict=False) if argv else ParsedArgv([""], "", [], [])


def secret_values(argv):
    """Values of -S/--mtproto-secret and -P/--proxy-tag, however spelled, in argv order."""
    values = []
    for use in _lenient(argv).options:
        if use.role in SECRET_ROLES and use.value and use.value not in values:
            values.append(use.value)
    return values


def redact_argv(argv):
    """Copy of argv with secret and proxy tag values replaced by <redacted>, spelling kept."""
    if not argv:
        return []
    out = list(argv)
    for use in _lenient(argv).options:
        if use.role in SECRET_ROLES and use.value_index is not None:
            out[use.value_index] = out[use.value_index][:use.value_offset] + REDACTED
    secrets = secret_values(argv)
    # A secret repeated elsewhere (e.g. a second positional) is hidden as well.
    return [redact_text(word, secrets) for word in out]


def redact_text(text, secrets):
    """Replace every occurrence of each secret (case-insensitive: hex may be printed in any case)."""
    if text is None:
        return None
    for secret in sorted(set(s for s in secrets if s), key=len, reverse=True):
        text = re.sub(re.escape(secret), REDACTED, text, flags=re.IGNORECASE)
    return text


def replace_option_values(argv, new_values, add_missing=False):
    """Copy of argv with the values of the given options replaced, each keeping its spelling.

    new_values: {role or option name: new value}. Every occurrence of the option is rewritten.
    A missing option raises ArgvError, or with add_missing=True is inserted as '--long value'
    right after argv[0] (getopt permutes, so the position does not matter).
    """
    parsed = parse_argv(argv)
    out = list(argv)
    inserts = []
    for key, value in new_values.items():
        option = find_option(key)
        if option.kind == NONE:
            raise ArgvError("option '--%s' takes no value" % option.long)
        value = str(value)
        uses = parsed.uses(key)
        if not uses:
            if not add_missing:
                raise ArgvError("option '--%s' is not on the command line" % option.long)
            inserts.append("--%s=%s" % (option.long, value) if option.kind == OPTIONAL
                           else ("--" + option.long, value))
            continue
        for use in uses:
            if use.value_index is None:
                if use.form == "flag" and use.spelled.startswith("--"):
                    out[use.start] = "%s=%s" % (out[use.start], value)
                    continue
                raise ArgvError("option '%s' has no value to replace" % use.spelled)
            out[use.value_index] = out[use.value_index][:use.value_offset] + value
    head = out[:1]
    for item in inserts:
        head.extend([item] if isinstance(item, str) else list(item))
    return head + out[1:]


def replace_program(argv, new_program):
    """Copy of argv running new_program with the same arguments."""
    return [new_program] + list(argv[1:])


LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"

_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def unsplit_cmdline(words):
    """The argv a C proxy was started with, from what its /proc/PID/cmdline shows now.

    The C proxy edits its argv in place: net_add_nat_info() (net/net-connections.c) writes a NUL
    over the ':' of ``--nat-info <local>:<global>``, so the cmdline shows ``--nat-info <local>
    <global>`` as two words (seen on the real C build in the official image's shape). Such a pair is
    joined back; the C proxy refuses a ``--nat-info`` value without ':' at start, so a running
    process never had two words there. Every other word is returned as it is.
    """
    out = []
    index = 0
    words = list(words or [])
    while index < len(words):
        word = words[index]
        if word == "--nat-info" and index + 2 < len(words) and _IPV4.match(words[index + 1]) \
                and _IPV4.match(words[index + 2]):
            out += [word, "%s:%s" % (words[index + 1], words[index + 2])]
            index += 3
            continue
        if word.startswith("--nat-info=") and ":" not in word and index + 1 < len(words) \
                and _IPV4.match(word[len("--nat-info="):]) and _IPV4.match(words[index + 1]):
            out.append("%s:%s" % (word, words[index + 1]))
            index += 2
            continue
        out.append(word)
        index += 1
    return out


def client_probe_hosts(parsed, ipv6_loopback=False):
    """Addresses on which a local connect reaches the client ports of this command line, best first.

    ``--address A`` binds the ports to A alone: only A (a wildcard stands for the loopback address
    of its family). Without it the ports are on every address: 127.0.0.1, and with ``-6`` (the Go
    port binds ``[::]``, the C proxy an IPv6 socket) also ::1 when the host has an IPv6 loopback.
    """
    address = parsed.address
    if address:
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return [address]
        if ip.is_unspecified:
            return [LOOPBACK_V6 if ip.version == 6 else LOOPBACK_V4]
        return [str(ip)]
    hosts = [LOOPBACK_V4]
    if parsed.ipv6 and ipv6_loopback:
        hosts.append(LOOPBACK_V6)
    return hosts
