#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_switch
short_description: Point an MTProxy service at the Go or the C binary, restart it and prove the argv
description:
  - Reads the freeze manifest written by M(mtproxy.cutover.mtproxy_freeze) and points the systemd service
    at the staged Go binary (O(target=go)) or back at the frozen C binary (O(target=c)).
  - With O(method=dropin) the vendor unit is never edited; a drop-in C(99-mtproxy-cutover.conf) resets
    C(ExecStart) and runs the Go binary with the rest of the vendor C(ExecStart) byte-identical.
    Removing the drop-in returns the service to the C binary.
  - With O(method=symlink) the C(ExecStart) binary path must already be a symlink (C(current -> release));
    it is replaced atomically.
  - Restarts the service with one C(systemctl restart) job (systemd starts the new process as soon as the
    old one is gone; see O(stop_mode) for when that may be), measures how
    long the client port refused connections,
    waits for the stats port, and proves that the new main process runs the frozen argv with only the
    program replaced.
  - Before any restart, checks what systemd will run. With O(method=dropin) and O(target=go) a drop-in that
    sets C(ExecStart) and sorts after C(99-mtproxy-cutover.conf) (such as C(override.conf) from
    C(systemctl edit)) is refused before anything is written, also in check mode. After the change and
    C(systemctl daemon-reload), C(systemctl show -p ExecStart) must name the intended program; if it does
    not, the change is undone (daemon-reload again), nothing is restarted or recorded, and the module
    fails naming the file whose C(ExecStart) is in effect.
  - Client ports are probed where the frozen proxy binds them (C(--address), else 127.0.0.1, with C(-6)
    also ::1 when the host has it); the stats port on 127.0.0.1.
  - A C proxy frozen with C(-6) aborts on any connection to its stats port, so with C(-6) the stats port is
    not probed during the restart and, for O(target=c), C(/stats) is never read (RV(stats_skipped)); the
    argv proof stands alone. For O(target=go) C(/stats) is read only after the argv proved Go runs.
  - Records every switch in C(<state_dir>/<service>/state.json) (mode 0600), once systemd was seen to run
    the intended program.
  - Does nothing (V(changed=false), no restart) when the unit already points at the target, the live
    process runs it with the expected argv and the state file agrees.
  - With O(handover=bridge) new clients are handed to a bridge while the service restarts, so the client
    port never refuses (see O(handover)).
  - Every run first removes what an interrupted bridge handover left behind (its nftables table or
    iptables chains and its C(<service>-bridge.service)), whatever O(handover) says
    (RV(leftovers_removed)).
  - Secrets (C(-S), C(-P) values) never appear in results, diffs or messages.
