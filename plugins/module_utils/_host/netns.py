# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run code inside another process's network namespace (a container's), then come back.

A container's proxy binds its ports on the container's own 127.0.0.1, and the C proxy answers
``/stats`` only to 127.0.0.1 peers (its http-stats handler checks the peer address), so its
``/stats`` is read from inside the container's namespace. ``entered(pid)`` switches the calling thread into ``/proc/<pid>/ns/net`` with
setns(2) and back afterwards, so that the ordinary loopback probes and scrapes of this collection
work unchanged inside it. Sockets keep the namespace they were created in. Needs CAP_SYS_ADMIN
(root); the modules that use it run as root on the container host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import ctypes
import ctypes.util
import os

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import NetnsError

CLONE_NEWNET = 0x40000000


def _setns(fd):
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError('setns(CLONE_NEWNET) failed: %s' % os.strerror(err))


def same_netns(pid):
    """True when ``pid`` shares this process's network namespace (nothing to enter)."""
    try:
        return os.stat('/proc/%d/ns/net' % pid).st_ino == os.stat('/proc/self/ns/net').st_ino
    except OSError:
        return False


@contextlib.contextmanager
def entered(pid):
    """Inside: this thread is in the network namespace of ``pid``. ``pid`` None or 0: no change."""
    if not pid or same_netns(pid):
        yield
        return
    try:
        target = os.open('/proc/%d/ns/net' % pid, os.O_RDONLY)
    except OSError as exc:
        raise NetnsError('cannot open the network namespace of pid %d: %s' % (pid, exc.strerror))
    home = os.open('/proc/self/task/%d/ns/net' % gettid(), os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def gettid():
    try:
        return os.gettid()  # Python 3.8+ on Linux
    except AttributeError:  # pragma: no cover
        return os.getpid()
