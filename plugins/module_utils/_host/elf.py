# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which machine a binary is built for, which machine the host is, and whether the one runs on the other.

Runs on the host, standard library only, no other module_utils import. Reads the ELF identification
and header (System V ABI, "ELF header" and "Program header"): class (32/64-bit), data encoding
(LSB/MSB), OS ABI, type, machine, and from the program headers the program interpreter
(PT_INTERP) and the OS named by a note (PT_NOTE: NetBSD, OpenBSD, FreeBSD, or a GNU ABI tag).
Mach-O, PE and ``#!`` scripts are told apart so that a wrong staging names what was staged.

The host is what ``uname -m`` says (the kernel runs binaries of that machine); a binary of another
machine is still accepted when it is the machine of a reference binary that already runs there
(the frozen C binary): e.g. a 32-bit ARM userland on an arm64 kernel.

Every read is bounded (MAX_READ bytes of a file).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

MAX_READ = 65536
MAX_PHDRS = 64
MAX_SCRIPT_LINE = 256

ELF_MAGIC = b'\x7fELF'
CLASS_BITS = {1: 32, 2: 64}
DATA_ENDIAN = {1: 'LSB', 2: 'MSB'}
ELF_TYPES = {1: 'relocatable', 2: 'executable', 3: 'pie executable or shared object', 4: 'core file'}
RUNNABLE_TYPES = (2, 3)
PT_INTERP = 3
PT_NOTE = 4
# EI_OSABI values (System V ABI gABI); 0 and 3 are what Linux binaries carry.
OSABI = {0: 'SYSV', 1: 'HP-UX', 2: 'NetBSD', 3: 'GNU/Linux', 6: 'Solaris', 7: 'AIX', 8: 'IRIX',
         9: 'FreeBSD', 10: 'Tru64', 12: 'OpenBSD', 97: 'ARM', 255: 'standalone'}
LINUX_OSABI = (0, 3)
# NT_GNU_ABI_TAG's first word (glibc's abi-tags): 0 is Linux.
GNU_ABI_OS = {0: None, 1: 'GNU/Hurd', 2: 'Solaris', 3: 'FreeBSD'}
NOTE_OS = {b'NetBSD': 'NetBSD', b'OpenBSD': 'OpenBSD', b'FreeBSD': 'FreeBSD', b'DragonFly': 'DragonFly'}

# e_machine -> name as file(1) prints it
MACHINE_NAMES = {3: 'Intel 80386', 8: 'MIPS', 20: 'PowerPC', 21: 'PowerPC64', 22: 'IBM S/390', 40: 'ARM',
                 62: 'x86-64', 183: 'ARM aarch64', 243: 'RISC-V', 258: 'LoongArch'}
# (e_machine, bits, endian) -> Go's GOARCH (the name the Go port's reports use, go_arch)
GOARCH = {(3, 32, 'LSB'): '386', (62, 64, 'LSB'): 'amd64', (40, 32, 'LSB'): 'arm',
          (183, 64, 'LSB'): 'arm64', (21, 64, 'LSB'): 'ppc64le', (21, 64, 'MSB'): 'ppc64',
          (22, 64, 'MSB'): 's390x', (243, 64, 'LSB'): 'riscv64', (258, 64, 'LSB'): 'loong64',
          (8, 32, 'MSB'): 'mips', (8, 32, 'LSB'): 'mipsle', (8, 64, 'MSB'): 'mips64',
          (8, 64, 'LSB'): 'mips64le'}
# uname -m -> (e_machine, bits, endian) of the binaries that kernel runs natively
UNAME = {'x86_64': (62, 64, 'LSB'), 'amd64': (62, 64, 'LSB'),
         'i386': (3, 32, 'LSB'), 'i486': (3, 32, 'LSB'), 'i586': (3, 32, 'LSB'), 'i686': (3, 32, 'LSB'),
         'aarch64': (183, 64, 'LSB'), 'arm64': (183, 64, 'LSB'),
         'armv6l': (40, 32, 'LSB'), 'armv7l': (40, 32, 'LSB'), 'armv8l': (40, 32, 'LSB'), 'arm': (40, 32, 'LSB'),
         'ppc64le': (21, 64, 'LSB'), 'ppc64': (21, 64, 'MSB'), 's390x': (22, 64, 'MSB'),
         'riscv64': (243, 64, 'LSB'), 'loongarch64': (258, 64, 'LSB'),
         'mips': (8, 32, 'MSB'), 'mipsel': (8, 32, 'LSB'), 'mips64': (8, 64, 'MSB')}


