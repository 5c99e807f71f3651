import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import (
    REDACTED, StatsParseError, detect_flavor, parse_stats, parse_value, redacted_body)

from stats_fixtures import capture, capture_names, go_not_ready, with_values

C_SECTIONS = ['connections', 'raw_msg', 'raw_msg_buffer', 'tl_parse', 'crypto_aes', 'crypto_dh', 'jobs',
              'mp_queue', 'timers', 'rpc_targets']


def test_fixture_set_is_complete():
    names = capture_names()
    assert len(names) == 26
    assert {n.split('-')[0] for n in names} == {'c', 'go'}


@pytest.mark.parametrize('name', capture_names())
def test_every_capture_parses_with_its_flavour(name):
    body = capture(name)
    parsed = parse_stats(body)
    assert parsed.flavor == name.split('-')[0]
    # Faithful: every non-marker line is a key whose raw text is exactly what was written.
    for line in body.split('\n')[:-1]:
        key, text = line.split('\t', 1)
        if key.startswith(('>>>', '<<<')):
            assert key not in parsed.values
        else:
            assert parsed.raw[key] == text
    if parsed.flavor == 'c':
        assert parsed.line_count == 201
        assert len(parsed.values) == 181
        assert list(parsed.sections) == C_SECTIONS
        assert 'inbound_connections_accepted' in parsed.sections['connections']
        assert 'secret_1_active_connections' in parsed.values
    else:
        assert parsed.line_count == 66
        assert len(parsed.values) == 66
        assert parsed.sections == {}


def test_c_value_types():
    values = parse_stats(capture('c-noM-after-obf2x50-backend-down.txt')).values
    assert values['pid'] == 29952
    assert values['tot_idle_time'] == pytest.approx(40.15)
    assert values['total_accept_connections_failed'] == [0, 0, 0, 0, 0]
    assert values['tot_threads'] == [0, 16, 8, 1] + [0] * 12
    assert len(values['thread_average_idle_percent']) == 16
    assert all(isinstance(v, float) for v in values['thread_average_idle_percent'])
    assert values['PID'] == '[192.0.2.2:19105:29952:1795744426]'
    assert values['version'].endswith('after commit ')
    assert values['config_md5'] == '90c1bb2aca8da6832abc098abc42d4e3'


def test_go_value_types():
    values = parse_stats(capture('go-M1-after-obf2x50-backend-down.txt')).values
    assert values['config_reload_last_error'] == ''
    assert values['forward_last_error'] == 'no healthy targets available for cluster 2'
    assert values['forward_avg_payload_bytes'] == 40.0
    assert isinstance(values['forward_avg_payload_bytes'], float)
    assert values['dataplane_packets_dropped'] == 100


def test_go_not_ready_body():
    parsed = parse_stats(go_not_ready(capture('go-M1-idle-start.txt')))
    assert parsed.flavor == 'go'
    assert len(parsed.values) == 61
    assert parsed.values['has_current_config'] == 0
    assert 'config_md5' not in parsed.values


def test_text_keys_stay_text_even_when_numeric():
    assert parse_value('config_md5', '12345678901234567890123456789012') == '12345678901234567890123456789012'
    assert parse_value('uptime', '12') == 12
    assert parse_value('uptime', 'twelve') == 'twelve'
    assert parse_value('tot_dh_rounds', '0 0 0') == [0, 0, 0]
    assert parse_value('x', '1 two 3') == '1 two 3'
    assert parse_value('x', '-3') == -3


def test_bytes_input_and_redaction():
    parsed = parse_stats(capture('c-M1-idle-start.txt').encode('utf-8'))
    assert parsed.flavor == 'c'
    redacted = parsed.redacted_values()
    assert redacted['aes_pwd_hash'] == REDACTED
    assert parsed.values['aes_pwd_hash'] != REDACTED
    assert redacted['pid'] == parsed.values['pid']


@pytest.mark.parametrize('name', ['c-M1-idle-start.txt', 'go-M1-idle-start.txt'])
def test_a_redacted_body_keeps_every_line_but_the_password_hash(name):
    body = capture(name)
    secret = parse_stats(body).values.get('aes_pwd_hash')
    redacted = redacted_body(body)
    assert len(redacted.split('\n')) == len(body.split('\n'))
    changed = [(a, b) for a, b in zip(body.split('\n'), redacted.split('\n')) if a != b]
    if secret:
        assert changed == [('aes_pwd_hash\t' + secret, 'aes_pwd_hash\t' + REDACTED)] and secret not in redacted
    else:
        assert changed == [] and redacted == body


@pytest.mark.parametrize('body, kind', [
    ('', 'empty'),
    ('   \n\n', 'empty'),
    ('<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n', 'not_stats'),
    ('<!DOCTYPE html>\n<p>hi</p>\n', 'not_stats'),
    ('pid\t1\nuptime\t3', 'truncated'),
    ('this is not stats\n', 'garbage'),
    ('pid\t1\npid\t2\n', 'garbage'),
    ('pid\t1\n\nuptime\t2\n', 'garbage'),
    ('pid\t1\x00\n', 'garbage'),
    ('some_key\t1\nother_key\t2\n', 'unknown_flavor'),
    ('pid\t1\nstats_generated_at\t2\n', 'unknown_flavor'),
    (b'\xff\xfe\x00garbage', 'garbage'),
])
def test_bad_bodies_raise_with_kind(body, kind):
    with pytest.raises(StatsParseError) as info:
        parse_stats(body)
    assert info.value.kind == kind


def test_truncated_real_body():
    body = capture('c-noM-after-burst200.txt')
    with pytest.raises(StatsParseError) as info:
        parse_stats(body[:len(body) // 2 + 3])
    assert info.value.kind in ('truncated', 'garbage')


def test_truncated_on_line_boundary_still_parses_but_misses_keys():
    body = capture('go-M1-idle-start.txt')
    cut = '\n'.join(body.split('\n')[:20]) + '\n'
    parsed = parse_stats(cut)
    assert parsed.flavor == 'go'
    assert 'ingress_accepted_connections' not in parsed.values


def test_error_messages_do_not_echo_body():
    with pytest.raises(StatsParseError) as info:
        parse_stats('pid\t1\nsecret-looking-line-0123456789abcdef\n')
    assert '0123456789abcdef' not in str(info.value)


def test_non_numeric_value_is_kept_as_text():
    parsed = parse_stats(with_values(capture('go-M1-idle-start.txt'), ingress_accepted_connections='lots'))
    assert parsed.values['ingress_accepted_connections'] == 'lots'


def test_large_body_parses():
    body = capture('c-M1-idle-start.txt')
    extra = ''.join('secret_%d_active_connections\t0\n' % i for i in range(2, 20000))
    parsed = parse_stats(body + extra)
    assert parsed.values['secret_19999_active_connections'] == 0


def test_detect_flavor():
    assert detect_flavor({'pid', 'uptime'}) == 'c'
    assert detect_flavor({'has_current_config'}) == 'go'
    with pytest.raises(StatsParseError):
        detect_flavor({'config_md5'})
