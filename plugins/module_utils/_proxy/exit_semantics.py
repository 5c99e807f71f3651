# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a proxy process ended, as systemd or the Docker engine records it, and whether the Go port ends
as the C binary does in the same case (the runbook's "exit semantics" precondition).

Runs on the host, standard library only, no other module_utils import.

An end is an ``Outcome``: ``exited`` with a status, ``killed`` / ``dumped`` by a signal, ``running``
(the binary did not end where the other did) or ``unknown`` (nothing recorded). systemd records it as
``ExecMainCode`` (CLD_EXITED 1, CLD_KILLED 2, CLD_DUMPED 3) and ``ExecMainStatus`` (the exit status or
the signal number); the Docker engine as ``State.ExitCode`` (128 + N for a process killed by signal N).

What matters to the service is whether systemd calls the end clean (systemd.service, SuccessExitStatus=:
exit status 0 and the signals SIGHUP, SIGINT, SIGTERM, SIGPIPE, plus the unit's SuccessExitStatus=):
an unclean end marks the unit failed, runs OnFailure= and is restarted by Restart=on-failure (unless
RestartPreventExitStatus= names it). For a container, the engine's on-failure restart policy restarts
any exit code but 0. ``compare`` names the difference between C and Go in those terms.

The cases the pre-warm can provoke safely on free ports are CASES; what both real builds do in each,
measured, is MEASURED (tests/fixtures/real-stats/README.md, "Exit semantics and privileges").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import signal
from collections import namedtuple

EXITED = 'exited'
KILLED = 'killed'
DUMPED = 'dumped'
RUNNING = 'running'
UNKNOWN = 'unknown'
CLD_CODES = {'1': EXITED, '2': KILLED, '3': DUMPED}
CLEAN_SIGNALS = (1, 2, 15, 13)  # SIGHUP, SIGINT, SIGTERM, SIGPIPE (systemd.service, SuccessExitStatus=)
SYSTEMD = 'systemd'
CONTAINER = 'container'

# An unknown long option: no valid option of either binary starts with it (the C getopt_long accepts
# unique prefixes), measured to end both with exit status 2.
BAD_FLAG = '--mtproxy-cutover-no-such-flag'

CASES = (
    ('sigterm', 'SIGTERM to the main process (systemctl stop, docker stop)'),
    ('bad_flag', 'an unknown command-line flag (%s)' % BAD_FLAG),
    ('config_missing', 'a backend config file that does not exist'),
    ('config_unreadable', 'a backend config path that cannot be read (a directory: EISDIR even for root)'),
    ('client_port_busy', 'a client port (-H) that another socket listens on'),
    ('stats_port_busy', 'the stats port (-p) that another socket listens on'),
)
CASE_TEXT = dict(CASES)
# What a difference in each case costs by default: refuse the candidate, or warn and go on.
# stats_port_busy only warns: the real Go port runs on without a stats server there (measured), and a
# stats port taken at the flip fails the flip's own /stats proof anyway.
DEFAULT_LEVELS = {'sigterm': 'refuse', 'bad_flag': 'refuse', 'config_missing': 'refuse',
                  'config_unreadable': 'refuse', 'client_port_busy': 'refuse', 'stats_port_busy': 'warn'}


class Outcome(namedtuple('Outcome', 'kind status')):
    """How a process ended: kind (EXITED, KILLED, DUMPED, RUNNING, UNKNOWN) and status (exit status or
    signal number; None for RUNNING / UNKNOWN)."""
    __slots__ = ()

    def describe(self):
        if self.kind == EXITED:
            return 'exit status %d' % self.status
        if self.kind == KILLED:
            return 'killed by %s' % signal_name(self.status)
        if self.kind == DUMPED:
            return 'killed by %s (core dumped)' % signal_name(self.status)
        if self.kind == RUNNING:
            return 'still running'
        return 'not recorded'

    def as_dict(self):
        return {'kind': self.kind, 'status': self.status, 'text': self.describe()}


def signal_name(number):
    try:
        return signal.Signals(int(number)).name
    except (ValueError, TypeError):
        return 'signal %s' % number


def signal_number(name):
    """``SIGTERM``, ``TERM`` or ``15`` -> 15; None for anything else."""
    text = str(name).strip().upper()
    if text.isdigit():
        return int(text)
    if not text.startswith('SIG'):
        text = 'SIG' + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        return None


def from_systemd(props):
    """Outcome from ``systemctl show -p ExecMainCode -p ExecMainStatus`` (a dict of those strings)."""
    kind = CLD_CODES.get(str(props.get('ExecMainCode') or '0'))
    if kind is None:
        return Outcome(UNKNOWN, None)
    try:
        return Outcome(kind, int(props.get('ExecMainStatus') or 0))
    except ValueError:
        return Outcome(UNKNOWN, None)


def from_exit(exit_code=None, exit_signal=None, running=False):
    """Outcome from an exit code / exit signal pair, as mtproxy_prewarm(state=stopped) returns them
    (``exit_code``, ``exit_signal``), or RUNNING when the process did not end."""
    if running:
        return Outcome(RUNNING, None)
    if exit_signal is not None:
        return Outcome(KILLED, int(exit_signal))
    if exit_code is not None:
        return Outcome(EXITED, int(exit_code))
    return Outcome(UNKNOWN, None)


def from_docker(state):
    """Outcome from ``docker inspect``'s ``State`` (Running, ExitCode, OOMKilled).

    The engine reports 128 + N for a process killed by signal N; that number is kept as an exit status
    (``describe_container`` names the signal it may stand for), since C and Go are compared through the
    same engine."""
    if state.get('Running') or state.get('Restarting'):
        return Outcome(RUNNING, None)
    if state.get('OOMKilled'):
        return Outcome(KILLED, 9)
    code = state.get('ExitCode')
    if code is None:
        return Outcome(UNKNOWN, None)
    return Outcome(EXITED, int(code))


def describe_container(outcome):
    text = outcome.describe()
    if outcome.kind == EXITED and 128 < outcome.status <= 128 + 64:
        text += ' (the engine\'s code for %s, or that exit status)' % signal_name(outcome.status - 128)
    return text


def parse_status_list(text):
    """systemd's SuccessExitStatus= / RestartPreventExitStatus= value (as written in a unit or as
    ``systemctl show`` prints it) -> (exit statuses, signal numbers)."""
    codes, signals = set(), set()
    for word in str(text or '').replace(',', ' ').replace('[', ' ').replace(']', ' ').split():
        if word.isdigit():
            codes.add(int(word))
        else:
            number = signal_number(word)
            if number is not None:
                signals.add(number)
    return frozenset(codes), frozenset(signals)


def is_clean(outcome, runtime=SYSTEMD, success=None):
    """Whether the runtime calls this end a success. ``success``: (codes, signals) of SuccessExitStatus=.
    None for RUNNING / UNKNOWN."""
    if outcome.kind in (RUNNING, UNKNOWN):
        return None
    if runtime == CONTAINER:
        return outcome.kind == EXITED and outcome.status == 0
    codes, signals = success or (frozenset(), frozenset())
    if outcome.kind == EXITED:
        return outcome.status == 0 or outcome.status in codes
    if outcome.kind == KILLED:
        return outcome.status in CLEAN_SIGNALS or outcome.status in signals
    return False


def _prevented(outcome, prevent):
    codes, signals = prevent or (frozenset(), frozenset())
    if outcome.kind == EXITED:
        return outcome.status in codes
    return outcome.kind in (KILLED, DUMPED) and outcome.status in signals


def _consequence(c_clean, runtime):
    if runtime == CONTAINER:
        if c_clean:
            return ('the engine would see Go fail where C ends clean: a restart policy of on-failure restarts it, '
                    'and an "unless-stopped"/"always" policy hides the failure')
        return 'the engine would see Go end clean where C fails: a restart policy of on-failure would not restart it'
    if c_clean:
        return ('systemd would mark the unit failed where C ends clean: OnFailure= runs and Restart=on-failure '
                'restarts it')
    return ('systemd would record success where C fails: Restart=on-failure would not restart it and OnFailure= '
            'would not run')


def compare(case, c, go, runtime=SYSTEMD, success=None, prevent=None, level=None):
    """How Go's end compares with C's in ``case`` (one of CASES). Returns a dict: ``case``, ``c``,
    ``go`` (Outcome.as_dict), ``verdict`` (same, equivalent, differs, unknown), ``level`` (ok, warn,
    refuse) and ``message`` (None when same).

    ``success`` / ``prevent``: parse_status_list of the unit's SuccessExitStatus= / RestartPreventExitStatus=.
    ``level``: what a difference costs (default DEFAULT_LEVELS[case]); an equivalent end only warns."""
    level = level or DEFAULT_LEVELS.get(case, 'refuse')
    what = CASE_TEXT.get(case, case)
    describe = describe_container if runtime == CONTAINER else Outcome.describe
    result = {'case': case, 'c': c.as_dict(), 'go': go.as_dict(), 'verdict': 'same', 'level': 'ok', 'message': None}
    if UNKNOWN in (c.kind, go.kind):
        result.update(verdict='unknown', level='warn',
                      message='on %s the end of %s was not recorded, so it was not compared' % (
                          what, 'C' if c.kind == UNKNOWN else 'Go'))
        return result
    if c == go:
        return result
    if go.kind == RUNNING:
        result.update(verdict='differs', level=level,
                      message='on %s, C ends with %s and Go keeps running: Go serves on in a state in which C stops'
                      % (what, describe(c)))
        return result
    if c.kind == RUNNING:
        result.update(verdict='differs', level=level,
                      message='on %s, Go ends with %s and C keeps running: Go stops in a state in which C serves on'
                      % (what, describe(go)))
        return result
    head = 'on %s, C ends with %s and Go with %s' % (what, describe(c), describe(go))
    c_clean = is_clean(c, runtime, success)
    go_clean = is_clean(go, runtime, success)
    if c_clean != go_clean:
        result.update(verdict='differs', level=level, message='%s: %s' % (head, _consequence(c_clean, runtime)))
        return result
    if runtime == SYSTEMD and _prevented(c, prevent) != _prevented(go, prevent):
        result.update(verdict='differs', level=level,
                      message='%s: RestartPreventExitStatus= names only %s\'s, so Restart= treats them differently'
                      % (head, 'C' if _prevented(c, prevent) else 'Go'))
        return result
    kind = 'a clean end' if c_clean else 'a failure'
    result.update(verdict='equivalent', level='warn',
                  message='%s; %s treats both as %s, only what matches the exact status sees the difference'
                  % (head, 'the engine' if runtime == CONTAINER else 'systemd', kind))
    return result


def compare_all(c_outcomes, go_outcomes, runtime=SYSTEMD, success=None, prevent=None, levels=None):
    """compare() for every case both sides have. Returns ``verdict`` (refuse, warn, ok), ``cases``,
    ``refusals`` and ``warnings`` (the messages)."""
    levels = dict(DEFAULT_LEVELS, **(levels or {}))
    cases = []
    for case, _text in CASES:
        if case in c_outcomes and case in go_outcomes:
            cases.append(compare(case, c_outcomes[case], go_outcomes[case], runtime, success, prevent, levels[case]))
    refusals = [entry['message'] for entry in cases if entry['level'] == 'refuse']
    warnings = [entry['message'] for entry in cases if entry['level'] == 'warn']
    return {'verdict': 'refuse' if refusals else 'warn' if warnings else 'ok', 'cases': cases,
            'refusals': refusals, 'warnings': warnings}


def case_argv(case, argv, config_index, scratch_dir):
    """The argv that provokes ``case`` from a pre-warm argv (free ports already in it): ``argv[0]`` the
    binary, ``config_index`` the index of the backend config positional, ``scratch_dir`` an empty
    directory of the pre-warm (the unreadable config). The port cases use ``argv`` as it is: the caller
    listens on the port first."""
    argv = list(argv)
    if case == 'bad_flag':
        return argv[:1] + [BAD_FLAG] + argv[1:]
    if case == 'config_missing':
        argv[config_index] = scratch_dir.rstrip('/') + '/no-such-proxy-multi.conf'
    elif case == 'config_unreadable':
        argv[config_index] = scratch_dir
    return argv


def _o(kind, status=None):
    return Outcome(kind, status)


# Measured on the real builds (skrashevich/MTProxy golang 6c43f8ae, C mtproxy-0.02 and the Go port),
# started as root with -u nobody, on Debian bookworm x86_64 and under systemd 252 (ExecMainCode /
# ExecMainStatus): tests/fixtures/real-stats/README.md. Go without -M differs in one case.
MEASURED = {
    'c': {'sigterm': _o(EXITED, 0), 'bad_flag': _o(EXITED, 2), 'config_missing': _o(EXITED, 1),
          'config_unreadable': _o(EXITED, 2), 'client_port_busy': _o(EXITED, 1), 'stats_port_busy': _o(EXITED, 1)},
    'go': {'sigterm': _o(EXITED, 0), 'bad_flag': _o(EXITED, 2), 'config_missing': _o(EXITED, 1),
           'config_unreadable': _o(EXITED, 1), 'client_port_busy': _o(EXITED, 1), 'stats_port_busy': _o(RUNNING)},
}
MEASURED_GO_WITHOUT_WORKERS = {'client_port_busy': _o(EXITED, 2)}


def measured(flavour, workers=1):
    """The measured Outcomes of the real ``flavour`` ('c' or 'go') binary; ``workers``: its -M (0: none)."""
    table = dict(MEASURED[flavour])
    if flavour == 'go' and not workers:
        table.update(MEASURED_GO_WITHOUT_WORKERS)
    return table
