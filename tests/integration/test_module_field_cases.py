"""Field cases on a systemd host: vendor drop-in, -6, --address (tests/fixtures/field-cases).

Each case installs the unit as operators write it (the stand-in proxy as the C binary at
/opt/MTProxy/mtproto-proxy and as the Go binary under releases/), then runs mtproxy_freeze,
mtproxy_switch and mtproxy_prewarm through ansible-core. Every case ends in a cutover and a
rollback that work, or in a refusal that left the host as it was. Tests run in file order
against one container.
"""
import json
import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIELD = os.path.join(REPO, 'tests', 'fixtures', 'field-cases')
STANDIN_DIR = os.path.join(REPO, 'tests', 'standin')
BUILD_IMAGE = os.path.join(REPO, 'tests', 'hosts', 'build-image.sh')
VENV_BIN = os.path.join(REPO, '.venv', 'bin')

C_BIN = '/opt/MTProxy/mtproto-proxy'
GO_BIN = '/opt/MTProxy/releases/go-test/mtproto-proxy-go'
UNIT_DIR = '/etc/systemd/system'
DROPIN = UNIT_DIR + '/MTProxy.service.d/99-mtproxy-cutover.conf'
STATE = '/var/lib/mtproxy-cutover/MTProxy'
# Made-up secrets of the field cases: none may appear in a result.
SECRETS = ('00112233445566778899aabbccddeeff', '0123456789abcdef0123456789abcdef')
CLIENT_SECRET = 'fedcba9876543210fedcba9876543210'
BACKEND = 'proxy_for 1 127.0.0.1:18881;\nproxy_for -1 127.0.0.1:18881;\ndefault 1;\n'


def field(case, name):
    with open(os.path.join(FIELD, case, name)) as handle:
        return handle.read()


def _docker_usable():
    if not shutil.which('docker'):
        return 'docker CLI not installed'
    try:
        probe = subprocess.run(['docker', 'info'], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 'docker info failed: %s' % exc
    if probe.returncode != 0:
        return 'docker engine not reachable: %s' % probe.stderr.decode(errors='replace').strip()[:200]
    return None


def sh(name, script, check=True, timeout=120):
    proc = subprocess.run(['docker', 'exec', name, 'sh', '-c', script], capture_output=True, timeout=timeout,
                          check=False)
    out = proc.stdout.decode(errors='replace')
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d): %s %s' % (script, proc.returncode, out,
                                                        proc.stderr.decode(errors='replace')))
    return out


def put(name, text, path, mode=0o644):
    with tempfile.NamedTemporaryFile('w', delete=False) as handle:
        handle.write(text)
    try:
        sh(name, 'mkdir -p %s' % os.path.dirname(path))
        subprocess.run(['docker', 'cp', handle.name, '%s:%s' % (name, path)], check=True, capture_output=True)
        sh(name, 'chown root:root %s && chmod %o %s' % (path, mode, path))
    finally:
        os.unlink(handle.name)


def wait_port(name, port, host='127.0.0.1', timeout=15):
    """Bounded: connect until ``host``:``port`` accepts, at most ``timeout`` s."""
    probe = ('import socket,sys,time\nend=time.time()+%d\nwhile time.time()<end:\n'
             '    s=socket.socket()\n    try:\n        s.connect((%r,%d)); sys.exit(0)\n'
             '    except OSError: time.sleep(0.05)\n    finally: s.close()\nsys.exit(1)\n') % (timeout, host, port)
    subprocess.run(['docker', 'exec', name, 'python3', '-c', probe], check=True, timeout=timeout + 10)