class ElfError(Exception):
    """A file that cannot be read at all (missing, a directory, no permission)."""


def host_goarch(machine):
    """GOARCH of a host from ``uname -m`` / ``ansible_architecture`` (``x86_64`` -> ``amd64``) or from a
    GOARCH already (an engine may print ``amd64``), or None for a machine Go has no name for."""
    machine = (machine or '').strip()
    if machine in set(GOARCH.values()):
        return machine
    key = UNAME.get(machine)
    return GOARCH.get(key) if key else None


def _not_elf(head):
    """What a file that is not ELF is (format, description), from its first bytes."""
    if head.startswith(b'#!'):
        line = head[2:MAX_SCRIPT_LINE].split(b'\n', 1)[0].strip()
        return 'script', '#! script (%s)' % line.decode('utf-8', 'replace')
    if head[:4] in (b'\xfe\xed\xfa\xce', b'\xce\xfa\xed\xfe', b'\xfe\xed\xfa\xcf', b'\xcf\xfa\xed\xfe'):
        return 'mach-o', 'Mach-O executable (macOS)'
    if head[:4] in (b'\xca\xfe\xba\xbe', b'\xbe\xba\xfe\xca'):
        return 'mach-o', 'Mach-O universal binary (macOS)'
    if head[:2] == b'MZ':
        return 'pe', 'PE executable (Windows)'
    if not head:
        return 'empty', 'empty file'
    return 'unknown', 'not an executable format this check knows (first bytes %s)' % head[:4].hex()


def _notes_os(data, endian_char, offset, size):
    """The OS a PT_NOTE segment names, or None (a Go build ID or GNU build ID note names none)."""
    end = min(offset + size, len(data))
    pos = offset
    for _count in range(64):
        if pos + 12 > end:
            return None
        namesz, descsz, ntype = struct.unpack(endian_char + 'III', data[pos:pos + 12])
        name_start = pos + 12
        name = data[name_start:name_start + namesz].rstrip(b'\0')
        desc_start = name_start + ((namesz + 3) & ~3)
        if name in NOTE_OS:
            return NOTE_OS[name]
        if name == b'GNU' and ntype == 1 and desc_start + 4 <= end:
            abi_os = struct.unpack(endian_char + 'I', data[desc_start:desc_start + 4])[0]
            return GNU_ABI_OS.get(abi_os, 'unknown OS %d' % abi_os)
        pos = desc_start + ((descsz + 3) & ~3)
    return None


