# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of a host's ``mtproxy_cutover_*`` settings that an argument spec cannot make.

The preflight validates the settings with ``ansible.builtin.validate_argument_spec`` against the
``settings`` entry point of roles/preflight/meta/argument_specs.yml (types, choices). This adds:
names that the spec does not know (a typo such as ``mtproxy_cutover_stop_afer`` would otherwise be
ignored, and a preparation-only run would flip the fleet), thresholds judged by the judge's own
validation (module_utils/judge.effective_thresholds), and ranges.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import json

from ansible_collections.mtproxy.cutover.plugins.module_utils.judge import effective_thresholds

PREFIXES = ("mtproxy_cutover_", "mtproxy_drill_")
# Settings that are counts of seconds (or of anything) and must be at least this.
MINIMUM = {
    "mtproxy_cutover_canary_window_s": 1,
    "mtproxy_cutover_wave_window_s": 1,
    "mtproxy_cutover_sample_interval_s": 1,
    "mtproxy_cutover_baseline_window_s": 1,
    "mtproxy_cutover_listen_timeout_s": 1,
    "mtproxy_cutover_prewarm_window_s": 1,
    "mtproxy_cutover_prewarm_ready_timeout_s": 1,
    "mtproxy_cutover_prewarm_stop_timeout_s": 1,
    "mtproxy_cutover_progress_interval_s": 1,
    "mtproxy_cutover_keep_releases": 0,
    "mtproxy_drill_envelope_factor": 1,
    "mtproxy_drill_envelope_slack_ms": 0,
}


def _number(value):
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _suggestion(name, known):
    """' (did you mean X?)' for the known name closest to ``name`` after the common prefix, else ''."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            tails = dict((k[len(prefix):], k) for k in known if k.startswith(prefix))
            close = difflib.get_close_matches(name[len(prefix):], sorted(tails), n=1, cutoff=0.75)
            if close:
                return " (did you mean %s?)" % tails[close[0]]
    return ""


def check_settings(variables, spec_options):
    """{settings, unknown, errors} of the settings among ``variables`` (a host's variables).

    ``settings`` are the known settings with their values (for validate_argument_spec),
    ``unknown`` one text per unknown name (with the closest known name), ``errors`` one text per
    threshold or range problem.
    """
    known = sorted(spec_options or {})
    settings = {}
    unknown = []
    errors = []
    for name in sorted(k for k in variables.keys() if isinstance(k, str) and k.startswith(PREFIXES)):
        if name not in spec_options:
            unknown.append("%s%s" % (name, _suggestion(name, known)))
            continue
        try:
            settings[name] = variables[name]
        except Exception as exc:  # pylint: disable=broad-except  # templating errors of any kind
            errors.append("%s cannot be read: %s" % (name, exc))
    thresholds = settings.get("mtproxy_cutover_thresholds")
    if isinstance(thresholds, str) and thresholds.strip():
        try:
            thresholds = json.loads(thresholds)
        except ValueError:
            thresholds = None  # the argument spec reports a dict that is not one
    if isinstance(thresholds, dict):
        try:
            effective_thresholds(dict(thresholds))
        except ValueError as exc:
            errors.append("mtproxy_cutover_thresholds: %s" % exc)
    for name, minimum in sorted(MINIMUM.items()):
        if name in settings:
            number = _number(settings[name])
            if number is not None and number < minimum:
                errors.append("%s must be at least %s (got %s)" % (name, minimum, settings[name]))
    return {"settings": settings, "unknown": unknown, "errors": errors}
