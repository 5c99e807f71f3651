#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_lock
short_description: Take or give back the run lock of an MTProxy service, so that one run at a time changes it
description:
  - The lock is the file C(<state_dir>/<service>/run.lock) on the host itself (so runs from two controllers see
    each other), naming its holder - run id, playbook, controller host, user, the C(ansible-playbook) process (pid
    and its start time) - when it was taken and until when its lease runs.
  - O(state=acquired) takes the lock, or renews it when this run already holds it. When another run holds it the
    task fails (RV(refused=locked)) naming that run and the way forward, and changes nothing - unless the lock is
    stale or is taken over on purpose.
  - A lock is stale when its lease ran out (O(lease)), or when it was taken from this same controller by an
    C(ansible-playbook) process that no longer runs (killed, its machine rebooted). The action plugin checks that
    on the controller and breaks such a lock, saying so (RV(broken)). A lock of another controller within its
    lease is broken only when O(break_run) names its run id.
  - O(takeover=true) takes the lock from a live holder (rollback.yml's emergency path, C(mtproxy_cutover_lock_takeover));
    the lock then records whom it was taken from (RV(taken_over_from)), and the run that held it finds it gone at
    its next change (M(mtproxy.cutover.mtproxy_freeze), M(mtproxy.cutover.mtproxy_prewarm) and
    M(mtproxy.cutover.mtproxy_switch) check it with their O(mtproxy.cutover.mtproxy_switch#module:lock_run_id)) and
    stops there for that host.
  - O(state=held) changes nothing but the lease, and fails (RV(refused=locked)) when this run no longer holds the
    lock, as the modules that change a host do. A run checks it before it counts a host as kept on Go, so that an
    observation window a rollback took the host in is not judged as this run's.
  - O(state=released) gives the lock back if this run holds it; a lock another run holds now is left as it is.
  - This is an action plugin around a module of the same name. The plugin adds the controller's identity and
    checks the holder's process on the controller; the module reads and writes the lock on the host.
version_added: 0.2.0
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  state:
    description: Take (or renew) the lock, check that this run still holds it (renewing its lease), or give it back.
    type: str
    choices: [acquired, held, released]
    default: acquired
  service:
    description: Name of the service, as given to M(mtproxy.cutover.mtproxy_freeze).
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding the per-service state.
    type: path
    default: /var/lib/mtproxy-cutover
  run_id:
    description: The run taking or giving back the lock.
    type: str
    required: true
  playbook:
    description: Which playbook the run is (C(cutover), C(rollback), C(drill)), for the holder's description.
    type: str
    default: ''
  lease:
    description:
      - Seconds the lock stays valid without a step of its run renewing it (every checked change renews it).
    type: int
    default: 14400
  takeover:
    description: Take the lock from a live holder (the emergency rollback).
    type: bool
    default: false
  break_run:
    description: Break the lock if the run holding it has this run id (its controller is known to be gone).
    type: str
  controller:
    description: Filled in by the action plugin (the controller's host name); not to be set.
    type: str
  user:
    description: Filled in by the action plugin (the user running C(ansible-playbook)); not to be set.
    type: str
  pid:
    description: Filled in by the action plugin (the C(ansible-playbook) process); not to be set.
    type: int
  pid_start:
    description: Filled in by the action plugin (start time of that process, in clock ticks since boot); not to be set.
    type: int
requirements:
  - Python 3 on the managed host (standard library only).
attributes:
  action:
    support: full
    description: The controller's identity and the check of a holder's process on it are done by the action plugin.
  async:
    support: none
    description: Part of a run's control flow; it takes milliseconds.
  check_mode:
    support: full
    description: Says whether the lock would be taken (or fails as a real run would), writes nothing.
  diff_mode:
    support: none
    description: Nothing to compare.
  platform:
    support: full
    description: Any POSIX host.
    platforms: posix
'''

EXAMPLES = r'''
- name: Take the run lock before the first change
  mtproxy.cutover.mtproxy_lock:
    run_id: "{{ preflight_run.id }}"
    playbook: cutover

- name: Give it back after the last one
  mtproxy.cutover.mtproxy_lock:
    run_id: "{{ preflight_run.id }}"
    state: released
'''

RETURN = r'''
holder:
  description: The lock as it is now (run_id, playbook, controller, user, pid, pid_start, taken_at, lease_until_at, taken_over_from).
  returned: success
  type: dict
acquired:
  description: Whether this run holds the lock now (O(state=acquired), O(state=held)).
  returned: success
  type: bool
renewed:
  description: The run already held it; its lease was renewed.
  returned: success
  type: bool
released:
  description: The lock was given back (O(state=released)).
  returned: success
  type: bool
broken:
  description: Why a lock of another run was replaced without a takeover (its lease ran out, its controller process is gone, O(break_run)); null otherwise.
  returned: success
  type: str
previous:
  description: The lock this run replaced (broken or taken over), as it was; null when there was none or the run renewed its own.
  returned: success
  type: dict
taken_over_from:
  description: The holder the lock was taken from (O(takeover)); null otherwise.
  returned: success
  type: dict
locked_by:
  description: On RV(refused=locked), the run that holds the lock.
  returned: failure
  type: dict
refused:
  description: C(locked) when another run holds the lock.
  returned: failure
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import lock
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import DEFAULT_STATE_DIR, StateDir


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='acquired', choices=['acquired', 'held', 'released']),
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
            run_id=dict(type='str', required=True),
            playbook=dict(type='str', default=''),
            lease=dict(type='int', default=lock.DEFAULT_LEASE_S),
            takeover=dict(type='bool', default=False),
            break_run=dict(type='str'),
            controller=dict(type='str'),
            user=dict(type='str'),
            pid=dict(type='int'),
            pid_start=dict(type='int'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['lease'] <= 0:
        module.fail_json(msg='lease must be a positive number of seconds')
    use_module(module)
    store = StateDir(params['state_dir'], params['service'])
    try:
        if params['state'] == 'released':
            done = lock.release(store, params['run_id'], module.check_mode)
            module.exit_json(changed=done['released'], released=done['released'], holder=done['holder'],
                             acquired=False, renewed=False, broken=None, previous=None, taken_over_from=None)
        if params['state'] == 'held':
            holder = lock.check(store, params['run_id'], check_mode=module.check_mode)
            module.exit_json(changed=False, acquired=True, renewed=True, released=False, holder=holder,
                             broken=None, previous=None, taken_over_from=None)
        holder = dict((key, params[key]) for key in lock.HOLDER_FIELDS)
        got = lock.acquire(store, holder, params['lease'], params['takeover'], params['break_run'],
                           check_mode=module.check_mode)
    except CutoverError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except (IOError, OSError) as exc:
        module.fail_json(msg='the run lock of %s cannot be taken on the host: %s' % (params['service'], exc))
    module.exit_json(changed=not got['renewed'], acquired=True, renewed=got['renewed'], released=False,
                     holder=got['holder'], broken=got['broken'], previous=got['previous'],
                     taken_over_from=got['holder'].get('taken_over_from') if got['taken_over'] else None)


if __name__ == '__main__':
    main()
