#!/usr/bin/env python3
"""Boot and remove a fleet of systemd test hosts (Docker containers without network).

  fleet.py up --name-prefix demo --count 4 --canaries 1 --image IMG --inventory inv.yml
  fleet.py down --name-prefix demo
  fleet.py down --all            # every container this tool ever labelled
  fleet.py list [--name-prefix demo]

Hosts are named <prefix>-h1 .. <prefix>-hN and labelled mtproxy-cutover.fleet=<prefix>.
The inventory puts all of them in group `mtproxy` and the first K in its child `mtproxy_canary`;
Ansible reaches them with `docker exec` (community.docker.docker).
"""

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

LABEL = "mtproxy-cutover.fleet"
DOCKER_TIMEOUT_S = 120
# systemd inside a container needs these (and nothing more: --privileged fails on this kernel setup).
RUN_OPTIONS = [
    "--network", "none",
    "--cap-add", "SYS_ADMIN",
    "--cgroupns", "host",
    "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run",
    "--tmpfs", "/run/lock",
    "--tmpfs", "/tmp",
    "--security-opt", "seccomp=unconfined",
    # Lets `docker stop` shut systemd down cleanly instead of waiting for the kill timeout.
    "--stop-signal", "SIGRTMIN+3",
]
BOOTED_STATES = ("running", "degraded")


class FleetError(Exception):
    pass


def docker(*args, check=True, timeout=DOCKER_TIMEOUT_S):
    try:
        proc = subprocess.run(
            ["docker"] + list(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise FleetError("docker %s: no answer within %d s" % (args[0], timeout))
    if check and proc.returncode != 0:
        raise FleetError("docker %s failed (%d): %s" % (" ".join(args[:2]), proc.returncode, proc.stderr.strip()))
    return proc


def host_names(prefix, count):
    return ["%s-h%d" % (prefix, i) for i in range(1, count + 1)]


def labelled(prefix=None):
    selector = LABEL if prefix is None else "%s=%s" % (LABEL, prefix)
    out = docker("ps", "-a", "--filter", "label=" + selector, "--format", "{{.Names}}").stdout
    return sorted(name for name in out.split() if name)


def start_host(name, prefix, image, caps=()):
    extra = [arg for cap in caps for arg in ("--cap-add", cap)]
    docker("run", "-d", "--name", name, "--hostname", name, "--label", "%s=%s" % (LABEL, prefix),
           *RUN_OPTIONS, *extra, image, "/lib/systemd/systemd")


def wait_booted(name, timeout_s):
    """Poll `systemctl is-system-running` until systemd has finished booting (bounded)."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        proc = docker("exec", name, "systemctl", "is-system-running", check=False, timeout=15)
        state = proc.stdout.strip() or "unknown"
        if state in BOOTED_STATES:
            return state
        time.sleep(0.3)
    raise FleetError("%s: systemd still '%s' after %d s" % (name, state, timeout_s))


def boot_one(name, prefix, image, timeout_s, caps=()):
    start_host(name, prefix, image, caps)
    state = wait_booted(name, timeout_s)
    if state == "degraded":
        failed = docker("exec", name, "systemctl", "--failed", "--plain", "--no-legend", check=False).stdout
        units = " ".join(line.split()[0] for line in failed.splitlines() if line.strip())
        sys.stderr.write("fleet: %s booted degraded (failed units: %s)\n" % (name, units or "?"))
    return state


def render_inventory(names, canaries):
    lines = [
        "# Written by tests/hosts/fleet.py; removed hosts make this file stale.",
        "all:",
        "  children:",
        "    mtproxy:",
        "      vars:",
        "        ansible_connection: community.docker.docker",
        "        ansible_python_interpreter: /usr/bin/python3",
        "      hosts:",
    ]
    lines += ["        %s: {}" % name for name in names]
    lines += ["      children:", "        mtproxy_canary:", "          hosts:"]
    lines += ["            %s: {}" % name for name in names[:canaries]]
    return "\n".join(lines) + "\n"


def remove(names):
    if names:
        docker("rm", "-f", "-v", *names, timeout=DOCKER_TIMEOUT_S + 10 * len(names))


def cmd_up(args):
    if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", args.name_prefix):
        raise FleetError("--name-prefix must be a valid container name prefix")
    if args.count < 1 or not 0 <= args.canaries <= args.count:
        raise FleetError("need --count >= 1 and 0 <= --canaries <= --count")
    existing = labelled(args.name_prefix)
    if existing:
        raise FleetError("fleet '%s' already exists (%s); run `fleet.py down --name-prefix %s` first"
                         % (args.name_prefix, " ".join(existing), args.name_prefix))
    names = host_names(args.name_prefix, args.count)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(args.parallel, len(names))) as pool:
        futures = {name: pool.submit(boot_one, name, args.name_prefix, args.image, args.boot_timeout, args.cap_add)
                   for name in names}
        errors = []
        for name, future in futures.items():
            try:
                future.result()
            except FleetError as exc:
                errors.append(str(exc))
    if errors:
        if not args.keep_on_failure:
            remove(labelled(args.name_prefix))
        raise FleetError("; ".join(errors))
    inventory = render_inventory(names, args.canaries)
    if args.inventory == "-":
        sys.stdout.write(inventory)
    else:
        directory = os.path.dirname(os.path.abspath(args.inventory))
        os.makedirs(directory, exist_ok=True)
        with open(args.inventory, "w") as handle:
            handle.write(inventory)
    sys.stderr.write("fleet: %d hosts up in %.1f s (%s)\n" % (len(names), time.monotonic() - started, args.image))
    return 0


def cmd_down(args):
    if args.all == (args.name_prefix is not None):
        raise FleetError("give exactly one of --name-prefix or --all")
    names = labelled(None if args.all else args.name_prefix)
    remove(names)
    sys.stderr.write("fleet: removed %d containers\n" % len(names))
    return 0


def cmd_list(args):
    for name in labelled(args.name_prefix):
        print(name)
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="boot N systemd hosts and write an Ansible inventory")
    up.add_argument("--name-prefix", required=True)
    up.add_argument("--count", type=int, default=4)
    up.add_argument("--canaries", type=int, default=1)
    up.add_argument("--image", default=os.environ.get("MOLECULE_HOST_IMAGE"),
                    help="image ref from build-image.sh (default: $MOLECULE_HOST_IMAGE)")
    up.add_argument("--inventory", required=True, help="path of the YAML inventory to write, '-' for stdout")
    up.add_argument("--boot-timeout", type=int, default=90, help="seconds per host until systemd is up")
    up.add_argument("--parallel", type=int, default=10, help="hosts booted at the same time")
    up.add_argument("--keep-on-failure", action="store_true", help="leave hosts for inspection if boot fails")
    up.add_argument("--cap-add", action="append", default=[], choices=["NET_ADMIN"],
                    help="a capability beyond SYS_ADMIN (NET_ADMIN: the bridge handover's redirect)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the hosts of one fleet (or of all fleets)")
    down.add_argument("--name-prefix")
    down.add_argument("--all", action="store_true")
    down.set_defaults(func=cmd_down)

    lst = sub.add_parser("list", help="print host names")
    lst.add_argument("--name-prefix")
    lst.set_defaults(func=cmd_list)

    args = parser.parse_args(argv)
    if args.command == "up" and not args.image:
        parser.error("--image is required (or set MOLECULE_HOST_IMAGE)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        return args.func(args)
    except FleetError as exc:
        sys.stderr.write("fleet: %s\n" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
