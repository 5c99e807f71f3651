"""`make bench`: flip window, fleet scale and judge cost of mtproxy.cutover on local test hosts.

Boots max(BENCH_SIZES) systemd containers (fleet prefix BENCH_PREFIX, default "bench"), makes them
C hosts (tests/hosts/prepare_proxy_host.yml, stand-in binaries unless MTPROXY_C_BINARY /
MTPROXY_GO_BINARY are set), then:
  1. flip window on the first host: prober.py (1 ms connect loop inside the host) during the
     flip_binary role (C -> Go) and the rollback role (Go -> C, without and with 20 held clients),
     next to floor.py (the same binaries stopped and started by hand) — BENCH_REPEATS rounds; in the
     same rounds the bridge handover (mtproxy_cutover_handover=bridge): 2 flips and 2 rollbacks a
     round, one of each with 20 held clients, under the same prober;
  2. fleet scale (fleet_scale.py): cutover.yml, rollback.yml and their Ansible floors on each size
     of BENCH_SIZES with short fixed windows: wall time, controller CPU per host (a cgroup of their
     own), task executions and connection round trips per host (callback_plugins/bench_counts.py);
  3. judge cost (judge_cost.py).
Prints a table and writes artifacts/bench/results.json. The fleet is removed on exit.

Environment: BENCH_SIZES=1,5,10,20 BENCH_REPEATS=7 BENCH_WAIT_EXIT_REPEATS=2 BENCH_PREFIX=bench
BENCH_FORKS=25 BENCH_SKIP=flip,bridge,fleet,judge (any of them) BENCH_KEEP=1 (leave the hosts),
BENCH_FLEET_REPEATS=2 (runs at the largest size), BENCH_VARIANTS=untuned (other Ansible settings at the
largest size: untuned, forks5, no_pipelining, free; BENCH_UNTUNED=0 drops the default one),
BENCH_CLIENT_RATE=4 (test-client connections/s on every host; the fleet runs judge their windows
with the SLO's minimum counts lowered to match), MOLECULE_HOST_IMAGE (else
tests/hosts/build-image.sh is run).
"""
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HOSTS_DIR = os.path.join(REPO, 'tests', 'hosts')
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

# Imported for its side effect: the checkout becomes importable as ansible_collections.mtproxy.cutover.
import conftest  # noqa: E402,F401 pylint: disable=unused-import
import fleet_scale  # noqa: E402
import judge_cost  # noqa: E402
from ansible_collections.mtproxy.cutover.plugins.module_utils._proxy.argv import client_probe_hosts, parse_argv  # noqa: E402

OUT_DIR = os.path.join(REPO, 'artifacts', 'bench')
MANIFEST = '/var/lib/mtproxy-cutover/MTProxy/manifest.json'
HOST_DIR = '/opt/mtproxy-bench'
CLIENT = '/opt/mtproxy-testclient/mtproxy_testclient.py'
CLIENT_SECRET = '/opt/mtproxy-testclient/client-secret'
CLIENT_PORT = 443
HELD_CLIENTS = 20
WINDOWS = {'canary': 2, 'wave': 2, 'baseline': 2, 'prewarm': 2, 'interval': 1}
# What a 2 s window at BENCH_CLIENT_RATE connections/s can show; the defaults (50) need minutes of
# traffic. The fleet's own traffic is kept low: 20 hosts x 20 connections/s of Python clients,
# stand-ins and backends alone keep both cores of a 2-vCPU machine busy, and that would be
# measured instead of the playbooks.
BENCH_THRESHOLDS = {'min_packets': 5, 'min_connections': 5}
# How long a bridge may keep its clients after a bench flip (the prober's connections close at once).
BRIDGE_DRAIN_S = 5


def env_list(name, default):
    return [item.strip() for item in os.environ.get(name, default).split(',') if item.strip()]


def log(msg):
    sys.stderr.write('[bench %5.0fs] %s\n' % (time.monotonic() - STARTED, msg))
    sys.stderr.flush()