class Host(object):
    def __init__(self, name, workdir):
        self.name = name
        self.workdir = workdir
        self.since = '0'
        self.env = dict(os.environ)
        self.env.update(
            ANSIBLE_COLLECTIONS_PATH=os.environ.get('MTPROXY_TEST_COLLECTIONS_PATH',
                                                    os.path.join(REPO, '.venv', 'collections')),
            ANSIBLE_STDOUT_CALLBACK='json', ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_HOST_KEY_CHECKING='0',
            ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'tmp'),
            ANSIBLE_DEPRECATION_WARNINGS='0')

    def sh(self, script, check=True):
        return sh(self.name, script, check)

    def module(self, module, args, check=False):
        play = [{'hosts': 'all', 'gather_facts': False,
                 'vars': {'ansible_python_interpreter': '/usr/bin/python3'},
                 'tasks': [{'name': module, 'mtproxy.cutover.%s' % module: args, 'ignore_errors': True}]}]
        path = os.path.join(self.workdir, 'play-%s.json' % uuid.uuid4().hex[:8])
        with open(path, 'w') as handle:
            json.dump(play, handle)
        cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', '%s,' % self.name, '-c', 'community.docker.docker',
               path] + (['--check'] if check else [])
        proc = subprocess.run(cmd, capture_output=True, env=self.env, timeout=300, check=False)
        out = proc.stdout.decode(errors='replace')
        try:
            result = json.loads(out[out.index('{'):])['plays'][0]['tasks'][0]['hosts'][self.name]
        except (ValueError, KeyError, IndexError):
            raise AssertionError('ansible-playbook gave no result (rc %d): %s %s'
                                 % (proc.returncode, out[-3000:], proc.stderr.decode(errors='replace')[-3000:]))
        for secret in SECRETS:
            assert secret not in json.dumps(result), 'a secret leaked into the result of %s' % module
        return result

    def main_pid(self):
        return int(self.sh('systemctl show -p MainPID --value MTProxy.service').strip())

    def restarts(self):
        return int(self.sh('systemctl show -p NRestarts --value MTProxy.service').strip())

    def cmdline(self, pid=None):
        raw = subprocess.run(['docker', 'exec', self.name, 'cat', '/proc/%d/cmdline' % (pid or self.main_pid())],
                             capture_output=True, check=False).stdout
        return raw.rstrip(b'\0').decode().split('\0')

    def exec_start_path(self):
        out = self.sh('systemctl show -p ExecStart --value MTProxy.service')
        return out.split('path=', 1)[1].split(' ;', 1)[0]

    def exists(self, path):
        return self.sh('test -e %s && echo yes || echo no' % path).strip() == 'yes'

    def journal(self):
        """What the service logged since its case was installed."""
        return self.sh('journalctl --no-pager -o cat -u MTProxy.service --since @%s' % self.since, check=False)

    def install_case(self, unit_text, files=(), client=('127.0.0.1', 443)):
        """A fresh MTProxy.service of this shape, running, with no state and no drop-in left."""
        self.sh('systemctl stop MTProxy.service; systemctl reset-failed MTProxy.service; rm -rf %s.d %s; true'
                % (UNIT_DIR + '/MTProxy.service', STATE), check=False)
        self.since = self.sh('sleep 1; date +%s').strip()
        put(self.name, unit_text, UNIT_DIR + '/MTProxy.service')
        for path, text in files:
            put(self.name, text, path)
        self.sh('systemctl daemon-reload && systemctl start MTProxy.service')
        wait_port(self.name, client[1], client[0])


@pytest.fixture(scope='module')
def host():
    reason = _docker_usable()
    if reason:
        pytest.skip(reason)
    image = os.environ.get('MOLECULE_HOST_IMAGE')
    if not image:
        build = subprocess.run([BUILD_IMAGE], capture_output=True, timeout=900, check=False)
        if build.returncode != 0:
            pytest.skip('test-host image cannot be built: %s' % build.stderr.decode(errors='replace')[-300:])
        image = build.stdout.decode().strip().splitlines()[-1]
    name = 'mtpx-field-%s' % uuid.uuid4().hex[:8]
    workdir = tempfile.mkdtemp(prefix='mtpx-field-')
    try:
        subprocess.run(['docker', 'run', '-d', '--name', name, '--network', 'none', '--cap-add', 'SYS_ADMIN',
                        '--cgroupns=host', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw', '--tmpfs', '/run',
                        '--tmpfs', '/run/lock', '--tmpfs', '/tmp', '--security-opt', 'seccomp=unconfined', image],
                       check=True, capture_output=True, timeout=120)
        sh(name, 'for i in $(seq 1 100); do systemctl is-system-running 2>/dev/null | grep -qE "running|degraded"'
                 ' && exit 0; sleep 0.2; done; exit 1')
        _install(name)
        yield Host(name, workdir)
    finally:
        subprocess.run(['docker', 'rm', '-f', name], capture_output=True, timeout=120, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def _install(name):
    for binary in (C_BIN, GO_BIN):
        for module in ('mtproxy_standin.py', 'mtproxy_wire.py'):
            with open(os.path.join(STANDIN_DIR, module)) as handle:
                text = handle.read()
            target = binary if module == 'mtproxy_standin.py' else os.path.join(os.path.dirname(binary), module)
            put(name, text, target, 0o755 if target == binary else 0o644)
    put(name, BACKEND, '/opt/MTProxy/proxy-multi.conf')
    put(name, 'aes-secret-for-tests-of-the-field-cases\n', '/opt/MTProxy/proxy-secret')
    put(name, CLIENT_SECRET + '\n', '/opt/MTProxy/secret')


# ---------------------------------------------------------------------------------------------
# vendor-dropin: override.conf (systemctl edit) sorts after 99-mtproxy-cutover.conf
# ---------------------------------------------------------------------------------------------

OVERRIDE = UNIT_DIR + '/MTProxy.service.d/override.conf'


def test_vendor_dropin_is_refused_and_left_untouched(host):
    host.install_case(field('vendor-dropin', 'MTProxy.service'), [
        (OVERRIDE, field('vendor-dropin', 'MTProxy.service.d/override.conf')),
        ('/etc/default/mtproxy', field('vendor-dropin', 'default-mtproxy'))])
    pid = host.main_pid()
    frozen = host.module('mtproxy_freeze', {})
    assert frozen.get('failed') and frozen['refused'] == 'dropin_overridden', frozen.get('msg')
    assert '%s sets ExecStart' % OVERRIDE in frozen['msg'] and 'Way forward: rename it' in frozen['msg']
    assert not host.exists(STATE + '/manifest.json')

    # A manifest the flip could find (frozen for method=symlink): the drop-in flip still refuses,
    # before anything is written, in check mode and for real.
    frozen = host.module('mtproxy_freeze', {'method': 'symlink', 'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    for check in (True, False):
        flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN}, check=check)
        assert flip.get('failed') and flip['refused'] == 'dropin_overridden' and flip['changed'] is False, flip
        assert OVERRIDE in flip['msg']
    assert host.main_pid() == pid and not host.exists(DROPIN) and not host.exists(STATE + '/state.json')
    assert host.exec_start_path() == C_BIN


def test_vendor_dropin_renamed_as_the_refusal_says_cuts_over_and_back(host):
    renamed = OVERRIDE.replace('override.conf', '50-override.conf')
    host.sh('mv %s %s && systemctl daemon-reload && rm -rf %s' % (OVERRIDE, renamed, STATE))
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['status'] == 'frozen' and frozen['flavor'] == 'c'
    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['argv_matches'] and flip['stats_flavor'] == 'go' and host.exec_start_path() == GO_BIN
    assert host.cmdline() == [GO_BIN] + live[1:]
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] == 'c' and host.cmdline() == live
    assert json.loads(host.sh('cat %s/state.json' % STATE))['current'] == 'c'


