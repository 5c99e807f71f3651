"""A fleet of MTProxy containers on this machine's Docker engine, for the container flip tests.

Run with python3 (standard library, the docker CLI and nsenter), as root:

  python3 tests/hosts/container_fleet.py up --prefix P --count N [--canaries K]
      [--c-image IMG --go-image IMG] [--go-archive PATH] [--secret-in-volume] [--client-rate R]
      [--label K=V] [--faults HOST=JSON] [--inventory PATH] [--format yaml|json]
  python3 tests/hosts/container_fleet.py traffic --prefix P [--seconds S] [--rate R] [--packets K] [--host H]
  python3 tests/hosts/container_fleet.py snapshot --prefix P [--traffic-seconds S] [--host H]
  python3 tests/hosts/container_fleet.py replace --prefix P --image IMG [--host H]
  python3 tests/hosts/container_fleet.py down --prefix P | --all
  python3 tests/hosts/container_fleet.py list [--prefix P]

Host N of fleet P is two containers (no network of their own: everything is on loopback):
  - the pod `P-hN-pod`, `--network none`, from the C image with /opt/mtproxy-test/pod.sh as its
    command: it owns the network namespace, runs the test backend on the 127.0.0.1 targets of the
    image's baked proxy-multi.conf (both the C RPC and the Go frames; with a host's --faults
    '{"backend": {"reset_go_after": N}}' it resets each Go connection after N answered frames) and,
    with --client-rate > 0, a steady mixed test client; it stops by itself after --lifetime seconds
    and is then removed (--rm);
  - the proxy `P-hN`, as an operator runs the official image: `docker run -d --network container:P-hN-pod
    -v P-hN-data:/data -e SECRET=<hex> -e WORKERS=1 --restart unless-stopped <C image>` (with
    --secret-in-volume the secret is in /data/secret instead of SECRET). It joins the pod's network
    namespace, so backend, clients and namespace stay while the proxy container is recreated.
`up` waits until each proxy's /stats answers inside that namespace (nsenter -t <pod pid> -n) with its
backends ready, and prints an Ansible inventory (hosts P-hN in group mtproxy, the first K also in
mtproxy_canary) for the container flip method: ansible_connection local, this machine's python3,
mtproxy_cutover_method container, mtproxy_cutover_service P-hN, mtproxy_cutover_state_dir
<fleet dir>/state, and mtproxy_cutover_go_image / _go_image_id (/ _go_image_archive) when known.
Without --c-image, tests/hosts/build-proxy-images.sh builds (or finds) both images, the stand-in or
$MTPROXY_C_BINARY / $MTPROXY_GO_BINARY.

The fleet's record (images, secrets, each proxy's `docker inspect` spec at `up`) is
<fleet dir>/fleet.json, root-only; the fleet dir is $MTPROXY_CONTAINER_FLEET_DIR/P (default
/tmp/mtproxy-cutover-fleet/P). Every container and volume is labelled mtproxy-cutover.container-fleet=P;
`down` removes them, whatever image the proxies run by then, and the fleet dir.

`traffic` runs a bounded obfuscated2 test client in every pod (docker exec) with the host's secret and
prints its counts per host (handshakes, replies, unanswered, refused, ...). `snapshot` prints, per host,
the proxy's image ID and spec, who answers /stats and (with --traffic-seconds) traffic counts.
The steady clients' counts in `snapshot` (background_clients) are summed over their runs, the
one going on ended first.
`replace` redeploys proxies by hand, the way an operator would (docker stop, docker rm, docker run
with the same options from another image), and prints the timings. As in the official image, the
container's PID 1 is `/bin/sh -c`, which ignores SIGTERM: `docker stop` waits its 10 s timeout, then
kills.
Exit codes: 0 ok, 1 a step failed (message on stderr), 2 bad arguments.
"""

import argparse
import json
import os
import re
import secrets as secrets_mod
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_IMAGES = os.path.join(HERE, "build-proxy-images.sh")
FLEET_LABEL = "mtproxy-cutover.container-fleet"
ROLE_LABEL = "mtproxy-cutover.container-fleet-role"
DEFAULT_BASE_DIR = "/tmp/mtproxy-cutover-fleet"
STATS_PORT = 2398
CLIENT_PORT = 443
TOOLS = "/opt/mtproxy-test"
POD_SECRET = "/etc/mtproxy-test/client-secret"
POD_BACKEND_PID = "/tmp/backend.pid"
# Seconds a test connection waits for its replies (see run_client).
REPLY_TIMEOUT_S = 3.0
FAULTS_IN_VOLUME = "/data/standin-faults.json"
DOCKER_TIMEOUT_S = 120
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
# Keys only one flavour's /stats has (the C binary's and the Go port's formats).
C_KEYS = frozenset(("pid", "start_time", "uptime", "total_special_connections", "tot_forwarded_queries"))
GO_KEYS = frozenset(("stats_generated_at", "has_current_config", "ingress_accepted_connections",
                     "dataplane_packets_total"))
