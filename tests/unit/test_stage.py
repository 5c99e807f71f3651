import hashlib
import inspect
import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils import stage

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
    assert rc == 0 and out == {'present': True, 'sha256': SHA, 'changed': False}
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    rc, out = run_program('check', str(dest), SHA, '0755', '1')
    assert out == {'present': True, 'sha256': SHA, 'changed': True}
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
