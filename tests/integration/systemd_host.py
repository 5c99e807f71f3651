"""A booted systemd test host (a --network none container) and ansible-core module runs against it.

Shared by the module tests that need a real systemd: boot_host() starts one container of the
test-host image ($MOLECULE_HOST_IMAGE: Debian 12 or 13, tests/hosts/build-image.sh; built when
unset) and removes it afterwards;
install_proxies() puts the C and the Go binary at their paths: the real builds that
$MTPROXY_C_BINARY / $MTPROXY_GO_BINARY name (as the scenarios take them), else the stand-in with
the mtproxy_wire module it imports; standin_only() marks a test whose fault only the stand-in has, and
c_without_secret_file() says when the real C lacks --mtproto-secret-file (the upstream C);
ModuleHost runs one collection module on it through community.docker.docker and returns the result.
Every wait is bounded.
"""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STANDIN_DIR = os.path.join(REPO, 'tests', 'standin')
BUILD_IMAGE = os.path.join(REPO, 'tests', 'hosts', 'build-image.sh')
# ansible-playbook of the ansible-core that runs these tests (make integration-cores runs them with
# the oldest and the newest supported core, each from its own venv).
VENV_BIN = os.path.dirname(sys.executable)
BOOT_WAIT = ('for i in $(seq 1 100); do systemctl is-system-running 2>/dev/null | grep -qE "running|degraded"'
             ' && exit 0; sleep 0.2; done; exit 1')