# Read inside the pod's network namespace by this machine's python3 (no proxy settings, no site).
STATS_PROBE = (
    "import http.client,sys\n"
    "c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[1]),timeout=float(sys.argv[2]))\n"
    "c.request('GET','/stats')\n"
    "r=c.getresponse()\n"
    "b=r.read()\n"
    "sys.stdout.write('%d\\n' % r.status)\n"
    "sys.stdout.write(b.decode('utf-8','replace'))\n"
)


class FleetError(Exception):
    pass


# --- docker and the machine -------------------------------------------------------------------

def docker(*args, check=True, timeout=DOCKER_TIMEOUT_S, input_text=None):
    try:
        proc = subprocess.run(["docker"] + [str(a) for a in args], capture_output=True, text=True,
                              timeout=timeout, check=False, input=input_text)
    except subprocess.TimeoutExpired:
        raise FleetError("docker %s: no answer within %d s" % (args[0], timeout))
    except OSError as exc:
        raise FleetError("docker CLI: %s" % exc)
    if check and proc.returncode != 0:
        command = " ".join(str(a) for a in args[:2])
        raise FleetError("docker %s failed (%d): %s" % (command, proc.returncode, proc.stderr.strip()[-600:]))
    return proc


def engine_problem():
    """Why no Docker engine can be used here, or None."""
    if not shutil.which("docker"):
        return "docker CLI not installed"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "docker info failed: %s" % exc
    if proc.returncode != 0 or not proc.stdout.strip():
        return "no Docker engine answers: %s" % proc.stderr.strip()[:200]
    return None


