# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of mtproxy_stage: one round trip to check a host, one more to stage the file.

``ansible.builtin.copy`` needs five (a stat module, a temporary directory, the transfer, the copy
module, the cleanup); here the file's bytes go on the stdin of the small program in
module_utils/_stage.py, which verifies them on the host before they take their place.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import inspect
import json
import os
import re
import shlex

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.mtproxy.cutover.plugins.module_utils import _stage as stage
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import elf


def elf_verdict(src, machine, host):
    """elf.judge() of the binary on the controller against the host's machine (uname -m)."""
    try:
        candidate = elf.identify(src)
    except elf.ElfError as exc:
        return {'ok': False, 'message': 'the Go binary %s %s' % (src, exc), 'host': elf.host_facts(machine),
                'candidate_description': None}
    interpreter = None
    if candidate['format'] == 'script' and (candidate.get('script_interpreter') or '').startswith('/'):
        try:
            interpreter = elf.identify(candidate['script_interpreter'])
        except elf.ElfError:
            interpreter = None
    verdict = elf.judge(candidate, elf.host_facts(machine), label='the Go binary',
                        host_label='host %s' % host, interpreter=interpreter)
    verdict['candidate_description'] = elf.describe(interpreter or candidate)
    return verdict


ARGUMENT_SPEC = dict(
    src=dict(type='path', required=True),
    dest=dict(type='path', required=True),
    sha256=dict(type='str', required=True),
    mode=dict(type='str', default='0755'),
)


class ActionModule(ActionBase):

    TRANSFERS_FILES = True

    def _python(self, task_vars):
        configured = task_vars.get('ansible_python_interpreter') or ''
        return configured if configured and not configured.startswith('auto') else '/usr/bin/python3'

    def _run_program(self, task_vars, words, data=None):
        command = ' '.join(shlex.quote(w) for w in [self._python(task_vars), '-c', inspect.getsource(stage)] + words)
        out = self._low_level_execute_command(command, sudoable=True, in_data=data)
        try:
            return json.loads(to_text(out.get('stdout', '')).strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {'failed': True, 'msg': 'staging program failed (rc %s): %s' % (
                out.get('rc'), to_text(out.get('stderr', '')).strip() or to_text(out.get('stdout', '')).strip())}

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        dummy, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        src, dest, want = args['src'], args['dest'], args['sha256'].lower()
        host = task_vars.get('inventory_hostname', '?')
        if not re.match(r'^[0-9a-f]{64}$', want):
            return dict(result, failed=True, msg='sha256 must be 64 hex digits')
        if not re.match(r'^0?[0-7]{3,4}$', args['mode']):
            return dict(result, failed=True, msg='mode must be octal, e.g. 0755')
        if not os.path.isfile(src):
            return dict(result, failed=True, msg='%s is not a file on the controller' % src)
        local = stage.file_sha256(src)
        if local != want:
            return dict(result, failed=True, msg='%s on the controller has sha256 %s, expected %s' % (src, local, want))
        mode = '%04o' % int(args['mode'], 8)
        result.update(dest=dest, sha256=want, changed=False)
        seen = self._run_program(task_vars, ['check', dest, want, mode, '0' if self._task.check_mode else '1'])
        if seen.get('failed'):
            return dict(result, failed=True, msg='%s: cannot check %s: %s' % (host, dest, seen.get('msg')))
        # The runbook's "Linux amd64 validation": the binary is a Linux program for the host's machine,
        # judged before a byte is copied (the binary read here, the host's uname -m from the check).
        runs = elf_verdict(src, seen.get('machine'), host)
        result['architecture'] = {'binary': runs['candidate_description'], 'host': runs['host']['description']}
        if not runs['ok']:
            return dict(result, failed=True, refused='wrong_architecture', msg='%s: %s' % (host, runs['message']))
        if seen.get('present'):
            result['changed'] = bool(seen.get('changed'))
            return result
        result['changed'] = True
        if self._task.check_mode:
            return result
        with open(src, 'rb') as handle:
            data = handle.read()
        done = self._run_program(task_vars, ['install', dest, want, mode], data)
        if done.get('failed'):
            return dict(result, failed=True, msg='%s: %s was not staged: %s' % (host, dest, done.get('msg')))
        return result
