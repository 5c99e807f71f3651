"""Fleet scale of `make bench`: what cutover.yml and rollback.yml cost, in wall time and on the controller.

For every size of BENCH_SIZES (the first N bench hosts, reset to fresh C hosts) it runs cutover.yml,
rollback.yml and their Ansible floors (floor_cutover.yml, floor_rollback.yml: the same plays, serial
and windows, every step one `command` per host), each one:
- in a cgroup of its own (controller_cpu.py): the CPU seconds of ansible-playbook, its workers and
  the `docker` CLI they run; the hosts' own processes are not in it;
- with the bench's callback (callback_plugins/bench_counts.py): task executions and connection round
  trips per host, and the controller CPU of every task;
- beside the CPU the test hosts used meanwhile (their containers' cpuacct cgroups).
The largest size runs BENCH_FLEET_REPEATS times (default 2) to show how repeatable the figures are;
BENCH_VARIANTS (default untuned) reruns cutover.yml and rollback.yml at the largest size with other
Ansible settings (VARIANTS).
"""
import json
import os
import statistics
import sys
import time

from controller_cpu import CpuGroup

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PLAYBOOKS = {
    'cutover': ('collection', 'playbooks/cutover.yml'),
    'rollback': ('collection', 'playbooks/rollback.yml'),
    'floor_cutover': ('bench', 'floor_cutover.yml'),
    'floor_rollback': ('bench', 'floor_rollback.yml'),
}
VARIANTS = {
    'untuned': {'env': {'ANSIBLE_PIPELINING': '0', 'ANSIBLE_FORKS': '5'}},
    'forks5': {'env': {'ANSIBLE_FORKS': '5'}},
    'no_pipelining': {'env': {'ANSIBLE_PIPELINING': '0'}},
    'free': {'env': {'ANSIBLE_STRATEGY': 'free'}},
    # Windows longer than twice the progress interval run in the background (async + async_status
    # polls), as production windows (120 s, 300 s; progress every 30 s) do: 3 s windows, progress every 1 s.
    'background': {'windows': {'canary': 3, 'wave': 3}, 'extra_vars': {'mtproxy_cutover_progress_interval_s': 1}},
}
# Today's figures (main before the cuts), printed beside the measured ones: fleet_before.json.
BEFORE = os.path.join(HERE, 'fleet_before.json')
PER_HOST = ('executions', 'ok', 'skipped', 'remote', 'controller', 'include', 'meta', 'remote_round_trips',
            'local_execs', 'report_renders')


def mean(values):
    values = [v for v in values if v is not None]
    return round(statistics.mean(values), 3) if values else None


def slope(points):
    """Least-squares (slope, intercept) of [(hosts, value)]: the cost of one more host, and of the run."""
    if len({x for x, _y in points}) < 2:
        return None, None
    mx = statistics.mean(x for x, _y in points)
    my = statistics.mean(y for _x, y in points)
    sxx = sum((x - mx) ** 2 for x, _y in points)
    k = sum((x - mx) * (y - my) for x, y in points) / sxx
    return round(k, 3), round(my - k * mx, 3)