STARTED = time.monotonic()


class Bench:
    def __init__(self):
        self.prefix = os.environ.get('BENCH_PREFIX', 'bench')
        self.sizes = sorted(int(s) for s in env_list('BENCH_SIZES', '1,5,10,20'))
        self.repeats = int(os.environ.get('BENCH_REPEATS', '7'))
        self.wait_exit_repeats = int(os.environ.get('BENCH_WAIT_EXIT_REPEATS', '2'))
        self.forks = int(os.environ.get('BENCH_FORKS', '25'))
        self.client_rate = float(os.environ.get('BENCH_CLIENT_RATE', '4'))
        self.skip = set(env_list('BENCH_SKIP', ''))
        self.workdir = OUT_DIR
        self.stage_dir = os.path.join(self.workdir, 'go-release')
        self.venv_bin = os.path.dirname(sys.executable)
        self.env = dict(os.environ)
        self.env['PATH'] = self.venv_bin + os.pathsep + self.env.get('PATH', '')
        self.env.setdefault('ANSIBLE_COLLECTIONS_PATH', os.path.join(REPO, '.venv', 'collections'))
        self.env.update(ANSIBLE_PIPELINING='1', ANSIBLE_FORKS=str(self.forks), ANSIBLE_HOST_KEY_CHECKING='0',
                        ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default', ANSIBLE_NOCOLOR='1')
        self.collection = self.measured_collection()

    def measured_collection(self):
        """The checkout whose playbooks and collection are measured: BENCH_COLLECTION, else this one.

        Another checkout (e.g. `git archive` of an earlier main, to measure "before" with this bench)
        becomes mtproxy.cutover in a collections directory of the bench's own, beside the other
        collections of ANSIBLE_COLLECTIONS_PATH.
        """
        path = os.path.abspath(os.environ.get('BENCH_COLLECTION') or REPO)
        if path == REPO:
            return path
        if not os.path.isfile(os.path.join(path, 'galaxy.yml')):
            raise RuntimeError('BENCH_COLLECTION=%s is not a checkout of the collection (no galaxy.yml)' % path)
        root = os.path.join(self.workdir, 'collections', 'ansible_collections')
        os.makedirs(os.path.join(root, 'mtproxy'), exist_ok=True)
        links = {os.path.join(root, 'mtproxy', 'cutover'): path}
        for source in self.env['ANSIBLE_COLLECTIONS_PATH'].split(os.pathsep):
            namespaces = os.path.join(source, 'ansible_collections')
            for namespace in sorted(os.listdir(namespaces)) if os.path.isdir(namespaces) else []:
                if namespace != 'mtproxy':
                    links.setdefault(os.path.join(root, namespace), os.path.join(namespaces, namespace))
        for link, target in links.items():
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(target, link)
        self.env['ANSIBLE_COLLECTIONS_PATH'] = os.path.dirname(root)
        return path

    # ---- plumbing
    def sh(self, argv, timeout=900, check=True, env=None, quiet=True):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or self.env, check=False)
        if check and proc.returncode != 0:
            tail = '\n'.join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError('%s failed (%d):\n%s' % (' '.join(argv[:3]), proc.returncode, tail))
        return proc

    def dexec(self, host, *argv, **kw):
        return self.sh(['docker', 'exec', host] + list(argv), timeout=kw.pop('timeout', 120), **kw)

    def inventory(self, count, canaries=1):
        path = os.path.join(self.workdir, 'inventory-%d.yml' % count)
        self.sh([sys.executable, os.path.join(HOSTS_DIR, 'fleet.py'), 'list', '--name-prefix', self.prefix])
        names = ['%s-h%d' % (self.prefix, i) for i in range(1, count + 1)]
        lines = ['all:', '  children:', '    mtproxy:', '      vars:',
                 '        ansible_connection: community.docker.docker',
                 '        ansible_python_interpreter: /usr/bin/python3']
        if self.knows_setting('mtproxy_cutover_privilege_drop'):
            # The hosts' C runs with -u nobody, the Go ignores -u: systemd keeps the drop (its default refuses).
            lines.append('        mtproxy_cutover_privilege_drop: service')
        lines.append('      hosts:')
        lines += ['        %s: {}' % n for n in names]
        lines += ['      children:', '        mtproxy_canary:', '          hosts:']
        lines += ['            %s: {}' % n for n in names[:canaries]]
        with open(path, 'w') as handle:
            handle.write('\n'.join(lines) + '\n')
        return path

    def knows_setting(self, name):
        """Whether the collection measured (BENCH_COLLECTION: perhaps an older one) has the setting."""
        with open(os.path.join(self.collection, 'roles', 'preflight', 'meta', 'argument_specs.yml')) as handle:
            return '%s:' % name in handle.read()

    def playbook(self, inventory, playbook, *extra, **kw):
        argv = ['ansible-playbook', '-i', inventory, playbook] + list(extra)
        t0 = time.monotonic()
        proc = self.sh(argv, check=kw.get('check', True), env=kw.get('env'))
        return time.monotonic() - t0, proc

    # ---- fleet
    def up(self):
        image = os.environ.get('MOLECULE_HOST_IMAGE') or self.sh([os.path.join(HOSTS_DIR, 'build-image.sh')]).stdout.strip()
        count = max(self.sizes) if 'fleet' not in self.skip else 1
        self.down(quiet=True)
        log('booting %d hosts (%s)' % (count, image))
        self.sh([sys.executable, os.path.join(HOSTS_DIR, 'fleet.py'), 'up', '--name-prefix', self.prefix,
                 '--count', str(count), '--canaries', '1', '--image', image, '--cap-add', 'NET_ADMIN',
                 '--inventory', os.path.join(self.workdir, 'inventory-all.yml')], timeout=600)
        self.all_hosts = count
        log('preparing them as C hosts')
        self.playbook(os.path.join(self.workdir, 'inventory-all.yml'), os.path.join(HOSTS_DIR, 'prepare_proxy_host.yml'),
                      '-e', 'mtproxy_test_stage_dir=%s' % self.stage_dir,
                      '-e', json.dumps({'mtproxy_test_client_args': [
                          '--host', '127.0.0.1', '--port', str(CLIENT_PORT), '--mode', 'mixed',
                          '--rate', str(self.client_rate), '--junk-share', '0.1', '--count', '10000',
                          '--max-seconds', '600']}))
        with open(os.path.join(self.stage_dir, 'go-binary-vars.yml')) as handle:
            text = handle.read()
        self.go_sha = text.split('mtproxy_cutover_go_sha256:')[1].strip().strip('"')
        self.image = image

    def down(self, quiet=False):
        self.sh([sys.executable, os.path.join(HOSTS_DIR, 'fleet.py'), 'down', '--name-prefix', self.prefix],
                check=False, timeout=600)

    # ---- flip window
    def host_go_binary(self):
        return '/opt/MTProxy/releases/go-%s/mtproto-proxy-go' % self.go_sha[:12]

    def client_host(self, host):
        """Where the frozen proxy binds its client port (its --address): what the flip's probes use too."""
        manifest = json.loads(self.dexec(host, 'cat', MANIFEST).stdout)
        return client_probe_hosts(parse_argv(manifest['argv']))[0]

    def start_prober(self, host):
        self.dexec(host, 'rm', '-f', '/tmp/bench-prober.stop', '/tmp/bench-prober.ready')
        proc = subprocess.Popen(['docker', 'exec', host, 'python3', HOST_DIR + '/prober.py', '--port', str(CLIENT_PORT),
                                 '--host', self.client_host(host),
                                 '--max-seconds', '120', '--stop-file', '/tmp/bench-prober.stop',
                                 '--ready-file', '/tmp/bench-prober.ready'], stdout=subprocess.PIPE, text=True)
        for _attempt in range(100):
            if self.dexec(host, 'test', '-f', '/tmp/bench-prober.ready', check=False).returncode == 0:
                break
            time.sleep(0.1)
        time.sleep(0.2)
        return proc

    def stop_prober(self, host, proc):
        time.sleep(0.2)
        self.dexec(host, 'touch', '/tmp/bench-prober.stop')
        out, _err = proc.communicate(timeout=60)
        return json.loads(out)

    def last_switch(self, host):
        state = json.loads(self.dexec(host, 'cat', '/var/lib/mtproxy-cutover/MTProxy/state.json').stdout)
        return state['history'][-1]

    def hold_clients(self, host):
        self.dexec(host, 'systemd-run', '--unit', 'bench-held', '--collect', '/usr/bin/python3', CLIENT, '--port',
                   str(CLIENT_PORT), '--secret-file', CLIENT_SECRET, '--mode', 'held', '--count', str(HELD_CLIENTS), '--rate', '0',
                   '--hold-seconds', '30', '--max-seconds', '40')
        time.sleep(1.0)

    def release_clients(self, host):
        self.dexec(host, 'systemctl', 'stop', 'bench-held', check=False)

    def measured_switch(self, host, inventory, action, handover='listeners_closed', held=False, mode='restart'):
        if held:
            self.hold_clients(host)
        prober = self.start_prober(host)
        try:
            seconds, _proc = self.playbook(inventory, os.path.join(HERE, 'flip.yml'), '-e', 'bench_action=%s' % action,
                                           '-e', 'bench_go_binary=%s' % self.host_go_binary(),
                                           '-e', 'bench_handover=%s' % handover,
                                           '-e', 'mtproxy_cutover_handover=%s' % mode,
                                           '-e', 'mtproxy_cutover_bridge_drain_s=%d' % BRIDGE_DRAIN_S)
        finally:
            probe = self.stop_prober(host, prober)
            if held:
                self.release_clients(host)
        switch = self.last_switch(host)
        probe['module_timings'] = switch.get('timings') or {}
        probe['bridge'] = switch.get('bridge')
        probe['mode'] = mode
        probe['held'] = HELD_CLIENTS if held else 0
        probe['playbook_s'] = round(seconds, 2)
        return probe

    def floor(self, host, src, dst, handover='wait_exit', held=0):
        out = self.dexec(host, 'python3', HOST_DIR + '/floor.py', '--from-binary', src, '--to-binary', dst,
                         '--handover', handover, '--held', str(held), timeout=180).stdout
        return json.loads(out)

    def flip_bench(self):
        host = '%s-h1' % self.prefix
        inventory = self.inventory(1)
        self.dexec(host, 'mkdir', '-p', HOST_DIR)
        for name in ('prober.py', 'floor.py'):
            self.sh(['docker', 'cp', os.path.join(HERE, name), '%s:%s/%s' % (host, HOST_DIR, name)])
        log('flip: freeze and stage on %s' % host)
        self.playbook(inventory, os.path.join(self.collection, 'playbooks', 'cutover.yml'),
                      '-e', '@%s/go-binary-vars.yml' % self.stage_dir, '-e', 'mtproxy_cutover_stop_after=stage',
                      '-e', 'mtproxy_cutover_artifacts_dir=%s/runs' % self.workdir,
                      '-e', 'mtproxy_cutover_baseline_window_s=2', '-e', 'mtproxy_cutover_sample_interval_s=1',
                      '-e', 'mtproxy_cutover_prewarm_window_s=1')
        c_bin, go_bin = '/opt/MTProxy/mtproto-proxy', self.host_go_binary()
        # The other hosts' test clients would compete for the CPU with the flips measured here.
        self.test_clients('stop')
        try:
            return self.flip_rounds(host, inventory, c_bin, go_bin)
        finally:
            self.test_clients('start')

    def test_clients(self, action):
        names = ['%s-h%d' % (self.prefix, i) for i in range(2, self.all_hosts + 1)]
        procs = [subprocess.Popen(['docker', 'exec', n, 'systemctl', action, 'mtproxy-testclient.service']) for n in names]
        for proc in procs:
            proc.wait(timeout=120)

    def flip_rounds(self, host, inventory, c_bin, go_bin):
        runs = {k: [] for k in ('floor', 'flip', 'rollback', 'rollback_held', 'floor_rollback', 'floor_held',
                                'rollback_held_wait_exit', 'bridge_flip', 'bridge_flip_held', 'bridge_rollback',
                                'bridge_rollback_held')}
        for rnd in range(self.repeats):
            log('flip: round %d/%d' % (rnd + 1, self.repeats))
            runs['floor'].append(self.floor(host, c_bin, go_bin))
            runs['flip'].append(self.measured_switch(host, inventory, 'flip'))
            runs['rollback_held'].append(self.measured_switch(host, inventory, 'rollback', held=True))
            runs['flip'].append(self.measured_switch(host, inventory, 'flip'))
            runs['rollback'].append(self.measured_switch(host, inventory, 'rollback'))
            runs['floor_rollback'].append(self.floor(host, go_bin, c_bin))
            runs['floor_held'].append(self.floor(host, go_bin, c_bin, 'listeners_closed', HELD_CLIENTS))
            if 'bridge' not in self.skip:
                # The host is on C here: the same flips and rollbacks with the bridge handover.
                runs['bridge_flip'].append(self.measured_switch(host, inventory, 'flip', mode='bridge'))
                runs['bridge_rollback_held'].append(
                    self.measured_switch(host, inventory, 'rollback', held=True, mode='bridge'))
                runs['bridge_flip_held'].append(self.measured_switch(host, inventory, 'flip', held=True, mode='bridge'))
                runs['bridge_rollback'].append(self.measured_switch(host, inventory, 'rollback', mode='bridge'))
            if rnd < self.wait_exit_repeats:
                self.measured_switch(host, inventory, 'flip')
                runs['rollback_held_wait_exit'].append(
                    self.measured_switch(host, inventory, 'rollback', handover='wait_exit', held=True))
        with open(os.path.join(self.workdir, 'flip-runs.json'), 'w') as handle:
            json.dump(runs, handle, indent=1, sort_keys=True)

        def med(key, field='window_ms'):
            values = [r[field] for r in runs[key] if r.get(field) is not None]
            return round(statistics.median(values), 1) if values else None

        def med_timing(key, field):
            values = [r['module_timings'][field] for r in runs[key]
                      if (r.get('module_timings') or {}).get(field) is not None]
            return round(statistics.median(values), 1) if values else None

        def spread(key, field='window_ms'):
            values = [r[field] for r in runs[key]]
            return [round(min(values), 1), round(max(values), 1)] if values else None

        result = {
            'flip_window_ms': med('flip'), 'floor_window_ms': med('floor'),
            'rollback_window_ms': med('rollback'), 'rollback_held_window_ms': med('rollback_held'),
            'floor_rollback_window_ms': med('floor_rollback'), 'floor_held_window_ms': med('floor_held'),
            'rollback_held_wait_exit_window_ms': med('rollback_held_wait_exit'),
            'flip_refused': med('flip', 'refused'), 'floor_refused': med('floor', 'refused'),
            'rollback_refused': med('rollback', 'refused'), 'rollback_held_refused': med('rollback_held', 'refused'),
            # systemd's part of each window: from the old process gone to its fork of the new one.
            'flip_spawn_ms': med_timing('flip', 'spawn_ms'),
            'rollback_held_spawn_ms': med_timing('rollback_held', 'spawn_ms'),
            'ranges_ms': {k: spread(k) for k in runs if runs[k]},
            'samples': {k: len(v) for k, v in runs.items()},
        }
        result['flip_ratio'] = round(result['flip_window_ms'] / result['floor_window_ms'], 2) \
            if result['floor_window_ms'] else None
        result['rollback_ratio'] = round(result['rollback_window_ms'] / result['floor_rollback_window_ms'], 2) \
            if result['floor_rollback_window_ms'] else None
        for name, keys in (('bridge_flip', ('bridge_flip', 'bridge_flip_held')),
                           ('bridge_rollback', ('bridge_rollback', 'bridge_rollback_held'))):
            if any(runs[k] for k in keys):
                result[name] = bridge_summary([r for k in keys for r in runs[k]])
        result['refused_per_switch'] = {k: [r['refused'] for r in runs[k]] for k in runs if runs[k]}
        return result

    # ---- fleet scale (fleet_scale.py)
    def host_names(self, count):
        return ['%s-h%d' % (self.prefix, i) for i in range(1, count + 1)]

    def reset_hosts(self, count):
        names = self.host_names(count)
        procs = [subprocess.Popen(['docker', 'exec', n, 'rm', '-rf', '/var/lib/mtproxy-cutover', '/opt/MTProxy/releases'])
                 for n in names]
        for proc in procs:
            proc.wait(timeout=120)

    # ---- all
    def run(self):
        os.makedirs(self.workdir, exist_ok=True)
        results = {'started_at': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
                   'machine': machine(), 'binaries': binaries(), 'repeats': self.repeats,
                   'collection': collection_source(self.collection),
                   'settings': {'ANSIBLE_PIPELINING': 1, 'ANSIBLE_FORKS': self.forks, 'windows_s': WINDOWS,
                                'client_rate': self.client_rate, 'thresholds': BENCH_THRESHOLDS}}
        if 'judge' not in self.skip:
            log('judge cost')
            results.update(judge_cost.run())
        if not {'flip', 'fleet'} <= self.skip:
            self.up()
            if 'flip' not in self.skip:
                results.update(self.flip_bench())
            if 'fleet' not in self.skip:
                results['fleet'] = fleet_scale.FleetScale(self, WINDOWS, BENCH_THRESHOLDS, log).run(self.sizes, self.env)
        results['elapsed_s'] = round(time.monotonic() - STARTED, 1)
        with open(os.path.join(self.workdir, 'results.json'), 'w') as handle:
            json.dump(results, handle, indent=2, sort_keys=True)
            handle.write('\n')
        print(table(results))
        if results.get('fleet'):
            print()
            print(fleet_scale.table(results['fleet']))
        print('results: %s' % os.path.relpath(os.path.join(self.workdir, 'results.json'), REPO))


