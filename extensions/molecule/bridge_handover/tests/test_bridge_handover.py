"""mtproxy_cutover_handover: bridge. No connect refused during any flip or rollback of h1 and h2 (a 1 ms
prober around each), the report's per-flip figures, leftovers of an interrupted run removed by the freeze
(h2: its redirect and live bridge) and by rollback.yml (h1: a failed bridge unit), nothing of a bridge left
behind; h3 without CAP_NET_ADMIN refused at the freeze.
"""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402

BRIDGED = ("bridge_handover-h1", "bridge_handover-h2")
NOCAP = "bridge_handover-h3"
TABLE = "mtproxy_cutover_MTProxy"


def name_of(host):
    return host.backend.get_hostname()


def probe(host, label):
    return cc.host_json(host, "/var/lib/mtproxy-test/probe-%s.json" % label)


def test_bridged_hosts_were_cut_over_without_a_refused_connect(host):
    if name_of(host) not in BRIDGED:
        pytest.skip("not a bridged host")
    report = cc.load_report()
    assert report["result"] == "success", report.get("reason")
    entry = report["hosts"][name_of(host)]
    assert entry["result"] == "on_go"
    flip = probe(host, "flip")
    # The prober ran from before the flip until after it, every 1 ms.
    assert flip["attempts"] > 200 and flip["other_errors"] == 0
    assert flip["refused"] == 0, flip
    bridge = entry["bridge"]
    assert bridge["backend"] == "nft" and bridge["errors"] == []
    assert bridge["refused"] == 0
    assert_drain_accounted(bridge)
    assert bridge["binary"].endswith("/mtproto-proxy-go")


def assert_drain_accounted(bridge):
    """What load decides is reported (report.md's Bridge handovers table has it; printed here too): how
    many clients the bridge served, and whether its connections ended within the drain time. On any
    machine the figures are whole and consistent: not drained means connections were cut at the drain."""
    print("bridge: served %(served)s, redirected %(redirected)s, drained %(drained)s in %(drain_ms)s ms, "
          "cut at drain %(cut_at_drain)s" % bridge)
    assert isinstance(bridge["dropped"], int)
    assert 0 <= bridge["served"] <= bridge["redirected"]
    assert bridge["drained"] is (bridge["cut_at_drain"] == 0) and bridge["cut_at_drain"] >= 0
    assert bridge["drain_ms"] >= 0


def test_bridged_hosts_were_rolled_back_without_a_refused_connect(host):
    if name_of(host) not in BRIDGED:
        pytest.skip("not a bridged host")
    report = cc.load_report("%s-rollback" % cc.scenario_name())
    assert report["result"] == "success", report.get("reason")
    entry = report["hosts"][name_of(host)]
    assert entry["result"] == "rolled_back"
    rollback = probe(host, "rollback")
    assert rollback["attempts"] > 200 and rollback["other_errors"] == 0
    assert rollback["refused"] == 0, rollback
    bridge = entry["rollback_bridge"]
    assert bridge["refused"] == 0
    assert_drain_accounted(bridge)
    assert bridge["binary"] == cc.C_BINARY
    assert cc.service_argv(host) == cc.pristine_argv(host)


def test_report_md_shows_each_bridge_handover(host):
    if name_of(host) not in BRIDGED:
        pytest.skip("not a bridged host")
    for run in (cc.first_run_id(), "%s-rollback" % cc.scenario_name()):
        text = cc.report_texts(run)["report.md"]
        assert "## Bridge handovers" in text
        text = text.split("## Bridge handovers", 1)[1].split("\n## ", 1)[0]
        label = "flip" if run == cc.first_run_id() else "rollback"
        row = [line for line in text.splitlines() if line.startswith("| %s | %s |" % (name_of(host), label))]
        assert len(row) == 1 and row[0].split("|")[3].strip() == "0", row


def test_leftovers_were_removed_by_the_freeze_and_by_the_rollback(host):
    if name_of(host) not in BRIDGED:
        pytest.skip("not a bridged host")
    if name_of(host) == "bridge_handover-h2":
        output = "".join(cc.playbook_run("first")[key] for key in ("stdout", "stderr"))
        assert "removed: a redirect left by an interrupted run (nftables table inet %s)" % TABLE in output
        assert "removed: a bridge left by an interrupted run (MTProxy-bridge.service, active/running)" in output
    else:
        output = "".join(cc.playbook_run("rollback")[key] for key in ("stdout", "stderr"))
        assert "removed: a bridge left by an interrupted run (MTProxy-bridge.service, failed/failed)" in output


def test_nothing_of_a_bridge_is_left(host):
    if name_of(host) in BRIDGED:
        assert TABLE not in host.check_output("nft list tables")
    assert host.check_output("systemctl show -p LoadState --value MTProxy-bridge.service") == "not-found"
    state = cc.host_state(host)
    if name_of(host) in BRIDGED:
        assert [h["to"] for h in state["history"]][-2:] == ["go", "c"]
        assert all(h.get("bridge", {}).get("refused") == 0 for h in state["history"][-2:])


def test_a_host_without_cap_net_admin_is_refused_at_the_freeze(host):
    if name_of(host) != NOCAP:
        pytest.skip("a bridged host")
    run = cc.playbook_run("nocap")
    assert run["rc"] == 2
    output = run["stdout"] + run["stderr"]
    assert "without CAP_NET_ADMIN" in output and "mtproxy_cutover_handover: restart" in output
    report = cc.load_report("%s-nocap" % cc.scenario_name())
    assert report["result"] == "failed"
    assert cc.host_state(host) is None
    assert not host.file(cc.DROPIN).exists
    assert cc.service_argv(host) == cc.pristine_argv(host)


def test_no_secret_in_any_report(host):
    for run in (cc.first_run_id(), "%s-rollback" % cc.scenario_name(), "%s-nocap" % cc.scenario_name()):
        assert cc.leaked_secrets(host, cc.report_texts(run)) == []
