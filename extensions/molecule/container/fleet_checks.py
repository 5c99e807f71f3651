"""Checks of the container scenarios' verifiers (container, container_canary_fail).

Import from a scenario's tests/test_*.py:

    import pathlib, sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "container"))
    import fleet_checks as fc

The fleet's record is tests/hosts/container_fleet.py's (fleet.json of the scenario's fleet); the
snapshots are what snapshot.yml kept after each playbook run; reports are read through
shared/cutover_checks.py.
"""

import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent / "shared"))
sys.path.insert(0, str(REPO / "tests" / "hosts"))
import container_fleet  # noqa: E402
import cutover_checks as cc  # noqa: E402

OFFICIAL_CMD = ["/bin/sh", "-c", "/bin/bash /run.sh"]


def record():
    """The fleet's record: images (c_image_id, go_image_id), hosts with secret, spec and IDs at create."""
    return container_fleet.load_record(cc.scenario_name())


def entry(name):
    return [e for e in record()["hosts"] if e["name"] == name][0]


def snapshot(label):
    with open(os.path.join(cc.ephemeral_dir(), "snapshots", "%s.json" % label)) as handle:
        return json.load(handle)


def live(name):
    """A snapshot of one host taken now (image, spec, /stats; no traffic)."""
    return container_fleet.snapshot_host(record(), entry(name))


def spec_as_run(spec, host):
    """[problem, ...] when a spec is not the way create.yml ran the host's proxy (as operators run
    the official image); the image is not looked at."""
    problems = []
    env = spec["env"]
    if "SECRET=%s" % host["secret"] not in env or "WORKERS=1" not in env:
        problems.append("env %s" % [e.split("=")[0] for e in env])
    if spec["cmd"] != OFFICIAL_CMD or spec["entrypoint"]:
        problems.append("command %s %s" % (spec["entrypoint"], spec["cmd"]))
    if spec["mounts"] != [["volume", host["volume"], "/data", True]]:
        problems.append("mounts %s" % spec["mounts"])
    if spec["network_mode"] != "container:" + host["pod_id"]:
        problems.append("network %s" % spec["network_mode"])
    if (spec["restart_policy"] or {}).get("Name") != "unless-stopped":
        problems.append("restart policy %s" % spec["restart_policy"])
    if spec["labels"].get("owner") != "molecule":
        problems.append("labels %s" % spec["labels"])
    return problems


def secrets():
    """Every secret of the fleet: the client secrets and the images' aes-pwd."""
    out = [e["secret"] for e in record()["hosts"]]
    aes = container_fleet.docker("run", "--rm", "--network", "none", "--entrypoint", "cat", record()["c_image"],
                                 "/etc/mtproxy/proxy-secret").stdout.strip()
    return out + [aes]


def leaks(texts):
    """[(name, secret prefix)] of every fleet secret found in any of texts ({name: text})."""
    found = []
    for secret in secrets():
        for name, text in texts.items():
            if secret and secret in text:
                found.append((name, secret[:4] + "..."))
    return found


def run_texts(run_id):
    """report.json, report.md, the incident notes and the playbook run's output of a run."""
    texts = cc.report_texts(run_id)
    incidents = os.path.join(cc.artifacts_dir(), run_id, "incidents")
    if os.path.isdir(incidents):
        for name in os.listdir(incidents):
            with open(os.path.join(incidents, name), errors="replace") as handle:
                texts["incidents/" + name] = handle.read()
    label = run_id[len(cc.scenario_name()) + 1:]
    run = cc.playbook_run(label)
    texts["ansible-playbook output"] = run["stdout"] + run["stderr"]
    return texts


def host_state_file(name, file_name="state.json"):
    """A JSON file of the collection's state for one container host, or None."""
    path = os.path.join(record()["state_dir"], name, file_name)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def manifest_text(name):
    with open(os.path.join(record()["state_dir"], name, "manifest.json")) as handle:
        return handle.read()