def bridge_summary(runs):
    """Bridge-mode figures of a set of switches: the prober's and the kernel's refusals, what the bridge did."""
    def values(field, source=None):
        return [(r.get('bridge') or {}).get(field) if source == 'bridge' else r.get(field) for r in runs]

    def median(field, source=None):
        found = [v for v in values(field, source) if v is not None]
        return round(statistics.median(found), 1) if found else None

    refused = values('refused')
    kernel = [v for v in values('refused', 'bridge') if v is not None]
    return {'switches': len(runs), 'held_clients': sorted(set(r.get('held', 0) for r in runs)),
            'refused_total': sum(refused), 'refused_max': max(refused), 'window_ms_max': max(values('window_ms')),
            'kernel_refused_total': sum(kernel) if len(kernel) == len(runs) else None,
            'attempts_median': median('attempts'), 'served_median': median('served', 'bridge'),
            'dropped_median': median('dropped', 'bridge'), 'dropped_max': max(v or 0 for v in values('dropped', 'bridge')),
            'diverted_ms_median': median('diverted_ms', 'bridge'), 'drain_ms_median': median('drain_ms', 'bridge'),
            'bridge_ready_ms_median': median('ready_ms', 'bridge'), 'playbook_s_median': median('playbook_s'),
            'not_drained': sum(1 for v in values('drained', 'bridge') if v is False)}