# ---------------------------------------------------------------------------------------------
# ipv6-flag: C with -6 aborts on any connection to its stats port
# ---------------------------------------------------------------------------------------------

ASSERTION = "Assertion `peer_addrlen == sizeof (struct sockaddr_in6)' failed"


def test_ipv6_host_is_refused_without_touching_the_stats_port(host):
    host.install_case(field('ipv6-flag', 'MTProxy.service'))
    pid = host.main_pid()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert frozen.get('failed') and frozen['refused'] == 'ipv6_stats', frozen.get('msg')
    assert 'mtproxy_cutover_allow_no_baseline=true' in frozen['msg']
    assert host.main_pid() == pid and host.restarts() == 0 and ASSERTION not in host.journal()
    assert not host.exists(STATE + '/manifest.json')


def test_ipv6_host_cuts_over_and_back_without_a_c_baseline(host):
    pid = host.main_pid()
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'allow_no_baseline': True, 'baseline_samples': 2,
                                            'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['stats_readable'] is False and frozen['flavor'] is None and frozen['baseline'] == {}
    assert host.main_pid() == pid
    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['argv_matches'] and flip['stats_flavor'] == 'go' and flip['timings']['stats_ms'] is None
    back = host.module('mtproxy_switch', {'target': 'c'})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] is None and '-6' in back['stats_skipped']
    c_pid = host.main_pid()
    again = host.module('mtproxy_switch', {'target': 'c'})
    assert not again.get('failed') and again['changed'] is False, again.get('msg')
    assert host.main_pid() == c_pid and host.cmdline() == live
    assert host.restarts() == 0 and ASSERTION not in host.journal()


def test_the_stand_in_c_with_ipv6_dies_on_a_stats_connection_like_the_real_one(host):
    pid = host.main_pid()
    host.sh('python3 -c "import socket; socket.create_connection((\'127.0.0.1\', 8888), 2).close()"')
    for _attempt in range(50):
        if ASSERTION in host.journal():
            break
        host.sh('sleep 0.1')
    assert ASSERTION in host.journal()
    assert host.main_pid() != pid or host.restarts() == 1
    assert 'status=1/FAILURE' in host.journal()


# ---------------------------------------------------------------------------------------------
# address-flag: the client port is on --address only
# ---------------------------------------------------------------------------------------------

def test_address_host_is_probed_on_its_address_everywhere(host):
    host.install_case(field('address-flag', 'MTProxy.service'), client=('127.0.0.2', 443))
    live = host.cmdline()
    frozen = host.module('mtproxy_freeze', {'baseline_samples': 2, 'baseline_interval': 0.2})
    assert not frozen.get('failed'), frozen.get('msg')
    assert frozen['client_hosts'] == ['127.0.0.2'] and frozen['flavor'] == 'c'

    started = host.module('mtproxy_prewarm', {'binary': GO_BIN, 'ready_timeout': 10})
    assert not started.get('failed'), started.get('msg')
    assert started['client_hosts'] == ['127.0.0.2'] and isinstance(started['ready_ms'], float)
    stopped = host.module('mtproxy_prewarm', {'state': 'stopped'})
    assert not stopped.get('failed') and stopped['exit_code'] == 0, stopped.get('msg')

    flip = host.module('mtproxy_switch', {'target': 'go', 'binary': GO_BIN, 'listen_timeout': 10})
    assert not flip.get('failed'), flip.get('msg')
    assert flip['client_hosts'] == ['127.0.0.2'] and flip['timings']['start_ms'] is not None
    assert flip['stats_flavor'] == 'go' and host.cmdline() == [GO_BIN] + live[1:]
    back = host.module('mtproxy_switch', {'target': 'c', 'listen_timeout': 10})
    assert not back.get('failed'), back.get('msg')
    assert back['argv_matches'] and back['stats_flavor'] == 'c' and back['timings']['start_ms'] is not None
    assert host.cmdline() == live
