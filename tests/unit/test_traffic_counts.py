"""What the test client's traffic does to a proxy's counters, through the test backend.

For each flavour a proxy binary (binary_for) serves on 127.0.0.1 with its ``proxy_for`` targets on
one mtproxy_testbackend.py that speaks that flavour's backend protocol; the test client sends N
obfuscated2 req_pq_multi packets and J junk connections. Expected, as measured on the real builds
(C: TelegramMessenger/MTProxy as built from skrashevich/MTProxy@golang; Go: the port on that branch):
C tot_forwarded_queries +N, tot_forwarded_responses +N, dropped_queries +0, total_ready_targets 1;
Go forward_successful/outbound_sends/outbound_responses +N, dataplane_packets_dropped +0,
ingress_invalid_frames +J; and the client's own packets_sent and replies both N.
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from loopback import free_port, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN_DIR = os.path.join(os.path.dirname(HERE), "standin")
TESTCLIENT = os.path.join(STANDIN_DIR, "mtproxy_testclient.py")
TESTBACKEND = os.path.join(STANDIN_DIR, "mtproxy_testbackend.py")
SECRET = "00112233445566778899aabbccddeeff"
BINARY_ENV = {"c": "MTPROXY_C_BINARY", "go": "MTPROXY_GO_BINARY"}
CONNECTIONS, PACKETS, JUNK = 4, 3, 5
N = CONNECTIONS * PACKETS
WATCHED = {
    "c": ("tot_forwarded_queries", "tot_forwarded_responses", "dropped_queries", "dropped_responses"),
    "go": ("forward_successful", "forward_failed", "outbound_sends", "outbound_responses",
           "dataplane_packets_dropped", "ingress_invalid_frames", "ingress_frames_failed"),
}


def binary_for(flavour, workdir):
    """The command that runs a flavour's proxy ("c" or "go"): the real binary named by
    MTPROXY_C_BINARY / MTPROXY_GO_BINARY, else the stand-in's launcher installed under the
    binary's name (its basename picks the flavour), run by this Python with the stand-in modules
    of this checkout."""
    path = os.environ.get(BINARY_ENV[flavour])
    if path:
        return [path]
    launcher = os.path.join(workdir, "mtproto-proxy-go" if flavour == "go" else "mtproto-proxy")
    shutil.copy(os.path.join(STANDIN_DIR, "mtproxy_standin_launcher.py"), launcher)
    return [sys.executable, launcher]


def stats(port):
    """/stats as a dict, or None while it does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return dict(line.split("\t", 1) for line in body.splitlines() if "\t" in line)