def identify_bytes(data, path=None):
    """What ``data`` (the first bytes of a file, up to MAX_READ) is, as a dict.

    ``format``: elf, script, mach-o, pe, empty, unknown. For ELF also ``bits``, ``endian``,
    ``machine`` (e_machine), ``machine_name``, ``goarch``, ``osabi``, ``os`` ('linux' or the
    other OS named by OS ABI or a note), ``type``, ``runnable`` (an executable or PIE),
    ``interpreter`` (PT_INTERP, None when static or beyond the bytes read), ``truncated``.
    """
    facts = {'path': path, 'format': None, 'description': None}
    if data[:4] != ELF_MAGIC:
        facts['format'], facts['description'] = _not_elf(data)
        if facts['format'] == 'script':
            words = data[2:MAX_SCRIPT_LINE].split(b'\n', 1)[0].split()
            facts['script_interpreter'] = words[0].decode('utf-8', 'replace') if words else None
        return facts
    facts['format'] = 'elf'
    if len(data) < 20:
        facts['description'] = 'truncated ELF file (%d bytes)' % len(data)
        facts['truncated'] = True
        return facts
    bits = CLASS_BITS.get(data[4])
    endian = DATA_ENDIAN.get(data[5])
    if bits is None or endian is None or data[6] != 1:
        facts['description'] = 'ELF file with an invalid identification (class %d, data %d, version %d)' % (
            data[4], data[5], data[6])
        return facts
    char = '<' if endian == 'LSB' else '>'
    e_type, machine = struct.unpack(char + 'HH', data[16:20])
    osabi = data[7]
    facts.update({'bits': bits, 'endian': endian, 'machine': machine,
                  'machine_name': MACHINE_NAMES.get(machine, 'machine %d' % machine),
                  'goarch': GOARCH.get((machine, bits, endian)), 'osabi': OSABI.get(osabi, str(osabi)),
                  'type': ELF_TYPES.get(e_type, 'type %d' % e_type), 'runnable': e_type in RUNNABLE_TYPES,
                  'interpreter': None, 'truncated': False})
    note_os = None
    if bits == 64 and len(data) >= 64:
        phoff, = struct.unpack(char + 'Q', data[32:40])
        phentsize, phnum = struct.unpack(char + 'HH', data[54:58])
        phdr = char + 'IIQQQQQQ'
    elif bits == 32 and len(data) >= 52:
        phoff, = struct.unpack(char + 'I', data[28:32])
        phentsize, phnum = struct.unpack(char + 'HH', data[42:46])
        phdr = char + 'IIIIIIII'
    else:
        facts['truncated'] = True
        phnum = 0
    for index in range(min(phnum, MAX_PHDRS)):
        start = phoff + index * phentsize
        if start + struct.calcsize(phdr) > len(data):
            facts['truncated'] = True
            break
        fields = struct.unpack(phdr, data[start:start + struct.calcsize(phdr)])
        if bits == 64:
            p_type, p_offset, p_filesz = fields[0], fields[2], fields[5]
        else:
            p_type, p_offset, p_filesz = fields[0], fields[1], fields[4]
        if p_offset + p_filesz > len(data):
            if p_type in (PT_INTERP, PT_NOTE):
                facts['truncated'] = True
            continue
        if p_type == PT_INTERP:
            facts['interpreter'] = data[p_offset:p_offset + p_filesz].split(b'\0', 1)[0].decode('utf-8', 'replace')
        elif p_type == PT_NOTE and note_os is None:
            note_os = _notes_os(data, char, p_offset, p_filesz)
    if osabi not in LINUX_OSABI:
        facts['os'] = facts['osabi']
    else:
        facts['os'] = note_os or 'linux'
    facts['description'] = describe(facts)
    return facts


def identify(path):
    """identify_bytes of the file at ``path`` (symlinks followed); ElfError when it cannot be read."""
    try:
        with open(path, 'rb') as handle:
            data = handle.read(MAX_READ)
    except (IOError, OSError) as exc:
        raise ElfError('cannot read %s: %s' % (path, exc.strerror or exc))
    return identify_bytes(data, path)


def describe(facts):
    """``ELF 64-bit LSB executable, x86-64 (GOARCH amd64), Linux`` and the like."""
    if facts.get('format') != 'elf' or 'bits' not in facts:
        return facts.get('description') or 'unknown'
    arch = facts['machine_name'] + (' (GOARCH %s)' % facts['goarch'] if facts.get('goarch') else '')
    text = 'ELF %d-bit %s %s, %s' % (facts['bits'], facts['endian'], facts['type'], arch)
    if facts.get('os') and facts['os'] != 'linux':
        text += ', for %s' % facts['os']
    return text


def host_facts(machine=None):
    """The host as the same kind of dict: what its kernel (``uname -m``, or ``machine``) runs natively."""
    machine = machine or os.uname()[4]
    key = UNAME.get(machine)
    facts = {'uname_machine': machine, 'format': 'elf', 'os': 'linux'}
    if key is None:
        facts['description'] = '%s (uname -m; a machine this check does not know)' % machine
        return facts
    facts.update({'machine': key[0], 'bits': key[1], 'endian': key[2],
                  'machine_name': MACHINE_NAMES.get(key[0], 'machine %d' % key[0]), 'goarch': GOARCH.get(key)})
    facts['description'] = '%s (ELF %d-bit %s %s, GOARCH %s)' % (
        machine, key[1], key[2], facts['machine_name'], facts['goarch'])
    return facts


def same_machine(one, other):
    return all(one.get(k) is not None and one.get(k) == other.get(k) for k in ('machine', 'bits', 'endian'))


