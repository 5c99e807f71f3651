"""The fleet model of docs/performance.md: wall time of cutover.yml and rollback.yml for N hosts, from the
per-host costs `make bench` measured (artifacts/bench/results.json, `fleet`).

    python3 tests/bench/fleet_model.py [results.json [more results.json ...]]

The first file gives the per-host costs; any of them the figures of what grows with N (report_cost,
report renders per play kind) and of the background observation (BENCH_VARIANTS=background).

Ansible's linear strategy runs a play batch by batch (serial), and a batch task by task: the main
process hands each host's task to a worker (serially, on one core), at most `forks` workers run at
once, and the next task starts when every host of the batch has finished this one. So a batch of B
hosts of play kind k takes about

    slices x W_k + L_k + max((slices - 1) x L_k, (B - 1) x max(M_k, C_k x r / K)),  slices = ceil(B / forks)

L_k: wall time of a one-host batch minus its window (the latency of its chain of tasks); W_k: the
window it waits (baseline, pre-warm, canary or wave); C_k: controller CPU per host of such a batch
(ansible-playbook, its workers and their connection clients); M_k: the part of it spent in the main
process, which no number of cores spreads; K: the controller's cores; r: machine CPU / controller CPU,
for a machine whose hosts share the controller's cores (this one: r > 1; a real controller: r = 1).
L, C and M are fitted per play kind from every batch of the bench's runs (the CPU per host is the slope
of the batch's CPU against its hosts). The check prints the model against each run it was fitted on.
Beyond the bench's sizes C and M grow by the report renders of a host times what one record costs more
at N hosts than at the bench's largest size (worker: render; main process: half the result's pickle
round trip), and windows longer than twice the progress interval add the background observation.
"""
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Play kind by words of the play's name, and the window a batch of it waits (None: none).
KINDS = (('preflight', 'preflight', None), ('freeze', 'freeze', 'baseline'), ('stage', 'stage', 'prewarm'),
         ('canar', 'canary', 'canary'), ('waves', 'wave', 'wave'), ('whole fleet', 'fleet_rollback', None),
         ('restore', 'restore', None), ('report', 'report', None))


def kind_of(play):
    name = play.lower()
    for word, kind, window in KINDS:
        if word in name:
            return kind, window
    return 'other', None


def _fit(points):
    """(slope, value at one host) of [(hosts, value)]; the mean per host when all batches have one size."""
    sizes = {x for x, _y in points}
    if len(sizes) < 2:
        x = next(iter(sizes))
        per = statistics.mean(y for _x, y in points) / x
        return per, per
    mx, my = statistics.mean(x for x, _y in points), statistics.mean(y for _x, y in points)
    k = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _y in points)
    return k, my + k * (1 - mx)


def fit(fleet, playbook):
    """Per play kind of `playbook`: L (s), C (CPU s/host), M (main-process CPU s/host), from tuned runs."""
    windows = fleet.get('windows_s') or {}
    batches = {}
    for run in fleet['runs']:
        if run.get('label') != 'tuned' or playbook not in run:
            continue
        for batch in run[playbook].get('batches', []):
            if not batch['hosts']:
                continue  # a play with no host in this run (the waves of a one-host fleet)
            kind, window = kind_of(batch['play'])
            wait = windows.get(window, 0) if window else 0
            if kind == 'stage' and playbook.endswith('cutover'):
                wait = windows.get('prewarm', 0)  # the canaries' pre-warm, in the one stage batch
            batches.setdefault(kind, []).append((batch['hosts'], batch['wall_s'] - wait, batch['cpu_s'],
                                                 batch['main_cpu_s']))
    model = {}
    for kind, rows in batches.items():
        one = [wall for hosts, wall, _c, _m in rows if hosts == 1]
        c_per, _c1 = _fit([(h, c) for h, _w, c, _m in rows])
        m_per, _m1 = _fit([(h, m) for h, _w, _c, m in rows])
        latency = statistics.median(one) if one else _fit([(h, w) for h, w, _c, _m in rows])[1]
        model[kind] = {'L': round(latency, 2), 'C': round(max(c_per, 0), 3), 'M': round(max(m_per, 0), 3),
                       'batches': len(rows)}
    starts = [run[playbook]['total_s'] - sum(b['wall_s'] for b in run[playbook].get('batches', []))
              for run in fleet['runs'] if run.get('label') == 'tuned' and playbook in run]
    model['start'] = {'L': round(statistics.median(starts), 2) if starts else 0.0, 'C': 0, 'M': 0, 'batches': 0}
    return model


