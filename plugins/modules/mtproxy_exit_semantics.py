#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_exit_semantics
short_description: Compare how the staged Go binary and the frozen C binary end, as systemd records it
version_added: 0.1.0
description:
  - The runbook's precondition "exit semantics remain contract-compatible", checked on the host. Each case is
    provoked on the frozen C binary and on O(binary), each started as M(mtproxy.cutover.mtproxy_prewarm) starts
    it (the transient unit C(<service>-exit-check.service) with the service's credentials, limits and sandboxing,
    the frozen argv on free local ports; Go with the C(User=)/C(Group=) of O(privilege_drop=service)).
  - "The cases: V(sigterm) (SIGTERM once ready: C(systemctl stop)), V(bad_flag) (an unknown flag), V(config_missing)
    (a backend config file that does not exist), V(config_unreadable) (a directory as the backend config),
    V(client_port_busy) and V(stats_port_busy) (a socket of the module's own listens on the port first)."
  - How each ended is compared the way systemd treats it (exit status 0 and SIGHUP, SIGINT, SIGTERM, SIGPIPE are
    clean, plus the unit's C(SuccessExitStatus=); C(RestartPreventExitStatus=) stops C(Restart=)). An end of
    another class (clean against failure, or one that keeps running) costs what O(levels) says; an end of the
    same class with another status only warns.
  - The module fails, naming every difference, when one costs V(refuse). Nothing is left behind (the unit is
    stopped and reset, the sockets closed, the scratch directory C(/run/mtproxy-cutover/exit-check) removed).
  - Systemd services only; for a container or a compose service it checks nothing and says so (RV(verdict)
    V(not_checked)).
  - Secrets never appear in results or messages.
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
    description: Directory holding the per-service freeze manifest.
    type: path
    default: /var/lib/mtproxy-cutover
  binary:
    description: Absolute path of the staged Go binary on the host.
    type: path
    required: true
  privilege_drop:
    description: As M(mtproxy.cutover.mtproxy_prewarm)'s option; V(service) starts Go with C's user and group.
    type: str
    choices: [binary, service, ignore]
  levels:
    description:
      - What a difference of class costs per case, V(refuse) or V(warn). Cases left out keep their default
        (V(stats_port_busy) warns, every other case refuses).
    type: dict
    default: {}
  warn_only:
    description: Every difference only warns (C(mtproxy_cutover_exit_semantics=warn)); O(levels) is then ignored.
    type: bool
    default: false
  case_timeout:
    description: Seconds a provoked binary may run before it counts as still running (and is stopped).
    type: float
    default: 3
  ready_timeout:
    description: Seconds each binary may take to get ready before SIGTERM (case V(sigterm)).
    type: float
    default: 15
  stop_timeout:
    description: Seconds each binary may take to exit after SIGTERM.
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
    support: none
    description: Starts the binaries to see how they end; in check mode it starts nothing and returns nothing.
  diff_mode:
    support: none
    description: Nothing on the host is edited.
  platform:
    support: full
    description: Linux hosts with systemd and C(/proc).
    platforms: posix
notes:
  - Measured on the real builds (tests/fixtures/real-stats/README.md, "Exit semantics and privileges") the C and
    the Go port end alike but in two cases; with the defaults that gives RV(verdict=warn).
'''

EXAMPLES = r'''
- name: Compare how the staged Go binary ends with how C ends
  mtproxy.cutover.mtproxy_exit_semantics:
    binary: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy
  register: exit_semantics
'''

RETURN = r'''
verdict:
  description: V(ok) (every case ends alike), V(warn), V(refuse) (the module then fails) or V(not_checked).
  returned: always
  type: str
cases:
  description:
    - One entry per case, C(case), C(c) and C(go) (C(kind) exited, killed, dumped, running or unknown; C(status) the
      exit status or signal number; C(text)), C(verdict) (same, equivalent, differs, unknown), C(level) (ok, warn,
      refuse) and C(message).
  returned: when checked
  type: list
  elements: dict
refusals:
  description: The messages of the differences that cost V(refuse).
  returned: when checked
  type: list
  elements: str
warnings_found:
  description: The messages of the differences that only warn (each is also a task warning).
  returned: when checked
  type: list
  elements: str
reason:
  description: Why nothing was checked (RV(verdict=not_checked)).
  returned: when not checked
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import exit_check, lock, privilege_drop
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import exit_semantics
from ansible_collections.mtproxy.cutover.plugins.module_utils._runtime.choice import runtime_for
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import DEFAULT_STATE_DIR, StateDir


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default=DEFAULT_STATE_DIR),
            binary=dict(type='path', required=True),
            privilege_drop=dict(type='str', choices=list(privilege_drop.MODES)),
            levels=dict(type='dict', default={}),
            warn_only=dict(type='bool', default=False),
            case_timeout=dict(type='float', default=3),
            ready_timeout=dict(type='float', default=15),
            stop_timeout=dict(type='float', default=10),
            lock_run_id=dict(type='str'),
        ),
        supports_check_mode=False,
    )
    params = module.params
    bad = sorted('%s=%s' % (case, level) for case, level in params['levels'].items()
                 if case not in exit_semantics.CASE_TEXT or level not in ('refuse', 'warn'))
    if bad:
        module.fail_json(msg='levels: each key must be a case (%s) and each value refuse or warn, got %s'
                         % (', '.join(exit_semantics.CASE_TEXT), ', '.join(bad)))
    if not 0 < params['case_timeout'] <= 60:
        module.fail_json(msg='case_timeout must be more than 0 and at most 60 seconds')
    use_module(module)
    store = StateDir(params['state_dir'], params['service'])
    try:
        lock.check(store, params['lock_run_id'])
        runtime = runtime_for(store)
        if runtime.kind != 'systemd':
            module.exit_json(changed=False, verdict='not_checked',
                             reason='%s is a %s service: its exit semantics are not provoked (systemd units only)'
                             % (runtime.name, runtime.kind))
        if params['privilege_drop']:
            runtime.service_lines = privilege_drop.service_lines(params['privilege_drop'], runtime.manifest,
                                                                 runtime.kind)
        levels = dict((case, 'warn') for case in exit_semantics.CASE_TEXT) if params['warn_only'] else params['levels']
        result = exit_check.check(runtime, params['binary'], levels, params['case_timeout'],
                                  params['ready_timeout'], params['stop_timeout'])
    except (CutoverError, privilege_drop.PrivilegeDropError) as exc:
        module.fail_json(msg='exit semantics of %s: %s' % (params['service'], exc),
                         **getattr(exc, 'details', {}))
    except (IOError, OSError) as exc:
        module.fail_json(msg='exit semantics of %s could not be checked on the host: %s' % (params['service'], exc))
    result['warnings_found'] = result.pop('warnings')
    for warning in result['warnings_found']:
        module.warn(warning)
    if result['verdict'] == 'refuse':
        module.fail_json(msg='%s: Go does not end as C does: %s. Way forward: a Go build that ends as C does, or '
                             'mtproxy_cutover_exit_semantics=warn to go on (the report records every difference)'
                         % (params['service'], '; '.join(result['refusals'])), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
