"""Every mtproxy_cutover_* setting is in one argument spec; the preflight's extra checks."""
import os
import re

import pytest
import yaml

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import check_settings, controller_path

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC_FILE = os.path.join(REPO, "roles", "preflight", "meta", "argument_specs.yml")


def _spec():
    with open(SPEC_FILE) as handle:
        return yaml.safe_load(handle)["argument_specs"]["settings"]["options"]


def _names_used():
    """Every mtproxy_cutover_* / mtproxy_drill_* name the roles and playbooks read."""
    names = set()
    for top in ("roles", "playbooks"):
        for base, dummy, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith((".yml", ".j2")):
                    with open(os.path.join(base, name)) as handle:
                        names.update(re.findall(r"(?<![\w.])(mtproxy_(?:cutover|drill)_[a-z0-9_]+)", handle.read()))
    return names


def test_every_setting_the_collection_reads_is_in_the_spec():
    spec = _spec()
    missing = sorted(name for name in _names_used() if name not in spec)
    assert missing == [], "settings read but not in the settings spec: %s" % missing


def test_every_setting_in_the_spec_is_documented_in_variables_md():
    with open(os.path.join(REPO, "docs", "variables.md")) as handle:
        doc = handle.read()
    undocumented = sorted(name for name in _spec() if "`%s`" % name not in doc)
    assert undocumented == []


def test_unknown_names_are_reported_with_the_closest_known_one():
    result = check_settings({"mtproxy_cutover_stop_afer": "stage", "mtproxy_cutover_totally_new": 1,
                             "mtproxy_cutover_method": "dropin", "other_var": 1}, _spec())
    assert result["unknown"] == ["mtproxy_cutover_stop_afer (did you mean mtproxy_cutover_stop_after?)",
                                 "mtproxy_cutover_totally_new"]
    assert result["settings"] == {"mtproxy_cutover_method": "dropin"}
    assert result["errors"] == []


@pytest.mark.parametrize("thresholds, message", [
    ({"min_sucess_rate": 0.9}, "unknown threshold min_sucess_rate"),
    ({"min_success_rate": "high"}, "threshold min_success_rate must be a number or null"),
    ({"max_restarts": -1}, "threshold max_restarts must not be negative"),
    ({"min_success_rate": True}, "not a boolean"),
    ('{"min_packets": "x"}', "threshold min_packets must be a number or null"),
])
def test_thresholds_are_judged_by_the_judge(thresholds, message):
    errors = check_settings({"mtproxy_cutover_thresholds": thresholds}, _spec())["errors"]
    assert len(errors) == 1 and message in errors[0], errors


def test_good_thresholds_pass():
    assert check_settings({"mtproxy_cutover_thresholds": {"min_success_rate": 0.95, "max_restarts": None}},
                          _spec())["errors"] == []


def test_ranges():
    errors = check_settings({"mtproxy_cutover_canary_window_s": 0, "mtproxy_cutover_sample_interval_s": "5"},
                            _spec())["errors"]
    assert errors == ["mtproxy_cutover_canary_window_s must be at least 1 (got 0)"]


def test_spec_choices_cover_the_documented_values():
    spec = _spec()
    assert spec["mtproxy_cutover_stop_after"]["choices"] == ["freeze", "stage"]
    assert spec["mtproxy_cutover_rollback_scope"]["choices"] == ["host", "wave", "fleet"]
    assert spec["mtproxy_cutover_method"]["choices"] == ["compose", "container", "dropin", "symlink"]
    assert spec["mtproxy_cutover_inconclusive"]["choices"] == ["fail", "pass"]
    assert spec["mtproxy_cutover_go_binary_url_password"]["no_log"] is True


# --- mtproxy_cutover_serial: what Ansible's serial accepts, checked before any canary flips ----

@pytest.mark.parametrize("serial", ["abc", "0", "-5", "150%", 0, -5, "0%", [1, "x"], [1, 0], [], True, 2.5, "[1, 2]"])
def test_a_serial_the_wave_play_cannot_use_is_refused_with_what_is_allowed(serial):
    errors = check_settings({"mtproxy_cutover_serial": serial}, _spec())["errors"]
    assert len(errors) == 1, errors
    assert errors[0].startswith("mtproxy_cutover_serial: ")
    # What is allowed, and how to pass a list.
    assert ('give a positive number of hosts (5), a percentage of the fleet from 1% to 100% ("25%"), or a list of '
            'those, e.g. -e \'{"mtproxy_cutover_serial": [1, "25%", "100%"]}\'') in errors[0]


