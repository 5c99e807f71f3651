"""Cost of parsing and judging one /stats body, per format, on the real captures.

A window of alternating real captures (idle-start, idle-plus2s) is parsed and judged repeatedly;
the figures are microseconds per body (parse alone, and parse + judge_window).
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, 'tests', 'fixtures', 'real-stats')
WINDOW = 13  # bodies per judged window: a 60 s window sampled every 5 s


def _collection_on_path():
    base = os.environ.get('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO, '.venv', 'collections')).split(':')[0]
    if base not in sys.path:
        sys.path.insert(0, base)


def bodies(flavor):
    out = []
    for state in ('idle-start', 'idle-plus2s'):
        with open(os.path.join(FIXTURES, '%s-M1-%s.txt' % (flavor, state))) as handle:
            out.append(handle.read())
    return out


def measure(flavor, rounds=200):
    _collection_on_path()
    from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.judge import judge_window, sample_from_body
    from ansible_collections.mtproxy.cutover.plugins.module_utils._slo.stats import parse_stats

    pair = bodies(flavor)
    window = [pair[i % 2] for i in range(WINDOW)]
    t0 = time.perf_counter()
    for _round in range(rounds):
        for body in window:
            parse_stats(body)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _round in range(rounds):
        samples = [sample_from_body(body, 5.0 * i) for i, body in enumerate(window)]
        verdict = judge_window(samples)
    judge_s = time.perf_counter() - t0
    if verdict.get('flavor') != flavor:
        raise SystemExit('judge_cost: %s window judged as %r' % (flavor, verdict.get('flavor')))
    per_body = 1e6 / (rounds * WINDOW)
    return {'parse_us': round(parse_s * per_body, 1), 'judge_us': round(judge_s * per_body, 1)}


def run(rounds=200):
    c = measure('c', rounds)
    go = measure('go', rounds)
    return {'judge_us_c': c['judge_us'], 'judge_us_go': go['judge_us'], 'parse_us_c': c['parse_us'],
            'parse_us_go': go['parse_us'], 'window_bodies': WINDOW, 'rounds': rounds}


if __name__ == '__main__':
    print(json.dumps(run(), sort_keys=True))