def machine():
    info = {'cpus': os.cpu_count(), 'kernel': platform.release(), 'python': platform.python_version()}
    try:
        with open('/etc/os-release') as handle:
            for line in handle:
                if line.startswith('PRETTY_NAME='):
                    info['os'] = line.split('=', 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        info['loadavg_at_start'] = [round(x, 1) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def collection_source(path):
    """Which code was measured: the commit of a git checkout (+ 'dirty'), else the directory's name."""
    proc = subprocess.run(['git', '-C', path, 'status', '--porcelain', '--untracked-files=no'], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return {'path': os.path.basename(path)}
    commit = subprocess.run(['git', '-C', path, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {'path': os.path.basename(path), 'commit': commit, 'dirty': bool(proc.stdout.strip())}


def binaries():
    return {'c': 'real (%s)' % os.path.basename(os.environ['MTPROXY_C_BINARY']) if os.environ.get('MTPROXY_C_BINARY')
            else 'stand-in', 'go': 'real (%s)' % os.path.basename(os.environ['MTPROXY_GO_BINARY'])
            if os.environ.get('MTPROXY_GO_BINARY') else 'stand-in'}


def table(r):
    rows = [('figure', 'value', 'target')]

    def add(name, key, target='', unit=''):
        if key in r and r[key] is not None:
            rows.append((name, '%s%s' % (r[key], unit), target))
    add('flip C->Go window (median)', 'flip_window_ms', '', ' ms')
    add('  of which systemd forking Go', 'flip_spawn_ms', '', ' ms')
    add('floor C->Go by hand (median)', 'floor_window_ms', '', ' ms')
    add('flip_ratio', 'flip_ratio', '<= 1.2')
    add('rollback Go->C window', 'rollback_window_ms', '', ' ms')
    add('floor Go->C by hand', 'floor_rollback_window_ms', '', ' ms')
    add('rollback Go->C, 20 held clients', 'rollback_held_window_ms', '<= 60 ms', ' ms')
    add('  of which systemd forking C', 'rollback_held_spawn_ms', '', ' ms')
    add('  same, handover=wait_exit', 'rollback_held_wait_exit_window_ms', '', ' ms')
    add('floor Go->C held, by hand', 'floor_held_window_ms', '', ' ms')
    add('refused connects, flip C->Go (median)', 'flip_refused')
    add('refused connects, floor C->Go (median)', 'floor_refused')
    for name, label in (('bridge_flip', 'C->Go'), ('bridge_rollback', 'Go->C')):
        b = r.get(name)
        if b:
            rows.append(('bridge %s: %d switches, refused total / max' % (label, b['switches']),
                         '%s / %s (kernel: %s)' % (b['refused_total'], b['refused_max'], b['kernel_refused_total']),
                         '0'))
            rows.append(('  served by bridge / dropped by old (median)',
                         '%s / %s' % (b['served_median'], b['dropped_median']), ''))
            rows.append(('  redirect in place / drain (median)',
                         '%s ms / %s ms' % (b['diverted_ms_median'], b['drain_ms_median']), ''))
    add('judge per body, C', 'judge_us_c', '', ' us')
    add('judge per body, Go', 'judge_us_go', '', ' us')
    width = [max(len(str(row[i])) for row in rows) for i in range(3)]
    return '\n'.join('  '.join(str(cell).ljust(width[i]) for i, cell in enumerate(row)) for row in rows)


def main():
    bench = Bench()

    def on_signal(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.run()
        return 0
    except (RuntimeError, KeyboardInterrupt, subprocess.TimeoutExpired) as exc:
        sys.stderr.write('bench failed: %s\n' % exc)
        return 1
    finally:
        if os.environ.get('BENCH_KEEP') == '1':
            log('hosts kept: python3 tests/hosts/fleet.py down --name-prefix %s' % bench.prefix)
        else:
            bench.down()


if __name__ == '__main__':
    sys.exit(main())
