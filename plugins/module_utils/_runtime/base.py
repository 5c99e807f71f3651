# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runtime interface: one class per way a proxy service is run on its host.

A runtime answers, for one service, the questions every step of the runbook asks, so that the
flows (``_flow/freeze.py``, ``_flow/prewarm.py``, ``_flow/switch.py``, ``_flow/info.py``) are written once:

- ``read_for_freeze``: what runs now (the live argv, the unit or container spec) and whether it is
  already the Go release the state records;
- ``candidate``: a pre-warm or a bridge started exactly as the service would start it (credentials,
  limits, sandboxing, ``ExecStart`` prefixes, working directory, environment) on ports of its own;
- ``plan``: what a switch to a target changes (a drop-in, a symlink, a recreated container), with
  the refusals that must come before anything changes; ``apply`` and ``revert`` of that plan;
- ``restart``: stop the old generation and start the new one, measured from the clients' side;
- ``prove``: which binary runs, with which argv, and (``stats_reader``) who answers ``/stats``.

``runtime_for`` (``_runtime/choice.py``) is the only place that decides which runtime a service
has: from its freeze manifest, else from the requested method. The two loops every runtime's
``restart`` needs (watch the old generation close its listeners; wait for the new one to accept)
are here, once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import privileges as pv
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import probe

# How often the client port is probed while the old generation stops and the new one starts.
PROBE_INTERVAL = 0.001
STATE_CHECK_INTERVAL = 0.2
# How the old generation is stopped before the new one starts (module option ``stop_mode``):
# wait_exit waits for it to exit by itself; listeners_closed ends it as soon as the client port
# refuses connections (the Go port drains open clients for ~2 s after closing it).
STOP_MODES = ('listeners_closed', 'wait_exit')
# A process that exits this soon after closing its listeners (C does in a few ms) ends by itself;
# only one that keeps draining is ended early. The Go port closes its listeners first thing on
# SIGTERM and then drains open clients for ~2 s, so a Go process gets no grace.
HANDOVER_GRACE = {'c': 0.02, 'go': 0.0}


class ListenerWatch:
    """``stop_mode=listeners_closed``: end the old generation once its client port refuses connections.

    ``poll(old_alive)`` is called in the runtime's stop loop: the first time the port refuses is
    ``handover_at``; ``grace`` seconds later, if the old generation still runs (it drains), ``end()``
    (the runtime's SIGKILL of it) is called once. A ``port`` of None watches nothing.
    """

    def __init__(self, port, hosts, grace, end, clock=time.monotonic):
        self.port = port
        self.hosts = hosts
        self.grace = grace
        self.end = end
        self.clock = clock
        self.handover_at = None
        self.ended_early = False

    def poll(self, old_alive):
        if not self.port:
            return
        now = self.clock()
        if self.handover_at is None and probe.port_refuses(self.port, self.hosts):
            self.handover_at = now
        if self.handover_at is not None and not self.ended_early and now - self.handover_at >= self.grace \
                and old_alive():
            # Listeners are closed and the old process still drains: new clients are refused until
            # the new binary runs, so do not wait for the drain.
            self.end()
            self.ended_early = True


def wait_accepting(port, hosts, deadline, accepted=None, gave_up=None, check_interval=STATE_CHECK_INTERVAL,
                   clock=time.monotonic, sleep=time.sleep):
    """Probe ``hosts``:``port`` every PROBE_INTERVAL until it accepts: (accepted_at, None) or (None, why).

    ``accepted()`` confirms an accept (e.g. on a socket the old generation did not have);
    ``gave_up(periodic)`` returns a reason to stop waiting, or None: called after every probe with
    ``periodic`` False and every ``check_interval`` seconds with it True (for costly checks).
    """
    next_check = clock() + check_interval
    why = None
    while clock() < deadline:
        if probe.tcp_accepts(port, hosts) and (accepted is None or accepted()):
            return clock(), None
        if gave_up is not None:
            periodic = clock() >= next_check
            why = gave_up(periodic)
            if why is not None:
                return None, why
            if periodic:
                next_check = clock() + check_interval
        sleep(PROBE_INTERVAL)
    return None, why


class Runtime:
    """One way of running a proxy service. Subclasses: ``SystemdRuntime``, ``ContainerRuntime``, ``ComposeRuntime``."""

    # The manifest's ``runtime`` and the methods a switch of this runtime can use.
    kind = None
    methods = ()
    # What a release of this runtime is: 'binary' (a staged Go binary's path) or 'image' (a Go image).
    release_kind = 'binary'
    # The host-side options of the modules this runtime's constructor takes (``runtime_for`` passes them).
    host_options = ()
    # The container whose network namespace holds the service's ports, or None (the host's own).
    container = None
    # Whether the bridge handover (new clients diverted by nftables/iptables on this host) applies,
    # and why not when it does not (after the service's name).
    supports_bridge = False
    bridge_refusal = None
    # The [Service] lines privilege_drop=service gives the pre-warm unit and the cutover drop-in.
    service_lines = ()

    def __init__(self, store, manifest=None, state=None):
        self.store = store
        self.service = store.service
        self.manifest = manifest
        self.state = state

    # -- identity ------------------------------------------------------------------------------

    @property
    def name(self):
        """How messages name the service (the unit, the container)."""
        return self.service

    # -- the steps -----------------------------------------------------------------------------

    def read_for_freeze(self, params, now, warnings):
        raise NotImplementedError

    def candidate(self, role='prewarm', flavor='go', **options):
        """A candidate (``role`` 'prewarm' or 'bridge') that must answer /stats as ``flavor``."""
        raise NotImplementedError

    def plan(self, target, release, method=None):
        """What a switch to ``target`` with ``release`` (a binary or an image; None for C) changes."""
        raise NotImplementedError

    def prove(self, target, plan=None, wait_s=0.0):
        raise NotImplementedError

    @staticmethod
    def proxy_processes(main_pid):
        """Privileges of the proxy's processes (``privileges.snapshot_tree``) from the main PID."""
        return pv.snapshot_tree(main_pid)

    def stats_reader(self):
        """``read(url, timeout_s)`` that reads /stats where the service's stats port is."""
        raise NotImplementedError

    def clear_leftovers(self):
        """Remove what an interrupted switch of this runtime left (before a switch; not in check mode)."""

    def finish(self):
        """Remove what the old generation left once the new one is proven."""
