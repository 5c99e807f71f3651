# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of mtproxy_lock: the controller's side of the run lock.

It adds who takes the lock (this controller, its user, the ``ansible-playbook`` process and its start
time) and, when another run of this same controller holds the lock and its process is gone, breaks
that lock by its run id (one more module run, only then). The lock itself lives on the host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import getpass
import socket

from ansible.plugins.action import ActionBase
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import controller_identity, process_alive

MODULE = 'mtproxy.cutover.mtproxy_lock'
FILLED_IN = ('controller', 'user', 'pid', 'pid_start')


def holder_gone(locked_by, controller):
    """True when ``locked_by`` was taken from ``controller`` by a process that no longer runs there."""
    if not locked_by or locked_by.get('controller') != controller or not locked_by.get('pid'):
        return False
    return not process_alive(int(locked_by['pid']), locked_by.get('pid_start'))


class ActionModule(ActionBase):

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        args = dict((key, value) for key, value in self._task.args.items() if key not in FILLED_IN)
        identity = controller_identity()
        controller = socket.gethostname()
        args.update(controller=controller, user=getpass.getuser(), pid=identity['pid'], pid_start=identity['start'])
        answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        locked_by = answer.get('locked_by')
        taking = args.get('state', 'acquired') == 'acquired'
        if taking and answer.get('failed') and answer.get('refused') == 'locked' and holder_gone(locked_by, controller):
            args['break_run'] = locked_by.get('run_id')
            answer = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
            if not answer.get('failed'):
                answer['broken'] = ('its controller process (pid %s on %s) is gone: the run %s ended without giving '
                                    'the lock back' % (locked_by.get('pid'), controller, locked_by.get('run_id')))
        result.update(answer)
        return result
