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
    old one is gone; see O(handover) for when that may be), measures how
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
  - Secrets (C(-S), C(-P) values) never appear in results, diffs or messages.
version_added: 0.1.0
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
      - Absolute path of the staged Go binary on the host. Required when O(target=go).
      - Ignored for O(target=c), which always returns to the frozen C binary of the manifest.
    type: path
  method:
    description:
      - V(dropin) writes or removes C(/etc/systemd/system/<unit>.d/99-mtproxy-cutover.conf).
      - V(symlink) repoints the C(ExecStart) binary path, which must already be a symlink.
      - Unset, the method is the one C(state.json) records while the service is on Go or is switched back to C
        (O(target=c)), else V(dropin). The method a service was flipped with is always read back from
        C(state.json); a value that contradicts it is refused (C(refused=method_mismatch)) before anything
        changes, since pointing back another way would leave the service on Go.
    type: str
    choices: [dropin, symlink]
  listen_timeout:
    description: Seconds to wait once the old process is gone for the client port, then the stats port, to accept.
    type: float
    default: 15
  stop_timeout:
    description:
      - Seconds to wait for the old main process to exit once the restart began. Past it the unit's
        processes are killed with SIGKILL through C(systemctl kill) (a binary hung on SIGTERM cannot
        block a switch).
    type: float
    default: 30
  handover:
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
attributes:
  check_mode:
    support: full
    description: Reports whether a switch is needed and the diff; writes nothing and restarts nothing.
  diff_mode:
    support: full
    description: Before/after of the drop-in (secrets redacted) or of the symlink target.
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
    - C(stop_ms) from C(systemctl restart) until the old main process was gone, C(start_ms) from then
      until the client port accepted, C(unavailable_ms) from the restart until the client port
      accepted, C(stats_ms) from the old process gone until the stats port accepted,
      C(killed_after_stop_timeout) whether O(stop_timeout) ran out.
    - C(spawn_ms) is the part of C(start_ms) before systemd forked the new main process (its
      C(ExecMainStartTimestamp)), C(binary_start_ms) the rest, the binary's own start until the
      client port accepted; both null when systemd gives no time stamp from this restart.
      C(spawn_ms) is 0 when the old process was seen gone only after that fork.
    - C(handover) the O(handover) used, C(listeners_closed_ms) from the stop until the client port refused
      while the old process still ran (null if it exited first or with O(handover=wait_exit)),
      C(ended_after_listeners_closed) whether the old processes were then ended with SIGKILL.
  returned: always
  type: dict
  sample: {stop_ms: 4.1, start_ms: 14.2, unavailable_ms: 18.3, stats_ms: 15.0, spawn_ms: 3.1, binary_start_ms: 11.1,
           killed_after_stop_timeout: false, handover: listeners_closed, listeners_closed_ms: null, ended_after_listeners_closed: false}
argv_matches:
  description: Whether the live main process runs the expected argv (frozen argv, program replaced for Go).
  returned: always
  type: bool
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
refused:
  description:
    - On a refusal before any restart, which host shape was refused (C(dropin_overridden),
      C(exec_start_not_in_effect)); the host was left as it was.
  returned: failure
  type: str
  sample: dropin_overridden
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils.switch import SwitchError, switch_service


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default='/var/lib/mtproxy-cutover'),
            target=dict(type='str', required=True, choices=['go', 'c']),
            binary=dict(type='path'),
            method=dict(type='str', choices=['dropin', 'symlink']),
            listen_timeout=dict(type='float', default=15),
            stop_timeout=dict(type='float', default=30),
            force_restart=dict(type='bool', default=False),
            journal_lines=dict(type='int', default=0),
            handover=dict(type='str', default='listeners_closed', choices=['listeners_closed', 'wait_exit']),
            stats_check=dict(type='bool', default=True),
        ),
        required_if=[('target', 'go', ['binary'])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = switch_service(params['service'], params['state_dir'], params['target'], params['binary'],
                                params['method'], params['listen_timeout'], params['stop_timeout'],
                                check_mode=module.check_mode, force_restart=params['force_restart'],
                                journal_lines=params['journal_lines'], handover=params['handover'],
                                stats_check=params['stats_check'])
    except SwitchError as exc:
        details = dict(exc.details)
        details.pop('diff', None)
        module.fail_json(msg=str(exc), **details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='switching %s failed on the host: %s' % (params['service'], exc))
    if not module._diff:
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
