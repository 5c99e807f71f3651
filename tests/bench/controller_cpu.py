"""CPU seconds of one command and every process it starts on the controller, from a cgroup of its own.

The command is moved into a new cgroup before it execs (preexec_fn); its children (Ansible's
workers, the `docker` CLI of the community.docker connection, ssh) inherit it. A `docker exec`
runs its command in the container's cgroup, so what the test hosts do is not counted: only the
client side of each connection is. cgroup v2 (cpu.stat usage_usec, also the `unified` hierarchy of
a hybrid host) is preferred, else v1 cpuacct (cpuacct.usage). Without a writable cgroup the figure
falls back to getrusage(RUSAGE_CHILDREN) after the command was waited for, which counts only the
descendants that were waited for (`method` says which one was used).
"""
import os
import resource
import subprocess
import time

CGROUP_ROOTS = (
    ('/sys/fs/cgroup', 'cpu.stat'),            # cgroup v2 alone
    ('/sys/fs/cgroup/unified', 'cpu.stat'),    # hybrid: the v2 hierarchy beside v1
    ('/sys/fs/cgroup/cpuacct', 'cpuacct.usage'),  # v1
)


def _usable_root():
    for root, stat in CGROUP_ROOTS:
        if os.path.isfile(os.path.join(root, stat)) and os.access(os.path.join(root, 'cgroup.procs'), os.W_OK):
            return root, stat
    return None, None


def read_usage(path):
    """CPU seconds from a cgroup's cpu.stat (usage_usec) or cpuacct.usage (ns)."""
    with open(path) as handle:
        text = handle.read()
    if path.endswith('cpu.stat'):
        for line in text.splitlines():
            if line.startswith('usage_usec '):
                return int(line.split()[1]) / 1e6
        raise ValueError('%s has no usage_usec' % path)
    return int(text.strip()) / 1e9


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuGroup:
    """A cgroup for one run: `run(argv)` returns (completed process, wall s, cpu s, method)."""

    def __init__(self, name):
        root, stat = _usable_root()
        self.path = os.path.join(root, name) if root else None
        self.stat = os.path.join(self.path, stat) if root else None
        if self.path:
            os.makedirs(self.path, exist_ok=True)

    def _enter(self):
        with open(os.path.join(self.path, 'cgroup.procs'), 'w') as handle:
            handle.write(str(os.getpid()))

    def run(self, argv, env, timeout):
        """Run argv in this cgroup; the callback reads the same cgroup through BENCH_CPU_STAT."""
        env = dict(env, BENCH_CPU_STAT=self.stat or '')
        before_children = _children_cpu()
        before = read_usage(self.stat) if self.stat else None
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False,
                              preexec_fn=self._enter if self.path else None)
        wall = time.monotonic() - started
        children = _children_cpu() - before_children
        if self.stat:
            return proc, wall, read_usage(self.stat) - before, 'cgroup', children
        return proc, wall, children, 'rusage', children

    def remove(self):
        """Remove the cgroup (empty once the command's processes are gone; a leftover one is kept)."""
        if not self.path:
            return
        for _attempt in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)