def settled_stats(port, keys, settle=1.2, step=0.4, timeout=10.0):
    """/stats once the watched counters held still for one step, sampled after a settle period."""
    time.sleep(settle)
    previous = stats(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(step)
        current = stats(port)
        if current and previous and all(current.get(k) == previous.get(k) for k in keys):
            return current
        previous = current
    return previous


def delta(before, after, key):
    return int(after[key]) - int(before[key])


class Process(object):
    def __init__(self, argv, workdir, name):
        self.log = os.path.join(workdir, name + ".log")
        env = dict(os.environ, MTPROXY_STANDIN_DIR=STANDIN_DIR,
                   MTPROXY_STANDIN_FAULTS=os.path.join(workdir, "no-faults.json"))
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                         start_new_session=True, env=env)

    def text(self):
        with open(self.log) as handle:
            return handle.read()[-4000:]

    def stop(self):
        """SIGTERM to the process started here; its own process group is killed if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def workdir():
    # Not pytest's tmp_path: the C proxy reads --aes-pwd after dropping to user nobody, so every
    # directory on the way must be traversable (tmp_path's parents are 0700).
    path = tempfile.mkdtemp(prefix="mtproxy-traffic-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write(workdir, name, data):
    path = os.path.join(workdir, name)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o644)
    return path


def run_client(port, *args):
    out = subprocess.run([sys.executable, TESTCLIENT, "--port", str(port), "--secret", SECRET, "--rate", "0"]
                         + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout.decode())


@pytest.mark.parametrize("transport", ["intermediate", "padded"])
@pytest.mark.parametrize("flavour", ["c", "go"])
def test_client_traffic_moves_the_measured_counters(workdir, flavour, transport):
    command = binary_for(flavour, workdir)
    stats_port, client_port, backend_port = free_port(), free_port(), free_port()
    aes_pwd = write(workdir, "aes-pwd", os.urandom(128))
    conf = write(workdir, "backend.conf", ("default 2;\nproxy_for 2 127.0.0.1:%d;\nproxy_for -2 127.0.0.1:%d;\n"
                                           % (backend_port, backend_port)).encode())
    started = []
    try:
        backend = Process([sys.executable, TESTBACKEND, "--port", str(backend_port), "--aes-pwd", aes_pwd,
                           "--stats-file", os.path.join(workdir, "backend.json"), "--max-seconds", "120"],
                          workdir, "backend")
        started.append(backend)
        assert wait_for(lambda: os.path.exists(os.path.join(workdir, "backend.json")), 10), backend.text()
        argv = command + (["-u", "nobody"] if os.geteuid() == 0 else []) + [
            "-p", str(stats_port), "--http-stats", "-H", str(client_port), "-S", SECRET, "--aes-pwd", aes_pwd,
            conf, "-M", "1", "-c", "512"]
        if flavour == "go":
            argv += ["--address", "127.0.0.1"]
        proxy = Process(argv, workdir, "proxy")
        started.append(proxy)
        assert wait_for(lambda: stats(stats_port), 15), proxy.text()
        # Ready: C once its target finished the RPC handshake; Go once its config is loaded (it
        # answers /stats before that, with has_current_config 0).
        ready_key = "total_ready_targets" if flavour == "c" else "has_current_config"
        assert wait_for(lambda: (stats(stats_port) or {}).get(ready_key) == "1", 10), proxy.text()
        before = stats(stats_port)

        obf = run_client(client_port, "--mode", "obf", "--count", str(CONNECTIONS), "--packets", str(PACKETS),
                         "--transport", transport)
        junk = run_client(client_port, "--mode", "junk", "--count", str(JUNK))
        after = settled_stats(stats_port, WATCHED[flavour])
        assert after, proxy.text()

        assert (obf["handshakes"], obf["packets_sent"], obf["replies"], obf["unanswered"], obf["errors"]) == \
            (CONNECTIONS, N, N, 0, 0), (obf, proxy.text(), backend.text())
        assert (junk["junk"], junk["connected"], junk["errors"]) == (JUNK, JUNK, 0), junk
        if flavour == "c":
            got = dict((k, delta(before, after, k)) for k in WATCHED["c"])
            assert got == {"tot_forwarded_queries": N, "tot_forwarded_responses": N, "dropped_queries": 0,
                           "dropped_responses": 0}
            assert after["total_ready_targets"] == "1"
        else:
            got = dict((k, delta(before, after, k)) for k in WATCHED["go"])
            assert got == {"forward_successful": N, "forward_failed": 0, "outbound_sends": N, "outbound_responses": N,
                           "dataplane_packets_dropped": 0, "ingress_invalid_frames": JUNK,
                           "ingress_frames_failed": JUNK}
        sent_key, answered_key = ("tot_forwarded_queries", "tot_forwarded_responses") if flavour == "c" else \
            ("outbound_sends", "outbound_responses")
        assert (got[sent_key], got[answered_key]) == (obf["packets_sent"], obf["replies"])

        proxy.stop()
        backend.stop()
        with open(os.path.join(workdir, "backend.json")) as handle:
            served = json.load(handle)
        if flavour == "c":
            assert (served["rpc_queries"], served["rpc_answers"], served["rpc_close_conn"]) == (N, N, CONNECTIONS)
            assert served["rpc_ready"] >= 1
        else:
            assert (served["go_connections"], served["go_frames"], served["go_replies"]) == (1, N, N)
        assert served["errors"] == 0, served
    finally:
        for process in reversed(started):
            process.stop()


# The failing-canary fault of the scenarios: the backend resets the Go port's connections (a fault of
# the environment, whatever the build). Measured on the real golang port (tests/fixtures/real-stats/
# README.md): the first failed exchange is a response error and marks that (cluster, target)
# unhealthy until the process restarts; every later packet of the cluster is dropped as a route error.
RESET_AFTER = 2
GO_RESET_WATCHED = ("forward_successful", "forward_failed", "outbound_sends", "outbound_responses",
                    "outbound_response_errors", "outbound_reconnects", "dataplane_packets_outbound_errors",
                    "dataplane_packets_route_errors", "dataplane_packets_dropped", "dataplane_packets_total")


@pytest.mark.parametrize("flavour", ["c", "go"])
def test_a_backend_resetting_go_connections_drops_go_packets_and_not_c_ones(workdir, flavour):
    command = binary_for(flavour, workdir)
    stats_port, client_port, backend_port = free_port(), free_port(), free_port()
    aes_pwd = write(workdir, "aes-pwd", os.urandom(128))
    conf = write(workdir, "backend.conf", ("default 2;\nproxy_for 2 127.0.0.1:%d;\nproxy_for -2 127.0.0.1:%d;\n"
                                           % (backend_port, backend_port)).encode())
    started = []
    try:
        backend = Process([sys.executable, TESTBACKEND, "--port", str(backend_port), "--aes-pwd", aes_pwd,
                           "--stats-file", os.path.join(workdir, "backend.json"), "--max-seconds", "120",
                           "--reset-go-after", str(RESET_AFTER)], workdir, "backend")
        started.append(backend)
        assert wait_for(lambda: os.path.exists(os.path.join(workdir, "backend.json")), 10), backend.text()
        argv = command + (["-u", "nobody"] if os.geteuid() == 0 else []) + [
            "-p", str(stats_port), "--http-stats", "-H", str(client_port), "-S", SECRET, "--aes-pwd", aes_pwd,
            conf, "-M", "1", "-c", "512"] + (["--address", "127.0.0.1"] if flavour == "go" else [])
        proxy = Process(argv, workdir, "proxy")
        started.append(proxy)
        ready_key = "total_ready_targets" if flavour == "c" else "has_current_config"
        assert wait_for(lambda: (stats(stats_port) or {}).get(ready_key) == "1", 15), proxy.text()
        before = stats(stats_port)
        # One connection at a time: the order of the exchanges on the shared Go connection is fixed.
        dc2 = run_client(client_port, "--mode", "obf", "--count", str(CONNECTIONS), "--packets", str(PACKETS),
                         "--concurrency", "1")
        watched = WATCHED["c"] if flavour == "c" else GO_RESET_WATCHED
        middle = settled_stats(stats_port, watched)
        other = run_client(client_port, "--mode", "obf", "--count", "1", "--packets", str(PACKETS),
                           "--concurrency", "1", "--dc", "-2")
        after = settled_stats(stats_port, watched)
        assert middle and after, proxy.text()
        if flavour == "c":
            # C's RPC on the same port is answered as before.
            assert (dc2["replies"], other["replies"]) == (N, PACKETS)
            assert dict((k, delta(before, after, k)) for k in WATCHED["c"]) == {
                "tot_forwarded_queries": N + PACKETS, "tot_forwarded_responses": N + PACKETS,
                "dropped_queries": 0, "dropped_responses": 0}
        else:
            assert (dc2["replies"], other["replies"]) == (RESET_AFTER, RESET_AFTER)
            assert dict((k, delta(before, middle, k)) for k in GO_RESET_WATCHED) == {
                "forward_successful": RESET_AFTER + 1, "forward_failed": N - RESET_AFTER - 1,
                "outbound_sends": RESET_AFTER + 1, "outbound_responses": RESET_AFTER, "outbound_response_errors": 1,
                "outbound_reconnects": 0, "dataplane_packets_outbound_errors": 1,
                "dataplane_packets_route_errors": N - RESET_AFTER - 1,
                "dataplane_packets_dropped": N - RESET_AFTER, "dataplane_packets_total": N}
            assert (middle["targets_healthy"], middle["targets_unhealthy"]) == ("1", "1")
            assert middle["forward_last_error"] == "no healthy targets available for cluster 2"
            # Cluster -2 on the same address was still healthy: a new connection, the same fault.
            assert dict((k, delta(middle, after, k)) for k in GO_RESET_WATCHED) == {
                "forward_successful": RESET_AFTER + 1, "forward_failed": PACKETS - RESET_AFTER - 1,
                "outbound_sends": RESET_AFTER + 1, "outbound_responses": RESET_AFTER, "outbound_response_errors": 1,
                "outbound_reconnects": 1, "dataplane_packets_outbound_errors": 1,
                "dataplane_packets_route_errors": PACKETS - RESET_AFTER - 1,
                "dataplane_packets_dropped": PACKETS - RESET_AFTER, "dataplane_packets_total": PACKETS}
            assert (after["targets_healthy"], after["targets_unhealthy"]) == ("0", "2")
        proxy.stop()
        backend.stop()
        with open(os.path.join(workdir, "backend.json")) as handle:
            served = json.load(handle)
        assert served["go_resets"] == (0 if flavour == "c" else 2) and served["errors"] == 0, served
    finally:
        for process in reversed(started):
            process.stop()
