"""C getopt_long parsing of the proxy flags, redaction and value rewriting."""
import json
import os
import re

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import (
    unsplit_cmdline,
    OPTIONS, REDACTED, ArgvError, find_option, parse_argv, redact_argv, redact_text,
    replace_option_values, replace_program, secret_values)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "real-stats")
LAB_SECRET = "00112233445566778899aabbccddeeff"
SECRET = "0123456789abcdef0123456789abcdef"
TAG = "aabbccddeeff00112233445566778899"


def captured_argvs():
    """Every distinct argv of the real processes (C and Go) in proc-cmdline-ps.txt."""
    seen = []
    with open(os.path.join(FIXTURES, "proc-cmdline-ps.txt")) as handle:
        for line in handle:
            if line.startswith("cmdline argv: "):
                argv = json.loads(line[len("cmdline argv: "):])
                if argv not in seen:
                    seen.append(argv)
    return seen


def usage_options(name):
    """(long, short or None, kind) from a real usage text of the C binary."""
    found = []
    with open(os.path.join(FIXTURES, "stderr", name)) as handle:
        for line in handle:
            match = re.match(r"^\t--([a-z0-9-]+)(?:/-(.))?( <arg>| \{arg\})?\s", line)
            if match:
                kind = {" <arg>": "required", " {arg}": "optional", None: "none"}[match.group(3)]
                found.append((match.group(1), match.group(2), kind))
    return found


def test_captured_invocations_are_all_found():
    argvs = captured_argvs()
    assert len(argvs) == 6


def test_option_table_matches_the_real_c_usage_text():
    real = sorted(usage_options("c-unknown-flag.stdout.txt"))
    ours = sorted((o.long, o.short, o.kind) for o in OPTIONS)
    assert len(real) == 35
    assert ours == real


def test_go_usage_options_are_all_known():
    with open(os.path.join(FIXTURES, "stderr", "go-unknown-flag.stderr.txt")) as handle:
        longs = re.findall(r"--([a-z0-9-]+)", handle.read())
    for name in longs:
        if name != "bogus-flag":
            assert find_option(name).long == name


@pytest.mark.parametrize("argv", captured_argvs())
def test_real_invocations(argv):
    parsed = parse_argv(argv)
    assert parsed.program == argv[0]
    assert parsed.stats_port == 19501
    assert parsed.client_ports == [19491]
    assert parsed.http_stats is True
    assert parsed.config_path == "backend.conf"
    assert parsed.positionals == ["backend.conf"]
    assert parsed.aes_pwd_path == "aes-pwd"
    assert parsed.get("user") == "nobody"
    assert parsed.get("max_connections") == "512"
    assert parsed.workers == (int(argv[argv.index("-M") + 1]) if "-M" in argv else None)
    if "-S" in argv:
        assert parsed.has_inline_secret
        assert parsed.get("secret") == LAB_SECRET
        assert parsed.secret_file_path is None
    else:
        assert not parsed.has_inline_secret
        assert parsed.secret_file_path == "secret-file"
    redacted = redact_argv(argv)
    assert LAB_SECRET not in json.dumps(redacted)
    assert len(redacted) == len(argv)


def test_spans_and_forms():
    argv = ["prog", "-p8888", "-H", "443", "--port=1", "--log", "x.log", "--http-stats", "cfg"]
    uses = parse_argv(argv).options
    assert [(u.name, u.spelled, u.value, u.start, u.end, u.form) for u in uses] == [
        ("port", "-p", "8888", 1, 2, "short_attached"),
        ("http-ports", "-H", "443", 2, 4, "short"),
        ("port", "--port", "1", 4, 5, "long_equals"),
        ("log", "--log", "x.log", 5, 7, "long"),
        ("http-stats", "--http-stats", None, 7, 8, "flag"),
    ]
    assert parse_argv(argv).stats_port == 1  # last one wins, like the C proxy