def machine_cpu():
    """CPU seconds the whole machine has spent (every core, /proc/stat, all but idle and iowait)."""
    with open('/proc/stat') as handle:
        fields = [int(v) for v in handle.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')


class FleetScale:
    def __init__(self, bench, windows, thresholds, log):
        self.bench = bench
        self.windows = windows
        self.thresholds = thresholds
        self.log = log
        self.counts_dir = os.path.join(bench.workdir, 'counts')
        self.runs_dir = os.path.join(bench.workdir, 'runs')
        self.largest_repeats = int(os.environ.get('BENCH_FLEET_REPEATS', '2'))
        variants = os.environ.get('BENCH_VARIANTS', 'untuned' if os.environ.get('BENCH_UNTUNED', '1') == '1' else '')
        self.variants = [v.strip() for v in variants.split(',') if v.strip()]
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise RuntimeError('BENCH_VARIANTS: unknown %s (known: %s)' % (', '.join(unknown), ', '.join(VARIANTS)))
        self.container_ids = {}
        self.idle_host_cpu_per_s = None

    # ---- the test hosts' CPU, to tell it from the controller's
    def _host_cpu(self, names):
        total = 0.0
        for name in names:
            if name not in self.container_ids:
                self.container_ids[name] = self.bench.sh(['docker', 'inspect', '-f', '{{.Id}}', name]).stdout.strip()
            path = '/sys/fs/cgroup/cpuacct/docker/%s/cpuacct.usage' % self.container_ids[name]
            try:
                with open(path) as handle:
                    total += int(handle.read().strip()) / 1e9
            except OSError:
                return None
        return total

    def measure_idle(self, size, seconds=10):
        """CPU per host and second of an idle bench host (its test client's traffic, systemd)."""
        names = self.bench.host_names(size)
        before = self._host_cpu(names)
        time.sleep(seconds)
        after = self._host_cpu(names)
        if before is not None and after is not None:
            self.idle_host_cpu_per_s = round((after - before) / seconds / size, 4)

    # ---- one playbook run
    def measure(self, name, size, inventory, extra, env, tag):
        out = os.path.join(self.counts_dir, '%s-%s.json' % (tag, name))
        env = dict(env, ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, 'callback_plugins'),
                   ANSIBLE_CALLBACKS_ENABLED='bench_counts', BENCH_COUNTS_OUT=out)
        names = self.bench.host_names(size)
        group = CpuGroup('mtproxy-bench-%d-%s-%s' % (os.getpid(), tag, name))
        hosts_before = self._host_cpu(names)
        machine_before = machine_cpu()
        where, playbook = PLAYBOOKS[name]
        argv = ['ansible-playbook', '-i', inventory,
                os.path.join(self.bench.collection if where == 'collection' else HERE, playbook)] + list(extra)
        try:
            proc, wall, cpu, method, children = group.run(argv, env, timeout=3600)
        finally:
            group.remove()
        hosts_after = self._host_cpu(names)
        machine = machine_cpu() - machine_before
        if proc.returncode != 0:
            tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError('%s on %d hosts failed (%d):\n%s' % (name, size, proc.returncode, tail))
        with open(out) as handle:
            counts = json.load(handle)
        hosts = counts['hosts']
        entry = {
            'hosts': size, 'total_s': round(wall, 2), 'cpu_s': round(cpu, 2), 'cpu_method': method,
            'cpu_per_host_s': round(cpu / size, 3), 'rusage_children_cpu_s': round(children, 2),
            'main_process_cpu_s': counts['main_process_cpu_s'],
            'hosts_cpu_s': round(hosts_after - hosts_before, 2) if hosts_before is not None and hosts_after is not None
            else None,
            # Everything: controller, hosts, the Docker engine (dockerd, containerd, shims, runc) and
            # whatever else ran meanwhile (other users of the machine).
            'machine_cpu_s': round(machine, 2), 'loadavg_1m_after': round(os.getloadavg()[0], 1),
            'per_host': {key: mean(h.get(key, 0) for h in hosts.values()) for key in PER_HOST},
            'canary_host': hosts.get(names[0]), 'last_host': hosts.get(names[-1]),
            'recap': counts['recap'], 'unmatched_execs': counts['unmatched_execs'], 'batches': counts['batches'],
            'counts': os.path.relpath(out, REPO),
        }
        if entry['hosts_cpu_s'] is not None and self.idle_host_cpu_per_s is not None:
            entry['hosts_run_cpu_s'] = round(entry['hosts_cpu_s'] - self.idle_host_cpu_per_s * size * wall, 2)
        return entry

    def window_args(self, windows=None):
        w = windows or self.windows
        return ['-e', 'mtproxy_cutover_canary_window_s=%d' % w['canary'], '-e', 'mtproxy_cutover_wave_window_s=%d' % w['wave'],
                '-e', 'mtproxy_cutover_baseline_window_s=%d' % w['baseline'],
                '-e', 'mtproxy_cutover_prewarm_window_s=%d' % w['prewarm'],
                '-e', 'mtproxy_cutover_sample_interval_s=%d' % w['interval'],
                '-e', json.dumps({'mtproxy_cutover_thresholds': self.thresholds})]

    def waves_of(self, run_id):
        with open(os.path.join(self.runs_dir, run_id, 'report.json')) as handle:
            report = json.load(handle)
        waves, canaries = set(), 0
        for entry in report.get('hosts', {}).values():
            if entry.get('role') == 'canary':
                canaries += 1
            elif entry.get('role') == 'wave':
                waves.add(int(entry.get('wave') or 0))
        return canaries, len(waves)

    def size_run(self, size, label, env, floors=True, variant=None):
        """cutover.yml, rollback.yml (and the floors) on the first `size` hosts, reset to C hosts first."""
        variant = variant or {}
        inventory = self.bench.inventory(size)
        self.bench.reset_hosts(size)
        tag = 'fleet-%s-%d-%d' % (label, size, int(time.time()))
        w = dict(self.windows, **variant.get('windows', {}))
        extra_vars = ['-e', json.dumps(variant['extra_vars'])] if variant.get('extra_vars') else []
        self.log('fleet: cutover.yml on %d hosts (%s)' % (size, label))
        run = {'hosts': size, 'label': label, 'windows': w, 'run_id': tag}
        run['cutover'] = self.measure('cutover', size, inventory,
                                      ['-e', '@%s/go-binary-vars.yml' % self.bench.stage_dir,
                                       '-e', 'mtproxy_cutover_artifacts_dir=%s' % self.runs_dir,
                                       '-e', 'mtproxy_cutover_run_id=%s' % tag] + self.window_args(w) + extra_vars,
                                      env, tag)
        run['canaries'], run['waves'] = self.waves_of(tag)
        run['windows_s'] = w['baseline'] + w['prewarm'] + run['canaries'] * w['canary'] + run['waves'] * w['wave']
        self.log('fleet: rollback.yml on %d hosts (%s)' % (size, label))
        run['rollback'] = self.measure('rollback', size, inventory,
                                       ['-e', 'mtproxy_cutover_artifacts_dir=%s' % self.runs_dir,
                                        '-e', 'mtproxy_cutover_run_id=%s-rollback' % tag], env, tag)
        if floors:
            self.log('fleet: the Ansible floors on %d hosts (%s)' % (size, label))
            run['floor_cutover'] = self.measure('floor_cutover', size, inventory, self.window_args(), env, tag)
            run['floor_rollback'] = self.measure('floor_rollback', size, inventory, [], env, tag)
        for name in ('cutover', 'floor_cutover'):
            if name in run:
                run[name]['overhead_s'] = round(run[name]['total_s'] - run['windows_s'], 2)
        for name in ('rollback', 'floor_rollback'):
            if name in run:
                run[name]['overhead_s'] = run[name]['total_s']
        if floors:
            run['overhead_ratio'] = round(run['cutover']['overhead_s'] / run['floor_cutover']['overhead_s'], 2)
            run['rollback_overhead_ratio'] = round(run['rollback']['total_s'] / run['floor_rollback']['total_s'], 2)
        self.log('fleet: %d hosts %s: %s' % (size, label, brief(run)))
        return run

    def run(self, sizes, env):
        os.makedirs(self.counts_dir, exist_ok=True)
        self.measure_idle(max(sizes))
        runs = []
        for size in sizes:
            repeats = self.largest_repeats if size == max(sizes) else 1
            for _repeat in range(max(1, repeats)):
                runs.append(self.size_run(size, 'tuned', env))
        for variant in self.variants:
            try:
                settings = VARIANTS[variant]
                runs.append(self.size_run(max(sizes), variant, dict(env, **settings.get('env', {})), floors=False,
                                          variant=settings))
            except RuntimeError as exc:
                # A setting the playbooks do not support (e.g. a strategy) is a finding, not a bench failure.
                self.log('fleet: variant %s failed: %s' % (variant, exc))
                runs.append({'hosts': max(sizes), 'label': variant, 'error': str(exc)[-2000:]})
        return {'runs': runs, 'summary': summarize(runs), 'idle_host_cpu_per_s': self.idle_host_cpu_per_s,
                'top_tasks': top_tasks(runs, max(sizes)), 'report_cost': self.report_cost(runs)}

    def report_cost(self, runs):
        """report_cost.py on the last cutover run of the largest size: one record's cost at 20 .. 1000 hosts."""
        largest = [r for r in runs if r['label'] == 'tuned' and 'error' not in r]
        if not largest:
            return None
        self.log('fleet: the cost of one report record at 20 .. 1000 hosts')
        env = dict(self.bench.env, BENCH_COLLECTION=self.bench.collection)
        proc = self.bench.sh([sys.executable, os.path.join(HERE, 'report_cost.py'),
                              os.path.join(self.runs_dir, largest[-1]['run_id'])], env=env)
        return json.loads(proc.stdout)


