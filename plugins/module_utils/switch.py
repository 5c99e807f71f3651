# -*- coding: utf-8 -*-
# Copyright: mtproxy.cutover contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point a proxy service at the Go or the C binary, restart it, time the gap and prove the argv.

The flip and the rollback: state transitions, the restart measured from the clients' side, the argv
proof and the /stats proof. How the unit is pointed at a binary is ``pointing.py`` (one class per
method); what talks to the host (systemctl, /proc, sockets, files) is ``host.py``.
Every message that can carry text from the host is passed through ``redact_text`` first.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import time

from ansible_collections.mtproxy.cutover.plugins.module_utils.argv import (
    LOOPBACK_V4, client_probe_hosts, parse_argv, redact_argv, redact_text)
from ansible_collections.mtproxy.cutover.plugins.module_utils.baseline import FLAVORS, stats_version, why_unreadable
from ansible_collections.mtproxy.cutover.plugins.module_utils import host as hostlib
from ansible_collections.mtproxy.cutover.plugins.module_utils.host import (
    HostError, Systemd, describe_unit_state, foreign_listeners, ipv6_loopback, journal_tail, kill_unit, ms,
    now_iso, pid_alive, port_refuses, show_host, tcp_accepts, unit_texts, exec_start_path,
    write_atomic)
from ansible_collections.mtproxy.cutover.plugins.module_utils.judge import take_sample
from ansible_collections.mtproxy.cutover.plugins.module_utils.manifest import manifest_secrets
from ansible_collections.mtproxy.cutover.plugins.module_utils.pointing import SYSTEMD_DIR, pointing_for
from ansible_collections.mtproxy.cutover.plugins.module_utils.refusals import IPV6_ASSERTION, exec_start_refusal
from ansible_collections.mtproxy.cutover.plugins.module_utils.unit import exec_start_winner

SCHEMA = 1
STATE_FILE = 'state.json'
MANIFEST_FILE = 'manifest.json'
HISTORY_LIMIT = 50
TARGETS = ('go', 'c')
# One error class for the flip and everything below it: the message is redacted, details go into the result.
SwitchError = HostError
# How often the client port is probed while the new process starts, and how often systemd is asked
# whether it already gave up (asking costs a process spawn, so not on every probe).
PROBE_INTERVAL = 0.001
STATS_RETRY_INTERVAL = 0.2
STATS_CHECK_TIMEOUT = 5.0
STATE_CHECK_INTERVAL = 0.2
# How the old process is stopped before the new one starts (module option ``handover``):
# wait_exit waits for the unit to stop by itself; listeners_closed ends the old processes as soon as
# the client port refuses connections (the Go port drains open clients for ~2 s after closing it).
HANDOVERS = ('listeners_closed', 'wait_exit')
# A process that exits this soon after closing its listeners (C does in a few ms) ends by itself;
# only one that keeps draining is ended early. The Go port closes its listeners first thing on
# SIGTERM and then drains open clients for ~2 s, so a Go process gets no grace.
HANDOVER_GRACE = {'c': 0.02, 'go': 0.0}
# Where a unit's cgroup (systemctl show -p ControlGroup) can be found: the unified hierarchy, or its
# mount beside the v1 controllers on hybrid hosts.


# ---------------------------------------------------------------------------------------------
# State directory files
# ---------------------------------------------------------------------------------------------

def service_state_dir(state_dir, service):
    return os.path.join(state_dir, service)


def load_manifest(state_dir, service):
    path = os.path.join(service_state_dir(state_dir, service), MANIFEST_FILE)
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError):
        raise SwitchError('no freeze manifest at %s: run mtproxy_freeze for %s first' % (path, service))
    except ValueError:
        raise SwitchError('freeze manifest %s is not valid JSON' % path)


