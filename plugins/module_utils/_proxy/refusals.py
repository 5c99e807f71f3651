# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hosts the collection refuses, each with its true cause and the way forward.

Every refusal is raised before the host is changed. Its message names the unit and the host, the
cause as it is, and what the operator can do; docs/runbook.md ("Hosts the collection refuses, and
why") lists them all. The checks are pure functions of what the freeze or the switch read, so each
host shape is a unit test.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import socket

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import CUTOVER_DROPIN

# Programs that run a command line they are given rather than being the proxy.
SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "busybox")
LAUNCHERS = ("env", "sudo", "runuser", "su", "setpriv", "nice", "chrt", "taskset", "numactl", "prlimit")

# What the C proxy does when anything connects to its stats port while -6 is set (upstream
# assertion in net_accept_new_connections; the engine's SIGABRT handler then exits 1).
IPV6_ASSERTION = "Assertion 'peer_addrlen == sizeof (struct sockaddr_in6)' failed"


class Refusal(CutoverError):
    """A host shape the collection does not cut over. ``kind`` names it for roles and tests."""

    def __init__(self, kind, cause, way_forward):
        super(Refusal, self).__init__(cause, refused=kind, changed=False)
        self.kind = kind
        self.cause = cause
        self.way_forward = way_forward

    def message(self, unit, host=None):
        return "%s on %s: %s. Nothing on the host was changed. Way forward: %s." % (
            unit, host or socket.gethostname(), self.cause, self.way_forward)


def _restart_and_freeze(unit):
    return "restart the service (systemctl restart %s) and run the cutover again" % unit


# ---------------------------------------------------------------------------------------------
# /stats: is it there, and is it safe to read
# ---------------------------------------------------------------------------------------------

def stats_refusal(parsed, unit, allow_no_baseline=False):
    """Refusal (or None) for reading the /stats of the C proxy running ``parsed``.

    Checked before any connection is made: without ``-p`` or ``--http-stats`` there is nothing to
    read; with ``-6`` a connection to the stats port, even a bare TCP connect, kills the proxy, so
    such a host is refused unless the operator cuts over without a C baseline.
    """
    if parsed.stats_port is None:
        return Refusal(
            "no_stats_port",
            "the C proxy runs without a single stats port (-p), so it serves no /stats: the cutover "
            "reads /stats to know which binary answers, to take the C baseline and to judge Go",
            "add -p <port> --http-stats to ExecStart, then %s" % _restart_and_freeze(unit))
    if not parsed.http_stats:
        return Refusal(
            "no_http_stats",
            "the C proxy runs without --http-stats, so it serves no /stats on 127.0.0.1:%d (nor would "
            "the Go port with the same flags): the cutover reads /stats to know which binary answers, "
            "to take the C baseline and to judge Go" % parsed.stats_port,
            "add --http-stats to ExecStart (in the unit, or in a drop-in that sorts before %s), then %s"
            % (CUTOVER_DROPIN, _restart_and_freeze(unit)))
    if parsed.ipv6 and not allow_no_baseline:
        return Refusal(
            "ipv6_stats",
            "the C proxy runs with -6, and with -6 it aborts on any connection to its stats port "
            "127.0.0.1:%d (%s in net_accept_new_connections, the process exits 1): reading its /stats "
            "for the flavour check and the baseline would stop the service, so nothing was read"
            % (parsed.stats_port, IPV6_ASSERTION),
            "cut over without a C baseline (mtproxy_cutover_allow_no_baseline=true, module option "
            "allow_no_baseline): C's /stats is then never read, Go is judged on its own thresholds "
            "and this host is never sampled as a control; or drop -6 if the host needs no IPv6")
    return None


def c_stats_readable(parsed):
    """Whether the C proxy running ``parsed`` serves a /stats that can be read without harm."""
    return parsed.stats_port is not None and parsed.http_stats and not parsed.ipv6


# ---------------------------------------------------------------------------------------------
# ExecStart: does it run the proxy, and is it the one running
# ---------------------------------------------------------------------------------------------

def wrapper_kind(path, shebang):
    """'shell', 'launcher', 'script' or None: how the ExecStart program ``path`` starts another program."""
    if os.path.basename(path) in SHELLS:
        return "shell"
    if os.path.basename(path) in LAUNCHERS:
        return "launcher"
    if shebang:
        return "script"
    return None


