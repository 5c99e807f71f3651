#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_prewarm
short_description: Pre-warm a staged MTProxy binary on free local ports as a transient systemd unit
description:
  - O(state=started) runs O(binary) with the frozen argv of the freeze manifest, with C(-p) and every
    C(-H) port replaced by free local ports and C(-l) (if present) pointed at
    C(<state_dir>/<service>/prewarm.log), as the transient unit C(<service>-prewarm.service). The unit gets
    the vendor unit's working directory, user, group, environment and environment files.
  - It then waits until C(/stats) answers HTTP 200 (and, for a Go body, C(has_current_config 1)) and every
    client port accepts TCP connections where the frozen flags bind it (C(--address), else 127.0.0.1, with
    C(-6) also ::1 when the host has it).
  - "If the binary exits during start-up, the module fails quoting its own output from the journal
    (for example C(flag provided but not defined: -p)). If it runs but never serves C(/stats) or never gets
    ready, it is stopped and the module fails saying so."
  - O(state=stopped) sends SIGTERM to the unit's main process, waits up to O(stop_timeout), and reports
    the exit status and the journal tail. A process that ignores SIGTERM is killed and the module fails.
  - No transient unit is left behind (stopped and reset-failed) except a successfully started one.
  - Secrets (C(-S), C(-P) values) never appear in results or messages.
version_added: 0.1.0
extends_documentation_fragment:
  - mtproxy.cutover.run_lock
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  state:
    description: Start the pre-warm instance or stop it.
    type: str
    default: started
    choices: [started, stopped]
  service:
    description: Name of the service as given to M(mtproxy.cutover.mtproxy_freeze).
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding the per-service freeze manifest.
    type: path
    default: /var/lib/mtproxy-cutover
  binary:
    description: Absolute path of the staged binary to pre-warm. Required when O(state=started) (or O(image)).
    type: path
  image:
    description:
      - The staged Go image (ID or reference) of a service frozen as a container or a compose service (its release
        must be of the kind the freeze recorded, an image there, O(binary) for a unit). The pre-warm is then a throwaway
        container C(<service>.mtproxy-cutover-prewarm) from that image with the frozen spec, in its own network
        namespace (C(none), no published ports), with a copy of its mounts' content instead of the mounts (the
        image's run script must not write into a production volume) and no restart policy; it is ready when
        C(/stats) answers with a loaded config, the client ports accept and the proxy runs the frozen argv.
    type: str
  docker_socket:
    description: Unix socket of the Docker engine, for a container.
    type: path
    default: /var/run/docker.sock
  privilege_drop:
    description:
      - How Go's privileges are kept at C's, judged once the pre-warm is ready against what C runs as (the freeze
        keeps C's processes' uid, gid, groups and capabilities from C(/proc)).
      - C(binary) refuses a Go with more privilege than C (root, a root group, capabilities C has not); the Go port
        ignores C(-u) and stays root, so it is refused on a C(-u nobody) host.
      - C(service) starts the pre-warm as the cutover drop-in will start Go, with C(User=)/C(Group=) of C's user and
        group and C(AmbientCapabilities=CAP_NET_BIND_SERVICE) for a client port below
        C(net.ipv4.ip_unprivileged_port_start); it refuses before starting anything when that user could not read
        the config, aes-pwd or secret file or write the C(-l) log. Systemd units only.
      - C(ignore) judges and returns it, never refuses.
      - Unset, nothing is judged (the roles always set it).
    type: str
    choices: [binary, service, ignore]
  ready_timeout:
    description: Seconds to wait for the started binary to become ready.
    type: float
    default: 15
  stop_timeout:
    description: Seconds to wait for the main process to exit after SIGTERM.
    type: float
    default: 10
requirements:
  - Python 3 on the managed host (standard library only).
  - systemd.
attributes:
  async:
    support: full
    description: Runs on the host like any module, in the background too (C(async)).
  check_mode:
    support: full
    description: Starts and stops nothing; O(state=started) returns the argv it would run (redacted).
  diff_mode:
    support: none
    description: Nothing on the host is edited, so there is no diff.
  platform:
    support: full
    description: Linux hosts with systemd and C(/proc).
    platforms: posix
notes:
  - The binary is started with the same privileges as production (root unless the vendor unit sets
    C(User=)); it binds the picked ports on all addresses, like production binds its ports.
'''

EXAMPLES = r'''
- name: Pre-warm the staged Go binary beside the running C proxy
  mtproxy.cutover.mtproxy_prewarm:
    binary: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy
  register: prewarm

