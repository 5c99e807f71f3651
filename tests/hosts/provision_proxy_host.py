"""Lay out a test host from one spec in one run: the files, then the units, then /stats.

    provision_proxy_host.py SPEC.json

prepare_proxy_host.yml renders the spec on the controller and runs this on the host with
ansible.builtin.script: one transfer and one process instead of a module run per file (each costs
about a second of CPU on a test host; the scenarios run that playbook on every host).

SPEC (JSON object):
  directories  [{path, mode}]                        created, owned by root
  files        [{path, content, mode, group}]        written when the content, mode or group differ
  copies       [{src, dest, mode}]                   a file copied on the host (the C binary, the pristine unit)
  compileall   [directory]                           byte-compiled after the files
  units        [{name, restart_on: [path], wait_http: url}]
               in order: enabled, then restarted when one of its restart_on paths was rewritten,
               else started; wait_http: until that URL answers 200 (at most wait_s seconds)
  wait_s       seconds (default 30)
Prints a JSON object: changed (bool), written (paths), restarted (units). Exits 1 with the reason on
stderr when a unit does not start or the URL does not answer in time.
"""

import grp
import json
import os
import subprocess
import sys
import time
import urllib.request


def _differs(path, data, mode, gid):
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            return handle.read() != data or (info.st_mode & 0o7777) != mode or info.st_uid != 0 or info.st_gid != gid
    except FileNotFoundError:
        return True


def _put(path, data, mode, group, written):
    """Write path (root-owned) when its content, mode or group differ; note it in written."""
    mode, gid = int(mode, 8), grp.getgrnam(group).gr_gid
    if _differs(path, data, mode, gid):
        _write(path, data, mode, gid)
        written.append(path)


def _write(path, data, mode, gid):
    tmp = "%s.provision-%d" % (path, os.getpid())
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.chown(tmp, 0, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def lay_out(spec):
    written = []
    for entry in spec.get("directories", []):
        os.makedirs(entry["path"], exist_ok=True)
        os.chown(entry["path"], 0, 0)
        os.chmod(entry["path"], int(entry["mode"], 8))
    for entry in spec.get("files", []):
        _put(entry["path"], entry["content"].encode("utf-8"), entry["mode"], entry.get("group", "root"), written)
    for entry in spec.get("copies", []):
        with open(entry["src"], "rb") as handle:
            _put(entry["dest"], handle.read(), entry["mode"], "root", written)
    for directory in spec.get("compileall", []):
        subprocess.run([sys.executable, "-m", "compileall", "-q", directory], check=True)
    return written


def _wait_http(url, wait_s):
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError("%s did not answer 200 within %s s" % (url, wait_s))
        time.sleep(1)


def bring_up(units, written, wait_s):
    restarted = []
    if units:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
    for unit in units:
        restart = any(path in written for path in unit.get("restart_on", []))
        subprocess.run(["systemctl", "enable", "--quiet", unit["name"]], check=True)
        done = subprocess.run(["systemctl", "restart" if restart else "start", unit["name"]],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError("%s did not start: %s" % (unit["name"], done.stderr.strip()))
        if restart:
            restarted.append(unit["name"])
        if unit.get("wait_http"):
            _wait_http(unit["wait_http"], wait_s)
    return restarted


def main(argv):
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    written = lay_out(spec)
    try:
        restarted = bring_up(spec.get("units", []), written, float(spec.get("wait_s", 30)))
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        sys.stderr.write("provision_proxy_host: %s\n" % exc)
        return 1
    json.dump({"changed": bool(written or restarted), "written": written, "restarted": restarted}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
