# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a module run hands its AnsibleModule helpers to the host-side code."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.mtproxy.cutover.plugins.module_utils._host import files, process


def use_module(module):
    """Every program this module run starts goes through ``module.run_command``, every file it writes
    is moved into place by ``module.atomic_move``."""
    process.use_runner(module.run_command)
    files.use_atomic_move(module.atomic_move)
