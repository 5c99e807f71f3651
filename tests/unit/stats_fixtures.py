"""Real /stats captures and bodies derived from them for window tests.

Derived bodies start from a real capture and change only the named keys, so everything else stays
exactly as the binaries wrote it.
"""
import glob
import os

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'fixtures', 'real-stats')


def capture_names():
    """Every /stats body capture (not the header files)."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(FIXTURE_DIR, '*.txt'))
             if not p.endswith('.headers.txt')]
    return sorted(n for n in names if n.startswith(('c-', 'go-')))


def capture(name):
    with open(os.path.join(FIXTURE_DIR, name), encoding='utf-8', newline='') as handle:
        return handle.read()


def with_values(body, **changes):
    """``body`` with the values of existing keys replaced (None removes the line)."""
    lines = []
    seen = set()
    for line in body.split('\n')[:-1]:
        key = line.split('\t', 1)[0]
        if key in changes:
            seen.add(key)
            if changes[key] is None:
                continue
            line = '%s\t%s' % (key, changes[key])
        lines.append(line)
    missing = set(changes) - seen
    if missing:
        raise KeyError('keys not in body: %s' % ', '.join(sorted(missing)))
    return '\n'.join(lines) + '\n'


def go_not_ready(body):
    """A Go body as written before the config is loaded: has_current_config 0, no config_* keys."""
    return with_values(body, has_current_config=0, config_filename=None, config_loaded_at=None, config_size=None,
                       config_md5=None, config_auth_clusters=None)


def go_body(packets=0, dropped=0, accepted=0, invalid=0, active=0, checks=1, base='go-M1-idle-plus2s.txt'):
    return with_values(capture(base), dataplane_packets_total=packets, dataplane_packets_dropped=dropped,
                       ingress_accepted_connections=accepted, ingress_invalid_frames=invalid,
                       ingress_active_connections=active, config_check_calls=checks)


def c_body(forwarded=0, dropped=0, uptime=10, accepted_raw=None, http_queries=None, active=0, ready_targets=2,
           pid=None, base='c-noM-idle-plus2s.txt'):
    changes = dict(tot_forwarded_queries=forwarded, dropped_queries=dropped, uptime=uptime,
                   total_special_connections=active, total_ready_targets=ready_targets)
    if accepted_raw is not None:
        changes['inbound_connections_accepted'] = accepted_raw
    if http_queries is not None:
        changes['http_queries'] = http_queries
    if pid is not None:
        changes['pid'] = pid
    return with_values(capture(base), **changes)
