"""The container-fleet test harness works: tests/hosts/build-proxy-images.sh and container_fleet.py.

Images are built locally from the test-host image (the stand-in by default, the real builds when
MTPROXY_C_BINARY / MTPROXY_GO_BINARY name them); a fleet of two hosts (pod + proxy container each)
starts from the C image: its proxies answer /stats inside the pod's network namespace as C, test
traffic through them is answered; a proxy recreated by hand from the Go image with the same options
answers as Go with an unchanged spec; `down` leaves no container, volume or directory behind.
Skipped (with the reason) only when no Docker engine answers.
"""

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOSTS_DIR = os.path.join(REPO, "tests", "hosts")
BUILD = os.path.join(HOSTS_DIR, "build-proxy-images.sh")
FLEET = os.path.join(HOSTS_DIR, "container_fleet.py")
sys.path.insert(0, HOSTS_DIR)
import container_fleet as cf  # noqa: E402
from systemd_host import c_without_secret_file  # noqa: E402

pytestmark = pytest.mark.slow

OFFICIAL_CMD = ["/bin/sh", "-c", "/bin/bash /run.sh"]
# What a container takes from its image: a private copy of the Go image must not change any of it.
CONFIG_KEYS = ("Labels", "Env", "Cmd", "Entrypoint", "User", "WorkingDir")


def run(command, timeout=600):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (command, proc.returncode, proc.stdout[-3000:],
                                                              proc.stderr[-3000:])
    return proc


def fleet_cli(*args, timeout=300):
    return run([sys.executable, FLEET] + list(args), timeout=timeout)


def docker_json(*args):
    return json.loads(run(["docker"] + list(args), timeout=120).stdout)


@pytest.fixture(scope="module")
def images():
    # The proxy image's run.sh reads the client secret with --mtproto-secret-file.
    reason = cf.engine_problem() or c_without_secret_file()
    if reason:
        pytest.skip(reason)
    proc = run([BUILD], timeout=1800)
    c_image, go_image = proc.stdout.split()[:2]
    return {"c": c_image, "go": go_image, "c_id": cf.image_id(c_image), "go_id": cf.image_id(go_image)}


@pytest.fixture(scope="module")
def fleet(images):
    prefix = "itest-cf-%s" % uuid.uuid4().hex[:6]
    try:
        proc = fleet_cli("up", "--prefix", prefix, "--count", "2", "--canaries", "1", "--c-image", images["c"],
                         "--go-image", images["go"], "--client-rate", "0", "--format", "json")
        yield {"prefix": prefix, "inventory": json.loads(proc.stdout), "record": cf.load_record(prefix),
               "hosts": ["%s-h1" % prefix, "%s-h2" % prefix]}
    finally:
        subprocess.run([sys.executable, FLEET, "down", "--prefix", prefix], capture_output=True, timeout=300,
                       check=False)


def test_images_are_cached_by_content(images):
    again = run([BUILD], timeout=600)
    assert again.stdout.split()[:2] == [images["c"], images["go"]]
    assert "building" not in again.stderr
    assert images["c"].startswith("mtproxy-cutover-proxy:c-")
    assert images["go"].startswith("mtproxy-cutover-proxy:go-")
    assert images["c_id"] != images["go_id"]


def test_both_images_have_the_official_shape_and_one_run_script(images):
    c_doc, go_doc = docker_json("image", "inspect", images["c"], images["go"])
    for key in ("Cmd", "Entrypoint", "Env", "ExposedPorts", "Volumes", "WorkingDir", "Labels", "User"):
        assert c_doc["Config"].get(key) == go_doc["Config"].get(key), key
    assert c_doc["Config"]["Cmd"] == OFFICIAL_CMD
    assert c_doc["Config"]["Volumes"] == {"/data": {}}
    assert set(c_doc["Config"]["ExposedPorts"]) == {"443/tcp", "2398/tcp"}
    scripts = [run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "cat", image, "/run.sh"]).stdout
               for image in (images["c"], images["go"])]
    assert scripts[0] == scripts[1]
    assert "exec /usr/local/bin/mtproto-proxy -p 2398 --http-stats -H 443" in scripts[0]


def test_images_carry_the_binary_asked_for(images):
    """The real build from MTPROXY_*_BINARY, else the stand-in launcher (Go: the link to the Go-named one)."""
    launcher = os.path.join(REPO, "tests", "standin", "mtproxy_standin_launcher.py")
    for flavour, variable in (("c", "MTPROXY_C_BINARY"), ("go", "MTPROXY_GO_BINARY")):
        expected = file_sha256(os.environ.get(variable) or launcher)
        out = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", images[flavour], "-c",
                   "sha256sum /usr/local/bin/mtproto-proxy; readlink -f /usr/local/bin/mtproto-proxy"]).stdout.split()
        assert out[0] == expected, flavour
        if not os.environ.get(variable):
            assert out[2] == ("/usr/local/bin/mtproto-proxy-go" if flavour == "go" else "/usr/local/bin/mtproto-proxy")


