"""A checksum mismatch stops the run before any host changes."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
import cutover_checks as cc  # noqa: E402


def test_playbook_failed():
    assert cc.playbook_run()["rc"] == 2
    assert cc.load_report()["result"] == "failed"


def test_host_untouched(host):
    assert cc.service_argv(host) == cc.pristine_argv(host)
    assert not host.file(cc.DROPIN).exists
    assert not host.file("/opt/MTProxy/releases/go-000000000000").exists
    # The preflight stops the run before any host is looked at: the host is one the run was meant
    # to touch, never judged (`unknown`), never success.
    entry = cc.load_report()["hosts"][host.backend.get_hostname()]
    assert entry["result"] == "unknown" and entry["judged"] is False
    assert "flip" not in entry["stages"]