def brief(run):
    parts = []
    for name in ('cutover', 'rollback', 'floor_cutover', 'floor_rollback'):
        if name in run:
            m = run[name]
            parts.append('%s %.1f s (overhead %.1f), CPU %.2f s/host, %.1f tasks/host, %.1f round trips/host' % (
                name, m['total_s'], m['overhead_s'], m['cpu_per_host_s'], m['per_host']['executions'],
                m['per_host']['remote_round_trips']))
    return '; '.join(parts)


def summarize(runs):
    """Per playbook and size (mean of repeats): the figures make bench prints; the per-host slope."""
    summary = {}
    tuned = [r for r in runs if r['label'] == 'tuned']
    for name in PLAYBOOKS:
        by_size = {}
        for run in tuned:
            if name in run:
                by_size.setdefault(run['hosts'], []).append(run[name])
        if not by_size:
            continue
        rows = {}
        for size, entries in sorted(by_size.items()):
            rows[str(size)] = {
                'repeats': len(entries),
                'total_s': mean(e['total_s'] for e in entries), 'overhead_s': mean(e['overhead_s'] for e in entries),
                'overhead_s_each': [e['overhead_s'] for e in entries],
                'cpu_s': mean(e['cpu_s'] for e in entries), 'cpu_s_each': [e['cpu_s'] for e in entries],
                'cpu_per_host_s': mean(e['cpu_per_host_s'] for e in entries),
                'main_process_cpu_s': mean(e['main_process_cpu_s'] for e in entries),
                'hosts_run_cpu_s': mean(e.get('hosts_run_cpu_s') for e in entries),
                'machine_cpu_s': mean(e.get('machine_cpu_s') for e in entries),
                'per_host': {k: mean(e['per_host'].get(k) for e in entries) for k in PER_HOST},
            }
        points = [(run['hosts'], run[name]['cpu_s']) for run in tuned if name in run]
        main_points = [(run['hosts'], run[name]['main_process_cpu_s']) for run in tuned if name in run]
        wall_points = [(run['hosts'], run[name]['overhead_s']) for run in tuned if name in run]
        k, c = slope(points)
        km, cm = slope(main_points)
        kw, cw = slope(wall_points)
        summary[name] = {'sizes': rows, 'cpu_s_per_added_host': k, 'cpu_s_per_run': c,
                         'main_cpu_s_per_added_host': km, 'main_cpu_s_per_run': cm,
                         'overhead_s_per_added_host': kw, 'overhead_s_per_run': cw}
    largest = max((r['hosts'] for r in tuned), default=None)
    ratios = [r['overhead_ratio'] for r in tuned if r['hosts'] == largest and 'overhead_ratio' in r]
    rb_ratios = [r['rollback_overhead_ratio'] for r in tuned if r['hosts'] == largest and 'rollback_overhead_ratio' in r]
    summary['largest'] = largest
    summary['overhead_ratio'] = mean(ratios)
    summary['overhead_ratio_each'] = ratios
    summary['rollback_overhead_ratio'] = mean(rb_ratios)
    summary['variants'] = {r['label']: {name: {'total_s': r[name]['total_s'], 'overhead_s': r[name]['overhead_s'],
                                               'cpu_s': r[name]['cpu_s'], 'cpu_per_host_s': r[name]['cpu_per_host_s'],
                                               'main_process_cpu_s': r[name]['main_process_cpu_s'],
                                               'per_host': r[name]['per_host']}
                                        for name in ('cutover', 'rollback') if name in r} or {'error': r.get('error')}
                           for r in runs if r['label'] != 'tuned'}
    last = [r for r in tuned if r['hosts'] == largest][-1:] if largest else []
    summary['hosts_at_largest'] = {
        name: {'canary': _host_brief(last[0][name]['canary_host']), 'wave': _host_brief(last[0][name]['last_host'])}
        for name in ('cutover', 'rollback', 'floor_cutover') if last and name in last[0]}
    return summary


