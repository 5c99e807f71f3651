"""`make bench`, container part: the container flip's window and refused connects, next to a by-hand redeploy.

Brings up a fleet of two proxy containers (tests/hosts/container_fleet.py; stand-in images unless
MTPROXY_C_BINARY / MTPROXY_GO_BINARY are set), then for BENCH_REPEATS rounds:
  - host 1 is flipped C -> Go and rolled back Go -> C by the collection's container flip
    (container_switch, as mtproxy_switch runs it);
  - host 2 is redeployed the same two ways by hand, as an operator does (`docker stop`, `docker rm`,
    `docker run` with the same options from the other image: container_fleet.py replace);
while prober.py connects to 127.0.0.1:443 every millisecond inside the host's network namespace
(the pod's, which outlives the proxy container). Prints a table (median and max window in ms,
refused connects per flip) and the ratio collection / by hand; writes artifacts/bench/container.json.
The fleet is removed on exit. Environment: BENCH_REPEATS (default 7), BENCH_PREFIX (default
benchctr), BENCH_KEEP=1 leaves the fleet.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FLEET = os.path.join(REPO, "tests", "hosts", "container_fleet.py")
PROBER = os.path.join(HERE, "prober.py")
COLLECTIONS = os.environ.get("MTPROXY_TEST_COLLECTIONS_PATH", os.path.join(REPO, ".venv", "collections"))
sys.path.insert(0, COLLECTIONS)

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import freeze as fz  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.module_utils._flow.switch import switch_service  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.docker_api import Docker  # noqa: E402


def fleet(*args):
    out = subprocess.run([sys.executable, FLEET] + list(args), capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise SystemExit("container_fleet.py %s failed: %s" % (args[0], out.stderr.strip()[-2000:]))
    return out.stdout


class Prober:
    """prober.py inside the network namespace of ``pid`` (bounded by --max-seconds)."""

    def __init__(self, pid):
        self.dir = tempfile.mkdtemp(prefix="mtproxy-bench-probe-")
        self.stop_file = os.path.join(self.dir, "stop")
        ready = os.path.join(self.dir, "ready")
        self.proc = subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, PROBER, "--host", "127.0.0.1",
                                      "--port", "443", "--interval-ms", "1", "--max-seconds", "120",
                                      "--stop-file", self.stop_file, "--ready-file", ready],
                                     stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(ready) and time.monotonic() < deadline:
            time.sleep(0.01)

    def finish(self):
        time.sleep(0.3)
        open(self.stop_file, "w").close()
        out, _err = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def pod_pid(docker, name):
    return docker.inspect_container(name + "-pod")["State"]["Pid"]


def main():
    repeats = int(os.environ.get("BENCH_REPEATS", "7"))
    prefix = os.environ.get("BENCH_PREFIX", "benchctr")
    docker = Docker()
    fleet("down", "--prefix", prefix)
    inventory = fleet("up", "--prefix", prefix, "--count", "2", "--canaries", "1", "--lifetime", "3600")
    record = json.load(open(os.path.join(os.environ.get("MTPROXY_CONTAINER_FLEET_DIR", "/tmp/mtproxy-cutover-fleet"),
                                         prefix, "fleet.json")))
    go_image, c_image = record["go_image_id"], record["c_image_id"]
    state_dir = os.path.join(tempfile.mkdtemp(prefix="mtproxy-bench-state-"))
    ours, theirs = prefix + "-h1", prefix + "-h2"
    params = dict(service=ours, state_dir=state_dir, refreeze=False, go_binaries=[], stats_check=True,
                  method="container", allow_no_baseline=False, baseline_samples=0, baseline_interval=1.0,
                  go_images=[go_image], docker_socket="/var/run/docker.sock")
    fz.freeze_host(params, None, False, fz.now_utc(), [])
    rows = {"collection C->Go": [], "collection Go->C": [], "by hand C->Go": [], "by hand Go->C": []}
    try:
        for _round in range(repeats):
            for target, label in (("go", "collection C->Go"), ("c", "collection Go->C")):
                probe = Prober(pod_pid(docker, ours))
                result = switch_service(ours, state_dir, target, go_image if target == "go" else None)
                rows[label].append(dict(probe.finish(), unavailable_ms=result["timings"]["unavailable_ms"]))
            for image, label in ((go_image, "by hand C->Go"), (c_image, "by hand Go->C")):
                probe = Prober(pod_pid(docker, theirs))
                fleet("replace", "--prefix", prefix, "--image", image, "--host", theirs)
                rows[label].append(probe.finish())
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            fleet("down", "--prefix", prefix)
    summary = {}
    print("%-18s %7s %10s %10s %14s" % ("flip", "rounds", "median ms", "max ms", "refused/flip"))
    for label, runs in rows.items():
        windows = [r["window_ms"] for r in runs]
        refused = [r["refused"] for r in runs]
        summary[label] = {"rounds": len(runs), "window_ms_median": statistics.median(windows),
                          "window_ms_max": max(windows), "refused_median": statistics.median(refused),
                          "runs": runs}
        figures = (label, len(runs), statistics.median(windows), max(windows), statistics.median(refused))
        print("%-18s %7d %10.1f %10.1f %14.1f" % figures)
    for direction in ("C->Go", "Go->C"):
        ours_ms = summary["collection " + direction]["window_ms_median"]
        hand_ms = summary["by hand " + direction]["window_ms_median"]
        summary["ratio " + direction] = round(ours_ms / hand_ms, 3) if hand_ms else None
        print("ratio collection / by hand, %s: %s" % (direction, summary["ratio " + direction]))
    out_dir = os.path.join(REPO, "artifacts", "bench")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "container.json"), "w") as handle:
        json.dump({"inventory_hosts": 2, "c_image": c_image, "go_image": go_image, "summary": summary}, handle,
                  indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
