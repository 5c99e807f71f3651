"""The architecture check (module_utils/elf.py) on real ELF headers of both machines.

tests/fixtures/elf-headers.json holds the first bytes of tiny programs of our own built with gcc
(x86-64) and the Go toolchain (linux amd64, arm64, arm, 386, s390x; freebsd; darwin; windows).
"""
import json
import os
import stat
import struct

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import elf

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'elf-headers.json')
with open(FIXTURE) as _handle:
    HEADS = json.load(_handle)


def head(name):
    entry = HEADS[name]
    data = bytearray(entry['length'])
    for offset, hexed in entry['segments']:
        chunk = bytes.fromhex(hexed)
        data[offset:offset + len(chunk)] = chunk
    return bytes(data)


@pytest.fixture
def put(tmp_path):
    def _put(name, data=None, mode=0o755):
        path = tmp_path / name
        path.write_bytes(head(name) if data is None else data)
        path.chmod(mode)
        return str(path)
    return _put


@pytest.mark.parametrize('name, bits, endian, machine, goarch, interpreter', [
    ('c-amd64', 64, 'LSB', 62, 'amd64', '/lib64/ld-linux-x86-64.so.2'),
    ('c-amd64-static', 64, 'LSB', 62, 'amd64', None),
    ('go-linux-amd64', 64, 'LSB', 62, 'amd64', None),
    ('go-linux-arm64', 64, 'LSB', 183, 'arm64', None),
    ('go-linux-arm', 32, 'LSB', 40, 'arm', None),
    ('go-linux-386', 32, 'LSB', 3, '386', None),
    ('go-linux-s390x', 64, 'MSB', 22, 's390x', None),
])
def test_real_linux_headers_are_identified(name, bits, endian, machine, goarch, interpreter):
    facts = elf.identify_bytes(head(name), name)
    assert (facts['format'], facts['bits'], facts['endian'], facts['machine'], facts['goarch']) == (
        'elf', bits, endian, machine, goarch)
    assert facts['os'] == 'linux' and facts['runnable'] and not facts['truncated']
    assert facts['interpreter'] == interpreter


def test_freebsd_build_is_named_by_its_os_abi():
    facts = elf.identify_bytes(head('go-freebsd-amd64'))
    assert facts['osabi'] == 'FreeBSD' and facts['os'] == 'FreeBSD' and facts['goarch'] == 'amd64'


@pytest.mark.parametrize('name, fmt', [('go-darwin-arm64', 'mach-o'), ('go-windows-amd64', 'pe')])
def test_other_executable_formats_are_named(name, fmt):
    assert elf.identify_bytes(head(name))['format'] == fmt


def test_arm64_binary_refused_on_amd64_host_naming_both(put):
    result = elf.check(put('go-linux-arm64'), machine='x86_64', host_label='host proxy-1')
    assert not result['ok']
    message = result['message']
    assert 'ELF 64-bit LSB executable, ARM aarch64 (GOARCH arm64)' in message
    assert 'host proxy-1 runs x86_64 (ELF 64-bit LSB x86-64, GOARCH amd64)' in message
    assert 'GOOS=linux GOARCH=amd64' in message


def test_amd64_binary_refused_on_arm64_host(put):
    result = elf.check(put('go-linux-amd64'), machine='aarch64')
    assert not result['ok'] and 'x86-64 (GOARCH amd64)' in result['message']
    assert 'runs aarch64 (ELF 64-bit LSB ARM aarch64, GOARCH arm64)' in result['message']
    assert 'GOARCH=arm64' in result['message']


@pytest.mark.parametrize('name, machine', [('go-linux-amd64', 'x86_64'), ('go-linux-arm64', 'aarch64'),
                                           ('go-linux-s390x', 's390x'), ('c-amd64-static', 'x86_64')])
def test_binary_of_the_host_machine_is_accepted(put, name, machine):
    result = elf.check(put(name), machine=machine)
    assert result['ok'] and result['message'] is None
    assert result['candidate']['goarch'] == result['host']['goarch']


def test_32_bit_binary_accepted_only_when_the_running_c_binary_is_one_too(put):
    arm = put('go-linux-arm')
    refused = elf.check(arm, machine='aarch64')
    assert not refused['ok'] and 'ELF 32-bit LSB executable, ARM (GOARCH arm)' in refused['message']
    c_binary = put('c-arm', data=head('go-linux-arm'))
    assert elf.check(arm, reference_path=c_binary, machine='aarch64')['ok']
    x86_c = put('c-amd64')
    refused = elf.check(arm, reference_path=x86_c, machine='x86_64')
    assert 'its C binary %s is ELF 64-bit LSB pie executable or shared object, x86-64' % x86_c in refused['message']


