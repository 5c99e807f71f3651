"""Every mtproxy_cutover_* setting is in one argument spec; the preflight's extra checks."""
import os
import re

import pytest
import yaml

from ansible_collections.mtproxy.cutover.plugins.plugin_utils.settings import check_settings

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
    assert spec["mtproxy_cutover_stop_after"]["choices"] == ["", "freeze", "stage"]
    assert spec["mtproxy_cutover_rollback_scope"]["choices"] == ["host", "wave", "fleet"]
    assert spec["mtproxy_cutover_method"]["choices"] == ["dropin", "symlink"]
    assert spec["mtproxy_cutover_inconclusive"]["choices"] == ["fail", "pass"]
    assert spec["mtproxy_cutover_go_binary_url_password"]["no_log"] is True