def test_permutation_positionals_anywhere():
    parsed = parse_argv(["prog", "cfg", "-p", "1", "-M", "2"])
    assert parsed.positionals == ["cfg"]
    assert parsed.stats_port == 1 and parsed.workers == 2


def test_posixly_correct_stops_at_first_positional():
    parsed = parse_argv(["prog", "-p", "1", "cfg", "-M", "2"], posixly_correct=True)
    assert parsed.positionals == ["cfg", "-M", "2"]
    assert parsed.workers is None


def test_double_dash_ends_options():
    parsed = parse_argv(["prog", "-p", "1", "--", "-M", "cfg"])
    assert parsed.positionals == ["-M", "cfg"]
    assert parsed.config_path is None  # two positionals: the C proxy prints usage


def test_lone_dash_is_positional():
    assert parse_argv(["prog", "-"]).positionals == ["-"]


def test_cluster_of_flags_then_attached_value():
    parsed = parse_argv(["prog", "-6hp8888", "cfg"])
    assert [u.name for u in parsed.options] == ["ipv6", "help", "port"]
    assert parsed.stats_port == 8888


def test_cluster_ending_with_required_takes_next_word():
    parsed = parse_argv(["prog", "-6S", SECRET, "cfg"])
    assert parsed.get("secret") == SECRET
    assert parsed.positionals == ["cfg"]


def test_required_argument_takes_next_word_even_if_dashed():
    parsed = parse_argv(["prog", "-l", "-weird", "--log", "--", "cfg"])
    assert parsed.get_all("log") == ["-weird", "--"]
    assert parsed.positionals == ["cfg"]


def test_short_optional_takes_no_argument_in_the_c_proxy():
    parsed = parse_argv(["prog", "-v", "3", "cfg"])
    assert parsed.get("verbosity") is True
    assert parsed.positionals == ["3", "cfg"]
    with pytest.raises(ArgvError, match=r"invalid option -- '3'"):
        parse_argv(["prog", "-v3", "cfg"])


def test_long_optional_only_with_equals():
    parsed = parse_argv(["prog", "--verbosity=2", "--daemonize", "0", "cfg"])
    assert parsed.get("verbosity") == "2"
    assert parsed.get("daemonize") is True
    assert parsed.positionals == ["0", "cfg"]


def test_unambiguous_long_prefix():
    parsed = parse_argv(["prog", "--http-s", "--http-p=443", "--aes", "pwd", "--mtproto-secret-f", "f", "c"])
    assert parsed.http_stats
    assert parsed.client_ports == [443]
    assert parsed.aes_pwd_path == "pwd"
    assert parsed.secret_file_path == "f"
    assert [u.spelled for u in parsed.options] == ["--http-s", "--http-p", "--aes", "--mtproto-secret-f"]


def test_exact_long_name_wins_over_longer_ones():
    parsed = parse_argv(["prog", "--mtproto-secret", SECRET, "c"])
    assert parsed.get("secret") == SECRET and parsed.secret_file_path is None


def test_ambiguous_prefix_is_an_error():
    with pytest.raises(ArgvError, match=r"option '--http' is ambiguous; possibilities: '--http-ports' '--http-stats'"):
        parse_argv(["prog", "--http", "c"])


@pytest.mark.parametrize("argv, message", [
    (["prog", "-p"], r"option requires an argument -- 'p'"),
    (["prog", "c", "--port"], r"option '--port' requires an argument"),
    (["prog", "-Z", "c"], r"invalid option -- 'Z'"),
    (["prog", "--bogus-flag", "c"], r"unrecognized option '--bogus-flag'"),
    (["prog", "--http-stats=1", "c"], r"option '--http-stats' doesn't allow an argument"),
])
def test_errors_name_the_option_like_getopt(argv, message):
    with pytest.raises(ArgvError, match=message):
        parse_argv(argv)