def docker_unusable():
    """Why no test host can be booted here, or None."""
    if not shutil.which('docker'):
        return 'docker CLI not installed'
    try:
        probe = subprocess.run(['docker', 'info'], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 'docker info failed: %s' % exc
    if probe.returncode != 0:
        return 'docker engine not reachable: %s' % probe.stderr.decode(errors='replace').strip()[:200]
    return None


def host_image():
    image = os.environ.get('MOLECULE_HOST_IMAGE')
    if image:
        return image
    build = subprocess.run([BUILD_IMAGE], capture_output=True, timeout=900, check=False)
    if build.returncode != 0:
        pytest.skip('test-host image cannot be built: %s' % build.stderr.decode(errors='replace')[-300:])
    return build.stdout.decode().strip().splitlines()[-1]


@contextlib.contextmanager
def boot_host(prefix, capabilities=(), sysctls=()):
    """(container name, a work directory) of a freshly booted host; skips when Docker is unusable.

    ``capabilities``: more than SYS_ADMIN (systemd's need), e.g. NET_ADMIN for the bridge handover's redirect.
    ``sysctls``: ``name=value`` of the host's network namespace (its /proc/sys is read-only once it runs).
    """
    reason = docker_unusable()
    if reason:
        pytest.skip(reason)
    image = host_image()
    name = '%s-%s' % (prefix, uuid.uuid4().hex[:8])
    workdir = tempfile.mkdtemp(prefix=prefix + '-')
    try:
        caps = [arg for cap in ('SYS_ADMIN',) + tuple(capabilities) for arg in ('--cap-add', cap)]
        caps += [arg for sysctl in sysctls for arg in ('--sysctl', sysctl)]
        subprocess.run(['docker', 'run', '-d', '--name', name, '--network', 'none'] + caps
                       + ['--cgroupns=host', '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw', '--tmpfs', '/run',
                          '--tmpfs', '/run/lock', '--tmpfs', '/tmp', '--security-opt', 'seccomp=unconfined', image],
                       check=True, capture_output=True, timeout=120)
        sh(name, BOOT_WAIT)
        yield name, workdir
    finally:
        subprocess.run(['docker', 'rm', '-f', name], capture_output=True, timeout=120, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


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


VARIABLES = {'c': 'MTPROXY_C_BINARY', 'go': 'MTPROXY_GO_BINARY'}


def real_build(flavour):
    """The controller path of the real ``c`` or ``go`` build these tests run on, or None (the stand-in).

    A variable that names no file fails the test at once, naming the variable.
    """
    path = os.environ.get(VARIABLES[flavour]) or None
    if path and not os.path.isfile(path):
        pytest.fail('%s=%s is not a file: name a real %s build, or unset it for the stand-in'
                    % (VARIABLES[flavour], path, flavour.upper() if flavour == 'c' else 'Go'), pytrace=False)
    return path


def c_without_secret_file():
    """Why the C these tests run on cannot take --mtproto-secret-file, or None.

    The upstream C (TelegramMessenger/MTProxy, mtproxy-0.01) has no such option and exits at once with
    usage when given it; the C of skrashevich/MTProxy's golang branch (mtproxy-0.02) and the stand-in have
    it. Read from the usage text the binary prints when run without arguments (on the controller).
    """
    path = os.environ.get(VARIABLES['c']) or None
    if not path or not os.path.isfile(path):
        return None
    try:
        usage = subprocess.run([path], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 'MTPROXY_C_BINARY=%s could not be run here to read its options: %s' % (path, exc)
    if b'mtproto-secret-file' in usage.stdout + usage.stderr:
        return None
    return ('MTPROXY_C_BINARY=%s has no --mtproto-secret-file (the upstream C, mtproxy-0.01), which this '
            'host shape runs' % path)


def cap_connections(text):
    """``text`` (a unit or a script) with ``-c 512`` before its ``-u`` when the C is a real build.

    Here the open-files hard limit is 20000 and nothing may raise it; the real C raises its own to
    max-conn + 16 (65,552 without -c) and ends with "fatal: cannot raise open file limit" when it
    cannot, while the real Go port and the stand-in run on. tests/hosts/prepare_proxy_host.yml gives
    the scenarios' real C the same flag.
    """
    return text.replace(' -u nobody ', ' -c 512 -u nobody ') if real_build('c') else text


def standin_only(flavour, reason):
    """Skip a test when the ``c`` or ``go`` binary is a real build: it needs a fault only the stand-in has
    (``reason`` says which)."""
    return pytest.mark.skipif(bool(os.environ.get(VARIABLES[flavour])), reason='stand-in only: ' + reason)


def copy_file(name, source, path, mode=0o755):
    sh(name, 'mkdir -p %s' % os.path.dirname(path))
    subprocess.run(['docker', 'cp', '-L', source, '%s:%s' % (name, path)], check=True, capture_output=True)
    sh(name, 'chown root:root %s && chmod %o %s' % (path, mode, path))


def install_proxies(name, c_path, go_path):
    """The C binary at ``c_path`` and the Go one at ``go_path``: each real build when its variable
    names one, else the stand-in."""
    standin_paths = []
    for flavour, path in (('c', c_path), ('go', go_path)):
        source = real_build(flavour)
        if source:
            copy_file(name, source, path)
        else:
            standin_paths.append(path)
    install_standin(name, standin_paths)


def install_standin(name, binaries):
    """The stand-in at each binary path (mode 0755), its mtproxy_wire beside each (it imports it)."""
    with open(os.path.join(STANDIN_DIR, 'mtproxy_standin.py')) as handle:
        standin = handle.read()
    with open(os.path.join(STANDIN_DIR, 'mtproxy_wire.py')) as handle:
        wire = handle.read()
    for binary in binaries:
        put(name, standin, binary, 0o755)
        put(name, wire, os.path.join(os.path.dirname(binary), 'mtproxy_wire.py'))


VENDOR_UNIT = """[Unit]
Description=MTProxy

[Service]
Type=simple
WorkingDirectory=/opt/MTProxy
ExecStart=%s
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
LOOPBACK_BACKEND = 'proxy_for 1 127.0.0.1:18881;\nproxy_for -1 127.0.0.1:18881;\ndefault 1;\n'


def start_vendor_service(name, exec_start, aes_pwd):
    """MTProxy.service as an installer writes it (``exec_start``, WorkingDirectory=/opt/MTProxy), its backend
    config on loopback and ``aes_pwd`` as proxy-secret; started and accepting on port 443."""
    put(name, LOOPBACK_BACKEND, '/opt/MTProxy/proxy-multi.conf', 0o644)
    put(name, aes_pwd, '/opt/MTProxy/proxy-secret', 0o644)
    put(name, VENDOR_UNIT % exec_start, '/etc/systemd/system/MTProxy.service', 0o644)
    sh(name, 'systemctl daemon-reload && systemctl enable --now MTProxy.service')
    wait_port(name, 443)


def main_pid(name):
    return int(sh(name, 'systemctl show -p MainPID --value MTProxy.service').strip())


def cmdline(name, pid):
    raw = subprocess.run(['docker', 'exec', name, 'cat', '/proc/%d/cmdline' % pid], capture_output=True,
                         check=False).stdout
    return raw.rstrip(b'\0').decode().split('\0')


def wait_port(name, port, host='127.0.0.1', timeout=15):
    """Bounded: connect until ``host``:``port`` accepts, at most ``timeout`` s."""
    probe = ('import socket,sys,time\nend=time.time()+%d\nwhile time.time()<end:\n'
             '    s=socket.socket(socket.AF_INET6 if ":" in %r else socket.AF_INET)\n    try:\n'
             '        s.connect((%r,%d)); sys.exit(0)\n'
             '    except OSError: time.sleep(0.05)\n    finally: s.close()\nsys.exit(1)\n') % (timeout, host, host, port)
    subprocess.run(['docker', 'exec', name, 'python3', '-c', probe], check=True, timeout=timeout + 10)


class ModuleHost(object):
    """Runs collection modules on the host; no value of ``secrets`` may appear in a result."""

    def __init__(self, name, workdir, secrets=()):
        self.name = name
        self.workdir = workdir
        self.secrets = tuple(secrets)
        self.env = dict(os.environ)
        self.env.update(
            ANSIBLE_COLLECTIONS_PATH=os.environ.get('MTPROXY_TEST_COLLECTIONS_PATH',
                                                    os.path.join(REPO, '.venv', 'collections')),
            ANSIBLE_STDOUT_CALLBACK='json', ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_HOST_KEY_CHECKING='0',
            ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'tmp'),
            ANSIBLE_DEPRECATION_WARNINGS='0')

    def sh(self, script, check=True):
        return sh(self.name, script, check)

    def module(self, module, args, check=False, diff=False, interpreter='/usr/bin/python3'):
        play = [{'hosts': 'all', 'gather_facts': False,
                 'vars': {'ansible_python_interpreter': interpreter},
                 'tasks': [{'name': module, 'mtproxy.cutover.%s' % module: args, 'ignore_errors': True}]}]
        path = os.path.join(self.workdir, 'play-%s.json' % uuid.uuid4().hex[:8])
        with open(path, 'w') as handle:
            json.dump(play, handle)
        cmd = [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', '%s,' % self.name, '-c', 'community.docker.docker',
               path] + (['--check'] if check else []) + (['--diff'] if diff else [])
        proc = subprocess.run(cmd, capture_output=True, env=self.env, timeout=300, check=False)
        out = proc.stdout.decode(errors='replace')
        self.output = out + proc.stderr.decode(errors='replace')  # the last run's, warnings included
        try:
            result = json.loads(out[out.index('{'):])['plays'][0]['tasks'][0]['hosts'][self.name]
        except (ValueError, KeyError, IndexError):
            raise AssertionError('ansible-playbook gave no result (rc %d): %s %s'
                                 % (proc.returncode, out[-3000:], proc.stderr.decode(errors='replace')[-3000:]))
        for secret in self.secrets:
            assert secret not in json.dumps(result), 'a secret leaked into the result of %s' % module
        return result
