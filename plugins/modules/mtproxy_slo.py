#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: mtproxy_slo
short_description: Judge whether the local MTProxy (C or Go) meets its SLO over a window of /stats samples
version_added: "0.1.0"
description:
  - Samples C(/stats) of the MTProxy running on this host O(samples) times, O(interval) seconds apart,
    and judges the window. Counters are cumulative, so their increase over the window is judged.
  - The verdict is C(pass), C(fail) or C(inconclusive). C(inconclusive) means there was nothing to judge
    (no or too little client traffic); the caller decides what that means. The module itself never
    fails on a C(fail) verdict; only bad options make it fail.
  - A restart inside the window (on C a new pid or start time or uptime going back, on Go a counter reset), a Go answer with
    C(has_current_config 0) (when O(require_ready)), more than O(max_consecutive_errors) failed
    scrapes in a row, or a broken threshold is a C(fail).
  - Metrics are mapped per flavour by the table in C(docs/slo-metrics.md); metrics a flavour cannot
    report are listed in RV(no_signal), never reported as zero.
  - Only loopback addresses are queried. Read-only; runs the same in check mode.
  - Takes at most about O(samples) x (O(interval) + O(timeout)) seconds.
options:
  samples:
    description:
      - Number of scrapes in the window (1 to 3600). Counters need at least 2 successful ones.
    type: int
    default: 10
  interval:
    description:
      - Seconds from the start of one scrape to the start of the next (0 to 600).
    type: float
    default: 1.0
  timeout:
    description:
      - Seconds for each scrape as a whole (connect, headers and body), above 0 and at most 60.
    type: float
    default: 2.0
  thresholds:
    description:
      - Limits replacing the defaults, by name; null disables a rule. Defaults and their source are
        listed in C(docs/slo-metrics.md).
      - C(min_success_rate) (0.98) share of client packets forwarded, not dropped, judged from
        C(min_packets) (50) packets on.
      - C(max_success_rate_drop) (0.02) largest drop of that share below the O(baseline).
      - C(max_bad_handshake_ratio) (null) share of accepted connections with a bad handshake, and
        C(max_bad_handshake_ratio_increase) (0.02) its largest rise above a baseline of the same flavour;
        judged from C(min_connections) (50) connections on.
      - C(max_restarts) (0), C(min_backend_healthy) (1, at the end of the window),
        C(max_accept_failures) (null), C(max_bad_value_samples) (0), C(max_scrape_errors) (null, total).
    type: dict
    default: {}
  baseline:
    description:
      - 'What to compare with, from another host or from before the flip. Accepts exactly the
        RV(summary) returned by an earlier run, a whole earlier result (its C(summary) is used), or a
        flat dict such as C({success_rate: 0.995, packets: 1000}).'
      - Only ratios that mean the same on both flavours are compared across flavours (packet success
        rate); the bad-handshake ratio only against a baseline of the same flavour.
    type: dict
  max_consecutive_errors:
    description:
      - Most scrapes in a row that may fail (refused, timeout, non-200, HTML, truncated, too large,
        garbage). One more ends the window early with a C(fail).
    type: int
    default: 2
  require_ready:
    description:
      - Fail when a scrape shows the proxy without a loaded config (Go C(has_current_config 0)).
    type: bool
    default: true
  metric_overrides:
    description:
      - 'Per-metric replacement of the key table, as C({metric: {c: SPEC, go: SPEC}}); see
        M(mtproxy.cutover.mtproxy_stats).'
    type: dict
    default: {}
requirements:
  - Python 3 on the managed host (standard library only).
extends_documentation_fragment:
  - mtproxy.cutover.stats_endpoint
seealso:
  - module: mtproxy.cutover.mtproxy_stats
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
'''

EXAMPLES = r'''
- name: Judge the C binary before the flip (30 s)
  mtproxy.cutover.mtproxy_slo:
    samples: 31
    interval: 1
  register: before

- name: Judge Go after the flip against the C window
  mtproxy.cutover.mtproxy_slo:
    samples: 61
    interval: 1
    baseline: "{{ before.summary }}"
  register: after

- name: Roll back on a failed verdict
  ansible.builtin.fail:
    msg: "{{ after.failures }}"
  when: after.verdict == 'fail'

- name: Stricter packet success rate, backend check off
  mtproxy.cutover.mtproxy_slo:
    url: http://127.0.0.1:2398/stats
    thresholds:
      min_success_rate: 0.995
      min_backend_healthy: null
'''

RETURN = r'''
verdict:
  description: C(pass), C(fail) or C(inconclusive) (nothing to judge).
  returned: success
  type: str
  sample: pass
