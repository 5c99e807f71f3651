# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a service points at its binary: one class per method, behind one interface.

``Pointing`` is the interface; ``DropIn`` (a systemd drop-in that resets ExecStart) and ``Symlink``
(the ExecStart program is a symlink, swapped atomically) implement it. A new method is one more
subclass registered in ``METHODS``. Each answers, for the freeze: is the unit already on Go this
way (``runs_go``), where is the C binary while it is (``c_binary``), would the method take effect
(``takes_effect_refusal``); and for the flip: point (``apply``), un-point (``revert``), is it pointed
(``ok``), the ``diff``, the argv and program the restarted process must have (``expected_argv``,
``exec_path``, ``exe_mismatch``) and what the rollback needs to find the C binary again
(``previous_good_extra``).

The method a service was flipped with is recorded in its ``state.json`` (``method``);
``method_of`` reads it back there, and refuses a request that contradicts it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.mtproxy.cutover.plugins.module_utils._errors import SwitchError
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.files import (
    fragment_mode, read_shebang, read_text, write_atomic)
from ansible_collections.mtproxy.cutover.plugins.module_utils._host.proc import proc_exe
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import redact_text
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.refusals import dropin_refusal
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import (
    CUTOVER_DROPIN, EXEC_PREFIXES, dropin_winner, host_specifiers, parse_exec_command)

SYSTEMD_DIR = '/etc/systemd/system'
DEFAULT_METHOD = 'dropin'
DROPIN_HEADER = (
    '# Managed by mtproxy.cutover (mtproxy_switch): runs the Go binary with the unchanged C argv.\n'
    '# Removing this file (then systemctl daemon-reload and a restart) returns the service to the C binary.\n'
)
# What a drop-in must override at the freeze, before the Go binary is known.
PROBE_DROPIN = '[Service]\nExecStart=\nExecStart=/cutover\n'


# ---------------------------------------------------------------------------------------------
# ExecStart text, drop-in files and symlinks
# ---------------------------------------------------------------------------------------------

def split_program(text):
    """(prefix, program, rest) of a raw ExecStart value; ``rest`` keeps every byte after the program.

    ``ExecStart=/opt/MTProxy/mtproto-proxy -u nobody`` -> ('', '/opt/MTProxy/mtproto-proxy', ' -u nobody').
    """
    if text.startswith('ExecStart='):
        text = text[len('ExecStart='):]
    text = text.lstrip(' \t')
    index = 0
    while index < len(text) and text[index] in EXEC_PREFIXES:
        index += 1
    prefix = text[:index]
    body = text[index:]
    if not body:
        raise SwitchError('ExecStart of the unit is empty')
    if body[0] in '"\'':
        end = body.find(body[0], 1)
        if end < 0:
            raise SwitchError('ExecStart program has an unterminated quote')
        return prefix, body[1:end], body[end + 1:]
    end = 0
    while end < len(body) and body[end] not in ' \t\n':
        end += 1
    return prefix, body[:end], body[end:]


def systemd_path_word(path):
    """``path`` written as one ExecStart word: % and $ escaped, quoted when it holds blanks."""
    if not path.startswith('/'):
        raise SwitchError('binary must be an absolute path, got %r' % path)
    if any(ch in path for ch in '"\'\\\n\r'):
        raise SwitchError('binary path contains a quote, backslash or newline: refusing to write it into a unit')
    word = path.replace('%', '%%').replace('$', '$$')
    if ' ' in word or '\t' in word:
        word = '"%s"' % word
    return word


def render_dropin(exec_start, go_binary, service_lines=()):
    """Drop-in text that runs ``go_binary`` with the rest of the vendor ExecStart byte-identical;
    ``service_lines`` (privilege_drop=service's User=/Group=/AmbientCapabilities=) follow it."""
    prefix, _program, rest = split_program(exec_start)
    if '@' in prefix:
        # With "@" the next word is argv[0]; keeping it would hide which binary runs, so refuse.
        raise SwitchError('ExecStart uses the "@" prefix (explicit argv[0]); method=dropin does not support it')
    rest = rest.rstrip('\n')
    return '%s[Service]\nExecStart=\nExecStart=%s%s%s\n%s' % (
        DROPIN_HEADER, prefix, systemd_path_word(go_binary), rest, ''.join(line + '\n' for line in service_lines))


def dropin_path(unit_name, systemd_dir=SYSTEMD_DIR):
    return os.path.join(systemd_dir, unit_name + '.d', CUTOVER_DROPIN)


def write_dropin(path, text, mode):
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    write_atomic(path, text, mode)