def _host_brief(figures):
    if not figures:
        return None
    return {k: figures[k] for k in ('executions', 'ok', 'skipped', 'remote', 'controller', 'include', 'remote_round_trips')}


def top_tasks(runs, size, count=20):
    """The tasks of cutover.yml and rollback.yml that cost the controller most CPU at `size` hosts (last run)."""
    result = {}
    for name in ('cutover', 'rollback'):
        chosen = [r for r in runs if r['label'] == 'tuned' and r['hosts'] == size and name in r]
        if not chosen:
            continue
        with open(os.path.join(REPO, chosen[-1][name]['counts'])) as handle:
            tasks = json.load(handle)['tasks']
        rows = []
        for label, t in tasks.items():
            rows.append({'task': label, 'cpu_s': t['cpu_s'], 'cpu_per_host_s': round(t['cpu_s'] / size, 3),
                         'executions': t['executions'], 'skipped': t['skipped'],
                         'round_trips': t['remote_round_trips'], 'wall_s': t['wall_s']})
        rows.sort(key=lambda row: -row['cpu_s'])
        noise = sorted((row for row in rows if row['skipped']), key=lambda row: -row['cpu_s'])
        result[name] = {'hosts': size, 'top': rows[:count], 'skipped_noise': noise,
                        'all_tasks_cpu_s': round(sum(row['cpu_s'] for row in rows), 2)}
    return result


