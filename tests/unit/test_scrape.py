import os
import sys

import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import sample_from_scrape
from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.scrape import check_loopback_url, fetch

from stats_fixtures import capture

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
from stats_server import StatsServer, free_port  # noqa: E402

HTML_404 = '<html>\r\n<head><title>404 Not Found</title></head>\r\n<body><h1>404 Not Found</h1></body></html>\r\n'


def fetch_one(step, **kwargs):
    with StatsServer([step]) as server:
        return fetch(server.url, **kwargs), server


@pytest.mark.parametrize('url, host, port, path', [
    ('http://127.0.0.1:8888/stats', '127.0.0.1', 8888, '/stats'),
    ('http://127.3.2.1:19105/stats', '127.3.2.1', 19105, '/stats'),
    ('http://localhost:2398/stats', 'localhost', 2398, '/stats'),
    ('http://[::1]:2398/stats', '::1', 2398, '/stats'),
    ('http://127.0.0.1/', '127.0.0.1', 80, '/'),
])
def test_loopback_urls_accepted(url, host, port, path):
    assert check_loopback_url(url) == (host, port, path)


@pytest.mark.parametrize('url, words', [
    ('http://192.0.2.1:8888/stats', 'not a loopback'),
    ('http://0.0.0.0:8888/stats', 'not a loopback'),
    ('http://example.com/stats', 'not a loopback'),
    ('http://127.0.0.1.example.com/stats', 'not a loopback'),
    ('https://127.0.0.1:8888/stats', 'http://'),
    ('http://user:pw@127.0.0.1:8888/stats', 'credentials'),
    ('http:///stats', 'no host'),
    ('http://127.0.0.1:99999/stats', 'port'),
])
def test_other_urls_refused_before_connecting(url, words):
    with pytest.raises(ValueError) as info:
        fetch(url)
    assert words in str(info.value)


@pytest.mark.parametrize('name', ['c-M1-idle-start.txt', 'go-noM-after-burst200.txt'])
def test_real_body_is_fetched_whole(name):
    body = capture(name)
    result, server = fetch_one({'body': body})
    assert result.ok and result.status == 200
    assert result.body == body
    assert server.requests[0][1] == '/stats'
    sample = sample_from_scrape(result)
    assert sample['parsed'].flavor == name.split('-')[0]


def test_refused():
    result = fetch('http://127.0.0.1:%d/stats' % free_port(), timeout=1)
    assert result.error == 'refused'
    assert result.body is None


def test_slow_server_times_out():
    result = fetch_one({'body': capture('go-M1-idle-start.txt'), 'delay': 3}, timeout=0.3)[0]
    assert result.error == 'timeout'


def test_trickling_server_hits_the_total_deadline():
    # Every byte arrives well within the timeout; only a deadline over the whole answer stops it.
    result = fetch_one({'body': capture('go-M1-idle-start.txt'), 'fault': 'trickle', 'trickle_s': 0.05},
                       timeout=0.5)[0]
    assert result.error == 'timeout'


def test_non_200_html_404():
    result = fetch_one({'body': HTML_404, 'status': 404, 'content_type': 'text/html'})[0]
    assert (result.error, result.status) == ('http_status', 404)
    assert '404' in result.detail


def test_html_with_200_is_not_stats():
    result = fetch_one({'body': HTML_404, 'content_type': 'text/html'})[0]
    assert result.error == 'not_stats'


def test_content_length_mismatch_is_truncated():
    result = fetch_one({'body': capture('c-noM-after-burst200.txt'), 'fault': 'truncate'})[0]
    assert result.error == 'truncated'


def test_cut_body_without_length_is_truncated_by_the_parser():
    body = capture('c-noM-after-burst200.txt')
    result = fetch_one({'body': body[:3001], 'fault': 'no_length'})[0]
    assert result.ok
    assert sample_from_scrape(result)['error'] in ('truncated', 'garbage')


def test_ten_megabyte_body_announced_is_too_large():
    result = fetch_one({'body': 'x' * (10 * 1024 * 1024)})[0]
    assert result.error == 'too_large'


def test_ten_megabyte_body_streamed_is_too_large():
    result = fetch_one({'fault': 'stream', 'stream_bytes': 10 * 1024 * 1024})[0]
    assert result.error == 'too_large'


def test_empty_body():
    result = fetch_one({'body': ''})[0]
    assert result.error == 'empty'


@pytest.mark.parametrize('step, kind', [
    ({'fault': 'raw', 'body': b'\x16\x03\x01 definitely not http\r\n\r\n'}, 'garbage'),
    ({'body': b'pid\t1\x00\x00\n'}, 'garbage'),
    ({'body': b'pid\t\xff\xfe\n'}, 'garbage'),
    ({'fault': 'close'}, 'connection'),
])
def test_garbage_and_dropped_connections(step, kind):
    result = fetch_one(step)[0]
    assert result.error == kind


def test_to_dict_has_no_body():
    result = fetch_one({'body': capture('c-M1-idle-start.txt')})[0]
    info = result.to_dict()
    assert 'body' not in info
    assert info['body_bytes'] == len(capture('c-M1-idle-start.txt'))
    assert info['status'] == 200 and info['error'] is None


@pytest.mark.parametrize('kwargs', [{'timeout': 0}, {'max_bytes': 0}])
def test_bad_limits_raise(kwargs):
    with pytest.raises(ValueError):
        fetch('http://127.0.0.1:1/stats', **kwargs)