def remove_dropin(path):
    """Remove the drop-in and any temporary file a crashed write left behind. True if anything went."""
    removed = False
    directory = os.path.dirname(path)
    names = os.listdir(directory) if os.path.isdir(directory) else []
    tmp_prefix = '.%s.tmp.' % os.path.basename(path)
    for name in names:
        if name == os.path.basename(path) or name.startswith(tmp_prefix):
            os.unlink(os.path.join(directory, name))
            removed = True
    return removed


def flip_symlink(link, target):
    """Point ``link`` at ``target`` atomically (new link at a temporary name, renamed over)."""
    tmp = os.path.join(os.path.dirname(link), '.%s.mtproxy-cutover.%d' % (os.path.basename(link), os.getpid()))
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, link)


def exec_program(manifest):
    """The program word of the frozen vendor ExecStart (for method=symlink: the link)."""
    return split_program(manifest['unit']['exec_start'])[1]


def unit_exec_path(manifest):
    """The program systemd runs for the frozen vendor ExecStart (specifiers resolved)."""
    unit = manifest['unit']
    return parse_exec_command(unit['exec_start'], manifest['unit_name'], {},
                              host_specifiers(unit.get('fragment_path')))['path']


def link_resolved(link, target):
    """Real path of symlink target ``target`` read from (or meant for) ``link``; relative to its directory."""
    return os.path.realpath(os.path.join(os.path.dirname(link), target))


# ---------------------------------------------------------------------------------------------
# The interface and its methods
# ---------------------------------------------------------------------------------------------

class Pointing:
    """Where the unit points now (``current``) and where it should point for ``target`` (``desired``)."""

    method = None

    def __init__(self, manifest, state, target, binary, systemd_dir=SYSTEMD_DIR, service_lines=()):
        self.manifest = manifest
        self.state = state or {}
        self.target = target
        self.binary = binary
        self.systemd_dir = systemd_dir
        self.service_lines = list(service_lines)
        self.path = None
        self.current = None
        self.desired = None

    # -- freeze facts (the host is read, nothing written) --------------------------------------

    @classmethod
    def takes_effect_refusal(cls, unit_texts, unit_name, text=PROBE_DROPIN, systemd_dir=SYSTEMD_DIR):
        """A refusals.Refusal when pointing this way would not change what systemd runs, else None."""
        return None

    @classmethod
    def runs_go(cls, frozen, state, live_argv, from_cutover):
        """True when the live unit runs the Go binary of ``state`` pointed this way."""
        raise NotImplementedError

    @classmethod
    def c_binary(cls, frozen, state):
        """Path of the frozen C binary while the unit points at Go this way."""
        raise NotImplementedError

    # -- point and un-point --------------------------------------------------------------------

    @property
    def ok(self):
        """The unit already points where ``target`` needs it."""
        raise NotImplementedError

    @property
    def dropin_path(self):
        return None

    def diff(self, secrets):
        raise NotImplementedError

    def apply(self):
        self._point(self.desired)

    def revert(self):
        """Put back what was there before apply()."""
        self._point(self.current)

    def _point(self, what):
        raise NotImplementedError

    # -- prove ---------------------------------------------------------------------------------

    def expected_argv(self):
        """The argv the restarted main process must have."""
        return list(self.manifest['argv'])

    def exec_path(self):
        """The program systemd must run for ExecStart once the unit points at ``target``."""
        return unit_exec_path(self.manifest)

    def exe_mismatch(self, pid):
        """Why process ``pid`` does not run the target's binary, or None; argv is checked separately."""
        return None

    def previous_good_extra(self):
        """What a later rollback needs beyond the frozen argv to point back at C (kept in state.json)."""
        return None


class DropIn(Pointing):
    """A drop-in ``99-mtproxy-cutover.conf`` that resets ExecStart to the Go binary; removed for C."""

    method = 'dropin'

    def __init__(self, manifest, state, target, binary, systemd_dir=SYSTEMD_DIR, service_lines=()):
        super(DropIn, self).__init__(manifest, state, target, binary, systemd_dir, service_lines)
        unit = manifest['unit']
        self.path = dropin_path(manifest['unit_name'], systemd_dir)
        self.current = read_text(self.path)
        self.desired = render_dropin(unit['exec_start'], binary, self.service_lines) if target == 'go' else None
        self.mode = fragment_mode(unit.get('fragment_path'))

    @classmethod
    def takes_effect_refusal(cls, unit_texts, unit_name, text=PROBE_DROPIN, systemd_dir=SYSTEMD_DIR):
        path = dropin_path(unit_name, systemd_dir)
        winner = dropin_winner(unit_texts, path, text) if unit_texts else path
        return dropin_refusal(winner) if winner != path else None

    @classmethod
    def runs_go(cls, frozen, state, live_argv, from_cutover):
        return bool(from_cutover and state.get('current') == 'go'
                    and list(live_argv) == [state.get('binary')] + list(frozen.get('argv', [])[1:]))

    @classmethod
    def c_binary(cls, frozen, state):
        return frozen['argv'][0]

    @property
    def ok(self):
        return self.current == self.desired

    @property
    def dropin_path(self):
        return self.path

    def diff(self, secrets):
        return {'before_header': self.path if self.current is not None else '%s (absent)' % self.path,
                'after_header': self.path if self.desired is not None else '%s (absent)' % self.path,
                'before': redact_text(self.current or '', secrets),
                'after': redact_text(self.desired or '', secrets)}

    def _point(self, what):
        if what is None:
            remove_dropin(self.path)
        else:
            write_dropin(self.path, what, self.mode)

    def expected_argv(self):
        frozen = list(self.manifest['argv'])
        return [self.binary] + frozen[1:] if self.target == 'go' else frozen

    def exec_path(self):
        return self.binary if self.target == 'go' else unit_exec_path(self.manifest)


