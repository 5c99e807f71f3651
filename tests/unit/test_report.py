import datetime
import json
import os
import subprocess
import sys

import pytest

from conftest import COLLECTIONS_ROOT
from ansible_collections.mtproxy.cutover.plugins.module_utils import report as rep


def _run(tmp_path, playbook="cutover"):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    rep.write_run(run_dir, {"run_id": "r1", "playbook": playbook, "started_at": "t0", "go": {"sha256": "ab" * 32}})
    return run_dir


FLIP = {"role": "canary", "wave": 0, "binary": "/opt/MTProxy/releases/go-x/mtproto-proxy-go",
        "timings": {"stop_ms": 5.0, "start_ms": 14.2, "unavailable_ms": 19.2}}


def test_successful_cutover_lists_every_host_on_go(tmp_path):
    run_dir = _run(tmp_path)
    for host in ("h1", "h2"):
        rep.write_record(run_dir, host, "flip", FLIP)
        rep.write_record(run_dir, host, "verify", {"verdict": "pass", "failures": []})
        rep.write_record(run_dir, host, "outcome", {"result": "on_go"})
    report = rep.build_report(run_dir, "r1", "cutover")
    assert report["result"] == "success"
    assert report["summary"]["on_go"] == 2
    assert report["hosts"]["h1"]["timings"] == FLIP["timings"]
    assert report["hosts"]["h1"]["flavor"] == "go"