def serial_batches(hosts, serial):
    """Ansible's serial batches of `hosts` hosts: numbers or 'N%' of the play's hosts; the last item repeats."""
    batches, left, items = [], hosts, list(serial) if isinstance(serial, (list, tuple)) else [serial]
    i = 0
    while left > 0:
        item = items[min(i, len(items) - 1)]
        size = int(hosts * float(item[:-1]) / 100) if isinstance(item, str) and item.endswith('%') else int(item)
        size = min(max(size, 1), left)
        batches.append(size)
        left -= size
        i += 1
    return batches


def plays(playbook, hosts, canaries, serial):
    """(kind, batch sizes) of each play of `playbook` for `hosts` hosts."""
    if playbook.endswith('rollback'):
        return [('preflight', [hosts]), ('restore', [hosts]), ('report', [hosts])]
    return [('preflight', [hosts]), ('freeze', [hosts]), ('stage', [hosts]), ('canary', [1] * canaries),
            ('wave', serial_batches(hosts - canaries, serial)), ('fleet_rollback', [hosts]), ('report', [hosts])]


def grown(k, kind, hosts, windows, scale):
    """(C, M) per host of play kind `kind` at `hosts` hosts and these windows (scale: see scale_terms)."""
    c, m = k['C'], k['M']
    if scale:
        renders = scale['renders'].get(kind, 0)
        c += renders * max(0.0, scale['record'](hosts) - scale['record'](scale['measured_at']))
        # The main process unpickles each rendered report it gets back (half of the pickle round trip).
        m += renders * max(0.0, scale['pickle'](hosts) - scale['pickle'](scale['measured_at'])) / 2
        window = windows.get(kind)
        if window and window > 2 * scale['progress_s'] and scale.get('async_start_cpu_s') is not None:
            # A window longer than twice the progress interval runs in the background: an async start
            # (no pipelining) and an async_status poll every progress interval, instead of one module run.
            polls = window // scale['progress_s'] + 1
            c += scale['async_start_cpu_s'] + polls * scale['poll_cpu_s'] - scale['sync_cpu_s']
    return c, m


def predict(model, playbook, hosts, forks, cores, windows, canaries=1, serial=(1, '25%', '100%'), r=1.0, scale=None):
    """Wall time (s) and its parts: windows waited, latency of the batches, the controller's CPU (or main process)."""
    parts = {'windows': 0.0, 'latency': model['start']['L'], 'controller': 0.0, 'main_bound_batches': 0}
    wait = {'freeze': windows['baseline'], 'stage': windows['prewarm'], 'canary': windows['canary'],
            'wave': windows['wave']}
    for kind, sizes in plays(playbook, hosts, canaries, serial):
        k = model.get(kind)
        if not k:
            continue
        for size in sizes:
            slices = math.ceil(size / forks)
            window = wait.get(kind, 0) if playbook.endswith('cutover') else 0
            parts['windows'] += slices * window
            c, m = grown(k, kind, hosts, wait, scale)
            per_host = max(m, c * r / cores)
            parts['main_bound_batches'] += int(m > c * r / cores and size > 1)
            # The slices' waits and the other hosts' CPU overlap: whichever is longer sets the pace.
            extra = max((slices - 1) * k['L'], (size - 1) * per_host)
            parts['latency'] += k['L'] + (extra if extra == (slices - 1) * k['L'] else 0)
            parts['controller'] += extra if extra != (slices - 1) * k['L'] else 0
    parts['total'] = parts['windows'] + parts['latency'] + parts['controller']
    return parts