def load_state(state_dir, service):
    """The switch state, or None when the service was never switched. Never guessed from mtimes."""
    path = os.path.join(service_state_dir(state_dir, service), STATE_FILE)
    try:
        with open(path) as handle:
            state = json.load(handle)
    except (IOError, OSError):
        return None
    except ValueError:
        raise SwitchError('switch state %s is not valid JSON; fix or remove it' % path)
    if not isinstance(state, dict) or state.get('schema') != SCHEMA:
        raise SwitchError('switch state %s has an unknown schema (expected %d)' % (path, SCHEMA))
    return state


def save_state(state_dir, service, state):
    directory = service_state_dir(state_dir, service)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    os.chmod(directory, 0o700)
    write_atomic(os.path.join(directory, STATE_FILE), json.dumps(state, indent=2, sort_keys=True) + '\n', 0o600)


def transition(state, manifest, target, binary, method, timings, at, result='ok', extra_previous=None):
    """New state after a switch to ``target`` (pure). ``state`` may be None (first switch)."""
    old = dict(state or {})
    previous_good = old.get('previous_good')
    if target == 'go':
        previous_good = {'flavor': 'c', 'binary': frozen_argv(manifest)[0]}
        if extra_previous:
            previous_good.update(extra_previous)
    history = list(old.get('history') or [])
    history.append({'at': at, 'from': old.get('current'), 'to': target, 'binary': binary,
                    'method': method, 'result': result, 'timings': timings})
    return {
        'schema': SCHEMA,
        'current': target,
        'binary': binary,
        'method': method,
        'previous_good': previous_good,
        'history': history[-HISTORY_LIMIT:],
    }


def state_agrees(state, target, binary, method):
    return bool(state) and state.get('current') == target and state.get('binary') == binary \
        and state.get('method') == method


# ---------------------------------------------------------------------------------------------
# argv proof
# ---------------------------------------------------------------------------------------------

def argv_matches(cmdline, expected):
    """True when the live argv equals ``expected`` word for word."""
    return list(cmdline) == list(expected)


def explain_mismatch(cmdline, expected, secrets):
    """One redacted sentence naming the first differing argv position."""
    live = list(cmdline)
    want = list(expected)
    shown_live = redact_argv(live)
    shown_want = redact_argv(want)
    for index in range(max(len(live), len(want))):
        got = live[index] if index < len(live) else None
        exp = want[index] if index < len(want) else None
        if got == exp:
            continue
        shown_got = shown_live[index] if got is not None else '<missing>'
        shown_exp = shown_want[index] if exp is not None else '<missing>'
        if shown_got == shown_exp:
            return 'argv differs at position %d in a secret value (both redacted)' % index
        return redact_text('argv differs at position %d: expected %r, live process has %r '
                           '(expected %d words, live %d)' % (index, shown_exp, shown_got, len(want), len(live)),
                           secrets)
    return 'argv is equal'


def frozen_argv(manifest):
    """The argv of the C process as frozen from /proc/<MainPID>/cmdline."""
    return list(manifest['argv'])


# ---------------------------------------------------------------------------------------------
# What the frozen argv says about the host
# ---------------------------------------------------------------------------------------------

def client_hosts_of(manifest):
    """Where the frozen proxy's client ports are reached: its --address, else loopback."""
    return client_probe_hosts(parse_argv(frozen_argv(manifest)), ipv6_loopback())


def c_stats_unsafe(manifest):
    """The frozen C proxy runs with -6: any connection to its stats port makes it abort."""
    return parse_argv(frozen_argv(manifest)).ipv6


# ---------------------------------------------------------------------------------------------
# Restart and measure
# ---------------------------------------------------------------------------------------------

