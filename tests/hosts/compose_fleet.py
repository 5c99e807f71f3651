"""A fleet of compose-managed MTProxy services on this machine's Docker engine, for the compose flip tests.

Run with python3 (standard library, the docker CLI, docker compose v2 and/or docker-compose v1), as root:

  python3 tests/hosts/compose_fleet.py up --prefix P --hosts SHAPE:CLI[,SHAPE:CLI...] [--canaries K]
      [--go-archive PATH [--go-archive-only]] [--faults HOST=JSON] [--client-rate R] [--inventory PATH]
  python3 tests/hosts/compose_fleet.py snapshot --prefix P [--traffic-seconds S] [--host H]
  python3 tests/hosts/compose_fleet.py operator-up --prefix P [--host H]
  python3 tests/hosts/compose_fleet.py unfault --prefix P --host H
  python3 tests/hosts/compose_fleet.py down --prefix P

Host N of fleet P is the pod `P-hN-pod` of tests/hosts/container_fleet.py (network namespace, test
backend, steady test client) and a compose project `P-hN` in <fleet dir>/projects/P-hN/ with one
service, `mtproxy`, on the pod's network (`network_mode: container:P-hN-pod`: no project network is
made; the engine here has no bridge). SHAPE is how operators write it:
  official  the official image's shape: `environment: SECRET, WORKERS`, a named volume on /data, the
            image's own command (its run script); the project file is compose.yaml for v2,
            docker-compose.yml for v1;
  command   an image of the C build with the proxy's flags in `command:` (the secret as -S, the backend
            config bind-mounted read-only from the project's ./config/), file docker-compose.yml.
CLI is the compose the project is started (and later recreated) with: `v2` (`docker compose`) or `v1`
(`docker-compose`). The inventory names each host's service `P-hN/mtproxy` (not the container name
compose generates), method compose, with the Go image pinned by ID as for container fleets.

The record is <fleet dir>/fleet.json in container_fleet.py's format (so `container_fleet.py down`
removes a compose fleet too: every container and volume carries the fleet label). `snapshot` prints per
host the service's container (found by compose's labels), its image and spec against the one at `up`,
compose's record (files loaded, config hash), whether the collection's override file is there, who
answers /stats in the pod's namespace and (with --traffic-seconds) test traffic counts. `operator-up`
runs the host's own `docker compose up -d` (or `docker-compose up -d`) in its project directory, as the
operator does after a cutover, and prints what compose did. `--faults` takes container_fleet.py's
sections (the stand-in's, and `backend` for the pod's test backend: '{"backend": {"reset_go_after": 0}}'
fails the Go port's backend path on any build); `unfault` lifts both: it removes the stand-in fault
file from the host's /data volume and sends the pod's test backend SIGUSR1.
Exit codes: 0 ok, 1 a step failed (message on stderr), 2 bad arguments.
"""

import argparse
import json
import os
import secrets as secrets_mod
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import container_fleet as cf  # noqa: E402

SERVICE = "mtproxy"
CLIS = {"v2": ["docker", "compose"], "v1": ["docker-compose"]}
SHAPES = ("official", "command")
COMPOSE_TIMEOUT_S = 180
VOLATILE_LABELS = ("com.docker.compose.config-hash", "com.docker.compose.project.config_files",
                   "com.docker.compose.image", "com.docker.compose.replace", "com.docker.compose.version")
OVERRIDE_MARK = "# mtproxy.cutover override"
CONFIG_DIR = "/etc/mtproxy-conf"


def log(message):
    sys.stderr.write("compose_fleet: %s\n" % message)
    sys.stderr.flush()


