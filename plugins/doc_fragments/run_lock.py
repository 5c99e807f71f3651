# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The run lock check of the modules that change a host."""

    DOCUMENTATION = r'''
options:
  lock_run_id:
    description:
      - The run that must hold the service's run lock (M(mtproxy.cutover.mtproxy_lock)). Before anything changes,
        the module checks that this run still holds it and renews its lease; when another run holds it (it was
        taken over, or this run's lock was broken) the module fails with C(refused=locked) and changes nothing.
      - Unset, no lock is checked (a module run outside a playbook run).
    type: str
'''
