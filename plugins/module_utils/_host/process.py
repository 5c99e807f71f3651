# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Programs run on the host, through AnsibleModule.run_command, and the clock helpers.

Every program the host-side code runs goes through ``run``: bounded by coreutils' ``timeout`` (exit
124 when it ran out, as before), never raising for a missing program (127). A module routes it to
its ``run_command`` with ``_host.module.use_module``; nothing here spawns a process itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import math
import os
import threading

# The environment every program is run with: untranslated messages, no pager, no colours.
ENV_OVERRIDES = {'LC_ALL': 'C', 'SYSTEMD_PAGER': '', 'SYSTEMD_COLORS': '0'}
# How long a program gets after its timeout's SIGTERM before it is killed.
KILL_AFTER_S = 5

RUN_COMMAND = None


def use_runner(run_command):
    """``run_command(args, data=, binary_data=, environ_update=, check_rc=, expand_user_and_vars=, cwd=)``,
    as AnsibleModule.run_command takes them, runs every program from now on."""
    global RUN_COMMAND  # pylint: disable=global-statement
    RUN_COMMAND = run_command


def run(argv, timeout=60, text=None, cwd=None, unset=(), extra_env=None):
    """(rc, stdout, stderr) of a command, fed ``text`` on stdin when given; never raises for a missing
    command (127) or a timeout (124). ``cwd``: its working directory; ``unset``: prefixes of environment
    names it must not inherit (``env -u``); ``extra_env``: names set for it."""
    if RUN_COMMAND is None:
        raise RuntimeError('no program runner: the module must call _host.module.use_module(module) first')
    bounded = ['timeout', '-k', str(KILL_AFTER_S), str(max(1, int(math.ceil(timeout))))]
    dropped = sorted(name for name in os.environ if any(name.startswith(prefix) for prefix in unset))
    if dropped:
        bounded += ['env'] + [word for name in dropped for word in ('-u', name)]
    environ = dict(ENV_OVERRIDES, **(extra_env or {}))
    options = {'cwd': cwd} if cwd else {}
    rc, out, err = RUN_COMMAND(bounded + list(argv), data=text, binary_data=True, environ_update=environ,
                               check_rc=False, expand_user_and_vars=False, **options)
    if rc == 124:
        err = 'timed out after %ss' % timeout
    return rc, out, err


class Background:
    """``run`` in a thread of this process: the caller probes meanwhile, ``poll()`` is None until it ended."""

    def __init__(self, argv, timeout=60, **options):
        self.returncode = None
        self.out = self.err = ''
        self.thread = threading.Thread(target=self._run, args=(argv, timeout), kwargs=options)
        self.thread.daemon = True
        self.thread.start()

    def _run(self, argv, timeout, **options):
        rc, self.out, self.err = run(argv, timeout, **options)
        self.returncode = rc

    def poll(self):
        return None if self.thread.is_alive() else self.returncode


def start(argv, timeout=60, **options):
    """``run`` in the background (see Background); ``timeout`` bounds the program as ``run`` does."""
    return Background(argv, timeout, **options)


def finish(job, timeout):
    """(stdout, stderr) of a program started with ``start``, waited for at most ``timeout`` seconds more
    (its own timeout ends it anyway)."""
    job.thread.join(max(timeout, 0.001))
    return job.out, job.err


def run_input(argv, text, timeout=60):
    """(rc, stdout, stderr) of a command fed ``text`` on stdin (see run)."""
    return run(argv, timeout, text)


def ms(seconds):
    return round(seconds * 1000.0, 3)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).strftime('%Y-%m-%dT%H:%M:%SZ')