@pytest.mark.parametrize('name, text', [
    ('go-darwin-arm64', 'is a Mach-O executable (macOS), not a Linux ELF executable'),
    ('go-windows-amd64', 'is a PE executable (Windows), not a Linux ELF executable'),
    ('go-freebsd-amd64', 'is built for FreeBSD'),
])
def test_builds_for_other_systems_are_refused_with_what_they_are(put, name, text):
    result = elf.check(put(name), machine='x86_64')
    assert not result['ok'] and text in result['message'] and 'GOOS=linux GOARCH=amd64' in result['message']


def test_missing_program_interpreter_is_refused(put):
    path = put('c-amd64')
    ok = elf.check(path, machine='x86_64', exists=lambda p: True)
    assert ok['ok']
    missing = elf.check(path, machine='x86_64', exists=lambda p: False)
    assert not missing['ok']
    assert 'needs the program interpreter /lib64/ld-linux-x86-64.so.2' in missing['message']


def test_object_file_and_garbage_are_not_executables(put):
    obj = bytearray(head('go-linux-amd64'))
    obj[16:18] = struct.pack('<H', 1)  # ET_REL
    result = elf.check(put('obj', data=bytes(obj)), machine='x86_64')
    assert not result['ok'] and 'is an ELF relocatable, not an executable' in result['message']
    result = elf.check(put('garbage', data=b'\x00\x01\x02\x03 not a program'), machine='x86_64')
    assert not result['ok'] and 'not an executable format this check knows' in result['message']
    result = elf.check(put('empty', data=b''), machine='x86_64')
    assert not result['ok'] and 'empty file' in result['message']


def test_truncated_and_corrupt_headers_do_not_raise():
    data = head('go-linux-amd64')
    assert elf.identify_bytes(data[:10])['truncated']
    facts = elf.identify_bytes(data[:64])
    assert facts['machine'] == 62 and facts['truncated']
    corrupt = bytearray(data)
    corrupt[4] = 7
    assert 'invalid identification' in elf.identify_bytes(bytes(corrupt))['description']


def test_unreadable_candidate_is_named(tmp_path):
    result = elf.check(str(tmp_path / 'nope'), machine='x86_64', label='the staged Go binary')
    assert not result['ok'] and result['message'].startswith('the staged Go binary cannot read')
    assert 'No such file or directory' in result['message']


def test_a_script_is_judged_by_its_interpreter(put, tmp_path):
    interpreter = put('go-linux-arm64')
    script = tmp_path / 'mtproto-proxy-go'
    script.write_text('#!%s -u\nprint()\n' % interpreter)
    result = elf.check(str(script), machine='x86_64')
    assert not result['ok'] and '(a script) has the interpreter %s' % interpreter in result['message']
    native = put('go-linux-amd64')
    script.write_text('#!%s\n' % native)
    assert elf.check(str(script), machine='x86_64')['ok']


def test_the_stand_in_and_the_running_interpreter_pass_on_this_machine():
    standin = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'standin', 'mtproxy_standin.py')
    assert elf.check(standin)['ok']
    assert os.stat(standin).st_mode & stat.S_IXUSR


def test_host_goarch_and_host_facts():
    assert elf.host_goarch('x86_64') == 'amd64'
    assert elf.host_goarch('aarch64') == 'arm64'
    assert elf.host_goarch('armv7l') == 'arm'
    assert elf.host_goarch('sparc64') is None
    # a GOARCH already (an engine may print one) is taken as it is
    assert elf.host_goarch('amd64') == 'amd64'
    assert elf.host_goarch(' loong64\n') == 'loong64'
    assert elf.host_goarch('') is None and elf.host_goarch(None) is None
    unknown = elf.host_facts('sparc64')
    assert 'machine' not in unknown and 'does not know' in unknown['description']


def test_judge_on_facts_from_two_machines():
    # the binary read where it is (the controller), the machine from the host's uname -m
    candidate = elf.identify_bytes(head('go-linux-arm64'), '/srv/build/mtproto-proxy-go')
    refused = elf.judge(candidate, elf.host_facts('x86_64'), label='the Go binary', host_label='host proxy-2')
    assert not refused['ok'] and refused['message'].startswith(
        'the Go binary /srv/build/mtproto-proxy-go is ELF 64-bit LSB executable, ARM aarch64 (GOARCH arm64); '
        'host proxy-2 runs x86_64')
    assert elf.judge(candidate, elf.host_facts('aarch64'))['ok']
    dynamic = elf.identify_bytes(head('c-amd64'))
    assert elf.judge(dynamic, elf.host_facts('x86_64'))['ok']  # no path test given: the interpreter is not judged
