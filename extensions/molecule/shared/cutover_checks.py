"""Checks shared by the Molecule scenarios' testinfra tests.

Import from a scenario's tests/test_*.py:

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
    import cutover_checks as cc

Controller side (run reports, staged Go binary) reads $MOLECULE_EPHEMERAL_DIRECTORY, which molecule
sets for the verifier; host side takes a testinfra `host`.
"""

import json
import os
import shlex

SERVICE = "MTProxy"
C_BINARY = "/opt/MTProxy/mtproto-proxy"
VENDOR_UNIT = "/etc/systemd/system/MTProxy.service"
PRISTINE_UNIT = "/var/lib/mtproxy-test/MTProxy.service.pristine"
DROPIN = "/etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf"
STATE_DIR = "/var/lib/mtproxy-cutover/MTProxy"
AES_PWD_FILE = "/opt/MTProxy/proxy-secret"
SECRET_FILE = "/opt/MTProxy/mtproto-secret"
SECRET_FLAGS = ("-S", "--mtproto-secret", "-P", "--proxy-tag")


# --- controller side -------------------------------------------------------------------------

def ephemeral_dir():
    path = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not path:
        raise RuntimeError("MOLECULE_EPHEMERAL_DIRECTORY is not set: run through `molecule verify`")
    return path


def scenario_name():
    return os.environ.get("MOLECULE_SCENARIO_NAME", "default")


def artifacts_dir():
    """Same path as mtproxy_cutover_artifacts_dir in extensions/molecule/config.yml."""
    return os.path.join(ephemeral_dir(), "artifacts")


def first_run_id():
    """Run id of the first converge (see shared/stage.yml)."""
    return "%s-first" % scenario_name()


def again_run_id():
    """Run id of molecule's idempotence converge (and any later converge)."""
    return "%s-again" % scenario_name()


def run_ids():
    """Run ids that have a report.json, oldest first."""
    root = artifacts_dir()
    if not os.path.isdir(root):
        return []
    found = [name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "report.json"))]
    return sorted(found, key=lambda name: os.path.getmtime(os.path.join(root, name, "report.json")))


def report_path(run_id, name="report.json"):
    return os.path.join(artifacts_dir(), run_id, name)


def load_report(run_id=None):
    """The parsed report.json of run_id (default: the first converge)."""
    with open(report_path(run_id or first_run_id())) as handle:
        return json.load(handle)


def report_texts(run_id=None):
    """{file name: text} of report.json and report.md of a run (missing files are left out)."""
    texts = {}
    for name in ("report.json", "report.md"):
        path = report_path(run_id or first_run_id(), name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                texts[name] = handle.read()
    return texts


def playbook_run(label="first"):
    """Record written by shared/run_playbook.yml: {"playbook", "run_id", "rc", "stdout_tail"}."""
    with open(os.path.join(ephemeral_dir(), "runs", "%s-%s.json" % (scenario_name(), label))) as handle:
        return json.load(handle)


def staged_go():
    """(path, sha256) of the Go binary staged by tests/hosts/stage_go_binary.yml."""
    values = {}
    with open(os.path.join(ephemeral_dir(), "go-release", "go-binary-vars.yml")) as handle:
        for line in handle:
            key, sep, value = line.partition(":")
            if sep and key.startswith("mtproxy_cutover_go_"):
                values[key] = json.loads(value.strip())
    return values["mtproxy_cutover_go_binary"], values["mtproxy_cutover_go_sha256"]


def go_release_path(sha256, c_binary=C_BINARY):
    """Where stage_binary installs a Go release (docs/architecture.md)."""
    return "%s/releases/go-%s/mtproto-proxy-go" % (os.path.dirname(c_binary), sha256[:12])


# --- host side -------------------------------------------------------------------------------

def main_pid(host, service=SERVICE):
    out = host.check_output("systemctl show -p MainPID --value %s", service)
    return int(out.strip() or 0)


def process_argv(host, pid):
    raw = host.file("/proc/%d/cmdline" % pid).content
    return [w.decode("utf-8", "replace") for w in raw.rstrip(b"\0").split(b"\0")]


def service_argv(host, service=SERVICE):
    """argv of the service's MainPID as /proc shows it; [] when it is not running."""
    pid = main_pid(host, service)
    return process_argv(host, pid) if pid else []


def exec_start_argv(unit_text):
    """The words of the (last non-empty) ExecStart= line of a unit file's text."""
    words = []
    for line in unit_text.splitlines():
        line = line.strip()
        if line.startswith("ExecStart="):
            value = line[len("ExecStart="):].lstrip("-@:+!")
            words = shlex.split(value) if value else []
    return words


def pristine_argv(host):
    """argv the C service was started with, from the copy prepare_proxy_host.yml kept."""
    return exec_start_argv(host.file(PRISTINE_UNIT).content_string)


def vendor_unit_unchanged(host):
    return host.file(VENDOR_UNIT).content == host.file(PRISTINE_UNIT).content


def host_json(host, path):
    return json.loads(host.file(path).content_string)


def host_state(host):
    """The switch state file of a host, or None when no switch ever ran there."""
    path = STATE_DIR + "/state.json"
    return host_json(host, path) if host.file(path).exists else None


def environment_faults(host):
    """What the host's fault tools (tests/hosts/prepare_proxy_host.yml) did, from their stats files:
    {"backend": the test backend's counts, "killer": the test killer's, or None where it does not run}."""
    found = {}
    for key, path in (("backend", "/var/lib/mtproxy-test/backend.json"), ("killer", "/var/lib/mtproxy-test/killer.json")):
        handle = host.file(path)
        found[key] = json.loads(handle.content_string) if handle.exists else None
    return found


def incident_note(run_id, hostname):
    """Text of the incident note of a host in a run, or None."""
    path = os.path.join(artifacts_dir(), run_id, "incidents", hostname + ".md")
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return handle.read()


def host_manifest(host):
    return host_json(host, STATE_DIR + "/manifest.json")


def host_secrets(host):
    """Secret strings of a host: flag values of -S/-P and contents of aes-pwd / secret files."""
    secrets = []
    argv = pristine_argv(host)
    for index, word in enumerate(argv):
        for flag in SECRET_FLAGS:
            if word == flag and index + 1 < len(argv):
                secrets.append(argv[index + 1])
            elif flag.startswith("--") and word.startswith(flag + "="):
                secrets.append(word.split("=", 1)[1])
    for path in (AES_PWD_FILE, SECRET_FILE):
        handle = host.file(path)
        if handle.exists:
            content = handle.content_string.strip()
            if content:
                secrets.append(content)
    return [s for s in secrets if len(s) >= 8]


def leaked_secrets(host, texts):
    """[(file name, secret prefix)] for every secret of host found in any of texts."""
    leaks = []
    for secret in host_secrets(host):
        for name, text in texts.items():
            if secret in text:
                leaks.append((name, secret[:4] + "..."))
    return leaks