def test_rolled_back_host_fails_the_cutover_and_shows_metric(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    failure = {"metric": "bad_handshakes", "observed": 12.5, "limit": 1.0, "rule": "rate above limit"}
    rep.write_record(run_dir, "h1", "verify", {"verdict": "fail", "failures": [failure]})
    rep.write_record(run_dir, "h1", "rollback", {"ok": True, "binary": "/opt/MTProxy/mtproto-proxy",
                                                 "timings": {"stop_ms": 2000.0, "start_ms": 12.0, "unavailable_ms": 40.0}})
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back", "reason": "SLO fail"})
    report = rep.build_report(run_dir, "r1", "cutover")
    assert report["result"] == "failed"
    host = report["hosts"]["h1"]
    assert host["result"] == "rolled_back" and host["flavor"] == "c"
    assert host["binary"] == "/opt/MTProxy/mtproto-proxy"
    markdown = rep.render_markdown(report)
    assert "bad_handshakes" in markdown and "rolled_back" in markdown


def test_rollback_playbook_succeeds_when_every_host_is_on_c(tmp_path):
    run_dir = _run(tmp_path, "rollback")
    rep.write_record(run_dir, "h1", "outcome", {"result": "rolled_back"})
    rep.write_record(run_dir, "h2", "outcome", {"result": "on_c"})
    assert rep.build_report(run_dir, "r1", "rollback")["result"] == "success"
    rep.write_record(run_dir, "h3", "outcome", {"result": "failed", "reason": "argv differs"})
    assert rep.build_report(run_dir, "r1", "rollback")["result"] == "failed"


def test_drill_fails_when_envelope_exceeded(tmp_path):
    run_dir = _run(tmp_path, "drill")
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": True})
    assert rep.build_report(run_dir, "r1", "drill")["result"] == "success"
    rep.write_record(run_dir, "h1", "outcome", {"result": "on_c", "envelope_ok": False})
    assert rep.build_report(run_dir, "r1", "drill")["result"] == "failed"


def test_write_report_writes_both_files(tmp_path):
    run_dir = _run(tmp_path)
    rep.write_record(run_dir, "h1", "flip", FLIP)
    report = rep.build_report(run_dir, "r1", "cutover", reason=None)
    json_path, md_path = rep.write_report(report, run_dir)
    with open(json_path) as handle:
        assert json.load(handle)["hosts"]["h1"]["role"] == "canary"
    with open(md_path) as handle:
        text = handle.read()
    assert "| h1 | canary | 0 | on_go |" in text


@pytest.mark.parametrize("host", ["", "../x", ".hidden", "a/b"])
def test_record_rejects_unsafe_host_names(tmp_path, host):
    with pytest.raises(rep.ReportError):
        rep.write_record(_run(tmp_path), host, "flip", {})


def test_record_rejects_unknown_stage(tmp_path):
    with pytest.raises(rep.ReportError):
        rep.write_record(_run(tmp_path), "h1", "nonsense", {})


def test_corrupt_record_is_reported_with_host(tmp_path):
    run_dir = _run(tmp_path)
    os.makedirs(os.path.join(run_dir, "hosts", "h9"))
    with open(os.path.join(run_dir, "hosts", "h9", "flip.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(rep.ReportError, match="h9"):
        rep.build_report(run_dir, "r1", "cutover")


# apply(): what the mtproxy_report action plugin does with its validated options.

RUN = {"run_id": "r2", "playbook": "cutover", "started_at": "t0", "go": {"sha256": "cd" * 32}}


def _params(run_dir, **kwargs):
    params = dict((name, None) for name in rep.ARGUMENT_SPEC)
    params.update(run_dir=run_dir, **kwargs)
    return params


def test_apply_starts_a_run_and_writes_a_record(tmp_path):
    run_dir = str(tmp_path / "new" / "run")
    started = rep.apply(_params(run_dir, run=RUN))
    assert started["changed"] is False and started["result"] == "success"
    assert rep.load_run(run_dir) == RUN
    result = rep.apply(_params(run_dir, host="h1", stage="flip", record=FLIP))
    with open(os.path.join(run_dir, "hosts", "h1", "flip.json")) as handle:
        assert json.load(handle) == FLIP
    assert result["json_path"] == os.path.join(run_dir, "report.json")
    assert result["markdown_path"] == os.path.join(run_dir, "report.md")
    with open(result["json_path"]) as handle:
        written = json.load(handle)
    assert written == result["report"]
    assert written["run_id"] == "r2" and written["hosts"]["h1"]["result"] == "on_go"
    with open(result["markdown_path"]) as handle:
        assert "| h1 | canary | 0 | on_go |" in handle.read()


def test_apply_passes_result_reason_and_finished_at(tmp_path):
    run_dir = _run(tmp_path)
    result = rep.apply(_params(run_dir, result="failed", reason="preflight: no canary", finished_at="t9"))
    assert result["result"] == "failed"
    assert result["report"]["reason"] == "preflight: no canary" and result["report"]["finished_at"] == "t9"


def test_apply_writes_dates_of_a_record_as_iso_text(tmp_path):
    run_dir = _run(tmp_path)
    rep.apply(_params(run_dir, host="h1", stage="freeze", record={"frozen_on": datetime.date(2026, 11, 27)}))
    with open(os.path.join(run_dir, "hosts", "h1", "freeze.json")) as handle:
        assert json.load(handle) == {"frozen_on": "2026-11-27"}


def test_apply_in_check_mode_writes_nothing(tmp_path):
    run_dir = _run(tmp_path)
    before = sorted(os.listdir(run_dir))
    result = rep.apply(_params(run_dir, host="h1", stage="flip", record=FLIP), check_mode=True)
    assert sorted(os.listdir(run_dir)) == before == ["run.json"]
    assert result["report"]["run_id"] == "r1" and result["report"]["hosts"] == {}
    assert result["json_path"] == os.path.join(run_dir, "report.json")


def test_apply_in_check_mode_without_run_renders_nothing(tmp_path):
    run_dir = str(tmp_path / "absent")
    result = rep.apply(_params(run_dir, run=RUN, host="h1", stage="flip", record=FLIP), check_mode=True)
    assert not os.path.exists(run_dir)
    assert result["report"]["run_id"] == "r2"
    empty = rep.apply(_params(run_dir), check_mode=True)
    assert empty == dict(changed=False, report={}, json_path=None, markdown_path=None, result=None, note_path=None)


ROLLBACK = {"ok": True, "changed": True, "reason": "canary failed", "binary": "/opt/MTProxy/mtproto-proxy"}


def test_apply_writes_the_incident_note_and_points_the_record_at_it(tmp_path):
    run_dir = _run(tmp_path)
    result = rep.apply(_params(run_dir, host="h1", stage="rollback", record=ROLLBACK, note="# Incident: h1"))
    path = os.path.join(run_dir, "incidents", "h1.md")
    assert result["note_path"] == path
    with open(path) as handle:
        assert handle.read() == "# Incident: h1\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    with open(os.path.join(run_dir, "hosts", "h1", "rollback.json")) as handle:
        assert json.load(handle) == dict(ROLLBACK, incident_note=path)
    assert result["report"]["hosts"]["h1"]["result"] == "rolled_back"


def test_apply_writes_a_note_alone_and_replaces_an_older_one(tmp_path):
    run_dir = _run(tmp_path)
    rep.apply(_params(run_dir, host="h1", note="first\n"))
    result = rep.apply(_params(run_dir, host="h1", note="second\n"))
    with open(result["note_path"]) as handle:
        assert handle.read() == "second\n"
    assert not os.path.exists(os.path.join(run_dir, "hosts"))


def test_apply_in_check_mode_names_the_note_but_writes_none(tmp_path):
    run_dir = _run(tmp_path)
    result = rep.apply(_params(run_dir, host="h1", stage="rollback", record=ROLLBACK, note="text"), check_mode=True)
    assert result["note_path"] == os.path.join(run_dir, "incidents", "h1.md")
    assert sorted(os.listdir(run_dir)) == ["run.json"]


def test_apply_refuses_a_note_for_an_unsafe_host_name(tmp_path):
    run_dir = _run(tmp_path)
    with pytest.raises(rep.ReportError, match="invalid host name '../h1'"):
        rep.apply(_params(run_dir, host="../h1", note="text"))
    assert sorted(os.listdir(run_dir)) == ["run.json"]


@pytest.mark.parametrize("host, stage, cause", [
    ("h1", "nonsense", "unknown stage 'nonsense'"),
    ("../h1", "flip", "invalid host name '../h1'"),
    (None, "flip", "invalid host name None"),
])
def test_apply_rejects_bad_stage_or_host(tmp_path, host, stage, cause):
    run_dir = _run(tmp_path)
    with pytest.raises(rep.ReportError) as err:
        rep.apply(_params(run_dir, host=host, stage=stage, record=FLIP))
    assert str(err.value).startswith("cannot write the report of %s: %s" % (run_dir, cause))
    assert not os.path.exists(os.path.join(run_dir, "hosts"))


def test_apply_without_run_facts_says_how_to_start_the_run(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(rep.ReportError) as err:
        rep.apply(_params(run_dir, host="h1", stage="flip", record=FLIP))
    assert str(err.value) == "no run facts in %s: pass run= once when the run starts" % run_dir


def test_apply_names_the_run_dir_when_a_record_is_corrupt(tmp_path):
    run_dir = _run(tmp_path)
    os.makedirs(os.path.join(run_dir, "hosts", "h9"))
    with open(os.path.join(run_dir, "hosts", "h9", "flip.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(rep.ReportError, match="^cannot write the report of .*: record flip.json of host h9"):
        rep.apply(_params(run_dir))


# The action plugin run by ansible-playbook on the controller.

PLAYBOOK = """
- name: Exercise mtproxy_report
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    ansible_python_interpreter: "{{ ansible_playbook_python }}"
    run_dir: "~/artifacts/r3"
  tasks:
    - name: Start the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        run:
          run_id: r3
          playbook: drill
          started_at: "2026-11-27T02:00:00Z"
      register: started

    - name: Record this host's outcome
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: outcome
        record:
          result: on_c
          envelope_ok: "{{ 1 > 2 }}"
          reason: envelope exceeded
      register: recorded

    - name: Record a flip in check mode
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: flip
        record: {role: canary}
      check_mode: true
      register: dry

    - name: Record an unknown stage
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        host: "{{ inventory_hostname }}"
        stage: nonsense
        record: {}
      register: bad_stage
      ignore_errors: true

    - name: Record without a host
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ run_dir }}"
        stage: flip
        record: {}
      register: no_host
      ignore_errors: true

    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{ {'started': started, 'recorded': recorded, 'dry': dry, 'bad_stage': bad_stage,
                      'no_host': no_host} | to_nice_json }}"
        dest: "{{ results }}"
        mode: "0644"
"""


def _ansible_playbook(tmp_path, playbook, *args, **kwargs):
    path = tmp_path / "play.yml"
    path.write_text(playbook)
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = dict(os.environ, HOME=str(home), ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_CONFIG=str(config))
    # The interpreter running the tests has ansible-core; its CLI needs no ansible-playbook on PATH.
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", kwargs.get("inventory", "localhost,"), str(path)]
    proc = subprocess.run(argv + list(args), cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300, check=False)
    return proc, home


def test_action_plugin_writes_records_on_the_controller(tmp_path):
    results = tmp_path / "results.json"
    proc, home = _ansible_playbook(tmp_path, PLAYBOOK, "-e", "results=%s" % results)
    assert proc.returncode == 0, proc.stdout
    with open(str(results)) as handle:
        got = json.load(handle)
    run_dir = str(home / "artifacts" / "r3")
    # run_dir is type=path: "~" is expanded on the controller.
    assert got["started"]["json_path"] == os.path.join(run_dir, "report.json")
    with open(os.path.join(run_dir, "hosts", "localhost", "outcome.json")) as handle:
        assert json.load(handle) == {"result": "on_c", "envelope_ok": False, "reason": "envelope exceeded"}
    with open(os.path.join(run_dir, "report.json")) as handle:
        report = json.load(handle)
    assert report["run_id"] == "r3" and report["playbook"] == "drill"
    assert report["hosts"]["localhost"]["reason"] == "envelope exceeded"
    assert report["result"] == "failed" == got["recorded"]["result"]
    assert got["recorded"]["report"] == report and got["recorded"]["changed"] is False
    with open(os.path.join(run_dir, "report.md")) as handle:
        assert "| localhost | - | - | on_c |" in handle.read()
    # check mode: reported, not written
    assert not os.path.exists(os.path.join(run_dir, "hosts", "localhost", "flip.json"))
    assert "flip" not in got["dry"]["report"]["hosts"]["localhost"]["stages"]
    assert got["bad_stage"]["failed"] is True
    assert "value of stage must be one of: freeze, stage, prewarm" in got["bad_stage"]["msg"]
    assert "got: nonsense" in got["bad_stage"]["msg"]
    assert not os.path.exists(os.path.join(run_dir, "hosts", "localhost", "nonsense.json"))
    assert got["no_host"]["failed"] is True
    assert got["no_host"]["msg"] == "missing parameter(s) required by 'record': host"


def test_action_plugin_fails_with_the_run_dir_without_run_facts(tmp_path):
    playbook = """
- name: Record before the run started
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Record a flip
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/never-started"
        host: h1
        stage: flip
        record: {role: canary}
"""
    proc = _ansible_playbook(tmp_path, playbook)[0]
    assert proc.returncode == 2, proc.stdout
    assert "no run facts in %s: pass run= once when the run starts" % (tmp_path / "never-started") in proc.stdout


def test_action_plugin_never_connects_to_the_host(tmp_path):
    # A proxy host that cannot be reached: the record is still written, on the controller.
    playbook = """
- name: Record for a host that is not reachable
  hosts: all
  gather_facts: false
  vars:
    ansible_connection: ssh
    ansible_host: 192.0.2.1
  tasks:
    - name: Start the run
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/run"
        run: {run_id: r4, playbook: rollback}
      run_once: true

    - name: Record the rollback
      mtproxy.cutover.mtproxy_report:
        run_dir: "{{ playbook_dir }}/run"
        host: "{{ inventory_hostname }}"
        stage: outcome
        record: {result: rolled_back}
"""
    proc = _ansible_playbook(tmp_path, playbook, "-T", "3", inventory="proxy-1,proxy-2,")[0]
    assert proc.returncode == 0, proc.stdout
    with open(str(tmp_path / "run" / "report.json")) as handle:
        report = json.load(handle)
    assert sorted(report["hosts"]) == ["proxy-1", "proxy-2"]
    assert report["summary"]["rolled_back"] == 2 and report["result"] == "success"
