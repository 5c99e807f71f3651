#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_stats
short_description: Read the /stats page of a local MTProxy (C or Go) once
version_added: "0.1.0"
description:
  - Fetches C(/stats) of the MTProxy running on this host once, tells which binary wrote it (the C
    original or its Go port) from the body itself, and returns the parsed values and the normalised
    SLO metrics (see C(docs/slo-metrics.md)).
  - Only loopback addresses are queried; both binaries serve C(/stats) on 127.0.0.1 only.
  - Read-only; runs the same in check mode.
  - Fails when the page cannot be fetched or is not a C(/stats) answer; the result then names the
    error class in RV(error).
options:
  timeout:
    description:
      - Seconds for the whole request (connect, headers and body).
    type: float
    default: 2.0
  metric_overrides:
    description:
      - 'Per-metric replacement of the key table, as C({metric: {c: SPEC, go: SPEC}}).'
      - 'SPEC is a key name, C({key: NAME}), C({sum: [NAMES]}), C({no_signal: REASON}) or null (no signal).'
      - A new metric may be added by also giving C(kind) (C(counter), C(gauge), C(flag) or C(identity)).
    type: dict
    default: {}
  body:
    description:
      - Also return the page as read (RV(body)), with the value of C(aes_pwd_hash) replaced; C(drill.yml) counts
        its lines for the Go port's drill report.
    type: bool
    default: false
requirements:
  - Python 3 on the managed host (standard library only).
extends_documentation_fragment:
  - mtproxy.cutover.stats_endpoint
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
'''

EXAMPLES = r'''
- name: Read /stats of the proxy on its default stats port
  mtproxy.cutover.mtproxy_stats:
  register: stats

- name: Read /stats on another stats port with a short timeout
  mtproxy.cutover.mtproxy_stats:
    url: http://127.0.0.1:2398/stats
    timeout: 1

- name: Count route errors only as Go forwarding failures
  mtproxy.cutover.mtproxy_stats:
    metric_overrides:
      forward_failures:
        go: dataplane_packets_route_errors
'''

RETURN = r'''
flavor:
  description: Which binary wrote the page, C(c) or C(go).
  returned: success
  type: str
  sample: go
raw:
  description:
    - Every key of the page with its typed value (int, float, list of numbers for C multi-value lines,
      text kept as written). Section markers are not keys. C(aes_pwd_hash) is redacted.
  returned: success
  type: dict
  sample: {"has_current_config": 1, "ingress_accepted_connections": 250, "forward_last_error": ""}
sections:
  description: C section names with the keys inside each (empty for Go).
  returned: success
  type: dict
  sample: {"connections": ["active_connections", "active_dh_connections"]}
metrics:
  description: Normalised SLO metrics; null where the flavour has no signal or the key is missing.
  returned: success
  type: dict
  sample: {"accepted_connections": 250, "dropped_packets": 100, "ready": 1}
no_signal:
  description: Metrics this flavour cannot report, with the reason.
  returned: success
  type: dict
  sample: {"uptime": "Go /stats has no uptime; restarts show as counter resets"}
invalid:
  description: Metrics whose key is missing or not a number in this page.
  returned: success
  type: dict
  sample: {}
scrape:
  description: The request itself (status, elapsed_ms, content_type, body_bytes, error, detail).
  returned: always
  type: dict
  sample: {"status": 200, "elapsed_ms": 1.2, "error": null}
body:
  description: The page as read, C(aes_pwd_hash) redacted (O(body=true)).
  returned: success and O(body=true)
  type: str
  sample: "pid\t32364\nstart_time\t1795744873\n"
error:
  description:
    - Error class when the page could not be read, one of C(refused), C(timeout), C(connection),
      C(http_status), C(not_stats), C(truncated), C(too_large), C(garbage), C(empty), C(unknown_flavor).
  returned: failure
  type: str
  sample: refused
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.container_proc import container_namespace
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import HostError
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.metrics import normalize
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.scrape import fetch
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import StatsParseError, parse_stats, redacted_body


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', default='http://127.0.0.1:8888/stats'),
            timeout=dict(type='float', default=2.0),
            max_bytes=dict(type='int', default=1048576),
            container=dict(type='str'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            metric_overrides=dict(type='dict', default={}),
            body=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    use_module(module)
    p = module.params
    try:
        with container_namespace(p['container'], p['docker_socket']):
            result = fetch(p['url'], timeout=p['timeout'], max_bytes=p['max_bytes'])
    except (ValueError, HostError) as exc:
        module.fail_json(msg=str(exc))
    scrape = result.to_dict()
    if not result.ok:
        module.fail_json(msg='cannot read %s: %s' % (p['url'], result.detail), error=result.error, scrape=scrape)
    try:
        parsed = parse_stats(result.body)
        norm = normalize(parsed, overrides=p['metric_overrides'])
    except StatsParseError as exc:
        module.fail_json(msg='%s is not a /stats page: %s' % (p['url'], exc), error=exc.kind, scrape=scrape)
    except ValueError as exc:
        module.fail_json(msg=str(exc), scrape=scrape)
    extra = {'body': redacted_body(result.body)} if p['body'] else {}
    module.exit_json(changed=False, flavor=parsed.flavor, raw=parsed.redacted_values(), sections=parsed.sections,
                     metrics=norm['metrics'], no_signal=norm['no_signal'], invalid=norm['invalid'], scrape=scrape,
                     **extra)


if __name__ == '__main__':
    main()
