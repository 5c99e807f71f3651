# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's ``mtproxy_cutover_*`` settings, checked and resolved once (the preflight).

``resolve_settings`` turns the settings a host was given into one value per setting: the value
given, else the default of the ``settings`` entry point of roles/preflight/meta/argument_specs.yml
(validated and converted as ``validate_argument_spec`` does, with Ansible's ArgumentSpecValidator).
The roles and playbooks read these resolved values (``preflight_settings``) and default nothing.
``run_settings_problems`` checks that the settings that are one value for the whole run (the waves,
the canary group, the Go binary, ...) agree on every host.

``check_settings`` makes the checks an argument spec cannot make: names that the spec does not
know (a typo such as ``mtproxy_cutover_stop_afer`` would otherwise be ignored, and a
preparation-only run would flip the fleet), thresholds judged by the judge's own validation (module_utils/judge.effective_thresholds), ranges, the waves of
``mtproxy_cutover_serial`` (a play keyword: a bad value would otherwise stop the run only at the
wave play, after the canaries were flipped), and that the hook task files exist on the controller.

Paths on the controller (the Go binary, the hook task files) are relative to the directory
ansible-playbook was started in (``controller_path``), not to the playbook's directory, where
Ansible runs modules of a local connection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import json
import os
import re

import yaml

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import effective_thresholds

COLLECTION_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_FILE = os.path.join(COLLECTION_DIR, "roles", "preflight", "meta", "argument_specs.yml")

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
    "mtproxy_cutover_lock_lease_s": 60,
    "mtproxy_cutover_dualrun_max_age_s": 60,
    "mtproxy_drill_window_s": 1,
    "mtproxy_drill_envelope_factor": 1,
    "mtproxy_drill_envelope_slack_ms": 0,
}
# Hook task files: setting -> hook name (playbooks/tasks/hook.yml).
HOOKS = {
    "mtproxy_cutover_before_flip_tasks": "before_flip",
    "mtproxy_cutover_after_flip_tasks": "after_flip",
    "mtproxy_cutover_before_rollback_tasks": "before_rollback",
}
# Settings whose empty value means "not set": when empty they are left out of the validation, so that
# their choices need no empty item; they resolve to None.
EMPTY_IS_UNSET = ("mtproxy_cutover_stop_after",)
# Paths on the controller: made absolute once, against the directory ansible-playbook was started in.
CONTROLLER_PATHS = ("go_binary", "go_image_archive", "report_template", "artifacts_dir", "before_flip_tasks",
                    "after_flip_tasks", "before_rollback_tasks", "dualrun_report")
# Settings that are one value for the whole run, whichever host they are read from.
RUN_LEVEL = ("go_binary", "go_binary_url", "go_binary_url_username", "go_binary_url_password",
             "go_binary_url_headers", "go_sha256", "go_image", "go_image_id", "go_image_archive", "go_version",
             "artifacts_dir", "run_id", "report_template", "serial", "canary_group", "stop_after", "rollback_scope",
             "drill_host", "drill_window_s", "drill_envelope_factor", "drill_envelope_slack_ms", "dualrun_report",
             "dualrun_gate", "dualrun_max_age_s")
_SPEC_CACHE = {}
SERIAL = "mtproxy_cutover_serial"
SERIAL_ALLOWED = ('a positive number of hosts (5), a percentage of the fleet from 1%% to 100%% ("25%%"), '
                  'or a list of those, e.g. -e \'{"%s": [1, "25%%", "100%%"]}\'' % SERIAL)
_WAVE = re.compile(r"^\s*([+-]?[0-9]+)\s*(%?)\s*$")


def controller_path(path):
    """``path`` made absolute against the directory ansible-playbook was started in ('' stays '').

    That is the controller's working directory (os.getcwd(), whatever $PWD says): Ansible never
    changes it, while it runs modules of a local connection in the playbook's directory.
    """
    if not path:
        return ""
    return os.path.abspath(os.path.expanduser(str(path)))


def _wave_problem(value):
    """Why ``value`` is not one wave size of Ansible's ``serial``, or None."""
    match = None if isinstance(value, bool) or not isinstance(value, (int, str)) else _WAVE.match(str(value))
    if not match:
        return "%r is not a whole number of hosts or a percentage" % (value,)
    number, percent = int(match.group(1)), match.group(2)
    if percent and not 1 <= number <= 100:
        return "%s%% is not a percentage from 1%% to 100%%" % number
    if not percent and number < 1:
        return "%s is not a positive number of hosts (Ansible would flip every remaining host at once; " \
               "\"100%%\" says that)" % number
    return None


