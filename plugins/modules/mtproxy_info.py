#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_info
short_description: Tell which binary an MTProxy service runs now, proven from the host
version_added: "0.1.0"
description:
  - Reads what the service O(service) runs at this moment and proves it, the way
    M(mtproxy.cutover.mtproxy_switch) proves a switch. It never changes anything.
  - For a systemd service, RV(running) is V(go) or V(c) when the unit is active, its main process
    runs the frozen argv with the program of that binary (the frozen C binary, or a Go release the
    service's C(state.json) names; with the C(symlink) method also C(/proc/PID/exe)), and C(/stats)
    answers as that binary.
  - For a service frozen as a container (C(method=container)), RV(running) is V(go) or V(c) when the
    container runs the frozen C image or a Go image C(state.json) names (by ID), the proxy inside runs
    the frozen argv, and C(/stats) read inside the container's network namespace answers as that binary.
  - C(/stats) is never read when the frozen C argv has C(-6) (the C proxy aborts on any connection to
    its stats port); the argv proof then stands alone (RV(stats_skipped)).
  - Anything else is V(unknown), with the reason in RV(reason) - the unit is not active, the argv differs
    from the frozen one, C(/stats) answers as the other binary, the host was never frozen.
  - The playbooks run it on every host at the end of a run; the report's result of each host comes
    from it.
  - Secrets (C(-S), C(-P) values) never appear in the result.
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
requirements:
  - Python 3 on the managed host (standard library only); root, to read the state directory and, for
    a container, to enter its network namespace.
options:
  service:
    description: Name of the service as given to M(mtproxy.cutover.mtproxy_freeze) (a container's name with C(method=container)).
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding the per-service freeze manifest and switch state.
    type: path
    default: /var/lib/mtproxy-cutover
  docker_socket:
    description: Unix socket of the Docker engine (or Podman's Docker-compatible socket), for a container.
    type: path
    default: /var/run/docker.sock
  stats_check:
    description: Prove the binary by C(/stats) too. With V(false) the argv (and image) proof stands alone.
    type: bool
    default: true
  timeout:
    description: Seconds C(/stats) may take to answer with a full body (retried within this time).
    type: float
    default: 5.0
attributes:
  async:
    description: Runs on the host like any module.
    support: full
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing is changed, so there is no diff.
    support: none
  platform:
    description: POSIX hosts with Python 3 and systemd (or a Docker engine for containers).
    support: full
    platforms: posix
seealso:
  - module: mtproxy.cutover.mtproxy_switch
'''

EXAMPLES = r'''
- name: Read what the proxy runs now
  mtproxy.cutover.mtproxy_info:
    service: MTProxy
  register: proxy_now

- name: Say it
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} runs {{ proxy_now.running }}{{ (': ' ~ proxy_now.reason) if proxy_now.reason else '' }}"
'''

RETURN = r'''
running:
  description: What the service runs now, proven; V(unknown) when it cannot be proven (see RV(reason)).
  returned: always
  type: str
  choices: [go, c, unknown]
  sample: go
method:
  description: How the service is pointed at its binary (C(dropin), C(symlink) or C(container)); null when never frozen.
  returned: always
  type: str
  sample: dropin
binary:
  description: The binary proven to run (a path), or the image ID a container runs; null when unknown.
  returned: always
  type: str
  sample: /opt/MTProxy/releases/go-0123456789ab/mtproto-proxy-go
main_pid:
  description: The main process of the unit (the container's init process for a container); null when none.
  returned: always
  type: int
argv_matches:
  description: The process runs the frozen argv (with the program of the binary it runs).
  returned: always
  type: bool
stats_flavor:
  description: Who answered C(/stats) (V(c) or V(go)); null when it was not read or did not answer.
  returned: always
  type: str
stats_skipped:
  description: Why C(/stats) was not read (the frozen C argv has C(-6), or O(stats_check=false)); null when it was.
  returned: always
  type: str
recorded:
  description: What the service's C(state.json) says it runs (C(current)); null when it was never switched.
  returned: always
  type: str
  sample: go
frozen:
  description: A freeze manifest exists for the service.
  returned: always
  type: bool
reason:
  description: Why RV(running) is V(unknown) (redacted); null when it is proven.
  returned: always
  type: str
  sample: "the unit is not active: MTProxy.service is inactive/dead"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.info import service_info
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module


def main():
    module = AnsibleModule(
        argument_spec=dict(
            service=dict(type='str', default='MTProxy'),
            state_dir=dict(type='path', default='/var/lib/mtproxy-cutover'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            stats_check=dict(type='bool', default=True),
            timeout=dict(type='float', default=5.0),
        ),
        supports_check_mode=True,
    )
    use_module(module)
    params = module.params
    if not 0 < params['timeout'] <= 600:
        module.fail_json(msg='timeout must be more than 0 and at most 600 seconds')
    module.exit_json(**service_info(params['service'], params['state_dir'], params['docker_socket'],
                                    params['stats_check'], params['timeout']))


if __name__ == '__main__':
    main()
