"""What a failed start quotes from the journal (_host/systemd.journal_tail): the binary's refusal, not only
the end of the flag help it prints after it."""
from ansible_collections.mtproxy.cutover.plugins.module_utils._host import process, systemd

USAGE = ['Usage of mtproto-proxy-go:'] + [
    '  -%s, --flag-%d <value>   what flag %d does' % (c, i, i) for i, c in enumerate('abcdefghijklmnopqrstuvwxyzABCDEF')]
REFUSED = ['flag provided but not defined: -p'] + USAGE


def _journal(monkeypatch, lines):
    seen = []

    def run(argv, timeout=None):
        seen.append(argv)
        return 0, '\n'.join(lines) + '\n', ''
    monkeypatch.setattr(process, 'run', run)
    return seen


def test_flag_help_is_one_line_and_the_refusal_stays_in_view(monkeypatch):
    lines = ['Stopping MTProxy.service - MTProxy...'] + REFUSED * 5 + [
        'MTProxy.service: Start request repeated too quickly.', "MTProxy.service: Failed with result 'exit-code'."]
    _journal(monkeypatch, lines)
    tail = systemd.journal_tail('MTProxy.service', since_epoch=1796583605, settle=0)
    refused = ['flag provided but not defined: -p', 'Usage of mtproto-proxy-go:', '  (32 lines of flag help)']
    assert tail == lines[:1] + refused * 5 + lines[-2:]


def test_with_a_start_time_the_first_lines_of_that_start_are_kept(monkeypatch):
    lines = ['refused: %d' % i for i in range(90)]
    seen = _journal(monkeypatch, lines)
    tail = systemd.journal_tail('MTProxy-prewarm.service', since_epoch=1796583605, settle=0)
    assert tail[:systemd.JOURNAL_HEAD_LINES + 1] == ['refused: 0', 'refused: 1', 'refused: 2', 'refused: 3',
                                                     'refused: 4', '...']
    assert tail[-1] == 'refused: 89' and len(tail) == systemd.JOURNAL_START_LINES
    assert seen[0][seen[0].index('--since') + 1] == '@1796583605'


def test_without_a_start_time_only_the_last_lines(monkeypatch):
    _journal(monkeypatch, ['line %d' % i for i in range(20)])
    assert systemd.journal_tail('MTProxy.service', settle=0)[0] == 'line 0'


def test_the_help_of_each_build_is_recognised():
    golang_branch = ['Can not parse options: unrecognized option --bogus', 'mtproxy-go-dev', '\tSimple MT-Proto proxy',
                     '\t-S, --mtproto-secret\t16-byte secret in hex mode', '\t--mtproto-secret-file\tpath to file']
    go_flag = ['flag provided but not defined: -p', 'Usage of mtproto-proxy:', '  -p int', '    \tlocal port']
    assert systemd.collapse_usage(golang_branch) == golang_branch[:2] + ['  (3 lines of flag help)']
    assert systemd.collapse_usage(go_flag) == go_flag[:2] + ['  (2 lines of flag help)']