def check(fleet, models):
    """The model against the bench's own runs (this machine: 2 cores shared with the hosts)."""
    lines = ['check on this machine (K = %d cores, r = machine CPU / controller CPU of each run):' % (os.cpu_count() or 2)]
    windows = fleet['windows_s']
    for run in fleet['runs']:
        if 'error' in run:
            continue
        forks = {'untuned': 5, 'forks5': 5}.get(run['label'], fleet.get('forks', 25))
        for playbook in ('cutover', 'rollback'):
            if playbook not in run:
                continue
            m = run[playbook]
            r = m['machine_cpu_s'] / m['cpu_s'] if m.get('machine_cpu_s') else 1.0
            p = predict(models[playbook], playbook, run['hosts'], forks, os.cpu_count() or 2, windows, r=r)
            lines.append('  %-8s %-10s %2d hosts: measured %6.1f s, model %6.1f s (%+.0f %%), r = %.2f' % (
                playbook, run['label'], run['hosts'], m['total_s'], p['total'], 100.0 * (p['total'] / m['total_s'] - 1), r))
    return lines


def _line(points):
    """f(N) through the measured [(N, value)], straight between them and beyond the last two."""
    points = sorted(points)

    def f(n):
        if len(points) == 1:
            return points[0][1]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if n <= x1 or (x1, y1) == points[-1]:
                return y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        return points[-1][1]
    return f


def _counts(results_path, run, playbook):
    path = os.path.join(os.path.dirname(os.path.abspath(results_path)), 'counts', os.path.basename(run[playbook]['counts']))
    with open(path) as handle:
        return json.load(handle)['tasks']


def scale_terms(loaded, measured_at):
    """What grows with N beyond the bench's sizes, and what production windows add, from any results file:
    the cost of one report record at N hosts (report_cost.py), report renders per host of each play kind
    (bench_counts.py), and the background observation's costs (the `background` variant)."""
    scale = {'measured_at': measured_at, 'progress_s': 30, 'renders': {}, 'async_start_cpu_s': None}
    renders = {}
    for path, results in loaded:
        fleet = results['fleet']
        cost = fleet.get('report_cost')
        if cost and 'record' not in scale:
            scale['record'] = _line([(int(n), c['record_cpu_s']) for n, c in cost.items()])
            scale['pickle'] = _line([(int(n), c['result_pickle_cpu_s']) for n, c in cost.items()])
        for run in fleet['runs']:
            for batch in (run.get('cutover') or {}).get('batches', []) + (run.get('rollback') or {}).get('batches', []):
                if batch['hosts'] and 'report_renders' in batch:
                    renders.setdefault(kind_of(batch['play'])[0], []).append(batch['report_renders'] / batch['hosts'])
        background = [r for r in fleet['runs'] if r.get('label') == 'background' and 'cutover' in r]
        tuned = [r for r in fleet['runs'] if r.get('label') == 'tuned' and 'cutover' in r]
        if background and tuned and scale['async_start_cpu_s'] is None:
            tasks, sync_tasks = _counts(path, background[-1], 'cutover'), _counts(path, tuned[-1], 'cutover')
            polls = [t for t in tasks.values() if t['action'].endswith('async_status') and t['remote_round_trips']]
            starts = [t for t in tasks.values() if t['action'].endswith('mtproxy_slo') and t['executions']
                      and t['remote_round_trips'] > 1.5 * t['executions'] and not t['skipped']]
            sync = [t for t in sync_tasks.values() if t['action'].endswith('mtproxy_slo') and t['executions']
                    and t['remote_round_trips'] == t['executions']]
            if polls and starts and sync:
                scale['poll_cpu_s'] = sum(t['cpu_s'] for t in polls) / sum(t['remote_round_trips'] for t in polls)
                scale['async_start_cpu_s'] = max(t['cpu_s'] / t['executions'] for t in starts)
                scale['sync_cpu_s'] = max(t['cpu_s'] / t['executions'] for t in sync)
    scale['renders'] = {kind: round(statistics.mean(v), 2) for kind, v in renders.items()}
    return scale if 'record' in scale else None


