"""systemd unit reading: systemctl show output, ExecStart text, environment, drop-in rendering."""
import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.unit import (
    CUTOVER_DROPIN, UnitError, drop_in_paths, exec_start_entries, exec_start_from_unit_texts,
    exec_start_source, expand_environment, is_cutover_dropin, main_pid, parse_environment_file,
    parse_environment_files, parse_exec_command, parse_show, parse_show_environment,
    render_cutover_dropin, render_exec_start, split_exec_start, systemctl_show, unit_name,
    vendor_drop_ins)

# Captured from `systemctl show -p ...` of systemd 252 (Debian bookworm, the test-host image).
SHOW = """MainPID=62
ExecMainStartTimestampMonotonic=486584398
Environment="A=1 2" "B=x\\$y" C= "D=\\"q\\""
EnvironmentFiles=/etc/default/t1 (ignore_errors=yes)
EnvironmentFiles=/etc/default/t2 (ignore_errors=no)
WorkingDirectory=/opt/MTProxy
User=nobody
Group=
LoadState=loaded
ActiveState=active
SubState=running
FragmentPath=/etc/systemd/system/MTProxy.service
DropInPaths=/etc/systemd/system/MTProxy.service.d/10-a.conf /etc/systemd/system/MTProxy.service.d/99-mtproxy-cutover.conf
NeedDaemonReload=no
"""

NOT_FOUND = """MainPID=0
LoadState=not-found
ActiveState=inactive
FragmentPath=
"""