def machine_python():
    """The python3 the modules run with on this machine (standard library only)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else (shutil.which("python3") or sys.executable)


def inspect(kind, name):
    """`docker <kind> inspect` document of name, or None when it does not exist."""
    proc = docker(kind, "inspect", name, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]


def image_id(ref):
    doc = inspect("image", ref)
    if doc is None:
        raise FleetError("image %s not found (tests/hosts/build-proxy-images.sh builds it)" % ref)
    return doc["Id"]


def log(message):
    sys.stderr.write("container_fleet: %s\n" % message)
    sys.stderr.flush()


# --- names and the fleet record ---------------------------------------------------------------

def base_dir():
    return os.environ.get("MTPROXY_CONTAINER_FLEET_DIR", DEFAULT_BASE_DIR)


def fleet_dir(prefix):
    return os.path.join(base_dir(), prefix)


def record_path(prefix):
    return os.path.join(fleet_dir(prefix), "fleet.json")


def host_name(prefix, index):
    return "%s-h%d" % (prefix, index)


def pod_name(host):
    return host + "-pod"


def volume_name(host):
    return host + "-data"


def load_record(prefix):
    try:
        with open(record_path(prefix)) as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FleetError("no fleet '%s' (%s missing): run `container_fleet.py up --prefix %s` first"
                         % (prefix, record_path(prefix), prefix))


def save_record(record):
    path = record_path(record["prefix"])
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def labelled(kind, prefix=None):
    """Names of containers ('ps') or volumes ('volume') with the fleet label (of one prefix)."""
    selector = FLEET_LABEL if prefix is None else "%s=%s" % (FLEET_LABEL, prefix)
    if kind == "ps":
        out = docker("ps", "-a", "--filter", "label=" + selector, "--format", "{{.Names}}").stdout
    else:
        out = docker("volume", "ls", "-q", "--filter", "label=" + selector).stdout
    return sorted(name for name in out.split() if name)


# --- /stats inside the pod's network namespace -------------------------------------------------

def netns_pid(host):
    """PID whose network namespace the host's proxy lives in (the pod's main process)."""
    doc = inspect("container", pod_name(host))
    if doc is None or not doc["State"].get("Running"):
        raise FleetError("pod %s is not running" % pod_name(host))
    return doc["State"]["Pid"]


def parse_stats(body):
    values = {}
    for line in body.splitlines():
        key, sep, value = line.partition("\t")
        if sep and key and key not in values:
            values[key] = value
    return values


def flavour_of(values):
    c_hit, go_hit = bool(C_KEYS & set(values)), bool(GO_KEYS & set(values))
    if c_hit != go_hit:
        return "c" if c_hit else "go"
    return None


def read_stats(host, timeout=2.0, pid=None):
    """(values dict, flavour) of the host's /stats, read from inside its network namespace.
    Raises FleetError when nothing answers."""
    pid = pid or netns_pid(host)
    try:
        proc = subprocess.run(["nsenter", "-t", str(pid), "-n", machine_python(), "-I", "-S", "-c", STATS_PROBE,
                               str(STATS_PORT), str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 10, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError("%s: /stats probe did not finish" % host)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise FleetError("%s: /stats does not answer: %s" % (host, lines[-1] if lines else proc.returncode))
    status, body = (proc.stdout.split("\n", 1) + [""])[:2]
    if status != "200":
        raise FleetError("%s: /stats answered HTTP %s" % (host, status))
    values = parse_stats(body)
    return values, flavour_of(values)


def ready(values, flavour):
    """The proxy serves: Go has loaded its config, C has a backend connection ready."""
    if flavour == "go":
        return values.get("has_current_config") == "1"
    if flavour == "c":
        try:
            return int(values.get("total_ready_targets", values.get("ready_targets", "0"))) > 0
        except ValueError:
            return False
    return False


def wait_ready(host, timeout_s, expect=None):
    """Poll /stats until the proxy is ready (bounded); returns (flavour, seconds waited)."""
    started = time.monotonic()
    deadline = started + timeout_s
    last = "no answer yet"
    while True:
        try:
            values, flavour = read_stats(host, timeout=1.0)
            if expect and flavour != expect:
                last = "answers as %s, expected %s" % (flavour, expect)
            elif ready(values, flavour):
                return flavour, time.monotonic() - started
            else:
                last = "%s not ready yet" % flavour
        except FleetError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            state = inspect("container", host)
            logs = docker("logs", "--tail", "15", host, check=False)
            raise FleetError("%s: not ready after %d s (%s); container %s; last log lines:\n%s%s"
                             % (host, timeout_s, last, state["State"]["Status"] if state else "missing",
                                logs.stdout, logs.stderr))
        time.sleep(0.2)


# --- a proxy container's spec -----------------------------------------------------------------

def spec_of(doc):
    """Comparable view of a proxy container's `docker inspect`: what a flip must keep, and its image."""
    config, host = doc["Config"], doc["HostConfig"]
    mounts = sorted((m.get("Type"), m.get("Name") or m.get("Source"), m.get("Destination"), bool(m.get("RW")))
                    for m in doc.get("Mounts") or [])
    return {
        "image_id": doc["Image"],
        "image_ref": config.get("Image"),
        "cmd": config.get("Cmd"),
        "entrypoint": config.get("Entrypoint"),
        "env": sorted(config.get("Env") or []),
        "user": config.get("User") or "",
        "working_dir": config.get("WorkingDir") or "",
        "labels": config.get("Labels") or {},
        "exposed_ports": sorted(config.get("ExposedPorts") or {}),
        "mounts": [list(m) for m in mounts],
        "network_mode": host.get("NetworkMode"),
        "restart_policy": host.get("RestartPolicy"),
        "port_bindings": host.get("PortBindings") or {},
        "binds": host.get("Binds") or [],
        "cap_add": host.get("CapAdd") or [],
        "security_opt": host.get("SecurityOpt") or [],
        "ulimits": host.get("Ulimits") or [],
    }


IMAGE_FIELDS = ("image_id", "image_ref")


def spec_changes(before, after):
    """{field: [before, after]} of every spec field other than the image that differs."""
    return dict((key, [before.get(key), after.get(key)]) for key in sorted(set(before) | set(after))
                if key not in IMAGE_FIELDS and before.get(key) != after.get(key))


def proxy_spec(host):
    doc = inspect("container", host)
    if doc is None:
        raise FleetError("proxy container %s does not exist" % host)
    return spec_of(doc), doc


# --- up ---------------------------------------------------------------------------------------

def run_options(record, entry):
    """`docker run` options of a proxy, as an operator writes them for the official image."""
    options = ["--name", entry["name"], "--network", "container:" + entry["pod"],
               "-v", "%s:/data" % entry["volume"], "--restart", "unless-stopped",
               "--label", "%s=%s" % (FLEET_LABEL, record["prefix"])]
    for label in record["labels"]:
        options += ["--label", label]
    if not record["secret_in_volume"]:
        options += ["-e", "SECRET=" + entry["secret"]]
    options += ["-e", "WORKERS=%d" % record["workers"]]
    return options


def copy_in(container, path, content):
    """Write content to path in a created (or running) container, root-only."""
    with tempfile.NamedTemporaryFile("w", delete=False) as handle:
        handle.write(content)
        local = handle.name
    try:
        os.chmod(local, 0o600)
        docker("cp", local, "%s:%s" % (container, path))
    finally:
        os.unlink(local)


