# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a playbook run costs the controller, per host and per task (make bench only).

Enabled by the bench alone (ANSIBLE_CALLBACK_PLUGINS=tests/bench/callback_plugins,
ANSIBLE_CALLBACKS_ENABLED=bench_counts); writes one JSON file, BENCH_COUNTS_OUT.

- Task executions per host, by status (ok, changed, skipped, failed, unreachable) and by kind:
  `include` (include_tasks/include_role), `meta` (run in the main process), `remote` (the worker
  reached the host through its connection), `controller` (it did not: action plugins that stay on
  the controller, set_fact, assert, delegate_to localhost ...).
- Connection round trips per host: every command the worker ran through the connection
  (ActionBase._low_level_execute_command: a module run with pipelining is one) and every file it
  put there (_transfer_file). Counted inside the worker, so an action plugin such as mtproxy_stage
  that makes two round trips counts two; commands run on a `local` connection (delegate_to
  localhost) are counted apart, as `local_execs`.
- Report renders per host: mtproxy_report tasks that rendered the whole run report again.
- Controller CPU per task: BENCH_CPU_STAT names the cpu.stat (cgroup v2) or cpuacct.usage (v1) of
  the cgroup ansible-playbook runs in; it is read at every task start, and the CPU used until the
  next task start is the task's (with the linear strategy one task runs at a time on a batch).
  The main process's own CPU is read with getrusage at the end.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
name: bench_counts
type: aggregate
short_description: task executions, connection round trips and controller CPU per host and task
description:
  - The measurement of make bench. Writes the JSON file named by the environment variable BENCH_COUNTS_OUT.
requirements:
  - enable in ansible.cfg or with ANSIBLE_CALLBACKS_ENABLED