def load_before():
    try:
        with open(BEFORE) as handle:
            return json.load(handle)
    except OSError:
        return None


def table(fleet):
    """The fleet figures as text: per playbook and size, the controller's cost per host and the floor ratio."""
    summary = fleet['summary']
    before = load_before() or {}
    if before.get('hosts') != summary['largest']:
        before = {}  # today's figures are for another fleet size: nothing to compare with
    head = ('playbook', 'hosts', 'total s', 'overhead s', 'ctrl CPU s', 'CPU s/host', 'main proc s',
            'tasks/host', 'skipped/host', 'round trips/host')
    rows = [head]
    for name in PLAYBOOKS:
        if name not in summary:
            continue
        for size, row in summary[name]['sizes'].items():
            ph = row['per_host']
            rows.append((name, size + ('' if row['repeats'] == 1 else ' (x%d)' % row['repeats']), row['total_s'],
                         '/'.join(str(v) for v in row['overhead_s_each']), row['cpu_s'], row['cpu_per_host_s'],
                         row['main_process_cpu_s'], ph['executions'], ph['skipped'], ph['remote_round_trips']))
    for label, figures in summary['variants'].items():
        if 'error' in figures:
            rows.append(('(%s)' % label, summary['largest'], 'failed', '', '', '', '', '', '', ''))
            continue
        for name, m in figures.items():
            ph = m['per_host']
            rows.append(('%s (%s)' % (name, label), summary['largest'], m['total_s'], m['overhead_s'], m['cpu_s'],
                         m['cpu_per_host_s'], m['main_process_cpu_s'], ph['executions'], ph['skipped'],
                         ph['remote_round_trips']))
    width = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ['  '.join(str(c).ljust(width[i]) for i, c in enumerate(r)) for r in rows]
    lines.append('')
    for name in ('cutover', 'rollback', 'floor_cutover', 'floor_rollback'):
        if name in summary and summary[name]['cpu_s_per_added_host'] is not None:
            s = summary[name]
            lines.append('%-15s controller CPU per added host %.2f s (main process %.2f s), per run %.1f s;'
                         ' overhead per added host %.2f s' % (
                             name, s['cpu_s_per_added_host'], s['main_cpu_s_per_added_host'], s['cpu_s_per_run'],
                             s['overhead_s_per_added_host']))
    largest = str(summary['largest'])
    lines.append('cutover.yml / floor overhead at %s hosts: %s (each run: %s; target <= 2)%s' % (
        largest, summary['overhead_ratio'], summary['overhead_ratio_each'], _before(before, 'overhead_ratio')))
    lines.append('rollback.yml / floor at %s hosts: %s%s' % (
        largest, summary['rollback_overhead_ratio'], _before(before, 'rollback_overhead_ratio')))
    for name in ('cutover', 'rollback'):
        row = summary.get(name, {}).get('sizes', {}).get(largest)
        if row:
            lines.append('%s.yml at %s hosts: CPU %.2f s/host%s, %s round trips/host%s, %s tasks/host%s' % (
                name, largest, row['cpu_per_host_s'], _before(before, name + '_cpu_per_host_s', row['cpu_per_host_s']),
                row['per_host']['remote_round_trips'],
                _before(before, name + '_round_trips_per_host', row['per_host']['remote_round_trips']),
                row['per_host']['executions'], _before(before, name + '_executions_per_host', row['per_host']['executions'])))
    cost = fleet.get('report_cost')
    if cost:
        sizes = sorted(cost, key=int)
        each = ['%.2f s + %.2f s, %.1f MB' % (cost[n]['record_cpu_s'], cost[n]['result_pickle_cpu_s'],
                                              cost[n]['result_bytes'] / 1e6) for n in sizes]
        lines.append('one report record (render + result to the main process) at %s hosts: %s' % (
            '/'.join(sizes), ' / '.join(each)))
        if all('record_soon_cpu_s' in cost[n] for n in sizes):
            lines.append('one report record within 10 s of a rendering (no rendering) at %s hosts: %s' % (
                '/'.join(sizes), ' / '.join('%.3f s' % cost[n]['record_soon_cpu_s'] for n in sizes)))
    for name, hosts in summary.get('hosts_at_largest', {}).items():
        lines.append('%s at %s hosts, task executions (ok/skipped), round trips: first host (canary) %s, last host %s' % (
            name, largest, _host_line(hosts['canary']), _host_line(hosts['wave'])))
    return '\n'.join(lines)


def _host_line(h):
    if not h:
        return '-'
    return '%d (%d/%d), %d' % (h['executions'], h['ok'], h['skipped'], h['remote_round_trips'])


def _before(before, key, now=None):
    value = (before.get('figures') or {}).get(key)
    if value is None:
        return ''
    factor = ', %.2fx lower' % (value / now) if now else ''
    return ' [%s: %s%s]' % (before.get('source', 'before'), value, factor)
