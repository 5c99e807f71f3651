# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runbook's exit-semantics precondition, checked on a host: each case of ``exit_semantics.CASES``
is provoked on the frozen C binary and on the staged Go binary, each started as the pre-warm starts it
(a transient unit with the service's credentials, limits and sandboxing, on free ports), and how each
ended, as systemd records it, is compared under the unit's SuccessExitStatus= and RestartPreventExitStatus=.

Every case is bounded: a binary still alive ``case_timeout`` seconds after its start counts as
``running`` and is stopped; ``sigterm`` waits until the binary is ready (``ready_timeout``), then
SIGTERMs it and waits up to ``stop_timeout``. Every path out stops and removes the unit and closes the
sockets that made a port busy.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import socket
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import prewarm
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.proof import c_stats_unsafe, frozen_argv
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import exit_semantics as es
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import parse_argv

ROLE = 'exit-check'
SCRATCH_DIR = '/run/mtproxy-cutover/exit-check'
POLL_S = 0.05


def config_index(argv):
    """Index in ``argv`` of the backend config positional (the one argv word no option takes)."""
    taken = {0}
    for use in parse_argv(argv).options:
        taken.update(range(use.start, use.end))
    free = [index for index in range(len(argv)) if index not in taken and argv[index] != '--']
    return free[-1] if free else None


def hold_port(port):
    """A listening socket on 0.0.0.0:``port``, which the proxy's own bind then finds taken."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(('0.0.0.0', int(port)))
    holder.listen(1)
    return holder


def wait_gone(candidate, timeout, clock=time.monotonic, sleep=time.sleep):
    """True once the candidate's process ended (its unit records it), False if it still runs after ``timeout``."""
    deadline = clock() + timeout
    while clock() < deadline:
        if candidate.gone() is not None:
            return True
        sleep(POLL_S)
    return candidate.gone() is not None


def provoke(candidate, binary, case, case_timeout, scratch_dir):
    """How ``binary`` ends in ``case`` (an Outcome), started as ``candidate`` starts it."""
    candidate.prepare(binary)
    argv = candidate.argv
    index = config_index(argv)
    if case in ('config_missing', 'config_unreadable') and index is None:
        return es.Outcome(es.UNKNOWN, None)
    candidate.argv = es.case_argv(case, argv, index, scratch_dir)
    holder = hold_port(candidate.client_ports[0] if case == 'client_port_busy' else candidate.stats_port) \
        if case in ('client_port_busy', 'stats_port_busy') else None
    try:
        candidate.start()
        if not wait_gone(candidate, case_timeout):
            return es.Outcome(es.RUNNING, None)
        return es.from_systemd(candidate.wait_exit_recorded())
    finally:
        candidate.remove()
        if holder is not None:
            holder.close()


def sigterm(candidate, binary, ready_timeout, stop_timeout, check_stats):
    """How ``binary`` ends on SIGTERM once ready (UNKNOWN when it never got ready)."""
    try:
        prewarm.start(candidate, binary, ready_timeout, check_stats=check_stats)
    except CutoverError:
        return es.Outcome(es.UNKNOWN, None)
    try:
        stopped = candidate.stop(stop_timeout)
    except CutoverError:
        return es.Outcome(es.RUNNING, None)
    return es.from_exit(stopped.get('exit_code'), stopped.get('exit_signal'))


def outcomes(runtime, flavor, binary, case_timeout, ready_timeout, stop_timeout, scratch_dir):
    """{case: Outcome} of ``binary`` run as ``flavor`` ('c' or 'go')."""
    found = {}
    for case, _text in es.CASES:
        candidate = runtime.candidate(ROLE, flavor)
        if case == 'sigterm':
            check_stats = not (flavor == 'c' and c_stats_unsafe(runtime.manifest))
            found[case] = sigterm(candidate, binary, ready_timeout, stop_timeout, check_stats)
        else:
            found[case] = provoke(candidate, binary, case, case_timeout, scratch_dir)
    return found


def check(runtime, go_binary, levels=None, case_timeout=3.0, ready_timeout=15.0, stop_timeout=10.0,
          scratch_dir=SCRATCH_DIR):
    """compare_all of C's and Go's outcomes on this host, plus ``c`` / ``go`` ({case: Outcome.as_dict})."""
    props = runtime.show('SuccessExitStatus', 'RestartPreventExitStatus')
    if not os.path.isdir(scratch_dir):
        os.makedirs(scratch_dir, 0o755)
    try:
        c_found = outcomes(runtime, 'c', frozen_argv(runtime.manifest)[0], case_timeout, ready_timeout,
                           stop_timeout, scratch_dir)
        go_found = outcomes(runtime, 'go', go_binary, case_timeout, ready_timeout, stop_timeout, scratch_dir)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    result = es.compare_all(c_found, go_found, es.SYSTEMD, es.parse_status_list(props.get('SuccessExitStatus')),
                            es.parse_status_list(props.get('RestartPreventExitStatus')), levels)
    result['c'] = dict((case, outcome.as_dict()) for case, outcome in c_found.items())
    result['go'] = dict((case, outcome.as_dict()) for case, outcome in go_found.items())
    return result