@pytest.mark.parametrize("serial, cause", [
    ("abc", "'abc' is not a whole number of hosts or a percentage"),
    ("0", "0 is not a positive number of hosts (Ansible would flip every remaining host at once"),
    (-5, "-5 is not a positive number of hosts"),
    ("150%", "150% is not a percentage from 1% to 100%"),
    ([], "an empty list names no wave"),
])
def test_a_bad_serial_names_its_cause(serial, cause):
    (error,) = check_settings({"mtproxy_cutover_serial": serial}, _spec())["errors"]
    assert cause in error, error


@pytest.mark.parametrize("serial", [1, "5", "25%", "100%", " 30% ", [1, "25%", "100%"], ["1", 2, "50%"]])
def test_a_serial_ansible_accepts_passes(serial):
    assert check_settings({"mtproxy_cutover_serial": serial}, _spec())["errors"] == []


# --- hook task files: they exist, and relative paths are relative to where ansible-playbook started

def test_a_missing_hook_file_is_refused_naming_the_setting_and_its_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    errors = check_settings({"mtproxy_cutover_after_flip_tasks": "hooks/put-back.yml",
                             "mtproxy_cutover_before_rollback_tasks": str(tmp_path)}, _spec())["errors"]
    assert errors == [
        "mtproxy_cutover_after_flip_tasks: task file %s does not exist on the controller (a relative path is "
        "relative to %s, where ansible-playbook was started): give the path of an existing task file"
        % (tmp_path / "hooks" / "put-back.yml", tmp_path),
        "mtproxy_cutover_before_rollback_tasks: task file %s is not a file on the controller (a relative path is "
        "relative to %s, where ansible-playbook was started): give the path of an existing task file"
        % (tmp_path, tmp_path)]


def test_hook_files_are_made_absolute_against_the_working_directory_not_pwd(tmp_path, monkeypatch):
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "drain.yml").write_text("---\n[]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", "/")
    result = check_settings({"mtproxy_cutover_before_flip_tasks": "./hooks/drain.yml"}, _spec())
    assert result["errors"] == []
    assert result["hook_files"] == {"before_flip": str(tmp_path / "hooks" / "drain.yml"), "after_flip": "",
                                    "before_rollback": ""}


def test_controller_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PWD", raising=False)
    assert controller_path("./mtproto-proxy-go") == str(tmp_path / "mtproto-proxy-go")
    assert controller_path("/opt/go") == "/opt/go"
    assert controller_path("") == ""


def test_an_empty_stop_after_is_not_set_and_needs_no_empty_choice():
    # The argument spec's choices list no empty item ("must be one of: , freeze, stage" read badly).
    assert "" not in _spec()["mtproxy_cutover_stop_after"]["choices"]
    # validate_argument_spec reads every option of the spec it is given from the task's variables too:
    # an empty value must be left out of that spec, not only out of the settings.
    result = check_settings({"mtproxy_cutover_stop_after": ""}, _spec())
    assert result["settings"] == {} and result["errors"] == []
    assert "mtproxy_cutover_stop_after" not in result["spec"] and "mtproxy_cutover_method" in result["spec"]
    result = check_settings({"mtproxy_cutover_stop_after": "stge"}, _spec())
    assert result["settings"] == {"mtproxy_cutover_stop_after": "stge"} and result["spec"] == _spec()


# --- resolved once: one value per setting, from the argument spec's defaults --------------------------

from ansible_collections.mtproxy.cutover.plugins.filter.settings_resolve import settings_resolve  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.filter.run_settings_problems import FilterModule as RunProblems  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import (  # noqa: E402
    resolve_settings, run_settings_problems, short_name)


def test_every_setting_has_one_literal_default_in_the_spec_and_no_role_defaults_it_again():
    spec = _spec()
    # stop_after is the one setting without a value when not given (its choices have no empty item).
    assert sorted(name for name, option in spec.items() if "default" not in option) == ["mtproxy_cutover_stop_after"]
    for name, option in spec.items():
        assert "{{" not in str(option.get("default")), name
    # No role and no playbook re-defaults a setting: they read preflight_settings.
    redefaulted = []
    for top in ("roles", "playbooks"):
        for base, dummy, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".yml"):
                    with open(os.path.join(base, name)) as handle:
                        text = handle.read()
                    redefaulted += ["%s: %s" % (name, m) for m in re.findall(r"mtproxy_(?:cutover|drill)_\w+ *\| *default\(", text)]
    assert redefaulted == []