version_added: 0.1.0
extends_documentation_fragment:
  - mtproxy.cutover.run_lock
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  service:
    description: Name of the service as given to M(mtproxy.cutover.mtproxy_freeze).
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding the per-service freeze manifest and switch state.
    type: path
    default: /var/lib/mtproxy-cutover
  target:
    description: Which binary the service should run.
    type: str
    required: true
    choices: [go, c]
  binary:
    description:
      - Absolute path of the staged Go binary on the host. Required when O(target=go) (or O(image) for a container).
      - Ignored for O(target=c), which always returns to the frozen C binary of the manifest.
    type: path
  image:
    description:
      - The staged Go image (ID C(sha256:...) or a reference) for a service frozen as a container. Required when
        O(target=go) for such a service; O(target=c) returns to the frozen C image ID.
    type: str
  docker_socket:
    description: Unix socket of the Docker engine (or Podman's Docker-compatible socket), for a container.
    type: path
    default: /var/run/docker.sock
  method:
    description:
      - V(dropin) writes or removes C(/etc/systemd/system/<unit>.d/99-mtproxy-cutover.conf).
      - V(symlink) repoints the C(ExecStart) binary path, which must already be a symlink.
      - V(container) recreates the container O(service) from the target image with the frozen spec (command,
        environment, mounts, ports, restart policy, network, user, labels), proven from C(docker inspect); the
        old container is stopped only after the new one was created, and removed once the new one is proven.
        A service frozen as a container is always switched this way.
      - V(compose) (a service frozen as a docker compose service, always switched this way) writes the
        collection's override file beside the project's file (C(compose.override.yaml) for C(compose.yaml),
        C(docker-compose.override.yml) for C(docker-compose.yml)), setting only the service's image to the Go
        image ID; checks that compose loads it (the service's config hash changes; else it is removed again and
        the switch refused, C(compose_override_not_loaded)); stops the old container (SIGTERM to the proxy, as
        V(container) does) and runs C(up -d --no-deps --no-build <service>) in the project's directory with the
        project's name, so that compose recreates the container and still owns it (the operator's next
        C(docker compose up -d) keeps it). O(target=c) removes only that file and recreates the same way. Proven
        like V(container), plus compose's own record (the files it loaded and the config hash, after a rollback
        the frozen one).
      - Unset, the method is the one C(state.json) records while the service is on Go or is switched back to C
        (O(target=c)), else V(dropin). The method a service was flipped with is always read back from
        C(state.json); a value that contradicts it is refused (C(refused=method_mismatch)) before anything
        changes, since pointing back another way would leave the service on Go.
    type: str
    choices: [compose, container, dropin, symlink]
  listen_timeout:
    description: Seconds to wait once the old process is gone for the client port, then the stats port, to accept.
    type: float
    default: 15
  privilege_drop:
    description:
      - For O(target=go), how Go's privileges are kept at C's (as M(mtproxy.cutover.mtproxy_prewarm)'s option of that
        name); the restarted Go's processes are compared with what the freeze recorded of C's; a Go with more
        privilege (root, a root group, capabilities C has not) fails the switch as an argv mismatch does, unless
        V(ignore).
      - V(service) writes C(User=)/C(Group=) of C's user and group into the cutover drop-in, and
        C(AmbientCapabilities=CAP_NET_BIND_SERVICE) when a client port is below
        C(net.ipv4.ip_unprivileged_port_start) (method V(dropin) only; refused before anything changes otherwise).
        The rollback removes the drop-in, and with it those lines.
      - Unset, nothing is compared.
    type: str
    choices: [binary, service, ignore]
  stop_timeout:
    description:
      - Seconds to wait for the old main process to exit once the restart began. Past it the unit's
        processes are killed with SIGKILL through C(systemctl kill) (a binary hung on SIGTERM cannot
        block a switch).
    type: float
    default: 30
  stop_mode:
    description:
      - When the new binary may start. The stop is always the stop half of a C(systemctl restart) job
        (ExecStop=, KillMode= and KillSignal= of the unit apply; Restart= does not fire).
      - V(listeners_closed) starts the new binary as soon as the old one stops accepting clients. If the
        old main process still runs after the first client port started refusing connections on
        127.0.0.1 (at once when it is the Go binary, which closes its listeners first on SIGTERM and
        then drains open clients for about 2 s; 20 ms later when it is C, which exits within a few ms
        and so is never cut short), the unit's processes are ended with SIGKILL as a stop timeout
        would, through the unit cgroup's C(cgroup.kill) when the kernel has it, else C(systemctl kill).
        Clients still connected to the old process are cut then instead of after its own drain, and the unit
        records the stop as result C(signal) (so C(OnFailure=) units see a failure) until the new
        process starts. When the old process never listened on that port, this is the same as
        V(wait_exit).
      - V(wait_exit) waits until the old process exited by itself (up to O(stop_timeout)); its open
        clients get the whole drain, new clients are refused for all of it.
      - O(stop_timeout) bounds both.
    type: str
    default: listeners_closed
    choices: [listeners_closed, wait_exit]
  handover:
    description:
      - How clients are handed from the old binary to the new one (C(mtproxy_cutover_handover)).
      - V(restart) restarts the service; new clients are refused from the moment the old binary stops
        accepting until the new one accepts (see O(stop_mode)).
      - V(bridge) hands new clients to a bridge while the service restarts, so that the client port never
        refuses a connection. For the systemd methods (V(dropin), V(symlink)).
      - Before anything changes, the target binary (the Go binary, or the frozen C binary for O(target=c))
        is started with the frozen flags on free side ports as the transient unit
        C(<service>-bridge.service) and judged ready like M(mtproxy.cutover.mtproxy_prewarm); if it does not
        get ready the module fails and the host is left as it was.
      - Just before the restart, a table of the collection's own (nftables C(inet mtproxy_cutover_<service>),
        or iptables chains C(MTPXC-<service>-*) where there is no C(nft); IPv4 only) redirects new TCP
        connections to this host's client port(s), locally generated ones too, to the bridge's port(s);
        open connections stay with the old process. The module's own probes carry the packet mark
        C(0x6d747078), which the redirect skips, so the restart is judged on the service itself.
      - Just before and 20 ms after the redirect comes, the conntrack entries to the client ports that no open
        socket holds are deleted, and while it is there the network namespace's conntrack TCP CLOSE timeout is
        0 (restored afterwards; by the next run if this one died), so that a new connection that reuses the
        addresses and ports of an old entry does not take it over and miss the redirect. After the bridge,
        the entries redirected to it are deleted.
      - Once the service accepts again the redirect rules are removed and the bridge drains. It is
        stopped when it has no established connection or after O(bridge_drain) seconds, whichever
        comes first (its remaining clients are cut then). The table is deleted with it.
      - The bridge unit has C(RuntimeMaxSec=) and an C(ExecStopPost=) that deletes the redirect, so neither
        outlives a module run that died.
      - When a restart is due, a host without C(nft) or C(iptables), or where the module runs without
        C(CAP_NET_ADMIN), is refused (C(refused=bridge_unsupported)) before anything changes, also in
        check mode. A host that needs no restart is left alone.
      - Figures in RV(bridge).
    type: str
    default: restart
    choices: [restart, bridge]
  bridge_drain:
    description: Seconds the bridge may keep its clients after the service accepts again (O(handover=bridge)).
    type: float
    default: 10
  bridge_ready_timeout:
    description: Seconds the bridge may take to get ready (O(handover=bridge)).
    type: float
    default: 15
  stats_check:
    description:
      - After the switch, and also when nothing had to change, read the manifest's C(/stats) URL on
        127.0.0.1 and fail unless the binary answering it is the O(target)'s (C and Go answer with
        different key sets). Retried every 0.2 s for up to 5 s (at most O(listen_timeout)) while the
        body cannot be read or parsed. Not done in check mode, nor for O(target=c) when the frozen C
        proxy runs with C(-6) (see RV(stats_skipped)).
      - V(false) skips it, for a service frozen without a stats port.
    type: bool
    default: true
  force_restart:
    description:
      - Restart and measure even when the service already runs the target with the frozen argv
        (the drill's baseline restart of the C binary).
    type: bool
    default: false
  journal_lines:
    description:
      - When the service is switched, return this many of its last journal lines (redacted) as they
        were before the switch, for example the Go process's last words before a rollback.
    type: int
    default: 0
requirements:
  - Python 3 on the managed host (standard library only).
  - systemd.
  - With O(handover=bridge), C(nft) (nftables) or C(iptables) and C(CAP_NET_ADMIN).
attributes:
  async:
    support: full
    description: Runs on the host like any module, in the background too (C(async)).
  check_mode:
    support: full
    description: Reports whether a switch is needed and the diff; writes nothing and restarts nothing.
  diff_mode:
    support: full
    description: Before/after of the drop-in (secrets redacted) or of the symlink target.
  platform:
    support: full
    description: Linux hosts with systemd and C(/proc).
    platforms: posix
notes:
  - If the new binary does not listen in time, the module fails with the host-side cause and the last
    journal lines of the unit (redacted) and leaves the unit pointed at the target; run it again with
    O(target=c) to roll back. Switching to C works from any state of the unit.
  - The C(/stats) content check is left to M(mtproxy.cutover.mtproxy_stats).
'''

EXAMPLES = r'''
- name: Run the staged Go binary with the frozen C argv
  mtproxy.cutover.mtproxy_switch:
    target: go
    binary: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy
  register: flip

- name: Roll back to the C binary
  mtproxy.cutover.mtproxy_switch:
    target: c
'''

RETURN = r'''
target:
  description: The flavour the service was switched to.
  returned: always
  type: str
  sample: go
binary:
  description: Binary the service runs now (the frozen C binary for O(target=c)).
  returned: always
  type: str
  sample: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy
method:
  description: The switching method used (read from C(state.json) when the service is on Go or goes back to C).
  returned: always
  type: str
  sample: dropin
timings:
  description:
    - Restart measurements in milliseconds; null when nothing was restarted.
    - C(stop_ms) from C(systemctl restart) until the old processes were gone, C(start_ms) from then until
      the client port accepted on a listening socket the old processes did not have, C(unavailable_ms) from
      the restart until then, C(stats_ms) from the old processes gone until the stats port accepted (the same
      way), C(killed_after_stop_timeout) whether O(stop_timeout) ran out.
    - The old processes are those the stop ends, each with all its threads (they keep its listening sockets
      open), with C(KillMode=control-group) (the default) or C(mixed) every process of the unit's cgroup,
      such as the C proxy's C(-M) workers, else the main process.
    - C(spawn_ms) is the part of C(start_ms) before systemd forked the new main process (its
      C(ExecMainStartTimestamp)), C(binary_start_ms) the rest, the binary's own start until the
      client port accepted; both null when systemd gives no time stamp from this restart.
      C(spawn_ms) is 0 when the old process was seen gone only after that fork.
    - C(stop_mode) the O(stop_mode) used, C(listeners_closed_ms) from the stop until the client port refused
      while the old process still ran (null if it exited first or with O(stop_mode=wait_exit)),
      C(ended_after_listeners_closed) whether the old processes were then ended with SIGKILL.
  returned: always
  type: dict
  sample: {stop_ms: 4.1, start_ms: 14.2, unavailable_ms: 18.3, stats_ms: 15.0, spawn_ms: 3.1, binary_start_ms: 11.1,
           killed_after_stop_timeout: false, stop_mode: listeners_closed, listeners_closed_ms: null, ended_after_listeners_closed: false}
argv_matches:
  description:
    - Whether the live main process runs the expected argv (frozen argv, program replaced for Go).
    - A main process that has not finished its exec yet (empty argv, or named C((...)) as systemd names the
      process it forked) is read again for up to 1 s.
  returned: always
  type: bool
privileges:
  description:
    - With O(privilege_drop) and O(target=go) after a restart, how the restarted Go's processes compare with C's
      (the fields of M(mtproxy.cutover.mtproxy_prewarm)'s C(privileges)).
  returned: when the switch to Go restarted the service with O(privilege_drop)
  type: dict
main_pid:
  description: MainPID of the service after the module ran.
  returned: always
  type: int
restarted:
  description: Whether the service was restarted.
  returned: always
  type: bool
previous_good:
  description: The last known good binary to roll back to (C(flavor), C(binary), with symlink also C(link_target)).
  returned: always
  type: dict
  sample: {flavor: c, binary: /opt/MTProxy/mtproto-proxy}
dropin_path:
  description: Path of the cutover drop-in (null with O(method=symlink)).
  returned: always
  type: str
  sample: /etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf
journal:
  description:
    - Last journal lines of the unit (redacted). On failure, what the new binary logged; with
      O(journal_lines), what the outgoing process logged before the switch.
  returned: always
  type: list
  elements: str
stats_url:
  description: C(/stats) URL of the service, from the freeze manifest.
  returned: always
  type: str
  sample: http://127.0.0.1:8888/stats
client_ports:
  description: Client ports of the service, from the freeze manifest.
  returned: always
  type: list
  elements: int
stats_flavor:
  description: Which binary answered C(/stats) after the switch (V(c) or V(go)); null without O(stats_check) or in check mode.
  returned: always
  type: str
  sample: c
stats_version:
  description: The C(version) value of that C(/stats) body, if it has one.
  returned: always
  type: str
stats_skipped:
  description:
    - Why C(/stats) was not read (the frozen C proxy runs with C(-6) and aborts on any connection to its
      stats port); null when it was read or O(stats_check) is false.
  returned: success
  type: str
client_hosts:
  description: Addresses on which the client ports were probed, best first (from C(--address) and C(-6)).
  returned: success
  type: list
  elements: str
  sample: [127.0.0.1]
bridge:
  description:
    - With O(handover=bridge), the handover's figures (also kept in the switch's C(state.json) entry).
    - C(backend) (V(nft) or V(iptables)), C(unit), C(binary), C(ports) (client and bridge port pairs),
      C(ready_ms) (bridge start until ready), C(refused) (connects refused on a client or bridge port
      while the table was there, counted by the kernel, 0 expected), C(redirected) (new connections
      sent to the bridge), C(served) (C(redirected) - C(refused)), C(dropped) (connections the old
      process still had when it was stopped), C(diverted_ms) (how long the redirect was in place),
      C(drain_ms) and C(drained) (from the redirect's removal until the bridge had no connection, or
      O(bridge_drain) ran out), C(cut_at_drain) (its connections still open when it was stopped),
      C(stop_ms), C(conntrack_stale_deleted) and C(conntrack_redirected_deleted) (conntrack entries deleted
      before the redirect and after the bridge), C(monotonic) (CLOCK_MONOTONIC of the steps, to line them up
      with a client-side probe on the host), C(errors).
  returned: when O(handover=bridge)
  type: dict
  sample: {backend: nft, refused: 0, redirected: 12, served: 12, dropped: 3, diverted_ms: 96.1, drain_ms: 180.2,
           drained: true, cut_at_drain: 0}
leftovers_removed:
  description: What an interrupted bridge handover had left on the host and this run removed (in check mode, found).
  returned: always
  type: list
  elements: str
refused:
  description:
    - On a refusal before any restart, which host shape was refused (C(dropin_overridden),
      C(exec_start_not_in_effect), C(bridge_unsupported), C(method_mismatch)), or C(locked) when another run holds
      the service (see O(lock_run_id)); the host was left as it was.
  returned: failure
  type: str
  sample: dropin_overridden
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import lock
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.privilege_drop import MODES as PRIVILEGE_DROP_MODES
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.switch import switch_service
from ansible_collections.mtproxy.cutover.plugins.module_utils._handover.bridge import Handover, clear_leftovers
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import ALL_METHODS
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.base import STOP_MODES
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import DEFAULT_STATE_DIR, StateDir


def bridge_for(params, runtime):
    """The bridge handover, or None. It checks the host once a restart is due."""
    if params['handover'] != 'bridge':
        return None
    if not runtime.supports_bridge:
        raise SwitchError('%s %s' % (runtime.name, runtime.bridge_refusal), refused='bridge_unsupported', changed=False)
    # Its lifetime bounds the bridge unit even if this module run dies: the stop (with its SIGKILL), the
    # listen wait, the /stats proof and a margin; the drain, its start and stop are added to it.
    return Handover(runtime, params['bridge_drain'], params['bridge_ready_timeout'],
                    lifetime_s=2 * params['stop_timeout'] + params['listen_timeout'] + 65)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
            target=dict(type='str', required=True, choices=['go', 'c']),
            binary=dict(type='path'),
            method=dict(type='str', choices=list(ALL_METHODS)),
            image=dict(type='str'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            listen_timeout=dict(type='float', default=15),
            stop_timeout=dict(type='float', default=30),
            force_restart=dict(type='bool', default=False),
            journal_lines=dict(type='int', default=0),
            stop_mode=dict(type='str', default='listeners_closed', choices=list(STOP_MODES)),
            stats_check=dict(type='bool', default=True),
            handover=dict(type='str', default='restart', choices=['restart', 'bridge']),
            bridge_drain=dict(type='float', default=10),
            bridge_ready_timeout=dict(type='float', default=15),
            privilege_drop=dict(type='str', choices=list(PRIVILEGE_DROP_MODES)),
            lock_run_id=dict(type='str'),
        ),
        required_if=[('target', 'go', ['binary', 'image'], True)],
        supports_check_mode=True,
    )
    params = module.params
    if not 0 <= params['bridge_drain'] <= 3600 or not 0 < params['bridge_ready_timeout'] <= 600:
        module.fail_json(msg='bridge_drain must be 0..3600 and bridge_ready_timeout 0..600 seconds')
    use_module(module)
    leftovers = []
    try:
        lock.check(StateDir(params['state_dir'], params['service']), params['lock_run_id'], check_mode=module.check_mode)
        leftovers = clear_leftovers(params['service'], params['state_dir'], module.check_mode)
        result = switch_service(params['service'], params['state_dir'], params['target'],
                                params['image'] or params['binary'], params['method'], params['docker_socket'],
                                bridge_factory=lambda runtime: bridge_for(params, runtime),
                                listen_timeout=params['listen_timeout'], stop_timeout=params['stop_timeout'],
                                check_mode=module.check_mode, force_restart=params['force_restart'],
                                journal_lines=params['journal_lines'], stop_mode=params['stop_mode'],
                                stats_check=params['stats_check'], privilege_drop=params['privilege_drop'])
    except CutoverError as exc:
        details = dict(exc.details)
        details['leftovers_removed'] = leftovers
        details.pop('diff', None)
        module.fail_json(msg=str(exc), **details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='switching %s failed on the host: %s' % (params['service'], exc))
    if not module._diff:
        result.pop('diff', None)
    result['leftovers_removed'] = leftovers
    for leftover in leftovers:
        module.warn('%s: %s' % ('found' if module.check_mode else 'removed', leftover))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
