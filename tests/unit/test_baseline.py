import json
import os
import stat
import sys

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo import baseline as bl
from stats_fixtures import capture

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
from stats_server import StatsServer, free_port  # noqa: E402

C_START, C_LATER = capture('c-M1-idle-start.txt'), capture('c-M1-idle-plus2s.txt')
GO_BODY = capture('go-M1-idle-start.txt')


def c_version():
    return [line.split('\t', 1)[1] for line in C_START.splitlines() if line.startswith('version\t')][0].strip()


def test_first_freeze_of_a_c_host_samples_and_keeps_the_baseline(tmp_path):
    path = str(tmp_path / 'MTProxy' / 'baseline.json')
    with StatsServer([{'body': C_START}, {'body': C_LATER}]) as server:
        seen = bl.observe('MTProxy.service', server.url, 'c', path, True, 3, 0.01, False)
        assert len(server.requests) == 3
    assert seen['flavor'] == 'c' and seen['baseline_taken'] is True
    assert seen['version'] == c_version() and seen['version']
    assert seen['baseline']['flavor'] == 'c' and seen['baseline']['samples_ok'] == 3
    with open(path) as handle:
        assert json.load(handle) == seen['baseline']
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_check_mode_samples_but_writes_nothing(tmp_path):
    path = str(tmp_path / 'MTProxy' / 'baseline.json')
    with StatsServer([{'body': C_START}]) as server:
        seen = bl.observe('MTProxy.service', server.url, 'c', path, True, 2, 0.01, True)
    assert seen['baseline_taken'] is True and seen['baseline']['samples_ok'] == 2
    assert not os.path.exists(path)


def test_a_kept_baseline_is_read_back_with_one_scrape(tmp_path):
    path = str(tmp_path / 'baseline.json')
    bl.write_private_json(path, {'flavor': 'c', 'samples_ok': 7})
    with StatsServer([{'body': C_START}]) as server:
        seen = bl.observe('MTProxy.service', server.url, 'c', path, False, 7, 0.01, False)
        assert len(server.requests) == 1
    assert seen['baseline'] == {'flavor': 'c', 'samples_ok': 7} and seen['baseline_taken'] is False


def test_a_host_on_go_is_checked_but_gets_no_c_baseline(tmp_path):
    path = str(tmp_path / 'baseline.json')
    with StatsServer([{'body': GO_BODY}]) as server:
        seen = bl.observe('MTProxy.service', server.url, 'go', path, True, 5, 0.01, False)
        assert len(server.requests) == 1
    assert seen['flavor'] == 'go' and seen['version'] == '' and seen['baseline'] == {}
    assert not os.path.exists(path)


@pytest.mark.parametrize('body, expected, words', [
    (GO_BODY, 'c', 'answers /stats as the Go binary but the freeze expects the C binary'),
    (C_START, 'go', 'answers /stats as the C binary but the state file says it runs Go'),
])
def test_the_wrong_binary_answering_is_refused(tmp_path, body, expected, words):
    path = str(tmp_path / 'baseline.json')
    with StatsServer([{'body': body}]) as server:
        with pytest.raises(bl.BaselineError, match='MTProxy.service ' + words):
            bl.observe('MTProxy.service', server.url, expected, path, True, 3, 0.01, False)
    assert not os.path.exists(path)


def test_no_answer_names_the_url_and_the_cause(tmp_path):
    url = 'http://127.0.0.1:%d/stats' % free_port()
    with pytest.raises(bl.BaselineError, match=r'MTProxy.service: cannot read %s: .*refused' % url):
        bl.observe('MTProxy.service', url, 'c', str(tmp_path / 'b.json'), True, 2, 0.01, False)


def test_a_broken_kept_baseline_is_named(tmp_path):
    path = tmp_path / 'baseline.json'
    path.write_text('{not json')
    with pytest.raises(bl.BaselineError, match='baseline.json is not valid JSON'):
        bl.read_baseline(str(path))
    path.write_text('[1, 2]')
    with pytest.raises(bl.BaselineError, match='does not hold a baseline summary'):
        bl.read_baseline(str(path))
    assert bl.read_baseline(str(tmp_path / 'missing.json')) is None