def compose(entry, *words, check=True, timeout=COMPOSE_TIMEOUT_S):
    """One compose command in the host's project directory, with the host's compose CLI."""
    argv = CLIS[entry["cli"]] + ["--ansi", "never", "-p", entry["project"]] + list(words)
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("COMPOSE_"))
    try:
        proc = subprocess.run(argv, cwd=entry["project_dir"], capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        raise cf.FleetError("%s: `%s` did not finish within %d s" % (entry["name"], " ".join(argv), timeout))
    if check and proc.returncode != 0:
        raise cf.FleetError("%s: `%s` failed (%d): %s" % (entry["name"], " ".join(argv), proc.returncode,
                                                          proc.stderr.strip()[-800:]))
    return proc


def service_containers(entry):
    out = cf.docker("ps", "-a", "--filter", "label=com.docker.compose.project=" + entry["project"],
                    "--filter", "label=com.docker.compose.service=" + SERVICE, "--format", "{{.Names}}").stdout
    return sorted(name for name in out.split() if name)


def the_container(entry):
    names = service_containers(entry)
    if len(names) != 1:
        raise cf.FleetError("%s: compose service %s/%s has %d containers: %s" % (
            entry["name"], entry["project"], SERVICE, len(names), ", ".join(names)))
    return names[0]


def spec_of(doc):
    """container_fleet's spec without what compose rewrites on every recreate: its labels of the new config,
    compose v1's scheduling hint `affinity:container==<old container ID>` in the environment, the order of binds."""
    spec = cf.spec_of(doc)
    spec["labels"] = dict((k, v) for k, v in spec["labels"].items() if k not in VOLATILE_LABELS)
    spec["env"] = [e for e in spec["env"] if not e.startswith("affinity:container=")]
    spec["binds"] = sorted(spec["binds"])  # compose v1 writes a service's binds in no fixed order
    return spec


def compose_record(doc):
    labels = doc["Config"].get("Labels") or {}
    return {"config_files": labels.get("com.docker.compose.project.config_files"),
            "config_hash": labels.get("com.docker.compose.config-hash"),
            "version": labels.get("com.docker.compose.version")}


def project_file(entry):
    if entry["shape"] == "official" and entry["cli"] == "v2":
        return "compose.yaml"
    return "docker-compose.yml"


def compose_text(record, entry):
    """The project's compose file (JSON scalars are YAML)."""
    q = json.dumps
    lines = ["# Written by tests/hosts/compose_fleet.py up --prefix %s (shape %s, compose %s)"
             % (record["prefix"], entry["shape"], entry["cli"]),
             "services:", "  %s:" % SERVICE,
             "    image: %s" % q(record["c_image"]),
             "    network_mode: %s" % q("container:" + entry["pod"]),
             "    restart: unless-stopped",
             "    labels:",
             "      %s: %s" % (q(cf.FLEET_LABEL), q(record["prefix"]))]
    lines += ["      %s: %s" % (q(k), q(v)) for k, v in (label.split("=", 1) for label in record["labels"])]
    if entry["shape"] == "official":
        lines += ["    environment:", "      SECRET: %s" % q(entry["secret"]), "      WORKERS: \"1\""]
        lines += ["    volumes:", "      - data:/data"]
    else:
        argv = ["/usr/local/bin/mtproto-proxy", "-u", "root", "-p", str(cf.STATS_PORT), "--http-stats",
                "-H", str(cf.CLIENT_PORT), "-M", "1", "-C", "60000", "-c", "512",
                "--aes-pwd", "/etc/mtproxy/proxy-secret", "--allow-skip-dh", "--nat-info", "127.0.0.1:127.0.0.1",
                "-S", entry["secret"], CONFIG_DIR + "/proxy-multi.conf"]
        lines += ["    command: %s" % q(argv)]
        lines += ["    volumes:", "      - ./config:%s:ro" % CONFIG_DIR, "      - data:/data"]
    lines += ["volumes:", "  data:", "    labels:", "      %s: %s" % (q(cf.FLEET_LABEL), q(record["prefix"]))]
    return "\n".join(lines) + "\n"


def start_host(record, entry, faults):
    cf.start_pod(record, entry, faults)
    os.makedirs(entry["project_dir"], mode=0o755)
    if entry["shape"] == "command":
        os.makedirs(os.path.join(entry["project_dir"], "config"))
        conf = cf.docker("run", "--rm", "--network", "none", "--entrypoint", "cat", record["c_image"],
                         "/etc/mtproxy/proxy-multi.conf").stdout
        with open(os.path.join(entry["project_dir"], "config", "proxy-multi.conf"), "w") as handle:
            handle.write(conf)
    path = os.path.join(entry["project_dir"], project_file(entry))
    with open(path, "w") as handle:
        handle.write(compose_text(record, entry))
    os.chmod(path, 0o600)  # it holds the secret
    compose(entry, "up", "--no-start")
    name = the_container(entry)
    if faults is not None:
        cf.copy_in(name, cf.FAULTS_IN_VOLUME, json.dumps(faults) + "\n")
    compose(entry, "up", "-d")
    flavour, waited = cf.wait_ready(entry["name"], record["ready_timeout_s"])
    cf.docker("exec", entry["pod"], "touch", "/tmp/start-clients")
    doc = cf.inspect("container", name)
    entry.update(container=name, container_id=doc["Id"], spec=spec_of(doc), compose_at_up=compose_record(doc),
                 pod_id=cf.inspect("container", entry["pod"])["Id"], flavour_at_up=flavour, ready_s=round(waited, 2))
    return entry


def group_vars(record):
    out = cf.group_vars(record)
    out["mtproxy_cutover_method"] = "compose"
    return out


def write_inventory(record, target):
    hosts = dict((e["name"], {"mtproxy_cutover_service": "%s/%s" % (e["project"], SERVICE)}) for e in record["hosts"])
    canaries = dict((e["name"], {}) for e in record["hosts"] if e["canary"])
    text = json.dumps({"all": {"children": {"mtproxy": {
        "vars": group_vars(record), "hosts": hosts, "children": {"mtproxy_canary": {"hosts": canaries}}}}}},
        indent=2, sort_keys=True) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as handle:
        handle.write(text)


def parse_hosts(text):
    out = []
    for item in text.split(","):
        shape, sep, cli = item.strip().partition(":")
        if not sep or shape not in SHAPES or cli not in CLIS:
            raise cf.FleetError("--hosts takes SHAPE:CLI,... with SHAPE one of %s and CLI one of %s, not %r"
                                % ("/".join(SHAPES), "/".join(sorted(CLIS)), item))
        out.append((shape, cli))
    return out


def cmd_up(args):
    prefix = args.prefix
    shapes = parse_hosts(args.hosts)
    if not 0 <= args.canaries <= len(shapes):
        raise cf.FleetError("need 0 <= --canaries <= number of hosts")
    existing = cf.labelled("ps", prefix) + cf.labelled("volume", prefix)
    if existing or os.path.exists(cf.fleet_dir(prefix)):
        raise cf.FleetError("fleet '%s' exists (%s); run `compose_fleet.py down --prefix %s` first"
                            % (prefix, " ".join(existing) or cf.fleet_dir(prefix), prefix))
    for cli in sorted(set(cli for _shape, cli in shapes)):
        probe = subprocess.run(CLIS[cli] + ["version", "--short"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise cf.FleetError("compose %s (`%s`) is not installed: tests/hosts/compose-clis.sh installs it"
                                % (cli, " ".join(CLIS[cli])))
    names = [cf.host_name(prefix, i) for i in range(1, len(shapes) + 1)]
    faults = cf.parse_faults(args.faults, names)
    go_archive = os.path.abspath(args.go_archive) if args.go_archive else None
    c_image, go_image = cf.build_images(None if args.go_archive_only else go_archive)
    go_private = None
    if args.go_archive_only:
        go_image, go_private = cf.private_go_image(prefix, go_image, go_archive)
    os.makedirs(cf.base_dir(), exist_ok=True)
    os.makedirs(cf.fleet_dir(prefix), mode=0o700)
    os.chmod(cf.fleet_dir(prefix), 0o700)
    state_dir = os.path.join(cf.fleet_dir(prefix), "state")
    os.makedirs(state_dir, mode=0o700)
    projects = os.path.join(cf.fleet_dir(prefix), "projects")
    os.makedirs(projects, mode=0o755)
    record = {
        "prefix": prefix, "kind": "compose",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "c_image": c_image, "c_image_id": cf.image_id(c_image),
        "go_image": go_image, "go_image_id": go_private or cf.image_id(go_image),
        "go_archive": go_archive, "go_private": bool(go_private),
        "python": args.python or cf.machine_python(), "pod_image": c_image, "state_dir": state_dir,
        "client_rate": args.client_rate, "client_run_s": args.client_run_seconds, "lifetime_s": args.lifetime,
        "ready_timeout_s": args.ready_timeout, "labels": args.label,
        "hosts": [{"name": name, "pod": cf.pod_name(name), "volume": "%s_data" % name, "canary": i < args.canaries,
                   "project": name, "project_dir": os.path.join(projects, name), "shape": shape, "cli": cli,
                   "secret": secrets_mod.token_hex(16)} for i, (name, (shape, cli)) in enumerate(zip(names, shapes))],
    }
    cf.save_record(record)
    started = time.monotonic()
    errors = []
    with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
        futures = [pool.submit(start_host, record, entry, faults.get(entry["name"])) for entry in record["hosts"]]
        for future in futures:
            try:
                future.result()
            except cf.FleetError as exc:
                errors.append(str(exc))
    if errors:
        cf.remove_fleet(prefix, names + [cf.pod_name(n) for n in names])
        raise cf.FleetError("; ".join(errors))
    cf.save_record(record)
    if args.inventory:
        write_inventory(record, args.inventory)
    log("%d compose hosts up in %.1f s (%s)" % (len(names), time.monotonic() - started, ", ".join(
        "%s %s/%s" % (e["name"], e["shape"], e["cli"]) for e in record["hosts"])))
    return 0


def override_files(entry):
    return sorted(name for name in os.listdir(entry["project_dir"]) if ".override." in name)


def snapshot_host(record, entry):
    name = the_container(entry)
    doc = cf.inspect("container", name)
    spec = spec_of(doc)
    pod = cf.inspect("container", entry["pod"]) or {"Id": None, "State": {}}
    overrides = override_files(entry)
    out = {
        "container": name, "container_id": doc["Id"], "recreated_since_up": doc["Id"] != entry["container_id"],
        "pod_id": pod["Id"], "pod_running": bool(pod["State"].get("Running")),
        "status": doc["State"]["Status"], "spec": spec,
        "spec_changes_since_up": cf.spec_changes(entry["spec"], spec),
        "image_is": ("c" if spec["image_id"] == record["c_image_id"]
                     else "go" if spec["image_id"] == record.get("go_image_id") else "other"),
        "compose": compose_record(doc), "override_files": overrides,
        "backend": cf.backend_counts(entry) if pod["State"].get("Running") else None,
        "override_is_ours": [bool(open(os.path.join(entry["project_dir"], f)).read().startswith(OVERRIDE_MARK))
                             for f in overrides],
    }
    try:
        values, flavour = cf.read_stats(entry["name"])
        out.update(stats_flavour=flavour, stats_ready=cf.ready(values, flavour))
    except cf.FleetError as exc:
        out.update(stats_flavour=None, stats_error=str(exc))
    return out


def cmd_snapshot(args):
    record = cf.load_record(args.prefix)
    hosts = cf.select_hosts(record, args.host)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = dict((e["name"], pool.submit(snapshot_host, record, e)) for e in hosts)
        result = dict((name, future.result()) for name, future in futures.items())
    if args.traffic_seconds > 0:
        for name, counts in cf.traffic(record, hosts, args.traffic_seconds, 10.0, 1).items():
            result[name]["traffic"] = counts
    for entry in hosts:
        result[entry["name"]]["background_clients"] = cf.background_clients(entry)
    print(json.dumps({"prefix": args.prefix, "c_image_id": record["c_image_id"], "go_image_id": record["go_image_id"],
                      "hosts": result}, indent=2, sort_keys=True))
    return 0


def cmd_operator_up(args):
    """`docker compose up -d` in each project, as its operator runs it; what compose did."""
    record = cf.load_record(args.prefix)
    result = {}
    for entry in cf.select_hosts(record, args.host):
        before = cf.inspect("container", the_container(entry))["Id"]
        proc = compose(entry, "up", "-d", check=False)
        after = cf.inspect("container", the_container(entry))
        result[entry["name"]] = {"rc": proc.returncode, "output": (proc.stdout + proc.stderr).strip().splitlines()[-6:],
                                 "container_id_before": before, "container_id_after": after["Id"],
                                 "image_id_after": after["Image"], "running": after["State"]["Running"]}
    print(json.dumps({"prefix": args.prefix, "hosts": result}, indent=2, sort_keys=True))
    return 0 if all(r["rc"] == 0 for r in result.values()) else 1


def cmd_unfault(args):
    record = cf.load_record(args.prefix)
    for entry in cf.select_hosts(record, args.host):
        cf.docker("exec", the_container(entry), "rm", "-f", cf.FAULTS_IN_VOLUME)
        cf.lift_backend_fault(entry)
    return 0


def cmd_down(args):
    return cf.cmd_down(argparse.Namespace(prefix=args.prefix, all=False))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the compose fleet and write its inventory")
    up.add_argument("--prefix", required=True, type=cf.prefix_arg)
    up.add_argument("--hosts", required=True, help="SHAPE:CLI per host, comma-separated (official:v2,command:v1,...)")
    up.add_argument("--canaries", type=int, default=1)
    up.add_argument("--go-archive")
    up.add_argument("--go-archive-only", action="store_true")
    up.add_argument("--python")
    up.add_argument("--client-rate", type=float, default=10.0)
    up.add_argument("--client-run-seconds", type=int, default=30)
    up.add_argument("--lifetime", type=int, default=3600)
    up.add_argument("--ready-timeout", type=int, default=60)
    up.add_argument("--label", action="append", default=[])
    up.add_argument("--faults", action="append", default=[], metavar="HOST=JSON")
    up.add_argument("--inventory")
    up.set_defaults(func=cmd_up)
    sn = sub.add_parser("snapshot")
    sn.add_argument("--prefix", required=True, type=cf.prefix_arg)
    sn.add_argument("--traffic-seconds", type=float, default=0.0)
    sn.add_argument("--host", action="append")
    sn.set_defaults(func=cmd_snapshot)
    op = sub.add_parser("operator-up")
    op.add_argument("--prefix", required=True, type=cf.prefix_arg)
    op.add_argument("--host", action="append")
    op.set_defaults(func=cmd_operator_up)
    uf = sub.add_parser("unfault")
    uf.add_argument("--prefix", required=True, type=cf.prefix_arg)
    uf.add_argument("--host", action="append", required=True)
    uf.set_defaults(func=cmd_unfault)
    dn = sub.add_parser("down")
    dn.add_argument("--prefix", required=True, type=cf.prefix_arg)
    dn.set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    if args.command == "up":
        if args.go_archive_only and not args.go_archive:
            parser.error("--go-archive-only needs --go-archive")
        if not 0 <= args.client_rate <= 200 or not 1 <= args.lifetime <= 86400:
            parser.error("--client-rate must be 0..200, --lifetime 1..86400")
    if args.command == "snapshot" and not 0 <= args.traffic_seconds <= 120:
        parser.error("--traffic-seconds must be 0..120")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except cf.FleetError as exc:
        log(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