failures:
  description: Broken rules, each with C(metric), C(observed), C(limit), C(rule) (in words) and maybe C(detail).
  returned: success
  type: list
  elements: dict
  sample: [{"metric": "restart", "observed": 1, "limit": 0, "rule": "the proxy must not restart inside the window",
            "detail": "samples 3->4: counter client_packets went down 100 -> 0 (reset)"}]
flavor:
  description: Flavour of the last successful scrape, C(c) or C(go); null when none succeeded.
  returned: success
  type: str
  sample: c
samples:
  description:
    - One entry per scrape, C(index), C(t) (seconds since the first), C(ok); successful ones add
      C(flavor), C(metrics), C(invalid) and C(rates) (per second since the previous one); failed ones
      add C(error) and C(detail).
  returned: success
  type: list
  elements: dict
summary:
  description:
    - The window per metric (C(first), C(last), counters C(delta) and C(rate), gauges C(min)/C(max),
      or C(no_signal)), C(derived) ratios (C(success_rate), C(packets), C(bad_handshake_ratio),
      C(connections)), C(flavor), C(window_s), C(samples_ok), C(samples_total), C(events).
      Pass it as O(baseline) to another run.
  returned: success
  type: dict
scrape_errors:
  description: C(total), C(by_kind), C(max_consecutive) and C(limit) of failed scrapes.
  returned: success
  type: dict
  sample: {"total": 1, "by_kind": {"timeout": 1}, "max_consecutive": 1, "limit": 2}
bad_values:
  description: Keys missing or not numeric in successful scrapes (C(index), C(metric), C(problem)).
  returned: success
  type: list
  elements: dict
restarts:
  description: Restarts seen, C(between) two sample indexes with the C(evidence).
  returned: success
  type: list
  elements: dict
no_signal:
  description: Metrics the flavour cannot report, with the reason.
  returned: success
  type: dict
  sample: {"accepted_connections": "C with -M >= 1 exposes no cumulative client-accept counter"}
notes:
  description: Rules that could not be judged and why.
  returned: success
  type: list
  elements: str
inconclusive_reasons:
  description: Why the verdict is C(inconclusive); empty otherwise.
  returned: success
  type: list
  elements: str
judged:
  description: Rules that had data and were judged.
  returned: success
  type: list
  elements: str
baseline_comparison:
  description: Each comparison with the baseline (C(metric), C(baseline), C(observed), C(limit), C(result) or C(reason)).
  returned: success
  type: list
  elements: dict
thresholds:
  description: The thresholds in effect (defaults with O(thresholds) applied).
  returned: success
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.container_proc import container_namespace
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import HostError
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import collect_window, judge_window
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.scrape import check_loopback_url


def _check_bounds(module, p):
    if not 1 <= p['samples'] <= 3600:
        module.fail_json(msg='samples must be between 1 and 3600')
    if not 0 <= p['interval'] <= 600:
        module.fail_json(msg='interval must be between 0 and 600 seconds')
    if not 0 < p['timeout'] <= 60:
        module.fail_json(msg='timeout must be above 0 and at most 60 seconds')
    if p['max_bytes'] < 1:
        module.fail_json(msg='max_bytes must be positive')
    if p['max_consecutive_errors'] < 0:
        module.fail_json(msg='max_consecutive_errors must not be negative')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type='str', default='http://127.0.0.1:8888/stats'),
            samples=dict(type='int', default=10),
            interval=dict(type='float', default=1.0),
            timeout=dict(type='float', default=2.0),
            max_bytes=dict(type='int', default=1048576),
            container=dict(type='str'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            thresholds=dict(type='dict', default={}),
            baseline=dict(type='dict'),
            max_consecutive_errors=dict(type='int', default=2),
            require_ready=dict(type='bool', default=True),
            metric_overrides=dict(type='dict', default={}),
        ),
        supports_check_mode=True,
    )
    use_module(module)
    p = module.params
    _check_bounds(module, p)
    judge_args = dict(thresholds=p['thresholds'], baseline=p['baseline'],
                      max_consecutive_errors=p['max_consecutive_errors'], require_ready=p['require_ready'],
                      metric_overrides=p['metric_overrides'])
    try:
        check_loopback_url(p['url'])
        judge_window([], **judge_args)  # rejects bad thresholds/baseline/overrides before sampling
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    try:
        with container_namespace(p['container'], p['docker_socket']):
            samples = collect_window(p['url'], p['samples'], p['interval'], timeout=p['timeout'],
                                     max_bytes=p['max_bytes'], max_consecutive_errors=p['max_consecutive_errors'])
    except HostError as exc:
        module.fail_json(msg=str(exc))
    result = judge_window(samples, **judge_args)
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