class Symlink(Pointing):
    """The ExecStart program is a symlink (current -> release), swapped atomically between releases."""

    method = 'symlink'

    def __init__(self, manifest, state, target, binary, systemd_dir=SYSTEMD_DIR, service_lines=()):
        super(Symlink, self).__init__(manifest, state, target, binary, systemd_dir, service_lines)
        self.path = exec_program(manifest)
        if not os.path.islink(self.path):
            raise SwitchError('method=symlink needs the ExecStart binary %s to be a symlink (current -> release), '
                              'but it is not; use method=dropin or lay the binary out as a symlink first'
                              % self.path)
        self.link_frozen = self.frozen_target(manifest, self.state)
        self.current = os.readlink(self.path)
        self.desired = binary if target == 'go' else self.link_frozen

    @staticmethod
    def frozen_target(manifest, state):
        """Where the link pointed when C was frozen: kept in state.json at the first flip."""
        return ((state or {}).get('previous_good') or {}).get('link_target') or manifest.get('binary_realpath')

    @classmethod
    def runs_go(cls, frozen, state, live_argv, from_cutover):
        if state.get('current') != 'go' or not state.get('binary') or list(live_argv) != list(frozen.get('argv', [])):
            return False
        link = exec_program(frozen)
        return os.path.islink(link) and os.path.realpath(link) == os.path.realpath(state['binary'])

    @classmethod
    def c_binary(cls, frozen, state):
        return link_resolved(exec_program(frozen), cls.frozen_target(frozen, state))

    @property
    def ok(self):
        return link_resolved(self.path, self.current) == link_resolved(self.path, self.desired)

    def diff(self, secrets):
        return {'before_header': self.path, 'after_header': self.path,
                'before': '%s -> %s\n' % (self.path, self.current),
                'after': '%s -> %s\n' % (self.path, self.desired)}

    def _point(self, what):
        flip_symlink(self.path, what)

    def exe_mismatch(self, pid):
        exec_path = exec_program(self.manifest)
        want = os.path.realpath(self.binary if self.target == 'go' else exec_path)
        exe = proc_exe(pid)
        if exe is None:
            # Unreadable (see proc_exe): the argv proof and the switch's /stats flavour check stand alone.
            return None
        # A script's /proc/PID/exe is its interpreter; then the link it was started through must resolve.
        if exe != want and not (read_shebang(exec_path) and os.path.realpath(exec_path) == want):
            return 'process %d runs %s, expected %s' % (pid, exe, want)
        return None

    def previous_good_extra(self):
        return {'link_target': self.link_frozen}


METHODS = {cls.method: cls for cls in (DropIn, Symlink)}


def method_of(state, target, requested=None):
    """The method to point with: the one state.json records while the unit is on Go or goes back to C.

    ``target`` is 'go', 'c' or None (the freeze). A ``requested`` method that contradicts the
    recorded one is refused: pointing back another way would leave the unit on Go.
    """
    if requested is not None and requested not in METHODS:
        raise SwitchError('method must be one of %s' % ', '.join(sorted(METHODS)))
    state = state or {}
    recorded = state.get('method')
    if recorded and (target == 'c' or state.get('current') == 'go'):
        if recorded not in METHODS:
            raise SwitchError('state.json records method=%s, which this collection does not know' % recorded)
        if requested and requested != recorded:
            raise SwitchError('the service was pointed at %s with method=%s (state.json); method=%s contradicts it '
                              '(pointing another way would leave the unit on Go): leave the method unset (it is read '
                              'from state.json) or pass method=%s'
                              % (state.get('current'), recorded, requested, recorded), refused='method_mismatch')
        return recorded
    return requested or DEFAULT_METHOD


def pointing_for(manifest, state, target, binary, requested=None, systemd_dir=SYSTEMD_DIR, service_lines=()):
    """The Pointing of the method ``method_of`` chooses, planned for ``target``."""
    return METHODS[method_of(state, target, requested)](manifest, state, target, binary, systemd_dir, service_lines)
