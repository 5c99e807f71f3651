"""Credentials of URLs never reach a record or a message (plugin_utils/credentials.py, filters)."""
import pytest

from ansible_collections.mtproxy.cutover.plugins.plugin_utils import credentials as cred
from ansible_collections.mtproxy.cutover.plugins.filter.redact_url import FilterModule as RedactFilter
from ansible_collections.mtproxy.cutover.plugins.filter.url_credentials import FilterModule as CredentialsFilter


@pytest.mark.parametrize("url, expected", [
    ("https://user:tok3n@dl.example.com/go/mtproto-proxy", "https://dl.example.com/go/mtproto-proxy"),
    ("https://tok3n@dl.example.com/x", "https://dl.example.com/x"),
    ("https://dl.example.com/x?access_token=tok3n&arch=amd64", "https://dl.example.com/x?arch=amd64"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA&X-Amz-Signature=abc&X-Amz-Expires=60",
     "https://b.s3.amazonaws.com/k?X-Amz-Expires=60"),
    ("https://acct.blob.core.windows.net/c/b?sv=2022&sig=s1g", "https://acct.blob.core.windows.net/c/b?sv=2022"),
    ("https://gitlab.example/api/v4/p/1/packages?private_token=glpat", "https://gitlab.example/api/v4/p/1/packages"),
    ("https://dl.example.com:8443/x", "https://dl.example.com:8443/x"),
    ("/opt/release/mtproto-proxy-go", "/opt/release/mtproto-proxy-go"),
    ("", ""),
])
def test_redact_url(url, expected):
    assert cred.redact_url(url) == expected


def test_redact_urls_inside_a_message():
    message = ("Request failed: <urlopen error [Errno 111]> for https://deploy:s3cr3t@dl.example.com/go?token=t0k; "
               "retry https://mirror.example/go")
    redacted = cred.redact_urls_in_text(message)
    assert "s3cr3t" not in redacted and "t0k" not in redacted and "deploy" not in redacted
    assert "https://dl.example.com/go;" in redacted and "https://mirror.example/go" in redacted


def test_redact_value_walks_nested_records():
    record = {"source": "https://u:p4ss@x.example/a", "list": ["ftp://u:p4ss@y/z", 3], "n": None}
    assert cred.redact_value(record) == {"source": "https://x.example/a", "list": ["ftp://y/z", 3], "n": None}


def test_split_url_credentials_for_get_url():
    assert cred.split_url_credentials("https://dep%40loy:p%3Ass@dl.example.com/go?x=1") == (
        "https://dl.example.com/go?x=1", "dep@loy", "p:ss")
    assert cred.split_url_credentials("https://dl.example.com/go") == ("https://dl.example.com/go", "", "")


def test_filters():
    redact = RedactFilter().filters()["redact_url"]
    assert redact("https://u:p@h/x") == "https://h/x"
    split = CredentialsFilter().filters()["url_credentials"]
    assert split("https://u:p@h/x") == {"url": "https://h/x", "username": "u", "password": "p"}


def test_probe_error_says_why_a_host_does_not_answer():
    from ansible_collections.mtproxy.cutover.plugins.filter.probe_error import probe_error
    assert probe_error({"changed": False, "ping": "pong"}) == ""
    assert probe_error({"unreachable": True, "msg": "Failed to connect to the host via ssh: refused"}) == (
        "unreachable: Failed to connect to the host via ssh: refused")
    # community.docker with pipelining: the module printed nothing; the connection's words win.
    gone = {"failed": True, "msg": "Module result deserialization failed: No start of json char found",
            "module_stderr": "Error response from daemon: Container 1a9d is not running\n", "rc": 1}
    assert probe_error(gone) == "the connection failed: Error response from daemon: Container 1a9d is not running"
    assert probe_error({"failed": True, "msg": "GET https://u:p@h/x failed"}) == "GET https://h/x failed"