def test_error_messages_match_the_real_c_stderr():
    with open(os.path.join(FIXTURES, "stderr", "c-unknown-flag.stderr.txt")) as handle:
        real_long = handle.read()
    with open(os.path.join(FIXTURES, "stderr", "c-unknown-short-flag.stderr.txt")) as handle:
        real_short = handle.read()
    for argv, real in ((["p", "--bogus-flag", "c"], real_long), (["p", "-Z", "c"], real_short)):
        with pytest.raises(ArgvError) as info:
            parse_argv(argv)
        assert str(info.value) in real


def test_unknown_long_option_never_echoes_its_value():
    with pytest.raises(ArgvError) as info:
        parse_argv(["prog", "--mtproto-secrt=" + SECRET, "c"])
    assert SECRET not in str(info.value)


def test_empty_argv():
    with pytest.raises(ArgvError):
        parse_argv([])


def test_get_by_role_name_or_spelling():
    parsed = parse_argv(["prog", "-P", TAG, "-S", SECRET, "--mtproto-secret=" + SECRET[::-1], "c"])
    for key in ("secret", "mtproto-secret", "--mtproto-secret", "-S", "S"):
        assert parsed.get_all(key) == [SECRET, SECRET[::-1]]
    assert parsed.get("proxy_tag") == TAG
    assert parsed.get("domain", "none") == "none"
    with pytest.raises(KeyError):
        parsed.get("no-such-option")


def test_client_ports_from_all_h_options_and_port_range():
    parsed = parse_argv(["prog", "-H", "443,8443", "--http-ports=80", "-p", "8888:8890", "c"])
    assert parsed.client_ports == [443, 8443, 80]
    assert parsed.stats_port is None
    assert parsed.stats_port_range == (8888, 8890)


@pytest.mark.parametrize("argv, expected", [
    (["p", "-S", SECRET, "c"], ["p", "-S", REDACTED, "c"]),
    (["p", "-S" + SECRET, "c"], ["p", "-S" + REDACTED, "c"]),
    (["p", "--mtproto-secret=" + SECRET, "c"], ["p", "--mtproto-secret=" + REDACTED, "c"]),
    (["p", "--mtproto-secret", SECRET, "c"], ["p", "--mtproto-secret", REDACTED, "c"]),
    (["p", "--mtproto-s=" + SECRET, "c"], ["p", "--mtproto-s=" + REDACTED, "c"]),
    (["p", "-6S" + SECRET, "c"], ["p", "-6S" + REDACTED, "c"]),
    (["p", "-P", TAG, "--proxy-tag=" + TAG, "c"], ["p", "-P", REDACTED, "--proxy-tag=" + REDACTED, "c"]),
    (["p", "--proxy", TAG, "c"], ["p", "--proxy", REDACTED, "c"]),
    # An ambiguous prefix: the C proxy would refuse it, we still hide the value.
    (["p", "--mtproto-sec", SECRET, "c"], ["p", "--mtproto-sec", REDACTED, "c"]),
    # Unknown options around do not stop redaction.
    (["p", "--bogus", "-S", SECRET, "-Z"], ["p", "--bogus", "-S", REDACTED, "-Z"]),
    # The secret appearing again elsewhere is hidden too.
    (["p", "-S", SECRET, SECRET.upper()], ["p", "-S", REDACTED, REDACTED]),
])
def test_redaction_in_every_spelling(argv, expected):
    assert redact_argv(argv) == expected
    assert SECRET not in json.dumps(redact_argv(argv)).lower()
    assert TAG not in json.dumps(redact_argv(argv)).lower()


def test_redaction_keeps_secret_file_path_and_other_values():
    argv = ["p", "--mtproto-secret-file", "/etc/mtproxy/secret", "-p", "8888", "c"]
    assert redact_argv(argv) == argv


def test_secret_values_and_redact_text():
    argv = ["p", "-S", SECRET, "-S" + SECRET[::-1], "-P", TAG, "c"]
    assert secret_values(argv) == [SECRET, SECRET[::-1], TAG]
    text = "ExecStart=/opt/p -S %s -P %s\njournal: secret %s" % (SECRET, TAG, SECRET.upper())
    out = redact_text(text, secret_values(argv))
    assert SECRET not in out.lower() and TAG not in out
    assert out.count(REDACTED) == 3
    assert redact_text("nothing here", []) == "nothing here"
    assert redact_text("abc", [""]) == "abc"