def test_resolving_gives_every_setting_a_value_converted_to_its_type():
    result = resolve_settings({"mtproxy_cutover_canary_window_s": "4", "mtproxy_cutover_control_group": "false",
                               "mtproxy_drill_envelope_factor": "2.5"})
    settings = result["settings"]
    assert result["problems"] == []
    assert (settings["canary_window_s"], settings["control_group"], settings["drill_envelope_factor"]) == (4, False, 2.5)
    assert (settings["service"], settings["state_dir"], settings["canary_group"], settings["method"]) == (
        "MTProxy", "/var/lib/mtproxy-cutover", "mtproxy_canary", "dropin")
    assert settings["serial"] == [1, "25%", "100%"] and settings["wave_window_s"] == 120
    assert settings["canary_window_s"] != settings["drill_window_s"] == 30
    assert settings["stop_after"] is None and settings["thresholds"] == {}
    assert sorted(settings) == sorted(short_name(name) for name in _spec())


def test_paths_on_the_controller_are_resolved_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "drain.yml").write_text("---\n[]\n")
    settings = resolve_settings({"mtproxy_cutover_go_binary": "./go", "mtproxy_cutover_before_flip_tasks": "drain.yml",
                                 "mtproxy_cutover_go_image_archive": "img.tar"})["settings"]
    assert settings["go_binary"] == str(tmp_path / "go") and settings["go_image_archive"] == str(tmp_path / "img.tar")
    assert settings["before_flip_tasks"] == str(tmp_path / "drain.yml") and settings["after_flip_tasks"] == ""
    assert settings["artifacts_dir"] == str(tmp_path / "artifacts") and settings["report_template"] == ""


def test_every_mistake_is_one_problem_and_no_log_values_never_show():
    given = {"mtproxy_cutover_stop_afer": "stage", "mtproxy_cutover_rollback_scope": "flet",
             "mtproxy_cutover_canary_window_s": "five", "mtproxy_cutover_go_binary_url_headers": "Bearer s3cr3t",
             "mtproxy_cutover_go_binary_url_password": ["s3cr3t"], "mtproxy_cutover_serial": "0"}
    problems = settings_resolve(given)["problems"]
    assert problems[0] == "unknown setting(s) mtproxy_cutover_stop_afer (did you mean mtproxy_cutover_stop_after?)"
    text = "; ".join(problems)
    for expected in ("value of mtproxy_cutover_rollback_scope must be one of: host, wave, fleet, got: flet",
                     "mtproxy_cutover_canary_window_s", "mtproxy_cutover_go_binary_url_headers",
                     "mtproxy_cutover_serial: 0 is not a positive number of hosts"):
        assert expected in text, text
    assert "s3cr3t" not in text


def test_an_empty_stop_after_resolves_to_not_set():
    assert resolve_settings({"mtproxy_cutover_stop_after": ""}) == resolve_settings({})
    assert resolve_settings({"mtproxy_cutover_stop_after": "stage"})["settings"]["stop_after"] == "stage"


def test_the_spec_keeps_credentials_out_of_logs():
    spec = _spec()
    assert spec["mtproxy_cutover_go_binary_url_password"]["no_log"] is True
    assert spec["mtproxy_cutover_go_binary_url_headers"]["no_log"] is True


def test_run_wide_settings_must_agree_on_every_host():
    one = resolve_settings({"mtproxy_cutover_canary_group": "canaries_eu"})["settings"]
    other = resolve_settings({"mtproxy_cutover_canary_group": "canaries_us",
                              "mtproxy_cutover_go_binary_url_password": "s3cr3t",
                              "mtproxy_cutover_service": "mtproxy-eu"})["settings"]
    problems = RunProblems().filters()["run_settings_problems"]({"h1": one, "h2": dict(one), "h3": other})
    assert problems == [
        "mtproxy_cutover_go_binary_url_password differs between the hosts of the run (h1, h2: (hidden); h3: (hidden)): "
        "it is one value for the whole run; set it once, in group_vars/all or with -e",
        "mtproxy_cutover_canary_group differs between the hosts of the run (h1, h2: \"canaries_eu\"; "
        "h3: \"canaries_us\"): it is one value for the whole run; set it once, in group_vars/all or with -e"]
    # A per-host setting (the service) may differ.
    assert run_settings_problems({"h1": one, "h2": dict(one, service="x")}) == []