'''

import json
import os
import resource
import sys
import time

from ansible.executor import task_executor
from ansible.plugins.action import ActionBase
from ansible.plugins.callback import CallbackBase

# tests/bench: how the bench reads the cgroup's CPU.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from controller_cpu import read_usage  # noqa: E402 pylint: disable=wrong-import-position

INCLUDES = frozenset(('include_tasks', 'include_role', 'ansible.builtin.include_tasks', 'ansible.builtin.include_role',
                      'ansible.legacy.include_tasks', 'ansible.legacy.include_role'))
META = frozenset(('meta', 'ansible.builtin.meta', 'ansible.legacy.meta'))
STATUSES = ('ok', 'changed', 'skipped', 'failed', 'unreachable')

# Connection work of the task this worker runs: {transport: count}. Workers are forked per task.
_EXECS = {}


def _counted(method):
    def wrapper(self, *args, **kwargs):
        transport = getattr(self._connection, 'transport', '') or '?'
        _EXECS[transport] = _EXECS.get(transport, 0) + 1
        return method(self, *args, **kwargs)
    wrapper.bench_counted = True
    return wrapper


def _install_counters(log_path):
    """Count every connection command and file transfer of each worker into log_path (one line a task)."""
    if getattr(ActionBase._low_level_execute_command, 'bench_counted', False):
        return
    ActionBase._low_level_execute_command = _counted(ActionBase._low_level_execute_command)
    ActionBase._transfer_file = _counted(ActionBase._transfer_file)
    original_run = task_executor.TaskExecutor.run

    def run(self):
        _EXECS.clear()
        try:
            return original_run(self)
        finally:
            if _EXECS:
                line = json.dumps({'host': self._host.get_name(), 'task': self._task._uuid, 'execs': _EXECS}) + '\n'
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
    task_executor.TaskExecutor.run = run


def task_label(task):
    """'name @ file:line' with the path from the collection's own directories on, stable across checkouts."""
    path = task.get_path() or ''
    for marker in ('/roles/', '/playbooks/', '/tests/'):
        if marker in path:
            path = path[path.rindex(marker) + 1:]
            break
    return '%s @ %s' % (task.get_name(), path)


def read_cpu(path):
    try:
        return read_usage(path) if path else None
    except (OSError, ValueError):
        return None


def _rusage_s(who):
    usage = resource.getrusage(who)
    return round(usage.ru_utime + usage.ru_stime, 3)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_counts'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.out = os.environ.get('BENCH_COUNTS_OUT', '')
        self.cpu_path = os.environ.get('BENCH_CPU_STAT', '')
        self.exec_log = self.out + '.execs' if self.out else ''
        if self.exec_log:
            if os.path.exists(self.exec_log):
                os.unlink(self.exec_log)
            _install_counters(self.exec_log)
        self.tasks = {}      # label -> figures of the task
        self.uuids = {}      # task uuid -> label
        self.hosts = {}      # host -> figures of the host
        self.executions = []  # (host, uuid, kind, status) of every task execution
        self.batches = []    # one per play and serial batch: hosts, wall and CPU
        self.segment = '(start: parse playbook and inventory)'
        self.segment_cpu = read_cpu(self.cpu_path)
        self.segment_wall = time.monotonic()
        self.started_wall = self.segment_wall
        self.started_cpu = self.segment_cpu

    # ---- where the controller's time goes, task by task
    def _task(self, label, action=''):
        return self.tasks.setdefault(label, dict({s: 0 for s in STATUSES}, action=action, cpu_s=0.0, wall_s=0.0,
                                                 starts=0, executions=0, remote_round_trips=0, local_execs=0))

    def _switch(self, label, action=''):
        now_cpu, now_wall = read_cpu(self.cpu_path), time.monotonic()
        entry = self._task(self.segment)
        if now_cpu is not None and self.segment_cpu is not None:
            entry['cpu_s'] += now_cpu - self.segment_cpu
        entry['wall_s'] += now_wall - self.segment_wall
        self.segment, self.segment_cpu, self.segment_wall = label, now_cpu, now_wall
        self._task(label, action)['starts'] += 1

    def _close_batch(self):
        if self.batches and 'wall_s' not in self.batches[-1]:
            batch, cpu = self.batches[-1], read_cpu(self.cpu_path)
            batch['wall_s'] = round(time.monotonic() - batch.pop('started_wall'), 3)
            started_cpu = batch.pop('started_cpu')
            batch['cpu_s'] = round(cpu - started_cpu, 3) if cpu is not None and started_cpu is not None else None
            batch['main_cpu_s'] = round(_rusage_s(resource.RUSAGE_SELF) - batch.pop('started_main_cpu'), 3)
            batch['hosts'] = len(batch['hosts'])

    def v2_playbook_on_play_start(self, play):
        # Called for every serial batch of a play.
        self._switch('(play start: %s)' % play.get_name())
        self._close_batch()
        self.batches.append({'play': play.get_name(), 'hosts': set(), 'started_wall': self.segment_wall,
                             'started_cpu': self.segment_cpu, 'started_main_cpu': _rusage_s(resource.RUSAGE_SELF),
                             'report_renders': 0})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._switch(task_label(task), task.action)

    def v2_playbook_on_handler_task_start(self, task):
        self._switch(task_label(task), task.action)

    # ---- task executions per host
    def _count(self, result, status):
        task, host = result._task, result._host.get_name()
        label = task_label(task)
        self.uuids[task._uuid] = label
        if task.action in INCLUDES:
            kind = 'include'
        elif task.action in META:
            kind = 'meta'
        else:
            kind = 'controller'  # until the exec log shows the worker reached the host
        statuses = [status]
        if status == 'ok' and result._result.get('changed'):
            statuses.append('changed')
        entry = self._task(label, task.action)
        entry['executions'] += 1
        for name in statuses:
            entry[name] += 1
        # An mtproxy_report task that rendered the run report returns it (a mark alone does not).
        rendered = bool(result._result.get('report')) and task.action.endswith('mtproxy_report')
        self.executions.append((host, task._uuid, kind, statuses, rendered))
        if self.batches:
            self.batches[-1]['hosts'].add(host)
            self.batches[-1]['report_renders'] += int(rendered)

    def v2_runner_on_ok(self, result):
        self._count(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._count(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._count(result, 'unreachable')

    def _read_exec_log(self):
        execs = {}
        if self.exec_log and os.path.exists(self.exec_log):
            with open(self.exec_log) as handle:
                for line in handle:
                    item = json.loads(line)
                    execs[(item['host'], item['task'])] = item['execs']
        return execs

    def v2_playbook_on_stats(self, stats):
        self._switch('(end: stats and callbacks)')
        self._close_batch()
        execs = self._read_exec_log()
        for host, uuid, kind, statuses, rendered in self.executions:
            figures = self.hosts.setdefault(host, dict({s: 0 for s in STATUSES}, executions=0, remote=0, controller=0,
                                                       include=0, meta=0, remote_round_trips=0, local_execs=0,
                                                       report_renders=0))
            figures['report_renders'] += int(rendered)
            done = execs.pop((host, uuid), {})
            remote = sum(n for transport, n in done.items() if transport != 'local')
            local = done.get('local', 0)
            if kind == 'controller' and remote:
                kind = 'remote'
            figures['executions'] += 1
            for name in statuses:
                figures[name] += 1
            if 'skipped' not in statuses:
                figures[kind] += 1
            figures['remote_round_trips'] += remote
            figures['local_execs'] += local
            task = self._task(self.uuids[uuid])
            task['remote_round_trips'] += remote
            task['local_execs'] += local
        # A worker whose result never came back (a crashed run) still made its round trips.
        unmatched = sum(sum(n for n in done.values()) for done in execs.values())
        end_cpu = read_cpu(self.cpu_path)
        summary = {
            'wall_s': round(time.monotonic() - self.started_wall, 3),
            'cgroup_cpu_s': round(end_cpu - self.started_cpu, 3) if end_cpu is not None and self.started_cpu is not None
            else None,
            'main_process_cpu_s': _rusage_s(resource.RUSAGE_SELF),
            'unmatched_execs': unmatched,
            'recap': {name: sum(stats.summarize(h).get(name, 0) for h in stats.processed)
                      for name in ('ok', 'changed', 'skipped', 'failures', 'unreachable', 'rescued', 'ignored')},
            'hosts': self.hosts,
            'batches': self.batches,
            'tasks': {label: dict(entry, cpu_s=round(entry['cpu_s'], 3), wall_s=round(entry['wall_s'], 3))
                      for label, entry in self.tasks.items()},
        }
        if self.out:
            with open(self.out, 'w') as handle:
                json.dump(summary, handle, indent=1, sort_keys=True)
            if os.path.exists(self.exec_log):
                os.unlink(self.exec_log)