def await_old_exit(systemd, job, old_pids, t0, stop_timeout, watch_port=None, cgroup=None,
                   grace=HANDOVER_GRACE['c'], watch_host=LOOPBACK_V4):
    """Follow the stop half of a restart job until every process of the old generation is gone.

    ``old_pids``: the main process first, then the other processes the stop ends (unit_processes():
    the C proxy's -M workers share its client port, so the old proxy is gone only with the last of
    them). Returns (gone_at, killed, handover_at, ended_early). Past ``stop_timeout`` the unit is
    SIGKILLed via systemctl kill, the same thing systemd's own stop timeout does. With
    ``watch_port`` (a client port the old process listened on) its processes are SIGKILLed (same
    call) once that port refuses connections while an old process still runs ``grace``
    seconds later (it is draining); ``handover_at`` is then the moment the port
    refused, else None, and ``ended_early`` tells whether that SIGKILL was sent.
    """
    alive = list(old_pids)
    gone_at = None
    handover_at = None
    ended_early = False
    killed = False
    deadline = t0 + stop_timeout
    while True:
        now = time.monotonic()
        # The job before the processes: a job that failed while an old process was still seen
        # running failed to stop it; one that ends just after (the start half failing at once) is
        # seen next round, with the processes gone, as the failed start it is.
        job_state = job.poll()
        alive = [pid for pid in alive if pid_alive(pid)]
        if not alive:
            gone_at = now
            break
        if job_state not in (None, 0):
            _out, err = job.communicate()
            raise SwitchError('systemctl restart %s failed while stopping the old process: %s'
                              % (systemd.unit, to_text(err).strip() or 'exit %s' % job.returncode))
        if watch_port and handover_at is None and port_refuses(watch_port, watch_host):
            handover_at = time.monotonic()
        if (handover_at is not None and not ended_early and not killed
                and now - handover_at >= grace and any(pid_alive(pid) for pid in alive)):
            # Listeners are closed and the old process still drains: new clients are refused until
            # the new binary runs, so do not wait for the drain.
            kill_unit(systemd, cgroup)
            ended_early = True
        if now > deadline and not killed:
            hostlib.run(['systemctl', 'kill', '--signal=SIGKILL', systemd.unit], timeout=30)
            killed = True
            deadline = now + 30
        elif now > deadline:
            job.kill()
            job.communicate()
            raise SwitchError('%s did not stop within %ss even after SIGKILL (still running: pid %s)' % (
                systemd.unit, stop_timeout + 30, ', '.join(str(pid) for pid in alive)))
        time.sleep(PROBE_INTERVAL)
    return gone_at, killed, handover_at, ended_early


def to_text(data):
    return data.decode('utf-8', 'replace') if isinstance(data, bytes) else (data or '')


def wait_listening(systemd, port, deadline, job=None, host=LOOPBACK_V4, old_listeners=None):
    """Probe ``host``:port until it accepts; (accepted_at or None, last show props or None).

    With ``old_listeners`` (listening_inodes() of the port before the restart) an accept counts
    only once a socket that is not one of them listens: the new process's, not an old one that is
    still open (the kernel completes a connect on it all the same).
    Gives up early when systemd says the unit failed or stopped; while a restart ``job`` still runs
    the unit passes through inactive/failed on its way from stop to start, so that only counts
    once the job is done (or when there is no job to wait for).
    """
    next_check = time.monotonic() + STATE_CHECK_INTERVAL
    props = None
    while time.monotonic() < deadline:
        if tcp_accepts(port, host):
            now = time.monotonic()
            if not old_listeners or hostlib.new_listener(port, old_listeners):
                return now, props
        job_state = job.poll() if job is not None else 0
        if job_state not in (None, 0):
            return None, systemd.show(*UNIT_STATE_PROPS)
        if job_state == 0 and time.monotonic() >= next_check:
            props = systemd.show(*UNIT_STATE_PROPS)
            if props.get('ActiveState') in ('failed', 'inactive'):
                return None, props
            next_check = time.monotonic() + STATE_CHECK_INTERVAL
        time.sleep(PROBE_INTERVAL)
    return None, props


UNIT_STATE_PROPS = ('Id', 'ActiveState', 'SubState', 'Result', 'ExecMainCode', 'ExecMainStatus', 'MainPID')