SCENARIOS = (
    # (name, forks, serial of the waves)
    ('README today: forks 25, serial [1, 25%, 100%]', 25, (1, '25%', '100%')),
    ('forks 100, serial [1, 25%, 100%]', 100, (1, '25%', '100%')),
    ('forks 100, waves of at most 100: [1, 10, 100]', 100, (1, 10, 100)),
    ('forks 250, waves of at most 250: [1, 25, 250]', 250, (1, 25, 250)),
)
PRODUCTION = {'baseline': 30, 'prewarm': 3, 'canary': 300, 'wave': 120}


def paper(models, scale, sizes=(100, 1000), cores=(4, 16), title='', floor=False):
    lines = ['model of a real fleet (r = 1: the hosts do their own work), windows %s, 1 canary%s:' % (PRODUCTION, title)]
    cutover, rollback = ('floor_cutover', 'floor_rollback') if floor else ('cutover', 'rollback')
    for n in sizes:
        for name, forks, serial in SCENARIOS:
            for k in cores:
                c = predict(models[cutover], cutover, n, forks, k, PRODUCTION, serial=serial, scale=scale)
                rb = predict(models[rollback], rollback, n, forks, k, PRODUCTION, scale=scale)
                lines.append('  %4d hosts, %-46s K=%2d: cutover %5.0f min (windows %5.0f, latency %4.0f, controller %5.0f s,'
                             ' %d main-process-bound batches) | rollback.yml %5.0f s (controller %5.0f s)' % (
                                 n, name, k, c['total'] / 60, c['windows'], c['latency'], c['controller'],
                                 c['main_bound_batches'], rb['total'], rb['controller']))
    return lines


def _round(value):
    return None if value is None else round(value, 3)


def main(argv):
    paths = argv[1:] or [os.path.join(REPO, 'artifacts', 'bench', 'results.json')]
    loaded = []
    for path in paths:
        with open(path) as handle:
            loaded.append((path, json.load(handle)))
    results = loaded[0][1]
    fleet = results['fleet']
    fleet.setdefault('windows_s', results['settings']['windows_s'])
    fleet.setdefault('forks', results['settings']['ANSIBLE_FORKS'])
    models = {name: fit(fleet, name) for name in ('cutover', 'rollback', 'floor_cutover', 'floor_rollback')}
    for name, model in models.items():
        kinds = ['%s L=%.2fs C=%.3fs M=%.3fs' % (k, v['L'], v['C'], v['M']) for k, v in model.items()]
        print('%s: %s' % (name, ', '.join(kinds)))
    print('\n'.join(check(fleet, models)))
    scale = scale_terms(loaded, max(r['hosts'] for r in fleet['runs']))
    if scale:
        print('grows with N: one record %.3f s at 20 hosts, %.3f s at 1000; renders per host %s; background observation:'
              ' start %s s, poll %s s, instead of %s s' % (
                  scale['record'](20), scale['record'](1000), scale['renders'], _round(scale.get('async_start_cpu_s')),
                  _round(scale.get('poll_cpu_s')), _round(scale.get('sync_cpu_s'))))
    else:
        print('no report_cost figures in %s: the model leaves out what grows with N' % ', '.join(paths))
    print('\n'.join(paper(models, scale)))
    if scale:
        flat = dict(scale, record=lambda n: 0.0, pickle=lambda n: 0.0)
        title = ', if a report record cost what it costs at %d hosts' % scale['measured_at']
        print('\n'.join(paper(models, flat, cores=(16,), title=title)))
    print('\n'.join(paper(models, None, cores=(16,), floor=True, title=', the Ansible floor (one command a step)')))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