UPSTREAM = """[Unit]
Description=MTProxy
After=network.target

[Service]
Type=simple
WorkingDirectory=/opt/MTProxy
ExecStart=/opt/MTProxy/mtproto-proxy -u nobody -p 8888 -H 443 -S 0123 --aes-pwd proxy-secret proxy-multi.conf -M 1
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def test_parse_show():
    show = parse_show(SHOW)
    assert main_pid(show) == 62
    assert show["ActiveState"] == "active" and show["Group"] == ""
    assert drop_in_paths(show) == ["/etc/systemd/system/MTProxy.service.d/10-a.conf",
                                   "/etc/systemd/system/MTProxy.service.d/" + CUTOVER_DROPIN]
    assert vendor_drop_ins(drop_in_paths(show)) == ["/etc/systemd/system/MTProxy.service.d/10-a.conf"]
    assert parse_environment_files(show["EnvironmentFiles"]) == [
        {"path": "/etc/default/t1", "optional": True}, {"path": "/etc/default/t2", "optional": False}]
    assert parse_show_environment(show["Environment"]) == {"A": "1 2", "B": "x$y", "C": "", "D": '"q"'}


def test_parse_show_not_found():
    show = parse_show(NOT_FOUND)
    assert main_pid(show) == 0 and show["LoadState"] == "not-found"
    assert drop_in_paths(show) == [] and show["EnvironmentFiles"] == []


def test_unit_name_and_cutover_dropin():
    assert unit_name("MTProxy") == "MTProxy.service"
    assert unit_name("mtproxy@a.service") == "mtproxy@a.service"
    assert is_cutover_dropin("/etc/systemd/system/x.service.d/99-mtproxy-cutover.conf")
    assert not is_cutover_dropin("/etc/systemd/system/x.service.d/99-mtproxy-cutover.conf.bak")


def test_upstream_unit():
    raw = exec_start_from_unit_texts([("/etc/systemd/system/MTProxy.service", UPSTREAM)])
    assert raw.startswith("/opt/MTProxy/mtproto-proxy -u nobody")
    assert split_exec_start(raw)[-2:] == ["-M", "1"]


@pytest.mark.parametrize("text, words", [
    ('/bin/p "a b" \'c d\' e', ["/bin/p", "a b", "c d", "e"]),
    ('/bin/p a"b c"d', ["/bin/p", "ab cd"]),
    ('/bin/p "say \\"hi\\"" x\\ty', ["/bin/p", 'say "hi"', "x\ty"]),
    ('/bin/p \\x41\\102 "\\u00e9"', ["/bin/p", "AB", "\u00e9"]),
    ('/bin/p "" \'\'', ["/bin/p", "", ""]),
    ('/bin/p \\q', ["/bin/p", "\\q"]),
    ('  /bin/p\t  a  ', ["/bin/p", "a"]),
])
def test_split_exec_start_quoting(text, words):
    assert split_exec_start(text) == words


def test_unbalanced_quotes():
    with pytest.raises(UnitError, match="unbalanced"):
        split_exec_start('/bin/p "a')


def test_continuation_and_comments():
    text = "[Service]\nExecStart=/opt/p -u nobody \\\n# a comment inside\n    -p 8888 \\\n  cfg\n"
    assert split_exec_start(exec_start_from_unit_texts([("f", text)])) == ["/opt/p", "-u", "nobody", "-p", "8888", "cfg"]


def test_reset_and_drop_in_order():
    fragment = "[Service]\nExecStart=/opt/c -p 1 cfg\n"
    vendor = "[Service]\nExecStart=\nExecStart=/opt/c -p 2 cfg\n"
    ours = "[Service]\nExecStart=\nExecStart=/opt/go -p 2 cfg\n"
    texts = [("frag", fragment), ("10-vendor.conf", vendor), (CUTOVER_DROPIN, ours)]
    assert exec_start_from_unit_texts(texts) == "/opt/go -p 2 cfg"
    assert exec_start_source(texts) == CUTOVER_DROPIN
    assert exec_start_from_unit_texts(texts[:2]) == "/opt/c -p 2 cfg"
    assert exec_start_source(texts[:2]) == "10-vendor.conf"


def test_appending_without_reset_is_rejected():
    texts = [("frag", "[Service]\nExecStart=/opt/c 1\n"), ("d.conf", "[Service]\nExecStart=/opt/c 2\n")]
    assert len(exec_start_entries(texts)) == 2
    with pytest.raises(UnitError, match="exactly one effective ExecStart, found 2"):
        exec_start_from_unit_texts(texts)
    with pytest.raises(UnitError, match="found 0"):
        exec_start_from_unit_texts([("frag", "[Service]\nExecStart=\n")])


def test_only_service_section_counts():
    text = "[Unit]\nExecStart=/nope\n[Service]\nExecStartPre=/bin/true\nExecStart = /opt/c cfg\n"
    assert exec_start_from_unit_texts([("f", text)]) == "/opt/c cfg"


@pytest.mark.parametrize("text, path, argv, prefixes", [
    ("-/opt/c -p 1 cfg", "/opt/c", ["/opt/c", "-p", "1", "cfg"], "-"),
    ("+!/opt/c cfg", "/opt/c", ["/opt/c", "cfg"], "+!"),
    ("@/opt/c mtproxy -p 1 cfg", "/opt/c", ["mtproxy", "-p", "1", "cfg"], "@"),
    ("/opt/c --log=/var/log/%n.log 100%%", "/opt/c", ["/opt/c", "--log=/var/log/MTProxy.service.log", "100%"], ""),
])
def test_exec_command_prefixes_and_specifiers(text, path, argv, prefixes):
    assert parse_exec_command(text, "MTProxy.service") == {"path": path, "argv": argv, "prefixes": prefixes}


def test_instance_specifier():
    assert parse_exec_command("/opt/c -p %i cfg", "mtproxy@8888.service")["argv"] == ["/opt/c", "-p", "8888", "cfg"]


def test_unknown_specifier_refuses():
    with pytest.raises(UnitError, match="unsupported systemd specifier %b"):
        parse_exec_command("/opt/c --x=%b", "MTProxy.service")


def test_bare_semicolon_refused_escaped_allowed():
    with pytest.raises(UnitError, match="several commands"):
        parse_exec_command("/opt/c a ; /bin/true", "x.service")
    assert parse_exec_command("/opt/c a \\; b", "x.service")["argv"] == ["/opt/c", "a", ";", "b"]


def test_environment_expansion():
    env = {"SECRET": "abc", "ARGS": "-p 1  -M 2", "EMPTY": ""}
    words = split_exec_start("/opt/c -S ${SECRET} $ARGS $EMPTY x${SECRET}y $$HOME ${UNSET}z")
    assert expand_environment(words, env) == ["/opt/c", "-S", "abc", "-p", "1", "-M", "2", "xabcy", "$HOME", "z"]
    assert parse_exec_command("/opt/c -S ${SECRET}", "x.service", env)["argv"] == ["/opt/c", "-S", "abc"]
    # ':' disables expansion
    assert parse_exec_command(":/opt/c -S ${SECRET}", "x.service", env)["argv"] == ["/opt/c", "-S", "${SECRET}"]


def test_environment_file():
    text = "# comment\n; other\nA=1\nexport B = two words \nC=\"quoted \\\"x\\\"\"\nD='single'\nE=long \\\n  value\nbad line\n"
    assert parse_environment_file(text) == {"A": "1", "B": "two words", "C": 'quoted "x"', "D": "single",
                                            "E": "long  value"}


@pytest.mark.parametrize("argv", [
    ["/opt/MTProxy/mtproto-proxy", "-u", "nobody", "-p", "8888", "proxy-multi.conf"],
    ["/opt/p", "a b", "", "say \"hi\"", "back\\slash", "100%", "$HOME", "${X}", ";", "-x", "tab\there"],
    ["/opt/p", "'single'", "new\nline"],
])
def test_render_round_trip(argv):
    text = render_exec_start(argv)
    assert parse_exec_command(text, "MTProxy.service", {"HOME": "/root", "X": "y"})["argv"] == argv


def test_render_cutover_dropin():
    argv = ["/opt/MTProxy/releases/go-1/mtproto-proxy", "-p", "8888", "cfg"]
    text = render_cutover_dropin(argv, comment="managed by mtproxy.cutover")
    assert text.startswith("# managed by mtproxy.cutover\n[Service]\nExecStart=\n")
    texts = [("frag", UPSTREAM), (CUTOVER_DROPIN, text)]
    assert parse_exec_command(exec_start_from_unit_texts(texts), "MTProxy.service")["argv"] == argv


def test_systemctl_show_runner():
    calls = []

    def run(cmd):
        calls.append(cmd)
        return 0, SHOW, ""

    show = systemctl_show(run, "MTProxy", properties=("MainPID", "LoadState"))
    assert calls == [["systemctl", "show", "-p", "MainPID", "-p", "LoadState", "--", "MTProxy.service"]]
    assert main_pid(show) == 62

    with pytest.raises(UnitError, match="rc=1"):
        systemctl_show(lambda cmd: (1, "", "Failed to connect to bus"), "MTProxy")
