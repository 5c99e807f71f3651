import hashlib
import inspect
import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils import _stage as stage
DATA = b'#!/bin/sh\necho a release\n' * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def run_program(*words, data=b''):
    """The program as the action plugin runs it on a host: python3 -c <source> words, bytes on stdin."""
    proc = subprocess.run([sys.executable, '-c', inspect.getsource(stage)] + list(words), input=data,
                          capture_output=True, timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout.decode().strip().splitlines()[-1])


def test_install_creates_the_release_directory_and_the_verified_file(tmp_path):
    dest = tmp_path / 'MTProxy' / 'releases' / 'go-0123' / 'mtproto-proxy-go'
    rc, out = run_program('install', str(dest), SHA, '0755', data=DATA)
    assert rc == 0 and out == {'changed': True, 'sha256': SHA}
    assert dest.read_bytes() == DATA
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o755
    assert os.listdir(str(dest.parent)) == ['mtproto-proxy-go']


def test_a_copy_that_differs_never_takes_the_place(tmp_path):
    dest = tmp_path / 'go' / 'mtproto-proxy-go'
    dest.parent.mkdir()
    dest.write_bytes(b'the release that runs now')
    rc, out = run_program('install', str(dest), SHA, '0755', data=DATA[:-1])
    assert rc == 1 and out['failed'] is True
    assert 'expected %s' % SHA in out['msg'] and 'was left as it was' in out['msg']
    assert dest.read_bytes() == b'the release that runs now'
    assert os.listdir(str(dest.parent)) == ['mtproto-proxy-go']


def test_check_finds_a_staged_file_and_fixes_its_mode(tmp_path):
    dest = tmp_path / 'mtproto-proxy-go'
    dest.write_bytes(DATA)
    dest.chmod(0o600)
    rc, out = run_program('check', str(dest), SHA, '0755', '0')
    assert rc == 0 and out == {'present': True, 'sha256': SHA, 'changed': False, 'machine': os.uname()[4]}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    rc, out = run_program('check', str(dest), SHA, '0755', '1')
    assert out == {'present': True, 'sha256': SHA, 'changed': True, 'machine': os.uname()[4]}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


@pytest.mark.parametrize('content', [None, b'another release'])
def test_check_reports_a_missing_or_different_file(tmp_path, content):
    dest = tmp_path / 'mtproto-proxy-go'
    if content is not None:
        dest.write_bytes(content)
    rc, out = run_program('check', str(dest), SHA, '0755', '1')
    assert rc == 0 and out['present'] is False and out['changed'] is False
    assert out['sha256'] == (hashlib.sha256(content).hexdigest() if content else None)


def test_bad_usage_is_a_failure_with_a_message():
    rc, out = run_program('install', '/nowhere')
    assert rc == 1 and 'usage:' in out['msg']


def _head(name):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'elf-headers.json')) as fh:
        entry = json.load(fh)[name]
    data = bytearray(entry['length'])
    for offset, hexed in entry['segments']:
        chunk = bytes.fromhex(hexed)
        data[offset:offset + len(chunk)] = chunk
    return bytes(data)


@pytest.mark.parametrize('name, machine, ok', [('go-linux-amd64', 'x86_64', True), ('go-linux-arm64', 'x86_64', False),
                                               ('go-linux-arm64', 'aarch64', True), ('go-darwin-arm64', 'aarch64', False)])
def test_the_stage_refuses_a_binary_the_host_cannot_run_before_copying(tmp_path, name, machine, ok):
    from ansible_collections.mtproxy.cutover.plugins.action.mtproxy_stage import elf_verdict
    binary = tmp_path / 'mtproto-proxy-go'
    binary.write_bytes(_head(name))
    verdict = elf_verdict(str(binary), machine, 'proxy-7')
    assert verdict['ok'] is ok, verdict['message']
    if not ok:
        assert 'host proxy-7 runs %s' % machine in verdict['message'] and 'Stage a' in verdict['message']


def test_check_reports_the_machine_of_the_host(tmp_path):
    assert stage.check(str(tmp_path / 'absent'), '0' * 64, 0o755, False)['machine'] == os.uname()[4]


def test_a_script_is_judged_by_its_interpreter(tmp_path):
    from ansible_collections.mtproxy.cutover.plugins.action.mtproxy_stage import elf_verdict
    script = tmp_path / 'standin'
    script.write_text('#!%s\nprint(1)\n' % os.path.realpath(sys.executable))
    assert elf_verdict(str(script), os.uname()[4], 'proxy-7')['ok'] is True