def wrapper_refusal(exec_command, live_argv, shebang, unit):
    """Refusal (or None) for an ExecStart that starts a shell or a script which execs the proxy.

    exec_command: parse_exec_command() of the effective ExecStart; shebang: the ``#!`` words of
    its program (None for a binary). Only a program that is not what runs (argv[0] differs) counts.
    """
    path = exec_command["path"]
    kind = wrapper_kind(path, shebang)
    if kind is None or not live_argv or live_argv[0] == exec_command["argv"][0]:
        return None
    option = exec_command["argv"][1] if len(exec_command["argv"]) > 1 else ""
    if kind == "script":
        what = "the script %s (#!%s)" % (path, " ".join(shebang))
    elif kind == "shell" and re.match(r"^-[A-Za-z]+$", option):
        what = "the shell %s (%s)" % (path, option)  # only an option such as -c: never a value
    else:
        what = "the %s %s" % (kind, path)
    if shebang and live_argv[:len(shebang)] == list(shebang):
        started = "whose interpreter is the service's main process (the script does not exec the proxy)"
    else:
        started = "which starts the proxy %s; the live process is that proxy, not what ExecStart names" % (
            live_argv[0])
    return Refusal(
        "exec_wrapper",
        "ExecStart runs %s, %s. The cutover needs ExecStart to run the proxy itself: the drop-in method "
        "replaces ExecStart's program and every step proves the live argv against ExecStart's"
        % (what, started),
        "make ExecStart run the proxy with its flags (settings the %s reads go into "
        "EnvironmentFile= and are written ${NAME} in ExecStart, or $NAME for a list of words), "
        "then %s" % (kind, _restart_and_freeze(unit)))


def argv_refusal(unit, positions, changed_files, reload_pending):
    """Refusal for a live argv that differs from what the effective ExecStart gives.

    changed_files: unit files modified after the main process started; reload_pending:
    NeedDaemonReload=yes. Only then is "edited but not restarted" the cause.
    """
    if changed_files or reload_pending:
        changed = ", ".join(changed_files) or "unit files on disk (daemon-reload pending)"
        return Refusal(
            "edited_not_restarted",
            "live argv differs from unit %s at %s, and %s changed after the process started: the unit "
            "was edited but the service not restarted" % (unit, positions, changed),
            "restart the service to run the edited unit (systemctl daemon-reload && systemctl restart "
            "%s) or revert the edit, then run the cutover again" % unit)
    return Refusal(
        "argv_differs",
        "live argv differs from unit %s at %s, and no unit file changed since the process started"
        % (unit, positions),
        "%s, so that it runs what its unit says; if ExecStart starts a program that changes its own "
        "command line, make ExecStart run the proxy directly" % _restart_and_freeze(unit))


def dropin_refusal(winner):
    """Refusal for a unit whose ExecStart the cutover drop-in cannot override (``winner`` wins)."""
    name = os.path.basename(winner)
    return Refusal(
        "dropin_overridden",
        "%s sets ExecStart and systemd applies it after the cutover's %s (drop-ins are applied in "
        "file-name order, whatever their directory), so a flip with method=dropin would restart the "
        "C binary again" % (winner, CUTOVER_DROPIN),
        "rename it to sort before %s (e.g. mv %s %s; systemctl daemon-reload: ExecStart stays the "
        "same, no restart needed) and run again, or use method=symlink "
        "(mtproxy_cutover_method=symlink) with the proxy's path a symlink"
        % (CUTOVER_DROPIN, winner, os.path.join(os.path.dirname(winner), "50-" + name)))


def exec_start_refusal(want, got, winner, fragment):
    """Refusal for a repointed unit whose ExecStart, after daemon-reload, would not run ``want``.

    The switch has undone its change by then; ``winner`` is the file whose ExecStart is in effect.
    """
    overridden = bool(winner and winner != fragment and os.path.basename(winner) > CUTOVER_DROPIN)
    way_forward = (dropin_refusal(winner).way_forward if overridden else
                   "see which file sets ExecStart (systemctl cat; systemctl show -p ExecStart), make the "
                   "unit's ExecStart the one the freeze recorded, then run again")
    return Refusal(
        "dropin_overridden" if overridden else "exec_start_not_in_effect",
        "after daemon-reload systemd would run %s, not %s: the ExecStart in effect comes from %s. The "
        "change was undone (daemon-reload again) and the service was not restarted"
        % (got or "no single ExecStart command", want, winner or "an unknown file"),
        way_forward)


def exec_prefix_refusal(prefix, method, unit):
    """Refusal (or None) for an ExecStart prefix the flip method cannot keep (systemd.service(5)).

    '-', ':', '+', '!' and '!!' are kept by a drop-in word for word and by a symlink (the command
    line does not change), and a candidate gets the credentials they grant. '@' makes the next word
    argv[0]: a drop-in would have to keep that word, so that the process would not show which
    binary runs; the symlink method keeps the command line and proves the binary by /proc/PID/exe.
    """
    if "@" in prefix and method == "dropin":
        return Refusal(
            "exec_argv0_prefix",
            "ExecStart starts with the '@' prefix (the next word is argv[0]), so the process's argv[0] "
            "would not name the binary it runs and the flip's argv proof could not tell C from Go",
            "use the symlink method (mtproxy_cutover_method=symlink, with the proxy's path a symlink "
            "current -> release), or drop the '@' and its argv[0] word from ExecStart (systemctl edit %s; "
            "then restart it) and run the cutover again" % unit)
    return None