def file_sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_save_go_writes_an_archive_of_the_go_image_id(images, tmp_path):
    archive = tmp_path / "go-image.tar"
    proc = run([BUILD, "--save-go", str(archive)], timeout=900)
    lines = proc.stdout.split()
    assert lines[:2] == [images["c"], images["go"]]
    assert lines[2] == images["go_id"]
    with tarfile.open(str(archive)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert len(manifest) == 1
    assert "sha256:" + manifest[0]["Config"].split(".")[0].split("/")[-1] == images["go_id"]
    assert manifest[0]["RepoTags"] == [images["go"]]


def test_each_fleet_gets_a_private_go_image_of_its_own(images, tmp_path):
    # Two fleets at once (the container and compose scenarios) must not share the image that exists
    # only in their archives: one's `down` removes it by ID while the other's cutover loads it.
    made = {}
    for prefix in ("pgi%s-a" % uuid.uuid4().hex[:6], "pgi%s-b" % uuid.uuid4().hex[:6]):
        archive = str(tmp_path / (prefix + ".tar"))
        made[prefix] = cf.private_go_image(prefix, images["go"], archive) + (archive,)
    ids = [image_id for _tag, image_id, _archive in made.values()]
    assert len(set(ids)) == 2 and images["go_id"] not in ids, made
    go_config = docker_json("image", "inspect", images["go"])[0]["Config"]
    for tag, image_id, archive in made.values():
        assert cf.inspect("image", image_id) is None and cf.inspect("image", tag) is None
        # Loaded back, its config is the Go image's: its containers' labels, env and argv are the same.
        run(["docker", "load", "-i", archive])
        try:
            config = docker_json("image", "inspect", image_id)[0]["Config"]
            assert [config.get(key) for key in CONFIG_KEYS] == [go_config.get(key) for key in CONFIG_KEYS]
        finally:
            run(["docker", "rmi", "-f", image_id])


def test_inventory_describes_container_hosts(fleet, images):
    inventory = fleet["inventory"]["all"]["children"]["mtproxy"]
    assert sorted(inventory["hosts"]) == fleet["hosts"]
    assert list(inventory["children"]["mtproxy_canary"]["hosts"]) == fleet["hosts"][:1]
    for name, host_vars in inventory["hosts"].items():
        assert host_vars == {"mtproxy_cutover_service": name}
    group = inventory["vars"]
    assert group["ansible_connection"] == "local"
    assert os.access(group["ansible_python_interpreter"], os.X_OK)
    assert group["mtproxy_cutover_method"] == "container"
    assert group["mtproxy_cutover_go_image"] == images["go"]
    assert group["mtproxy_cutover_go_image_id"] == images["go_id"]
    state_dir = group["mtproxy_cutover_state_dir"]
    assert state_dir.startswith("/tmp/") and fleet["prefix"] in state_dir and os.path.isdir(state_dir)
    # The YAML form (the default) says the same.
    assert yaml.safe_load(cf.yaml_inventory(fleet["record"])) == fleet["inventory"]


def test_proxies_run_the_c_image_as_the_official_one_is_run(fleet, images):
    for entry in fleet["record"]["hosts"]:
        doc = docker_json("container", "inspect", entry["name"])[0]
        pod = docker_json("container", "inspect", entry["pod"])[0]
        assert doc["State"]["Running"] and pod["State"]["Running"]
        assert doc["Image"] == images["c_id"]
        assert doc["Config"]["Cmd"] == OFFICIAL_CMD
        env = doc["Config"]["Env"]
        assert "SECRET=%s" % entry["secret"] in env and "WORKERS=1" in env
        assert doc["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        assert doc["HostConfig"]["NetworkMode"] == "container:" + pod["Id"]
        assert pod["HostConfig"]["NetworkMode"] == "none"
        assert [(m["Type"], m["Name"], m["Destination"]) for m in doc["Mounts"]] == [("volume", entry["volume"], "/data")]
        # run.sh kept the secret on the volume, and never printed it.
        assert run(["docker", "exec", entry["name"], "cat", "/data/secret"]).stdout.strip() == entry["secret"]
        logs = subprocess.run(["docker", "logs", entry["name"]], capture_output=True, text=True, timeout=60,
                              check=True)
        assert entry["secret"] not in logs.stdout + logs.stderr


def test_c_proxies_answer_stats_inside_the_pod_netns_as_c(fleet):
    for name in fleet["hosts"]:
        values, flavour = cf.read_stats(name)
        assert flavour == "c"
        assert cf.ready(values, flavour)
        # The proxy lives in its pod's network namespace, not in this machine's.
        proxy_pid = docker_json("container", "inspect", name)[0]["State"]["Pid"]
        assert netns(proxy_pid) == netns(cf.netns_pid(name)) != netns("self")


def test_traffic_through_c_proxies_is_answered(fleet):
    counts = json.loads(fleet_cli("traffic", "--prefix", fleet["prefix"], "--seconds", "2", "--rate", "10").stdout)
    assert sorted(counts["hosts"]) == fleet["hosts"]
    for name, host in counts["hosts"].items():
        assert host["handshakes"] == 20, (name, host)
        assert host["replies"] == host["handshakes"], (name, host)
        assert host["unanswered"] == 0 and host["refused"] == 0 and host["errors"] == 0, (name, host)
    # The replies came from the pod's backend over the C proxy's RPC.
    for entry in fleet["record"]["hosts"]:
        backend = backend_counts(entry["pod"], "rpc_queries", 20)
        assert backend["rpc_ready"] >= 1 and backend["rpc_queries"] >= 20 and backend["go_frames"] == 0


def test_go_container_with_the_same_spec_answers_as_go(fleet, images):
    prefix, (first, second) = fleet["prefix"], fleet["hosts"]
    first_id = docker_json("container", "inspect", first)[0]["Id"]
    result = json.loads(fleet_cli("replace", "--prefix", prefix, "--host", second, "--image", images["go"]).stdout)
    assert result["hosts"][second]["flavour"] == "go"
    snap = json.loads(fleet_cli("snapshot", "--prefix", prefix, "--traffic-seconds", "2").stdout)["hosts"]
    go, c = snap[second], snap[first]
    assert go["spec"]["image_id"] == images["go_id"] and go["image_is"] == "go"
    assert go["spec_changes_since_up"] == {}
    assert go["stats_flavour"] == "go" and go["stats_ready"]
    assert go["traffic"]["handshakes"] == go["traffic"]["replies"] == 20 and go["traffic"]["unanswered"] == 0
    # The secret came along on the same volume.
    entry = [e for e in fleet["record"]["hosts"] if e["name"] == second][0]
    assert run(["docker", "exec", second, "cat", "/data/secret"]).stdout.strip() == entry["secret"]
    # The other host was not touched.
    assert c["container_id"] == first_id and c["image_is"] == "c" and c["stats_flavour"] == "c"
    assert c["traffic"]["replies"] == c["traffic"]["handshakes"] == 20
    assert backend_counts(entry["pod"], "go_frames", 20)["go_frames"] >= 20


def test_secret_in_volume_and_down_leaves_nothing(images):
    prefix = "itest-cfv-%s" % uuid.uuid4().hex[:6]
    try:
        fleet_cli("up", "--prefix", prefix, "--count", "1", "--c-image", images["c"], "--secret-in-volume",
                  "--client-rate", "5", "--format", "json")
        name = "%s-h1" % prefix
        env = docker_json("container", "inspect", name)[0]["Config"]["Env"]
        assert not [e for e in env if e.startswith("SECRET=")]
        counts = json.loads(fleet_cli("traffic", "--prefix", prefix, "--seconds", "1").stdout)["hosts"][name]
        assert counts["handshakes"] == counts["replies"] == 10 and counts["unanswered"] == 0
    finally:
        fleet_cli("down", "--prefix", prefix)
    assert_gone(prefix)


def test_down_removes_the_fleet(fleet):
    prefix = fleet["prefix"]
    assert cf.labelled("ps", prefix) and os.path.isdir(cf.fleet_dir(prefix))
    fleet_cli("down", "--prefix", prefix)
    assert_gone(prefix)


def backend_counts(pod, key, at_least):
    """The pod's test backend summary once `key` reached at_least (it is rewritten at most once a
    second), or as it is after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        counts = json.loads(run(["docker", "exec", pod, "cat", "/tmp/backend.json"]).stdout)
        if counts[key] >= at_least or time.monotonic() >= deadline:
            return counts
        time.sleep(0.3)


def netns(pid):
    return os.stat("/proc/%s/ns/net" % pid).st_ino


def assert_gone(prefix):
    assert cf.labelled("ps", prefix) == []
    assert cf.labelled("volume", prefix) == []
    names = run(["docker", "ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    assert [n for n in names if n.startswith(prefix + "-")] == []
    volumes = run(["docker", "volume", "ls", "-q"]).stdout.split()
    assert [v for v in volumes if v.startswith(prefix + "-")] == []
    assert not os.path.exists(cf.fleet_dir(prefix))