def backend_env(faults):
    """The pod's environment for the "backend" section of a host's faults: the test backend's own
    fault, the same whatever binary the proxy runs (tests/hosts/proxy-image/pod.sh)."""
    backend = (faults or {}).get("backend") or {}
    unknown = sorted(set(backend) - {"reset_go_after"})
    if unknown:
        raise FleetError("--faults: the backend section knows only reset_go_after, not %s" % ", ".join(unknown))
    if "reset_go_after" not in backend:
        return []
    value = backend["reset_go_after"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FleetError("--faults: backend.reset_go_after must be a number >= 0")
    return ["-e", "BACKEND_RESET_GO_AFTER=%d" % value]


def lift_backend_fault(entry):
    """The pod's test backend answers every Go connection from now on (SIGUSR1, pod.sh)."""
    docker("exec", entry["pod"], "sh", "-c", 'kill -USR1 "$(cat %s)"' % POD_BACKEND_PID)


def start_pod(record, entry, faults=None):
    """The host's pod: network namespace, test backend, steady client (started by touching /tmp/start-clients)."""
    docker("create", "--name", entry["pod"], "--hostname", entry["name"], "--network", "none", "--rm",
           "--label", "%s=%s" % (FLEET_LABEL, record["prefix"]), "--label", ROLE_LABEL + "=pod",
           "-e", "LIFETIME=%d" % record["lifetime_s"], "-e", "CLIENT_RATE=%g" % record["client_rate"],
           "-e", "CLIENT_RUN_S=%d" % record["client_run_s"], *backend_env(faults),
           "--entrypoint", "/bin/sh", record["pod_image"], TOOLS + "/pod.sh")
    copy_in(entry["pod"], POD_SECRET, entry["secret"] + "\n")
    docker("start", entry["pod"])


def start_host(record, entry, faults):
    fleet_label = "%s=%s" % (FLEET_LABEL, record["prefix"])
    start_pod(record, entry, faults)
    docker("volume", "create", "--label", fleet_label, entry["volume"])
    docker("create", *run_options(record, entry), record["c_image"])
    if record["secret_in_volume"]:
        copy_in(entry["name"], "/data/secret", entry["secret"] + "\n")
    if faults is not None:
        copy_in(entry["name"], FAULTS_IN_VOLUME, json.dumps(faults) + "\n")
    docker("start", entry["name"])
    flavour, waited = wait_ready(entry["name"], record["ready_timeout_s"])
    docker("exec", entry["pod"], "touch", "/tmp/start-clients")  # the steady client starts now
    spec, doc = proxy_spec(entry["name"])
    entry["spec"] = spec
    entry["container_id"] = doc["Id"]
    entry["pod_id"] = inspect("container", entry["pod"])["Id"]
    entry["flavour_at_up"] = flavour
    entry["ready_s"] = round(waited, 2)
    return entry


def private_go_image(prefix, go_image, archive):
    """A copy of go_image that exists only in archive: one more (empty) layer, made by a command that
    names the fleet, gives it an ID of its own (fleets that run at once never share it, so one's `down`
    cannot remove the image another's cutover loads; the build cache gave one ID to the same command),
    and leaves its config as it was (a label would show in the containers' labels), `docker save` writes
    it, and it is removed from the engine. Returns (tag, ID)."""
    tag = "%s-%s" % (go_image, prefix)
    docker("build", "--network", "none", "-q", "-t", tag, "-",
           input_text='FROM %s\nRUN ["/bin/true", "%s"]\n' % (go_image, prefix), timeout=600)
    private_id = image_id(tag)
    tmp = archive + ".tmp"
    docker("save", "-o", tmp, tag, timeout=600)
    os.replace(tmp, archive)
    docker("rmi", tag)
    log("Go image %s (%s) is only in %s" % (tag, private_id, archive))
    return tag, private_id


def build_images(go_archive):
    command = [BUILD_IMAGES] + (["--save-go", go_archive] if go_archive else [])
    log("images: %s" % " ".join(command))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError("build-proxy-images.sh did not finish within 1800 s")
    if proc.returncode != 0:
        raise FleetError("build-proxy-images.sh failed (%d): %s" % (proc.returncode, proc.stderr.strip()[-1500:]))
    lines = proc.stdout.split()
    return lines[0], lines[1]


def yaml_inventory(record):
    """The inventory as YAML (every scalar written as JSON, which YAML reads)."""
    q = json.dumps
    lines = ["# Written by tests/hosts/container_fleet.py up --prefix %s" % record["prefix"],
             "all:", "  children:", "    mtproxy:", "      vars:"]
    for key, value in sorted(group_vars(record).items()):
        lines.append("        %s: %s" % (key, q(value)))
    lines.append("      hosts:")
    for entry in record["hosts"]:
        lines.append("        %s:" % entry["name"])
        lines.append("          mtproxy_cutover_service: %s" % q(entry["name"]))
    lines += ["      children:", "        mtproxy_canary:", "          hosts:"]
    lines += ["            %s: {}" % entry["name"] for entry in record["hosts"] if entry["canary"]]
    return "\n".join(lines) + "\n"


def group_vars(record):
    out = {
        "ansible_connection": "local",
        "ansible_python_interpreter": record.get("python") or machine_python(),
        "mtproxy_cutover_method": "container",
        "mtproxy_cutover_state_dir": record["state_dir"],
    }
    if record.get("go_image"):
        out["mtproxy_cutover_go_image"] = record["go_image"]
        out["mtproxy_cutover_go_image_id"] = record["go_image_id"]
    if record.get("go_archive"):
        out["mtproxy_cutover_go_image_archive"] = record["go_archive"]
    return out


def write_inventory(record, target, fmt):
    if fmt == "json":
        hosts = dict((e["name"], {"mtproxy_cutover_service": e["name"]}) for e in record["hosts"])
        canaries = dict((e["name"], {}) for e in record["hosts"] if e["canary"])
        text = json.dumps({"all": {"children": {"mtproxy": {
            "vars": group_vars(record), "hosts": hosts,
            "children": {"mtproxy_canary": {"hosts": canaries}}}}}}, indent=2, sort_keys=True) + "\n"
    else:
        text = yaml_inventory(record)
    if target == "-":
        sys.stdout.write(text)
        return
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    with open(target, "w") as handle:
        handle.write(text)


def parse_faults(items, names):
    faults = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in names:
            raise FleetError("--faults takes HOST=JSON with HOST one of %s" % ", ".join(names))
        try:
            faults[name] = json.loads(text)
        except ValueError as exc:
            raise FleetError("--faults %s: not JSON: %s" % (name, exc))
        if not isinstance(faults[name], dict):
            raise FleetError("--faults %s: not a JSON object" % name)
        backend_env(faults[name])
    return faults


def remove_fleet(prefix, names=()):
    """Remove every container and volume of the fleet (labelled, or named in its record)."""
    containers = sorted(set(labelled("ps", prefix)) | set(names))
    if containers:
        docker("rm", "-f", "-v", *containers, check=False, timeout=DOCKER_TIMEOUT_S + 10 * len(containers))
    volumes = sorted(set(labelled("volume", prefix)) | set(volume_name(n) for n in names if not n.endswith("-pod")))
    existing = [v for v in volumes if inspect("volume", v) is not None]
    if existing:
        docker("volume", "rm", "-f", *existing, check=False)
    shutil.rmtree(fleet_dir(prefix), ignore_errors=True)
    return containers, existing


def cmd_up(args):
    prefix = args.prefix
    if args.count < 1 or not 0 <= args.canaries <= args.count:
        raise FleetError("need --count >= 1 and 0 <= --canaries <= --count")
    existing = labelled("ps", prefix) + labelled("volume", prefix)
    if existing or os.path.exists(fleet_dir(prefix)):
        raise FleetError("fleet '%s' exists (%s); run `container_fleet.py down --prefix %s` first"
                         % (prefix, " ".join(existing) or fleet_dir(prefix), prefix))
    names = [host_name(prefix, i) for i in range(1, args.count + 1)]
    faults = parse_faults(args.faults, names)
    go_archive = os.path.abspath(args.go_archive) if args.go_archive else None
    c_image, go_image, go_private = args.c_image, args.go_image, None
    if not c_image:
        c_image, built_go = build_images(None if args.go_archive_only or go_image else go_archive)
        go_image = go_image or built_go
    if args.go_archive_only:
        go_image, go_private = private_go_image(prefix, go_image, go_archive)
    elif go_archive and not os.path.exists(go_archive):
        docker("save", "-o", go_archive, go_image, timeout=600)
    os.makedirs(base_dir(), exist_ok=True)
    os.makedirs(fleet_dir(prefix), mode=0o700)
    os.chmod(fleet_dir(prefix), 0o700)
    state_dir = os.path.join(fleet_dir(prefix), "state")
    os.makedirs(state_dir, mode=0o700)
    record = {
        "prefix": prefix,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "c_image": c_image, "c_image_id": image_id(c_image),
        "go_image": go_image, "go_image_id": go_private or (image_id(go_image) if go_image else None),
        "go_archive": go_archive, "go_private": bool(go_private),
        "python": args.python or machine_python(),
        "pod_image": args.pod_image or c_image,
        "state_dir": state_dir,
        "secret_in_volume": args.secret_in_volume,
        "workers": args.workers,
        "client_rate": args.client_rate,
        "client_run_s": args.client_run_seconds,
        "lifetime_s": args.lifetime,
        "ready_timeout_s": args.ready_timeout,
        "labels": args.label,
        "hosts": [{"name": name, "pod": pod_name(name), "volume": volume_name(name), "canary": i < args.canaries,
                   "secret": secrets_mod.token_hex(16)} for i, name in enumerate(names)],
    }
    save_record(record)
    started = time.monotonic()
    errors = []
    with ThreadPoolExecutor(max_workers=min(args.parallel, len(names))) as pool:
        futures = [pool.submit(start_host, record, entry, faults.get(entry["name"])) for entry in record["hosts"]]
        for future in futures:
            try:
                future.result()
            except FleetError as exc:
                errors.append(str(exc))
    if errors:
        if not args.keep_on_failure:
            remove_fleet(prefix, names + [pod_name(n) for n in names])
        raise FleetError("; ".join(errors))
    save_record(record)
    write_inventory(record, args.inventory, args.format)
    log("%d hosts up in %.1f s (%s; pods: %s)" % (len(names), time.monotonic() - started, c_image,
                                                  record["pod_image"]))
    return 0


# --- traffic, snapshot, replace ---------------------------------------------------------------

def select_hosts(record, only):
    names = [entry["name"] for entry in record["hosts"]]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise FleetError("not hosts of fleet %s: %s" % (record["prefix"], ", ".join(unknown)))
    return [entry for entry in record["hosts"] if not only or entry["name"] in only]


def run_client(entry, seconds, rate, packets, mode="obf"):
    """Counts of one bounded test client run inside the host's pod.

    A connection waits up to REPLY_TIMEOUT_S for its replies (and ends as soon as it has them): the
    client's 0.3 s left 4 of 20 Go replies unread on a loaded CI machine, right after a Go container
    started, and an answer that comes is what is asserted, not how fast.
    """
    count = max(1, int(round(seconds * rate)))
    proc = docker("exec", entry["pod"], "python3", TOOLS + "/mtproxy_testclient.py", "--port", CLIENT_PORT,
                  "--secret-file", POD_SECRET, "--mode", mode, "--packets", packets, "--count", count,
                  "--rate", rate, "--reply-timeout", REPLY_TIMEOUT_S, "--max-seconds", seconds + 10,
                  check=False, timeout=seconds + 60)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise FleetError("%s: test client printed no summary (%d): %s" % (entry["name"], proc.returncode,
                                                                          proc.stderr.strip()[-400:]))
    counts = json.loads(lines[-1])
    counts["exit_code"] = proc.returncode
    return counts


def traffic(record, hosts, seconds, rate, packets):
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = dict((e["name"], pool.submit(run_client, e, seconds, rate, packets)) for e in hosts)
        return dict((name, future.result()) for name, future in futures.items())


def cmd_traffic(args):
    record = load_record(args.prefix)
    counts = traffic(record, select_hosts(record, args.host), args.seconds, args.rate, args.packets)
    print(json.dumps({"prefix": args.prefix, "hosts": counts}, indent=2, sort_keys=True))
    return 0 if all(c["exit_code"] == 0 for c in counts.values()) else 1


def client_log_lines(entry):
    proc = docker("exec", entry["pod"], "cat", "/tmp/client.log", check=False)
    return [line for line in proc.stdout.splitlines() if line.startswith("{")]


def background_clients(entry, flush=True):
    """Summed counts of the pod's steady client runs (/tmp/client.log). With flush, the run going on
    is ended first (SIGTERM: it prints its summary, the pod starts the next run 2 s later), so the
    counts cover everything up to now."""
    lines = client_log_lines(entry)
    if flush:
        ended = docker("exec", entry["pod"], "pkill", "-TERM", "-f", "mtproxy_testclient.py .*--mode mixed", check=False)
        deadline = time.monotonic() + 5
        while ended.returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            now = client_log_lines(entry)
            if len(now) > len(lines):
                lines = now
                break
    totals = {"runs": 0}
    for line in lines:
        try:
            run = json.loads(line)
        except ValueError:
            continue
        totals["runs"] += 1
        for key, value in run.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    return totals


def backend_counts(entry):
    """The pod's test backend summary (its --stats-file), or None when the pod cannot tell."""
    proc = docker("exec", entry["pod"], "cat", "/tmp/backend.json", check=False)
    try:
        return json.loads(proc.stdout) if proc.returncode == 0 else None
    except ValueError:
        return None


def snapshot_host(record, entry):
    spec, doc = proxy_spec(entry["name"])
    pod = inspect("container", entry["pod"]) or {"Id": None, "State": {}}
    out = {
        "container_id": doc["Id"],
        "recreated_since_up": doc["Id"] != entry.get("container_id"),
        "pod_id": pod["Id"],
        "pod_running": bool(pod["State"].get("Running")),
        "status": doc["State"]["Status"],
        "restart_count": doc.get("RestartCount", 0),
        "started_at": doc["State"].get("StartedAt"),
        "spec": spec,
        "spec_changes_since_up": spec_changes(entry["spec"], spec),
        "image_is": ("c" if spec["image_id"] == record["c_image_id"]
                     else "go" if spec["image_id"] == record.get("go_image_id") else "other"),
        "backend": backend_counts(entry) if pod["State"].get("Running") else None,
    }
    try:
        values, flavour = read_stats(entry["name"])
        out["stats_flavour"] = flavour
        out["stats_ready"] = ready(values, flavour)
        out["stats_version"] = values.get("version")
    except FleetError as exc:
        out["stats_flavour"] = None
        out["stats_error"] = str(exc)
    return out


def cmd_snapshot(args):
    record = load_record(args.prefix)
    hosts = select_hosts(record, args.host)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        futures = dict((e["name"], pool.submit(snapshot_host, record, e)) for e in hosts)
        result = dict((name, future.result()) for name, future in futures.items())
    if args.traffic_seconds > 0:
        for name, counts in traffic(record, hosts, args.traffic_seconds, args.rate, args.packets).items():
            result[name]["traffic"] = counts
    for entry in hosts:
        result[entry["name"]]["background_clients"] = background_clients(entry)
    print(json.dumps({"prefix": args.prefix, "c_image_id": record["c_image_id"],
                      "go_image_id": record.get("go_image_id"), "hosts": result}, indent=2, sort_keys=True))
    return 0


def replace_host(record, entry, image, timeout_s):
    """Redeploy by hand: docker stop + rm, then docker run with the same options from image."""
    t0 = time.monotonic()
    docker("stop", entry["name"])
    t_stopped = time.monotonic()
    docker("rm", entry["name"])
    docker("run", "-d", *run_options(record, entry), image)
    t_run = time.monotonic()
    flavour = wait_ready(entry["name"], timeout_s)[0]
    t_ready = time.monotonic()
    return {"stop_ms": int((t_stopped - t0) * 1000), "run_ms": int((t_run - t_stopped) * 1000),
            "ready_ms": int((t_ready - t_run) * 1000), "window_ms": int((t_ready - t0) * 1000),
            "flavour": flavour, "image_id": proxy_spec(entry["name"])[0]["image_id"]}


def cmd_replace(args):
    record = load_record(args.prefix)
    hosts = select_hosts(record, args.host)
    result = {}
    for entry in hosts:  # one after another, as a careful operator does
        result[entry["name"]] = replace_host(record, entry, args.image, record["ready_timeout_s"])
    print(json.dumps({"prefix": args.prefix, "image": args.image, "hosts": result}, indent=2, sort_keys=True))
    return 0


# --- down, list -------------------------------------------------------------------------------

def cmd_down(args):
    if args.all == (args.prefix is not None):
        raise FleetError("give exactly one of --prefix or --all")
    prefixes = set()
    if args.all:
        for kind in ("ps", "volume"):
            for name in labelled(kind):
                doc = inspect("container" if kind == "ps" else "volume", name) or {}
                labels = (doc.get("Config") or {}).get("Labels") if kind == "ps" else doc.get("Labels")
                if labels and labels.get(FLEET_LABEL):
                    prefixes.add(labels[FLEET_LABEL])
        if os.path.isdir(base_dir()):
            prefixes.update(os.listdir(base_dir()))
    else:
        prefixes.add(args.prefix)
    removed_c, removed_v = [], []
    for prefix in sorted(prefixes):
        names, private_image = [], None
        try:
            record = load_record(prefix)
            names = [name for entry in record["hosts"] for name in (entry["name"], entry["pod"])]
            private_image = record["go_image_id"] if record.get("go_private") else None
        except (FleetError, ValueError, KeyError):
            pass
        containers, volumes = remove_fleet(prefix, names)
        if private_image and inspect("image", private_image) is not None:
            docker("rmi", "-f", private_image, check=False)
        removed_c += containers
        removed_v += volumes
    log("removed %d containers, %d volumes (%s)" % (len(removed_c), len(removed_v), ", ".join(sorted(prefixes))))
    return 0


def cmd_list(args):
    for name in labelled("ps", args.prefix):
        print(name)
    return 0


# --- command line -----------------------------------------------------------------------------

def prefix_arg(text):
    if not NAME_RE.match(text) or len(text) > 40:
        raise argparse.ArgumentTypeError("a container name prefix ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 40)")
    return text


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start N proxy hosts (pod + proxy container) and print an inventory")
    up.add_argument("--prefix", required=True, type=prefix_arg)
    up.add_argument("--count", type=int, default=3)
    up.add_argument("--canaries", type=int, default=1)
    up.add_argument("--c-image", help="image the proxies start from (default: build-proxy-images.sh's C image)")
    up.add_argument("--go-image", help="Go image for the inventory (default: build-proxy-images.sh's Go image)")
    up.add_argument("--go-archive", help="docker save of the Go image here; the inventory names it")
    up.add_argument("--go-archive-only", action="store_true",
                    help="the Go image exists only in --go-archive: a private copy (its own ID) is saved there and "
                         "removed from the engine, so that the cutover has to load it; `down` removes it again")
    up.add_argument("--python", help="ansible_python_interpreter of the hosts (default: /usr/bin/python3)")
    up.add_argument("--pod-image", help="image of the pod containers (default: the C image)")
    up.add_argument("--secret-in-volume", action="store_true", help="secret in /data/secret, no SECRET env")
    up.add_argument("--workers", type=int, default=1, help="WORKERS of the proxies (default 1)")
    up.add_argument("--client-rate", type=float, default=10.0,
                    help="steady test client connections per second in each pod (0: none; default 10)")
    up.add_argument("--client-run-seconds", type=int, default=30,
                    help="length of each steady client run (default 30)")
    up.add_argument("--lifetime", type=int, default=7200, help="seconds a pod lives (default 7200, max 86400)")
    up.add_argument("--ready-timeout", type=int, default=60, help="seconds to wait for each proxy's /stats")
    up.add_argument("--label", action="append", default=[], help="extra label K=V of the proxy containers")
    up.add_argument("--faults", action="append", default=[], metavar="HOST=JSON",
                    help="faults of one host: the stand-in's fault file (in its volume), e.g. '{\"go\": {...}}',"
                         " and the pod's test backend's, '{\"backend\": {\"reset_go_after\": 0}}'")
    up.add_argument("--inventory", default="-", help="where to write the inventory (default: stdout)")
    up.add_argument("--format", choices=("yaml", "json"), default="yaml")
    up.add_argument("--parallel", type=int, default=4, help="hosts started at the same time")
    up.add_argument("--keep-on-failure", action="store_true", help="leave a failed fleet for inspection")
    up.set_defaults(func=cmd_up)

    tr = sub.add_parser("traffic", help="bounded test client in every pod; counts per host")
    tr.add_argument("--prefix", required=True, type=prefix_arg)
    tr.add_argument("--seconds", type=float, default=3.0)
    tr.add_argument("--rate", type=float, default=10.0, help="connections per second")
    tr.add_argument("--packets", type=int, default=1, help="packets per connection (1: replies == handshakes)")
    tr.add_argument("--host", action="append", help="only this host (repeatable)")
    tr.set_defaults(func=cmd_traffic)

    sn = sub.add_parser("snapshot", help="image, spec, /stats flavour (and traffic) of every proxy")
    sn.add_argument("--prefix", required=True, type=prefix_arg)
    sn.add_argument("--traffic-seconds", type=float, default=0.0)
    sn.add_argument("--rate", type=float, default=10.0)
    sn.add_argument("--packets", type=int, default=1)
    sn.add_argument("--host", action="append")
    sn.set_defaults(func=cmd_snapshot)

    rp = sub.add_parser("replace", help="redeploy proxies by hand from another image (stop, rm, run)")
    rp.add_argument("--prefix", required=True, type=prefix_arg)
    rp.add_argument("--image", required=True)
    rp.add_argument("--host", action="append")
    rp.set_defaults(func=cmd_replace)

    down = sub.add_parser("down", help="remove a fleet's containers, volumes and directory")
    down.add_argument("--prefix", type=prefix_arg)
    down.add_argument("--all", action="store_true", help="every container fleet on this engine")
    down.set_defaults(func=cmd_down)

    lst = sub.add_parser("list", help="container names of a fleet (or of all)")
    lst.add_argument("--prefix", type=prefix_arg)
    lst.set_defaults(func=cmd_list)

    args = parser.parse_args(argv)
    if args.command == "up":
        if not 1 <= args.lifetime <= 86400:
            parser.error("--lifetime must be 1..86400")
        if not 0 <= args.client_rate <= 200 or not 1 <= args.workers <= 16 or not 5 <= args.client_run_seconds <= 600:
            parser.error("--client-rate must be 0..200, --workers 1..16, --client-run-seconds 5..600")
        if args.go_archive and args.c_image and not args.go_image:
            parser.error("--go-archive with --c-image needs --go-image")
        if args.go_archive_only and not args.go_archive:
            parser.error("--go-archive-only needs --go-archive")
    if args.command in ("traffic", "snapshot"):
        seconds = args.seconds if args.command == "traffic" else args.traffic_seconds
        if not 0 <= seconds <= 120 or not 0 < args.rate <= 200 or not 0 <= args.packets <= 100:
            parser.error("seconds must be 0..120, --rate 0..200, --packets 0..100")
        if args.command == "traffic" and seconds <= 0:
            parser.error("--seconds must be above 0")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except FleetError as exc:
        log(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
