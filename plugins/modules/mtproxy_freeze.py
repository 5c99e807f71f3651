#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mtproxy_freeze
short_description: Freeze the configuration of a running C MTProxy service into a host manifest
description:
  - Reads the systemd unit of the service (fragment, drop-ins, C(Environment), C(EnvironmentFile), C(User),
    C(WorkingDirectory)), the live argv of its main process from C(/proc/<MainPID>/cmdline), parses the proxy
    flags with C getopt semantics and checksums the files they name (backend config, C(--aes-pwd),
    C(--mtproto-secret-file)) and the binary.
  - Writes C(<state_dir>/<service>/manifest.json) (directory 0700, file 0600, root only; it contains the full
    argv including secrets) and returns a redacted copy.
  - On later runs compares the live host with the manifest and fails on any drift unless I(refreeze=true).
    A host already switched to Go by M(mtproxy.cutover.mtproxy_switch) is reported unchanged when it runs Go the
    way its method points it (state file says C(current=go); with C(method=dropin) the live argv is the Go binary
    with the frozen flags and ExecStart comes from the cutover drop-in; with C(method=symlink) the live argv is the
    frozen one and the link resolves to the Go binary of the state file). The C binary is then checked where the
    method left it.
  - Refuses when the service is not running, when a first freeze would capture a Go binary, and, before
    anything is written or any C(/stats) connection made, every host shape the cutover cannot handle, naming
    its true cause and the way forward (the list is in docs/runbook.md, "Hosts the collection refuses, and
    why"). C(ExecStart) starts a shell or a script that execs the proxy; the live argv differs from the unit
    (edited but not restarted, told apart from other causes by the unit files' modification times); with
    O(method=dropin), a drop-in that sets C(ExecStart) and sorts after C(99-mtproxy-cutover.conf); with
    O(stats_check), a C proxy without C(-p) or C(--http-stats), or with C(-6) (any connection to its stats
    port kills it) unless O(allow_no_baseline).
  - Settings are read as systemd uses them, not as C(systemctl show) prints them (C(WorkingDirectory=-/x)
    is printed C(!/x), C(~) is the home directory of C(User=), C(ExecStart) prefixes and specifiers).
  - Writes nothing (neither manifest nor baseline) unless every check passed; a failure keeps the
    warnings found so far in its message.
  - Warns when C(-S) is on the command line, where every local user can read it.
version_added: "0.1.0"
extends_documentation_fragment:
  - mtproxy.cutover.run_lock
author:
  - mtproxy.cutover contributors (@mtproxy-cutover)
options:
  service:
    description: systemd service name; C(.service) is appended when no unit suffix is given.
    type: str
    default: MTProxy
  state_dir:
    description: Directory holding one sub-directory of state per service.
    type: path
    default: /var/lib/mtproxy-cutover
  refreeze:
    description:
      - Accept the live host as the new truth when it drifted from the manifest, and rewrite the manifest.
      - Refused while the host runs the Go binary.
    type: bool
    default: false
  accept_refresh:
    description:
      - File roles whose new content at the same path is recorded instead of stopping the run as drift
        (RV(status=refreshed)), also on a host already on Go. V(config) is the backend config
        (C(proxy-multi.conf)), which the upstream README refreshes daily from Telegram; the runbook keeps
        the same config source, and both binaries load the file they are given.
      - Any other drift still stops the run, and so does a changed path.
    type: list
    elements: str
    choices: [config]
    default: []
  go_binaries:
    description:
      - Paths known to be Go releases. A first freeze refuses a service whose binary is one of them.
    type: list
    elements: path
    default: []
  stats_check:
    description:
      - Scrape the service's C(/stats) (from C(-p), on 127.0.0.1) and fail unless the binary answering is
        the one the freeze found (C for a frozen host, Go for one an earlier run switched).
      - A C proxy without C(-p) or C(--http-stats), or with C(-6), is refused before any connection is made
        (see O(allow_no_baseline)).
    type: bool
    default: true
  method:
    description:
      - How M(mtproxy.cutover.mtproxy_switch) will point the service at Go. With V(dropin) a unit whose
        C(ExecStart) would stay in effect over the cutover drop-in (set by a drop-in that sorts after
        C(99-mtproxy-cutover.conf), such as C(override.conf) from C(systemctl edit)) is refused.
      - On a host already switched to Go the method is the one C(state.json) records (it decides how the
        host is recognised as on Go); a value that contradicts it is refused. Unset, that one, else V(dropin).
      - V(container) freezes the container named O(service) instead of a unit (Docker Engine API on
        O(docker_socket)). It records its spec (image by ID, command, entrypoint, environment with secret values
        redacted in every result, labels, mounts, published ports, restart policy, network, user), the argv of
        the proxy inside it, the files that argv names as the container sees them, and the C(/stats) baseline
        read inside the container's network namespace. A container owned by docker compose or run by a
        systemd unit (C(docker run --name ...)) is refused with that reason.
      - V(compose) freezes the docker compose service O(service), named C(<project>/<service>) (the
        C(com.docker.compose.project) and C(.service) labels of its container, not the container's name). It
        records all that V(container) records, plus the project's files compose loaded (with checksums, and the
        project's C(.env)), the service's config hash and the compose command of the host that computes that same
        hash from the files now. Refused before anything is written, naming the cause and the way forward -
        a service started with C(-f) files or C(COMPOSE_FILE) other than the project's default file, a project
        with an override file of its own, a service built by compose (C(build:) without C(image:)), more than
        one container of the service, a container made by a compose of another major version than the host's,
        and files that no longer make the running container (config hash).
      - V(compose) needs the compose the project is run with on the host, the v2 CLI plugin (C(docker compose) 2.x)
        or C(docker-compose) (v1 1.29, Debian bookworm's package, or a v2 build of that name).
    type: str
    choices: [compose, container, dropin, symlink]
  go_images:
    description:
      - Image IDs of Go builds (method V(container)). A container running one of them with no manifest yet is
        not frozen as the C proxy.
    type: list
    elements: str
    default: []
  docker_socket:
    description: Unix socket of the Docker engine (or Podman's Docker-compatible socket), for V(container) and V(compose).
    type: path
    default: /var/run/docker.sock
  allow_no_baseline:
    description:
      - Freeze a C proxy running with C(-6) without reading its C(/stats) at all (no flavour check, no
        baseline), because with C(-6) the C proxy aborts on any connection to its stats port. Without this
        option such a host is refused. The result's RV(stats_readable) is then false.
    type: bool
    default: false
  handover:
    description:
      - How M(mtproxy.cutover.mtproxy_switch) will restart the service (C(mtproxy_cutover_handover)).
      - V(bridge) (O(mtproxy.cutover.mtproxy_switch#module:handover=bridge)) needs C(nft) (nftables) or C(iptables) and
        C(CAP_NET_ADMIN) on the host; a host without them is refused here (C(bridge_unsupported)), with
        the reason, before anything is written.
      - Whatever the value, every run first removes what an interrupted bridge handover left behind
        (its nftables table or iptables chains and its C(<service>-bridge.service);
        RV(leftovers_removed)).
    type: str
    choices: [restart, bridge]
    default: restart
  baseline_samples:
    description:
      - With O(stats_check), take this many C(/stats) samples of a C host as its baseline when the
        manifest is written now (first freeze or re-freeze) or no baseline is kept yet, and keep the
        window summary in C(<state_dir>/<service>/baseline.json) (0600). Otherwise, and with C(0),
        one scrape checks the flavour and the kept baseline is returned.
    type: int
    default: 0
  baseline_interval:
    description: Seconds between two baseline samples (start to start).
    type: float
    default: 5
notes:
  - Supports check mode (computes everything, writes nothing) and diff mode (redacted manifest before/after).
  - Only C(systemctl) is run; files and C(/proc) are read directly, so the module must run as root.
  - Results never contain secret values (C(-S), C(-P) values are replaced by C(<redacted>)).
requirements:
  - Python 3 on the managed host (standard library only).
  - systemd (O(method=dropin), O(method=symlink)); the Docker engine (V(container)); the Docker engine and
    docker compose v2 (C(docker compose)) or v1 (C(docker-compose) 1.29) (V(compose)).
attributes:
  async:
    description: Runs on the host like any module, in the background too (C(async)); its baseline window then does not hold up the task.
    support: full
  check_mode:
    description: Computes everything and writes nothing (no manifest, no baseline file).
    support: full
  diff_mode:
    description: Before and after of the manifest, redacted.
    support: full
  platform:
    description: Linux hosts with systemd and C(/proc).
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Freeze the C proxy configuration
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
  register: frozen

- name: Freeze, check that C answers /stats and keep a 30 s baseline (7 samples 5 s apart)
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
    baseline_samples: 7
    baseline_interval: 5
  register: frozen

- name: Accept an intended configuration change
  mtproxy.cutover.mtproxy_freeze:
    service: MTProxy
    refreeze: true
"""

RETURN = r"""
status:
  description:
    - C(frozen) (first manifest written), C(unchanged) (matches the manifest), C(refreshed) (only files of
      O(accept_refresh) changed, at the same path; their checksums were recorded) or C(refrozen).
  returned: always
  type: str
  sample: frozen
method:
  description: How the service is (or will be) pointed at its binary, as the freeze used it (see O(method)).
  returned: success
  type: str
  sample: dropin
runtime:
  description: How the service is run (C(systemd) for a unit, C(container), C(compose)); chosen from its frozen state.
  returned: success
  type: str
  sample: systemd
releases_in_use:
  description: Directories of the Go releases the service runs or ran (its C(state.json) and switch history).
  returned: success
  type: list
  elements: str
  sample: [/opt/MTProxy/releases/go-0123456789ab]
current:
  description: Binary flavour the service runs now, C(c) or C(go).
  returned: always
  type: str
  sample: c
manifest:
  description: The manifest, redacted (secret values replaced by C(<redacted>)).
  returned: always
  type: dict
drift:
  description: Differences between the manifest and the live host, redacted.
  returned: always
  type: list
  elements: dict
  sample: [{"field": "files[config]", "frozen": {"path": "proxy-multi.conf", "sha256": "ab.."},
            "live": {"path": "proxy-multi.conf", "sha256": "cd.."}}]
stats_url:
  description: Loopback URL of C(/stats) derived from C(-p); null when there is no single stats port.
  returned: always
  type: str
  sample: http://127.0.0.1:8888/stats
stats_port:
  description: Stats port (C(-p)) or null.
  returned: always
  type: int
  sample: 8888
client_ports:
  description: Client ports from every C(-H).
  returned: always
  type: list
  elements: int
  sample: [443]
manifest_path:
  description: Path of the manifest on the host.
  returned: always
  type: str
  sample: /var/lib/mtproxy-cutover/MTProxy/manifest.json
flavor:
  description: Flavour of the binary answering C(/stats) (C(c) or C(go)); null without O(stats_check).
  returned: always
  type: str
  sample: c
stats_version:
  description: The C(version) line of C(/stats) (C only; empty for Go or without O(stats_check)).
  returned: always
  type: str
baseline:
  description:
    - C(/stats) window summary of the C binary (C(summary) of M(mtproxy.cutover.mtproxy_slo)), taken now
      or read from C(baseline.json); empty when there is none.
  returned: always
  type: dict
baseline_taken:
  description: Whether the baseline was sampled by this run (and, outside check mode, written).
  returned: always
  type: bool
baseline_path:
  description: Path of the kept baseline on the host.
  returned: always
  type: str
  sample: /var/lib/mtproxy-cutover/MTProxy/baseline.json
config_warnings:
  description: Warnings about the configuration (also emitted as task warnings).
  returned: always
  type: list
  elements: str
stats_readable:
  description:
    - Whether the service's C(/stats) may be read. False for a C proxy with C(-6) (frozen with
      O(allow_no_baseline)) and without O(stats_check) for one that serves none; such a host is never
      sampled as a control host.
  returned: success
  type: bool
  sample: true
client_hosts:
  description:
    - Addresses on which the client ports are probed, best first (C(--address), else 127.0.0.1, with
      C(-6) also ::1 when the host has an IPv6 loopback).
  returned: success
  type: list
  elements: str
  sample: [127.0.0.1]
leftovers_removed:
  description: What an interrupted bridge handover had left on the host and this run removed (in check mode, found).
  returned: success
  type: list
  elements: str
refused:
  description:
    - On a refusal, which host shape was refused (C(exec_wrapper), C(edited_not_restarted),
      C(argv_differs), C(dropin_overridden), C(no_stats_port), C(no_http_stats), C(ipv6_stats),
      C(bridge_unsupported)).
  returned: failure
  type: str
  sample: ipv6_stats
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mtproxy.cutover.plugins.module_utils._handover import bridge as br
from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import CutoverError
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import freeze as fz
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import lock
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.module import use_module
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy import unit as un
from ansible_collections.mtproxy.cutover.plugins.module_utils._state import StateDir


def main():
    module = AnsibleModule(argument_spec=fz.argument_spec(), supports_check_mode=True)
    use_module(module)
    invalid = fz.check_params(module.params)
    if invalid:
        module.fail_json(msg=invalid)
    try:
        lock.check(StateDir(module.params["state_dir"], module.params["service"]), module.params["lock_run_id"],
                   check_mode=module.check_mode)
    except CutoverError as exc:
        module.fail_json(msg=str(exc), drift=[], **exc.details)
    # An interrupted bridge handover's redirect and bridge go first, whatever this freeze decides.
    leftovers = br.clear_leftovers(module.params["service"], module.params["state_dir"], module.check_mode)
    for text in leftovers:
        module.warn("%s: %s" % ("found" if module.check_mode else "removed", text))
    warnings = []
    try:
        result = fz.freeze_host(module.params, module.run_command, module.check_mode, fz.now_utc(), warnings)
    except fz.ERRORS as exc:
        message, details = fz.failure(exc, un.unit_name(module.params["service"]))
        for warning in warnings:
            module.warn(warning)
        module.fail_json(msg=fz.failure_message(message, warnings), **details)
    result["leftovers_removed"] = leftovers
    # Returned under its own name: a result key "warnings" is ansible-core's, which shows each one
    # again (2.16) or deprecates passing it (2.19+).
    result["config_warnings"] = result.pop("warnings")
    for warning in result["config_warnings"]:
        module.warn(warning)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
