"""exit_check (module_utils/_flow/exit_check.py): where the backend config is in an argv, and the
bounded wait for a provoked binary's end."""
import pytest

from ansible_collections.mtproxy.cutover.plugins.module_utils._flow import exit_check as ec


@pytest.mark.parametrize('argv, index', [
    (['/bin/p', '-u', 'nobody', '-p', '8888', '-H', '443', '--aes-pwd', 'proxy-secret', 'proxy-multi.conf', '-M', '1'], 9),
    (['/bin/p', 'proxy-multi.conf', '-p8888', '--http-stats', '-S', 'x' * 32], 1),
    (['/bin/p', '-p', '8888', '--', '-odd.conf'], 4),
    (['/bin/p', '-p', '8888'], None),
])
def test_config_index_is_the_word_no_option_takes(argv, index):
    assert ec.config_index(argv) == index


class Unit(object):
    def __init__(self, ends_after):
        self.calls = 0
        self.ends_after = ends_after

    def gone(self):
        self.calls += 1
        return 'exited' if self.ends_after is not None and self.calls > self.ends_after else None


def test_wait_gone_is_bounded_and_sees_an_end():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    assert ec.wait_gone(Unit(3), 1.0, clock=lambda: now[0], sleep=sleep) is True
    now[0] = 0.0
    forever = Unit(None)
    assert ec.wait_gone(forever, 1.0, clock=lambda: now[0], sleep=sleep) is False
    assert forever.calls == int(1.0 / ec.POLL_S) + 1
