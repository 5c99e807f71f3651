"""What one record of the run report costs the controller at N hosts (make bench, after the fleet runs).

An `mtproxy.cutover.mtproxy_report` task that renders the report builds the whole run report and
writes report.json, report.md and timeline.svg again, in the task's worker, and returns the whole
report to the main process: both grow with the fleet. A record renders only when the last rendering
is RENDER_EVERY_S old (plugin_utils/report_files.py); one soon after a rendering only writes its file.
This measures both without hosts: a real run directory of the bench (its last host's records) is
copied to N hosts, and one more outcome record is written through the collection's own code
(plugin_utils/report_files.apply), as the action plugin does, once with an old rendering and once
right after one.

    python3 tests/bench/report_cost.py RUN_DIR [N ...]      (default N: 20 100 300 1000)

Prints JSON: for each N, CPU seconds of a record that renders (median of 3), of pickling its result to
the main process and back (a lower bound of what the main process spends on it), the result's size,
and the CPU seconds of a record soon after a rendering (`record_soon_cpu_s`).
BENCH_COLLECTION names the checkout whose code is measured (default: this one).
"""
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _import_apply():
    checkout = os.path.abspath(os.environ.get('BENCH_COLLECTION') or REPO)
    root = tempfile.mkdtemp(prefix='bench-report-cost-')
    os.makedirs(os.path.join(root, 'ansible_collections', 'mtproxy'))
    os.symlink(checkout, os.path.join(root, 'ansible_collections', 'mtproxy', 'cutover'))
    sys.path.insert(0, root)
    from ansible_collections.mtproxy.cutover.plugins.plugin_utils.report_files import apply  # pylint: disable=import-outside-toplevel
    return apply


def fleet_run_dir(template, hosts, workdir):
    """A copy of the run directory `template` with `hosts` hosts, each with its last host's records."""
    run_dir = os.path.join(workdir, 'run-%d' % hosts)
    with open(os.path.join(template, 'run.json')) as handle:
        run = json.load(handle)
    source = os.path.join(template, 'hosts', run['expected_hosts'][-1])
    names = ['host-%d' % i for i in range(1, hosts + 1)]
    for name in names:
        shutil.copytree(source, os.path.join(run_dir, 'hosts', name))
    run.update(expected_hosts=names, controller=None)
    run.pop('finished', None)  # a run that goes on
    with open(os.path.join(run_dir, 'run.json'), 'w') as handle:
        json.dump(run, handle)
    return run_dir, names


def record_cost(apply, run_dir, host, rounds=3, rendering=True):
    """(median CPU s, median pickle CPU s, result bytes) of one outcome record; ``rendering``: with the
    last rendering older than RENDER_EVERY_S (the record renders), else just after one."""
    params = {'run_dir': run_dir, 'host': host, 'stage': 'outcome',
              'record': {'result': 'on_go', 'reason': '', 'role': 'wave', 'wave': 3}}
    report_json = os.path.join(run_dir, 'report.json')
    cpu, transfer, size = [], [], 0
    for _round in range(rounds):
        if os.path.exists(report_json):
            at = 0 if rendering else time.time()
            os.utime(report_json, (at, at))
        started = time.process_time()
        result = apply(params)
        cpu.append(time.process_time() - started)
        # The worker pickles the result onto the results queue; the main process unpickles it.
        started = time.process_time()
        data = pickle.dumps(result)
        pickle.loads(data)
        transfer.append(time.process_time() - started)
        size = len(data)
    return statistics.median(cpu), statistics.median(transfer), size


def run(template, sizes=(20, 100, 300, 1000)):
    apply = _import_apply()
    workdir = tempfile.mkdtemp(prefix='bench-report-runs-')
    try:
        rows = {}
        for hosts in sizes:
            run_dir, names = fleet_run_dir(template, hosts, workdir)
            cpu, transfer, size = record_cost(apply, run_dir, names[-1])
            soon, _transfer, _size = record_cost(apply, run_dir, names[-1], rendering=False)
            rows[str(hosts)] = {'record_cpu_s': round(cpu, 4), 'result_pickle_cpu_s': round(transfer, 4),
                                'result_bytes': size, 'record_soon_cpu_s': round(soon, 4)}
            shutil.rmtree(run_dir)
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(json.dumps(run(sys.argv[1], [int(n) for n in sys.argv[2:]] or (20, 100, 300, 1000)), indent=1))
