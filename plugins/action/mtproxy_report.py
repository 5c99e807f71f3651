# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of mtproxy_report: write a stage record and render the run report on the controller.

The report lives on the controller, so this runs inside the task's worker: no connection to the
host, no module transfer and no extra Python process per host and stage.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report import (
    ARGUMENT_SPEC,
    REQUIRED_BY,
    ReportError,
)
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import apply, controller_identity


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp

        # Fails the task (also in check mode) with the validator's message on a bad option.
        validation, dummy = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_by=REQUIRED_BY)
        try:
            result.update(apply(validation.validated_parameters, check_mode=bool(self._task.check_mode),
                                controller=controller_identity()))
        except ReportError as exc:
            result.update(failed=True, msg=to_text(exc))
        return result
