"""The stage_binary role on a container host: a Go image built for another platform is refused before any
pre-warm, naming both platforms; one of the host's platform is staged.

The role runs as cutover.yml runs it on container hosts (connection local: this machine's engine is the
container host). The images are made here: a `docker save` archive of one layer whose config claims an
architecture (`docker image inspect` reads the claim; nothing in them runs). Each test run's images have
IDs and layers of their own, so that the ansible-core releases testing at once never share one.
"""

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'hosts'))
import container_fleet as cf  # noqa: E402
from conftest import COLLECTIONS_ROOT, REPO_ROOT  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.elf import host_goarch  # noqa: E402

pytestmark = pytest.mark.slow

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Stage the Go image as cutover.yml does on a container host
      ansible.builtin.include_role:
        name: mtproxy.cutover.stage_binary
      vars:
        stage_binary_container: true
        stage_binary_image_id: "{{ image_id }}"
        stage_binary_image_archive: "{{ archive }}"
        stage_binary_machine: "{{ machine }}"
        stage_binary_source: ""
        stage_binary_sha256: ""
        stage_binary_c_binary: ""
        stage_binary_release_dir: ""
        stage_binary_service: mtproxy
        stage_binary_state_dir: "{{ playbook_dir }}/state"
        stage_binary_prewarm: false
        stage_binary_prewarm_window_s: 1
        stage_binary_prewarm_ready_timeout_s: 1
        stage_binary_prewarm_stop_timeout_s: 1
        stage_binary_thresholds: {}
        stage_binary_run_dir: ""
        stage_binary_lock_run_id: ""
        stage_binary_version: ""
        stage_binary_keep_releases: 0
        stage_binary_privilege_drop: binary
        stage_binary_exit_semantics: skip

    - name: Show what was staged
      ansible.builtin.debug:
        msg: "staged {{ stage_binary_staged.image }}"
"""


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o755
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_archive(path, arch):
    """A `docker save` archive (the format docker load reads) of an image claiming linux/<arch>; its ID."""
    nonce = uuid.uuid4().hex
    # The nonce in the layer too: two runs at once share no layer that one of them removes.
    layer = _tar([('mtproto-proxy', ('#!/bin/sh\n# %s\nexit 0\n' % nonce).encode())])
    layer_sha = hashlib.sha256(layer).hexdigest()
    config = json.dumps({'architecture': arch, 'os': 'linux',
                         'config': {'Entrypoint': ['/mtproto-proxy'], 'Labels': {'test-run': nonce}},
                         'rootfs': {'type': 'layers', 'diff_ids': ['sha256:' + layer_sha]}}, sort_keys=True).encode()
    config_sha = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{'Config': config_sha + '.json', 'RepoTags': None,
                            'Layers': [layer_sha + '/layer.tar']}]).encode()
    with open(path, 'wb') as handle:
        handle.write(_tar([(config_sha + '.json', config), (layer_sha + '/layer.tar', layer),
                           ('manifest.json', manifest)]))
    return 'sha256:' + config_sha


@pytest.fixture()
def stage(tmp_path):
    reason = cf.engine_problem()
    if reason:
        pytest.skip(reason)
    loaded = []
    playbook = tmp_path / 'stage.yml'
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(
        [COLLECTIONS_ROOT, os.environ.get('MTPROXY_TEST_COLLECTIONS_PATH', os.path.join(REPO_ROOT, '.venv', 'collections'))]),
        ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0', ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_HOME=str(tmp_path / 'home'),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / 'local'))

    def run(arch, machine):
        archive = str(tmp_path / ('go-%s.tar' % arch))
        image_id = image_archive(archive, arch)
        loaded.append(image_id)
        extra = json.dumps({'image_id': image_id, 'archive': archive, 'machine': machine,
                            'ansible_python_interpreter': sys.executable})
        proc = subprocess.run([sys.executable, '-m', 'ansible.cli.playbook', '-i', 'localhost,', '-c', 'local',
                               str(playbook), '-e', extra], env=env, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=300, check=False)
        return image_id, proc.returncode, proc.stdout + proc.stderr

    yield run
    for image_id in loaded:
        subprocess.run(['docker', 'image', 'rm', '-f', image_id], capture_output=True, check=False)


def _host():
    machine = platform.machine()
    return machine, host_goarch(machine)


def test_an_image_for_another_architecture_is_refused_naming_both(stage):
    machine, arch = _host()
    other = 'arm64' if arch != 'arm64' else 'amd64'
    image_id, rc, output = stage(other, machine)
    assert rc != 0, output
    assert 'Check the Go image is built for this host' in output
    assert ('localhost: the Go image %s is built for linux/%s and this host runs %s (linux/%s)'
            % (image_id, other, machine, arch)) in output, output
    assert 'docker build --platform linux/%s' % arch in output
    # Refused at the check: nothing was published as staged.
    assert 'staged sha256:' not in output


def test_an_image_of_the_hosts_architecture_is_staged_the_engine_naming_it_when_the_run_did_not(stage):
    dummy, arch = _host()
    # An empty machine: the role asks the engine (docker_host_info), as when it is included on its own.
    image_id, rc, output = stage(arch, '')
    assert rc == 0, output
    assert 'staged %s' % image_id in output