@pytest.mark.parametrize("argv", [
    ["p", "-p", "8888", "-H", "443", "-l", "/var/log/a", "c"],
    ["p", "-p8888", "-H443", "-l/var/log/a", "c"],
    ["p", "--port=8888", "--http-ports=443", "--log=/var/log/a", "c"],
    ["p", "--port", "8888", "--http-p", "443", "--lo", "/var/log/a", "c"],
    ["p", "-6p8888", "-vH", "443", "c", "--log", "/var/log/a"],
])
def test_replace_option_values_keeps_spelling(argv):
    new = replace_option_values(argv, {"stats_port": 18888, "client_ports": "10443", "log": "/tmp/b"})
    parsed_old, parsed_new = parse_argv(argv), parse_argv(new)
    assert [u.spelled for u in parsed_new.options] == [u.spelled for u in parsed_old.options]
    assert [u.form for u in parsed_new.options] == [u.form for u in parsed_old.options]
    assert parsed_new.stats_port == 18888 and parsed_new.client_ports == [10443]
    assert parsed_new.log_path == "/tmp/b"
    assert len(new) == len(argv)
    back = replace_option_values(new, {"port": "8888", "http-ports": "443", "--log": "/var/log/a"})
    assert back == argv


def test_replace_missing_option():
    argv = ["p", "-p", "1", "c"]
    with pytest.raises(ArgvError, match="not on the command line"):
        replace_option_values(argv, {"log": "/tmp/x"})
    new = replace_option_values(argv, {"log": "/tmp/x"}, add_missing=True)
    assert new == ["p", "--log", "/tmp/x", "-p", "1", "c"]
    assert parse_argv(new).log_path == "/tmp/x"


def test_replace_flag_values_errors():
    with pytest.raises(ArgvError, match="takes no value"):
        replace_option_values(["p", "--http-stats", "c"], {"http_stats": "1"})
    with pytest.raises(ArgvError, match="no value to replace"):
        replace_option_values(["p", "-v", "c"], {"verbosity": "2"})
    assert replace_option_values(["p", "--verbosity", "c"], {"verbosity": "2"}) == ["p", "--verbosity=2", "c"]


def test_replace_program():
    argv = captured_argvs()[0]
    new = replace_program(argv, "/opt/MTProxy/releases/go-abc/mtproto-proxy")
    assert new[0] == "/opt/MTProxy/releases/go-abc/mtproto-proxy" and new[1:] == argv[1:]
    assert argv[0] == "/opt/MTProxy/mtproto-proxy"  # input untouched


def test_cmdline_of_a_c_proxy_with_nat_info_is_read_back_as_started():
    # net_add_nat_info() of the C proxy writes a NUL over the ':' of its value in argv: the real C build
    # in the official image's shape shows `--nat-info 127.0.0.1 127.0.0.1` in /proc/PID/cmdline.
    live = ['/usr/local/bin/mtproto-proxy', '-p', '2398', '--nat-info', '127.0.0.5', '127.0.1.7',
            '--nat-info=127.0.0.6', '127.0.1.8', '/etc/proxy-multi.conf']
    assert unsplit_cmdline(live) == ['/usr/local/bin/mtproto-proxy', '-p', '2398', '--nat-info',
                                     '127.0.0.5:127.0.1.7', '--nat-info=127.0.0.6:127.0.1.8',
                                     '/etc/proxy-multi.conf']
    # The Go port leaves its argv alone; a config path after a joined value stays a word of its own.
    as_started = ['mtproto-proxy', '--nat-info', '127.0.0.5:127.0.1.7', '127.0.0.9']
    assert unsplit_cmdline(as_started) == as_started
    assert unsplit_cmdline(['mtproto-proxy', '--nat-info', '127.0.0.5']) == ['mtproto-proxy', '--nat-info', '127.0.0.5']