- name: Stop the pre-warm instance
  mtproxy.cutover.mtproxy_prewarm:
    state: stopped
'''

RETURN = r'''
unit:
  description: Name of the transient unit.
  returned: always
  type: str
  sample: MTProxy-prewarm.service
stats_url:
  description: URL of the pre-warm instance's C(/stats).
  returned: state=started
  type: str
  sample: http://127.0.0.1:40123/stats
stats_port:
  description: Stats port given to the pre-warm instance (C(-p)).
  returned: state=started
  type: int
client_ports:
  description: Client ports given to the pre-warm instance (C(-H)), in argv order.
  returned: state=started
  type: list
  elements: int
ready_ms:
  description: Milliseconds from C(systemd-run) until C(/stats) was ready and every client port accepted.
  returned: state=started and not check mode
  type: float
pid:
  description: Main PID of the pre-warm instance.
  returned: state=started and not check mode
  type: int
client_hosts:
  description: Addresses on which the client ports were probed, best first.
  returned: state=started
  type: list
  elements: str
  sample: [127.0.0.1]
argv:
  description: The argv of the pre-warm instance, secrets redacted.
  returned: state=started
  type: list
  elements: str
exit_code:
  description: Exit status of the main process (null if it was killed by a signal or nothing ran).
  returned: state=stopped
  type: int
exit_signal:
  description: Signal that ended the main process, if any.
  returned: state=stopped
  type: int
stop_ms:
  description: Milliseconds from SIGTERM until the main process was gone (null if it was not running).
  returned: state=stopped
  type: float
exited:
  description: Whether the main process exited after SIGTERM within O(stop_timeout).
  returned: state=stopped
  type: bool
privileges:
  description:
    - With O(privilege_drop), how Go's processes compare with C's. C(verdict) C(same), C(differs) (another user or
      groups, no more power), C(more) (refused unless O(privilege_drop=ignore)) or C(unknown) (C's were not frozen);
      C(c) and C(go) one line each (C(uid 65534 (nobody), gid 65534 (nogroup), groups 65534 (nogroup), no
      capability)); C(more), C(differs) and C(granted) (capabilities Go holds only by the drop-in's grant) as lists;
      C(mode); C(refused); C(message).
  returned: state=started, with privilege_drop, not in check mode
  type: dict
journal:
  description: Last journal lines of the pre-warm unit, secrets redacted.
  returned: state=stopped or failure
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError, PrewarmError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import lock, prewarm, privilege_drop
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import DEFAULT_STATE_DIR, StateDir


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='started', choices=['started', 'stopped']),
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
            binary=dict(type='path'),
            image=dict(type='str'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            ready_timeout=dict(type='float', default=15),
            stop_timeout=dict(type='float', default=10),
            privilege_drop=dict(type='str', choices=list(privilege_drop.MODES)),
            lock_run_id=dict(type='str'),
        ),
        required_if=[('state', 'started', ['binary', 'image'], True)],
        supports_check_mode=True,
    )
    params = module.params
    use_module(module)
    try:
        lock.check(StateDir(params['state_dir'], params['service']), params['lock_run_id'], check_mode=module.check_mode)
        # The runtime is the one the service was frozen as; the release given must be of its kind.
        runtime = runtime_for(StateDir(params['state_dir'], params['service']), None, params['docker_socket'])
        given = 'image' if params['image'] else 'binary'
        if params['state'] == 'started' and given != runtime.release_kind:
            raise PrewarmError('%s was frozen as a %s service, whose release is a Go %s: pass %s, not %s'
                               % (runtime.name, runtime.kind, runtime.release_kind, runtime.release_kind, given),
                               changed=False)
        if params['state'] == 'started' and params['privilege_drop']:
            try:
                runtime.service_lines = privilege_drop.service_lines(params['privilege_drop'], runtime.manifest,
                                                                     runtime.kind)
            except privilege_drop.PrivilegeDropError as exc:
                raise PrewarmError('%s: %s; nothing was started' % (runtime.name, exc), refused='privilege_drop',
                                   changed=False)
        candidate = runtime.candidate('prewarm')
        if params['state'] == 'started':
            result = prewarm.start(candidate, params['image'] or params['binary'], params['ready_timeout'],
                                   check_mode=module.check_mode, privilege_drop=params['privilege_drop'])
        else:
            result = prewarm.stop(candidate, params['stop_timeout'], check_mode=module.check_mode)
    except CutoverError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='pre-warm of %s failed on the host: %s' % (params['service'], exc))
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