def serial_problem(value):
    """Why ``value`` cannot be the ``serial`` of the wave play, or None."""
    values = value if isinstance(value, list) else [value]
    if not values:
        return "an empty list names no wave (Ansible would flip every remaining host at once; \"100%\" says that)"
    for item in values:
        problem = _wave_problem(item)
        if problem:
            return problem
    return None


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
    """{settings, spec, unknown, errors, hook_files} of the settings among ``variables`` (a host's variables).

    ``settings`` are the known settings with their values and ``spec`` the options to validate them
    against (for validate_argument_spec, which also reads every option of ``spec`` from the task's
    variables: a setting that is empty and means "not set" is left out of both),
    ``unknown`` one text per unknown name (with the closest known name), ``errors`` one text per
    threshold, range, serial or hook file problem, ``hook_files`` the absolute path of each hook's
    task file by hook name ('' when not set).
    """
    known = sorted(spec_options or {})
    spec = dict(spec_options or {})
    settings = {}
    unknown = []
    errors = []
    for name in sorted(k for k in variables.keys() if isinstance(k, str) and k.startswith(PREFIXES)):
        if name not in spec_options:
            unknown.append("%s%s" % (name, _suggestion(name, known)))
            continue
        try:
            value = variables[name]
            if name in EMPTY_IS_UNSET and value in ("", None):
                spec.pop(name, None)
                continue
            settings[name] = value
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
    method = settings.get("mtproxy_cutover_method")
    if settings.get("mtproxy_cutover_privilege_drop") == "service" and method not in (None, "dropin"):
        errors.append("mtproxy_cutover_privilege_drop=service sets User=/Group= in the cutover drop-in, which "
                      "mtproxy_cutover_method=%s does not write: use method dropin, or privilege_drop binary or "
                      "ignore" % method)
    if SERIAL in settings:
        problem = serial_problem(settings[SERIAL])
        if problem:
            errors.append("%s: %s; give %s" % (SERIAL, problem, SERIAL_ALLOWED))
    hook_files = {}
    for name, hook in sorted(HOOKS.items()):
        given = settings.get(name)
        hook_files[hook] = controller_path(given) if isinstance(given, str) else ""
        if hook_files[hook] and not os.path.isfile(hook_files[hook]):
            errors.append("%s: task file %s %s on the controller (a relative path is relative to %s, where "
                          "ansible-playbook was started): give the path of an existing task file"
                          % (name, hook_files[hook], "is not a file" if os.path.exists(hook_files[hook])
                             else "does not exist", os.getcwd()))
    return {"settings": settings, "spec": spec, "unknown": unknown, "errors": errors, "hook_files": hook_files}


def short_name(name):
    """The key of a setting in the resolved settings: ``mtproxy_cutover_service`` -> ``service``,
    ``mtproxy_drill_host`` -> ``drill_host``."""
    for prefix in ("mtproxy_cutover_", "mtproxy_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def settings_spec(path=SPEC_FILE):
    """The options of the ``settings`` entry point of the preflight role's argument spec (read once)."""
    if path not in _SPEC_CACHE:
        with open(path) as handle:
            _SPEC_CACHE[path] = yaml.safe_load(handle)["argument_specs"]["settings"]["options"]
    return _SPEC_CACHE[path]


def resolve_settings(given, spec_options=None):
    """{settings, problems} of one host: every setting resolved, and every mistake in one list.

    ``given`` are the host's variables whose names start with ``mtproxy_cutover_`` or ``mtproxy_drill_``.
    ``settings`` has one key per option of the spec (``short_name``): the given value converted to the
    option's type, else the option's default (None for an option without one); paths on the
    controller are absolute. ``problems`` are the unknown names (with the closest known name), the
    validation errors (types, choices; no_log values removed) and the errors of ``check_settings``.
    """
    spec_options = settings_spec() if spec_options is None else spec_options
    checked = check_settings(given, spec_options)
    validation = ArgumentSpecValidator(checked["spec"]).validate(dict(checked["settings"]))
    no_log = getattr(validation, "_no_log_values", set())
    problems = (["unknown setting(s) " + ", ".join(checked["unknown"])] if checked["unknown"] else [])
    problems += [remove_values(message, no_log) for message in validation.error_messages] + checked["errors"]
    settings = dict((short_name(name), None) for name in spec_options)
    for name, value in validation.validated_parameters.items():
        if name in spec_options:
            settings[short_name(name)] = value
    for key in CONTROLLER_PATHS:
        if isinstance(settings.get(key), str):
            settings[key] = controller_path(settings[key])
    return {"settings": settings, "problems": problems}


def run_settings_problems(settings_by_host, spec_options=None):
    """One text per run-level setting whose resolved value differs between the hosts of the run.

    ``settings_by_host`` is {host: resolved settings}. Values of no_log settings are never shown.
    """
    spec_options = settings_spec() if spec_options is None else spec_options
    secret = set(short_name(name) for name, option in spec_options.items() if option.get("no_log"))
    names = dict((short_name(name), name) for name in spec_options)
    problems = []
    for key in RUN_LEVEL:
        values = {}
        for host in sorted(settings_by_host):
            values.setdefault(json.dumps((settings_by_host[host] or {}).get(key), sort_keys=True, default=str),
                              []).append(host)
        if len(values) > 1:
            shown = "; ".join("%s: %s" % (", ".join(hosts), "(hidden)" if key in secret else value)
                              for value, hosts in sorted(values.items(), key=lambda item: item[1]))
            problems.append("%s differs between the hosts of the run (%s): it is one value for the whole run; "
                            "set it once, in group_vars/all or with -e" % (names.get(key, key), shown))
    return problems