def _candidate_problem(facts):
    """Why ``facts`` (of a file) cannot be a Linux program at all, or None."""
    if facts.get('format') != 'elf':
        return 'is a %s, not a Linux ELF executable' % facts.get('description')
    if 'bits' not in facts:
        return 'is a %s' % facts.get('description')
    if not facts.get('runnable'):
        return 'is an ELF %s, not an executable' % facts.get('type')
    if facts.get('os') != 'linux':
        return 'is built for %s (%s), not Linux' % (facts['os'], describe(facts))
    return None


def check(candidate_path, reference_path=None, machine=None, label='the staged binary', host_label='this host',
          exists=os.path.exists):
    """Can the host run ``candidate_path``? Reads the files here (run it on the host) and returns judge()'s
    dict. A ``#!`` script is judged by its interpreter (one level). ``reference_path`` is a binary that
    runs on this host already (the frozen C binary)."""
    host = host_facts(machine)
    try:
        candidate = identify(candidate_path)
    except ElfError as exc:
        return {'ok': False, 'message': '%s %s' % (label, exc), 'host': host, 'candidate': None, 'reference': None}
    interpreter = None
    if candidate['format'] == 'script' and (candidate.get('script_interpreter') or '').startswith('/'):
        try:
            interpreter = identify(candidate['script_interpreter'])
        except ElfError as exc:
            return {'ok': False, 'host': host, 'candidate': candidate, 'reference': None,
                    'message': '%s %s is a script whose interpreter %s' % (label, candidate_path, exc)}
    reference = None
    if reference_path:
        try:
            reference = identify(reference_path)
        except ElfError:
            reference = None
    return judge(candidate, host, reference, label, host_label, exists, interpreter)


def judge(candidate, host, reference=None, label='the staged binary', host_label='this host', exists=None,
          interpreter=None):
    """Whether ``candidate`` (identify() facts) runs on ``host`` (host_facts()): a dict with ``ok``,
    ``message`` (None when ok; else the cause naming both sides and the way forward), ``candidate``,
    ``host``, ``reference``. Usable where the facts come from two machines (the binary read on the
    controller, ``uname -m`` from the host).

    ``reference``: facts of a binary that already runs on the host (the frozen C binary): a candidate of
    its machine is accepted too (e.g. a 32-bit ARM userland on an arm64 kernel). ``interpreter``: facts
    of a script's ``#!`` interpreter, judged instead of the script. ``exists``: a test for paths on the
    host; when given, a program interpreter (PT_INTERP) the host lacks is refused (the exec would fail
    with ENOENT)."""
    result = {'ok': False, 'message': None, 'host': host, 'candidate': candidate, 'reference': reference}
    path = candidate.get('path') or ''
    judged, judged_label = candidate, ('%s %s' % (label, path)).strip()
    if interpreter is not None:
        judged = interpreter
        judged_label = '%s %s (a script) has the interpreter %s, which' % (
            label, path, candidate.get('script_interpreter'))
        result['interpreter_of_script'] = interpreter
    problem = _candidate_problem(judged)
    if problem:
        result['message'] = '%s %s; %s runs %s. %s' % (
            judged_label, problem, host_label, host['description'], way_forward(host))
        return result
    runs_reference = bool(reference and reference.get('format') == 'elf' and same_machine(judged, reference))
    if not same_machine(judged, host) and not runs_reference:
        ref_text = ''
        if reference and reference.get('format') == 'elf':
            ref_text = ', its C binary %s is %s' % (reference.get('path'), describe(reference))
        result['message'] = '%s is %s; %s runs %s%s. %s' % (
            judged_label, describe(judged), host_label, host['description'], ref_text, way_forward(host))
        return result
    needed = judged.get('interpreter')
    if needed and exists is not None and not exists(needed):
        result['message'] = ('%s needs the program interpreter %s, which %s does not have (%s). Build it '
                             'statically (CGO_ENABLED=0) or for the C library of the host.'
                             % (judged_label, needed, host_label, describe(judged)))
        return result
    result['ok'] = True
    return result


def way_forward(host):
    if host.get('goarch'):
        return 'Stage a build for linux/%s (GOOS=linux GOARCH=%s).' % (host['goarch'], host['goarch'])
    return 'Stage a Linux build for this machine (uname -m %s).' % host.get('uname_machine')