def restart_measured(systemd, client_port, stats_port, listen_timeout, stop_timeout, handover='wait_exit',
                     old_flavor='c', client_hosts=(LOOPBACK_V4,)):
    """Restart the unit, wait for the client port (then the stats port). Returns (timings, failure or None).

    One ``systemctl restart`` job: systemd stops the unit (ExecStop=, KillMode=, KillSignal= apply,
    Restart= does not fire) and starts it again as soon as the stop is done, with no client round
    trip in between, which is what clients would otherwise be refused for. The client port is
    probed on ``client_hosts`` (where the proxy binds it, see client_hosts_of()); the stats port,
    which both binaries bind on 127.0.0.1, only when ``stats_port`` is given.
    """
    props = systemd.show('MainPID', 'ControlGroup', 'KillMode')
    old_pid = int(props.get('MainPID') or 0)
    # What the stop ends and the sockets it listens on: the old binary is gone when the last of those
    # processes is, and up when a socket it did not have accepts (await_old_exit, wait_listening).
    old_pids = sorted(hostlib.unit_processes(old_pid, props.get('ControlGroup'), props.get('KillMode', '')),
                      key=lambda pid: pid != old_pid)
    old_client = hostlib.listening_inodes(client_port)
    old_stats = hostlib.listening_inodes(stats_port) if stats_port else set()
    # Before the restart: clears the start rate limit and a failed state without adding a systemctl
    # round trip to the time clients are refused.
    hostlib.run(['systemctl', 'reset-failed', systemd.unit], timeout=30)
    watch_port = client_port if (handover == 'listeners_closed' and pid_alive(old_pid)
                                 and tcp_accepts(client_port, client_hosts)) else None
    t0 = time.monotonic()
    job = subprocess.Popen(['systemctl', 'restart', systemd.unit], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        gone_at, killed, handover_at, ended_early = await_old_exit(systemd, job, old_pids, t0, stop_timeout,
                                                                   watch_port, props.get('ControlGroup'),
                                                                   HANDOVER_GRACE.get(old_flavor, HANDOVER_GRACE['c']),
                                                                   client_hosts)
        deadline = gone_at + listen_timeout
        accepted_at, props = wait_listening(systemd, client_port, deadline, job, client_hosts, old_client)
        timings = {'stop_ms': ms(gone_at - t0), 'start_ms': None, 'unavailable_ms': None, 'stats_ms': None,
                   'spawn_ms': None, 'binary_start_ms': None,
                   'killed_after_stop_timeout': killed, 'handover': handover,
                   'listeners_closed_ms': ms(handover_at - t0) if handover_at is not None else None,
                   'ended_after_listeners_closed': ended_early}
        try:
            _out, err = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.kill()
            _out, err = job.communicate()
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    if accepted_at is None:
        props = systemd.show(*UNIT_STATE_PROPS)
        cause = describe_unit_state(props)
        if job.returncode not in (None, 0) and to_text(err).strip():
            cause += ' (systemctl restart: %s)' % to_text(err).strip().splitlines()[0]
        if hostlib.listening_inodes(client_port) & old_client and not hostlib.new_listener(client_port, old_client):
            cause += (', and port %d still has only the listening socket the old processes had: a process the '
                      'stop did not end holds it (ss -ltnp sport = :%d names it); end it and switch again'
                      % (client_port, client_port))
        elif props.get('ActiveState') == 'active':
            cause += ', but %s:%d did not accept connections within %ss' % (
                show_host(client_hosts), client_port, listen_timeout)
        return timings, cause
    timings['start_ms'] = ms(accepted_at - gone_at)
    timings['unavailable_ms'] = ms(accepted_at - t0)
    if stats_port:
        stats_at, _props = wait_listening(systemd, stats_port, max(deadline, time.monotonic() + 1.0),
                                          old_listeners=old_stats)
        if stats_at is None:
            return timings, ('client port %d accepts but the stats port 127.0.0.1:%d did not accept within %ss '
                             '(Go keeps running without a stats server when that port is busy)'
                             % (client_port, stats_port, listen_timeout))
        timings['stats_ms'] = ms(stats_at - gone_at)
    timings.update(spawn_split(systemd, t0, gone_at, accepted_at))
    return timings, None


def spawn_split(systemd, t0, gone_at, accepted_at):
    """Split start_ms into systemd's part and the binary's: when systemd forked the new main process.

    systemd stamps ExecMainStartTimestampMonotonic (CLOCK_MONOTONIC, as time.monotonic()) at the
    fork. Read after the port accepts, so it costs clients nothing. None when the stamp is missing
    or not from this restart (before ``t0``, after the accept: another process, another clock).
    ``gone_at`` is when the poll saw the old process gone; a poll that ran late can see that after
    the fork, and then all of start_ms is the binary's.
    """
    try:
        forked_at = int(systemd.show('ExecMainStartTimestampMonotonic').get('ExecMainStartTimestampMonotonic')
                        or 0) / 1e6
    except (SwitchError, ValueError):
        forked_at = 0
    if not t0 <= forked_at <= accepted_at:
        return {'spawn_ms': None, 'binary_start_ms': None}
    forked_at = max(forked_at, gone_at)
    return {'spawn_ms': ms(forked_at - gone_at), 'binary_start_ms': ms(accepted_at - forked_at)}


# ---------------------------------------------------------------------------------------------
# The switch
# ---------------------------------------------------------------------------------------------

def check_dropin_takes_effect(systemd, pointing):
    """Before anything is written: refuse a pointing that another unit file would override."""
    if pointing.desired is None:
        return
    texts = unit_texts(systemd)
    refusal = pointing.takes_effect_refusal(texts, pointing.manifest['unit_name'], pointing.desired,
                                            pointing.systemd_dir) if texts else None
    if refusal is not None:
        raise SwitchError(refusal.message(systemd.unit), refused=refusal.kind, changed=False)


def check_exec_start_in_effect(systemd, pointing, want):
    """After daemon-reload, before any restart: systemd must run ``want``. If not, undo and refuse."""
    got = exec_start_path(systemd)
    if got == want:
        return
    texts = unit_texts(systemd)
    winner = exec_start_winner(texts) if texts else None
    pointing.revert()
    systemd.daemon_reload()
    refusal = exec_start_refusal(want, got, winner, texts[0][0] if texts else None)
    raise SwitchError(refusal.message(systemd.unit), refused=refusal.kind, changed=False)


def prove_process(pointing, pid, secrets):
    """(matches, explanation or None) for the live MainPID, once it has finished its exec (bounded)."""
    cmdline, comm = hostlib.read_cmdline_after_exec(pid) if pid else (None, None)
    if hostlib.before_exec(comm):
        return False, ('MainPID %s had not exec\'d its program after %ss: it still had the name %r systemd '
                       'gives the process it forked; look at the unit\'s journal for what held the exec up'
                       % (pid, hostlib.EXEC_WAIT, comm))
    if not cmdline:
        return False, 'no live main process (MainPID %s)' % pid
    expected = pointing.expected_argv()
    if not argv_matches(cmdline, expected):
        return False, explain_mismatch(cmdline, expected, secrets)
    why = pointing.exe_mismatch(pid)
    return why is None, why


def read_stats_flavor(url, timeout_s, take=None, clock=time.monotonic, sleep=time.sleep):
    """(flavor, version, None) of the binary answering ``url``, or (None, None, why).

    Retries every STATS_RETRY_INTERVAL until a body parses or ``timeout_s`` is spent: a binary that
    just bound its stats port may not serve a full body at once. Bounded by timeout_s plus one scrape.
    """
    take = take or take_sample
    deadline = clock() + timeout_s
    while True:
        sample = take(url)
        if sample.get('parsed') is not None:
            return sample['parsed'].flavor, stats_version([sample]) or None, None
        if clock() + STATS_RETRY_INTERVAL > deadline:
            return None, None, why_unreadable(url, [sample])
        sleep(STATS_RETRY_INTERVAL)


def check_stats_flavor(result, target, timeout_s, service):
    """Prove that the binary answering the manifest's stats URL is ``target``; fills stats_flavor."""
    url = result.get('stats_url')
    if not url:
        raise SwitchError('%s: the manifest has no stats URL to prove the %s binary with (stats_check=false '
                          'skips the proof)' % (service, FLAVORS[target]), **result)
    flavor, version, why = read_stats_flavor(url, timeout_s)
    result.update(stats_flavor=flavor, stats_version=version)
    if flavor != target:
        raise SwitchError('%s should run the %s binary now, but %s' % (
            service, FLAVORS[target], why or '/stats answers as the %s binary' % FLAVORS.get(flavor, flavor)),
            **result)
    return result


C_STATS_UNSAFE = ('the C proxy runs with -6 and aborts on any connection to its stats port (%s): '
                  'its /stats is never read, the argv proof stands alone' % IPV6_ASSERTION)


def switch_service(service, state_dir, target, binary=None, method=None, listen_timeout=15.0,
                   stop_timeout=30.0, check_mode=False, systemd_dir=SYSTEMD_DIR, force_restart=False,
                   journal_lines=0, handover='listeners_closed', stats_check=True, bridge=None):
    """Point ``service`` at ``target`` and restart it; returns the module result (without secrets).

    With ``stats_check`` (not in check mode) the result is then proven by /stats: the binary
    answering the manifest's stats URL must be the target's (``stats_flavor``). With ``bridge`` (a
    ``bridge.Handover``) new clients go to a bridge while the service restarts; it is drained and
    stopped before this returns or raises, and its figures are ``result['bridge']``.
    """
    try:
        result = _switch(service, state_dir, target, binary, method, listen_timeout, stop_timeout, check_mode,
                         systemd_dir, force_restart, journal_lines, handover, bridge)
    except SwitchError as exc:
        if bridge is not None:
            exc.details['bridge'] = record_bridge(state_dir, service, bridge.finish())
        raise
    except Exception:
        if bridge is not None:
            bridge.finish()
        raise
    if bridge is not None:
        result['bridge'] = record_bridge(state_dir, service, bridge.finish())
    if target == 'c' and c_stats_unsafe(load_manifest(state_dir, service)):
        # Never a connection to the stats port of a C proxy with -6: it aborts on any.
        result['stats_skipped'] = C_STATS_UNSAFE
    elif stats_check and not check_mode:
        check_stats_flavor(result, target, min(float(listen_timeout), STATS_CHECK_TIMEOUT), service)
    return result


def record_bridge(state_dir, service, record):
    """A bridge handover's figures, kept in the last switch of state.json too; None when no bridge ran."""
    if record.get('diverted_ms') is not None:
        state = load_state(state_dir, service)
        if state and state.get('history'):
            state['history'][-1]['bridge'] = record
            save_state(state_dir, service, state)
    return record if record.get('ready_ms') is not None else None


def _switch(service, state_dir, target, binary, method, listen_timeout, stop_timeout, check_mode, systemd_dir,
            force_restart, journal_lines, handover, bridge=None):
    if target not in TARGETS:
        raise SwitchError('target must be one of %s' % ', '.join(TARGETS))
    if handover not in HANDOVERS:
        raise SwitchError('handover must be one of %s' % ', '.join(HANDOVERS))
    manifest = load_manifest(state_dir, service)
    state = load_state(state_dir, service)
    secrets = manifest_secrets(manifest)
    if target == 'go':
        if not binary:
            raise SwitchError('target=go needs binary (the staged Go binary on the host)')
        if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
            raise SwitchError('Go binary %s is missing or not executable on the host' % binary)
    else:
        binary = frozen_argv(manifest)[0]
    systemd = Systemd(manifest['unit_name'])
    # Back to C (and again to Go while on Go) the unit is pointed the way state.json records.
    pointing = pointing_for(manifest, state, target, binary, method, systemd_dir)
    method = pointing.method
    stats_unsafe = c_stats_unsafe(manifest)
    extra_previous = pointing.previous_good_extra()

    props = systemd.show('ActiveState', 'MainPID', 'NeedDaemonReload')
    main_pid = int(props.get('MainPID') or 0)
    live_ok = props.get('ActiveState') == 'active' and props.get('NeedDaemonReload') != 'yes' \
        and prove_process(pointing, main_pid, secrets)[0]
    result = {
        'changed': False, 'target': target, 'binary': binary, 'method': method, 'timings': None,
        'argv_matches': live_ok, 'main_pid': main_pid, 'restarted': False,
        'previous_good': (state or {}).get('previous_good'),
        'dropin_path': pointing.dropin_path,
        'diff': pointing.diff(secrets),
        'stats_url': manifest.get('stats_url'),
        'client_ports': manifest.get('client_ports') or [],
        'stats_flavor': None, 'stats_version': None, 'stats_skipped': None,
        'client_hosts': client_hosts_of(manifest),
        'journal': [],
    }
    in_place = pointing.ok and live_ok and state_agrees(state, target, binary, method)
    if in_place and not force_restart:
        return result
    result['changed'] = True
    check_dropin_takes_effect(systemd, pointing)
    if check_mode:
        if target == 'go':
            result['previous_good'] = transition(state, manifest, target, binary, method, None, now_iso(),
                                                 extra_previous=extra_previous)['previous_good']
        return result

    if journal_lines:
        # What the outgoing process logged, for the incident note, before the restart adds to it.
        result['journal'] = journal_tail(systemd.unit, lines=journal_lines, secrets=secrets, settle=0)
    if pointing.ok and live_ok and not force_restart:
        # Unit and process are already right, only the record is missing: no client-visible restart.
        new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'recorded',
                               extra_previous)
        save_state(state_dir, service, new_state)
        result['previous_good'] = new_state['previous_good']
        return result

    if bridge is not None:
        # Before anything changes: a bridge that does not get ready stops the switch with the host as it was.
        bridge.start(binary, skip_stats=target == 'c' and stats_unsafe)
    pointing.apply()
    systemd.daemon_reload()
    check_exec_start_in_effect(systemd, pointing, pointing.exec_path())
    new_state = transition(state, manifest, target, binary, method, None, now_iso(), 'pending', extra_previous)
    save_state(state_dir, service, new_state)
    result['previous_good'] = new_state['previous_good']

    since = time.time() - 1
    client_port = (manifest.get('client_ports') or [None])[0]
    if not client_port:
        raise SwitchError('the manifest has no client port to wait for')
    try:
        if bridge is not None:
            bridge.divert()
        # With -6 the stats port is first touched by the /stats proof, once the argv proved Go runs.
        timings, failure = restart_measured(systemd, int(client_port),
                                            None if stats_unsafe else manifest.get('stats_port'),
                                            float(listen_timeout), float(stop_timeout), handover,
                                            old_flavor=(state or {}).get('current') or 'c',
                                            client_hosts=result['client_hosts'])
    except SwitchError as exc:
        raise SwitchError(redact_text(str(exc), secrets), changed=True, target=target, binary=binary, method=method)
    if bridge is not None:
        # The service accepts (or failed to): new clients reach it again, the bridge keeps its own.
        bridge.restore()
    result.update(timings=timings, restarted=True)
    main_pid = systemd.main_pid()
    result['main_pid'] = main_pid
    if failure is None:
        foreign = foreign_listeners(int(client_port), main_pid)
        if foreign:
            failure = 'client port %d is held by pid %s outside %s' % (
                client_port, ', '.join(str(p) for p in foreign), systemd.unit)
    if failure is None:
        matches, why = prove_process(pointing, main_pid, secrets)
        result['argv_matches'] = matches
        if not matches:
            failure = 'the restarted process does not run the expected argv: %s' % why
    new_state['history'][-1].update(result='ok' if failure is None else 'failed', timings=timings)
    save_state(state_dir, service, new_state)
    if failure is not None:
        journal = journal_tail(systemd.unit, since, secrets=secrets)
        message = ('%s did not come up on %s (%s): %s. The unit is left pointed at %s; switch back with '
                   'target=c. Last journal lines of %s:\n%s' % (
                       systemd.unit, target, binary, redact_text(failure, secrets), target, systemd.unit,
                       '\n'.join(journal) or '(journal empty)'))
        details = dict(result)
        # The unit was repointed and restarted even though the new binary failed.
        details.update(journal=journal, changed=True)
        raise SwitchError(message, **details)
    return result
