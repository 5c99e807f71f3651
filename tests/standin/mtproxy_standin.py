#!/usr/bin/env python3
"""Stand-in for the MTProxy binaries (C original and contract-compatible Go port).

Installed by copying this file, with mtproxy_wire.py beside it, to the binary's path (or through
mtproxy_standin_launcher.py). The flavour comes from the basename of the file argv[0] resolves to
(symlinks followed, as the kernel runs the link's target): a name containing "go" (e.g.
``mtproto-proxy-go``) behaves like the Go port, anything else (``mtproto-proxy``) like the C binary.
Python 3.8+ standard library, plus ``cryptography`` (through mtproxy_wire, imported on the first
handshake) for obfuscated2 and the RPC encryption.

What is reproduced (see tests/fixtures/real-stats/README.md for the measurements):

* Command line: the C option set (short and long, GNU getopt_long permutation, ``--opt=value``,
  ``-p8888``, ``--`` ends options; the C flavour also accepts unique long-option prefixes).
  Unknown option / missing argument / bad ``-S`` -> exit 2 with the flavour's messages (C: getopt
  text + "Unrecognized option" log line on stderr, usage on stdout; Go: "Can not parse options: ..."
  + usage on stderr). No config positional -> exit 2. Missing/broken config -> exit 1; a config
  path that is a directory: C exit 2 (code -2), Go exit 1.
  Missing ``--aes-pwd`` file, or one outside 32..256 bytes: C exits 1, Go runs anyway. ``-d`` is accepted and ignored.
* Sockets: ``-H`` ports on ``--address`` or 0.0.0.0 (Go: [::] dual stack when available), stats on
  127.0.0.1:<-p>, SO_REUSEADDR only (never SO_REUSEPORT). Client port busy: C exits 1, the Go process
  serving it exits 2 (with -M its supervisor then exits 1). Stats port busy: C exits 1, Go logs and
  runs on without a stats server.
* Client connections: the first 64 bytes are an obfuscated2 header, checked as the real binaries
  check it (tests/standin/mtproxy_wire.py): decrypted with AES-256-CTR keyed by SHA-256(header
  bytes 8..40 + secret) for each -S / --mtproto-secret-file secret in turn, it must carry a
  transport tag at bytes 56..60 (ef ef ef ef abridged, ee ee ee ee intermediate, dd dd dd dd padded)
  and the DC at 60..62; a plain-tag or random header is an invalid handshake. The rest of the
  stream is decrypted and split into that transport's packets. Only packets both binaries forward
  go on (unencrypted req_pq/req_pq_multi/req_DH_params/set_client_DH_params with a consistent
  length, or encrypted ones of 56+ bytes); Go counts the rest as parse errors. Answers go back in
  the client's transport, encrypted with the header's reverse key. Counting per flavour as
  measured: C without -M: inbound_connections_accepted +2 per accept, /stats requests included; C
  with -M: no accept counter moves; total_special_connections = open clients, bad handshakes leave
  no trace. Go: ingress_accepted/closed/active, ingress_invalid_frames + ingress_frames_failed per
  bad handshake.
* Backends: the unique ``proxy_for``/``proxy`` host:port targets of the config; a packet goes to
  its DC's cluster, else to the ``default`` one (Go: forward_used_default). Only 127.0.0.0/8
  targets are ever dialed (anything else is unreachable, no connect is made); connects, sends and
  handshakes have bounded timeouts. tests/standin/mtproxy_testbackend.py answers both protocols.
  C: keeps one middle-proxy RPC connection per target (nonce keyed by the --aes-pwd file,
  AES-256-CBC, handshake), re-checked every 2 s (and at most once a second on demand when a
  packet finds none ready); each connect attempt counts in outbound_connections_created, each
  refused one in total_connect_failures; the handshake runs in the event loop and a connection
  not ready after 3 s is dropped (as the real C does). total_ready_targets/ready_targets = targets
  with a handshaken connection. Packets are handled 5 ms after they arrive, and not at all when the
  client's FIN is already behind them (as measured). A packet goes out as RPC_PROXY_REQ under its
  client's ext_conn_id: tot_forwarded_queries +1; with no ready target, dropped_queries +1.
  RPC_PROXY_ANS for an open client: tot_forwarded_responses +1 and the data goes to the
  client, else dropped_responses +1 and RPC_CLOSE_CONN; a closing client sends RPC_CLOSE_CONN.
  Go: one pooled connection per target address, dialed on demand (outbound_dials; the first use of
  an address is an outbound_pool_miss, every later one an outbound_pool_hit, and a hit whose
  connection was closed dials again: outbound_reconnects), and one length-prefixed frame per
  packet, waiting 250 ms for the reply frame. Packet:
  dataplane_packets_total/handshake, forward_total, ingress_frames_received +1, then either
  sent: forward_successful, outbound_sends, ingress_frames_handled +1, outbound_bytes_sent
  +4+packet, and with a reply outbound_responses, ingress_frames_returned +1 (silence or a clean
  close count as success without a reply, as measured); or dial failed: forward_successful,
  outbound_dial_errors, dataplane_packets_outbound_errors, dataplane_packets_dropped,
  ingress_frames_failed +1; or the reply read failed (the backend reset the connection):
  forward_successful, outbound_sends, outbound_response_errors, outbound_closed_after_send,
  dataplane_packets_outbound_errors, dataplane_packets_dropped, ingress_frames_failed +1. A failed
  dial, send or reply marks that (cluster, target) unhealthy until the process restarts (a SIGHUP
  reload keeps the mark; the other cluster on the same address stays healthy until it fails
  itself, as measured); a packet with no unmarked target in its cluster: forward_failed,
  dataplane_packets_route_errors, dataplane_packets_dropped, ingress_frames_failed +1 and
  forward_last_error "no healthy targets available for cluster N". targets_unhealthy = marked
  (cluster, target) entries, targets_healthy = router_targets - that (all healthy until one fails).
  With every backend down this gives the captured pattern (100 packets: 1 dial error, 99 failed).
* /stats: the real key sets, order, section markers and multi-value lines (C 201 lines with one
  secret, Go 66, Go 61 while has_current_config is 0). C answers only ``GET /stats`` (no query)
  from peer 127.0.0.1 and only with --http-stats, else the 404 HTML page. Go answers path /stats
  (query ignored) from any peer, 404 "404 page not found" on other paths (as measured in
  measurements/task_extra.json, although the README table says "any path").
* Signals: SIGTERM/SIGINT exit 0. Go closes its listeners at once and, with client connections
  still open, exits when they are gone or after 2 s ("drain_s"). C -M + SIGINT: ~1 s, workers
  killed; a second SIGINT exits 1 at once and orphans the workers (they abort within ~1 s).
  SIGHUP: C only logs; Go re-reads the config (keeps the old one if the new one is broken).
  A C process (master or worker) ends as the real multi-threaded one does: its main thread exits
  first (a zombie in /proc/PID/stat) and another thread keeps its sockets, listening ones included,
  for "exit_threads_s" (15 ms; the real C: 0.2-19 ms), then the process is gone and its parent
  (systemd, or the master for a worker) hears of it.
  SIGUSR1: log reopen as measured (C without -l: later log output is discarded).
* -M N: C forks N workers (same argv, they hold the inherited listening sockets until they
  end, the master serves; on SIGTERM the master signals them and exits only once they are gone,
  as the real one does); Go runs a supervisor that starts N workers (same argv, env MTPROXY_GO_SUPERVISED_WORKER=1,
  MTPROXY_GO_WORKER_ID, MTPROXY_GO_SUPERVISOR_PID); worker 0 serves stats and clients.
* -u USER: the C flavour drops to USER when started as root, after it has read the config, secret
  and aes-pwd files: uid and gid of USER, groups [USER's gid], no capability left (as the real C's
  change_user_group). Go ignores -u and stays root, like the real one. Started by a non-root user,
  C keeps that user (no change). The real C started as root without -u switches to the user
  "mtproxy" (exit 1 when there is none); the stand-in keeps root there.

* /proc/PID/cmdline: rewritten at the very start (before forking workers) to the binary's argv,
  ``<path as exec'd> args...``, without the interpreter word that the ``#!`` line adds, followed
  by NUL padding (the old area's size cannot shrink): readers strip trailing NULs / empty words
  (``raw.rstrip(b"\0").split(b"\0")``). C workers inherit it, Go workers are started with the
  original words and rewrite theirs, so all processes show byte-identical cmdlines. When /proc or
  /proc/self/mem is unusable it stays ``python3 <path> args...``. The process name (comm) is the
  binary's basename. C shows each ``--nat-info`` value split at its first ':' (two words), as the
  real C's net_add_nat_info() leaves it; Go leaves its argv alone.

Not reproduced: the fake-TLS transport (-D), HTTP clients, CRC-32C on RPC connections (the test
backend declines it), more than one RPC connection per target, daemonizing (-d), the C worker
assertion backtrace.

Fault injection
---------------
Knobs of the stand-in itself, for the module tests that need a fault no environment makes (a /stats
that hangs or answers garbage, a SIGTERM ignored, a start that fails with a given message). The
Molecule scenarios take their faults from the environment instead, so that they run on real builds
too: the test backend resetting the Go port's connections (mtproxy_testbackend.py --reset-go-after),
the test killer (mtproxy_testkiller.py), the later Go port's flavour (mtproxy_standin_master_launcher.py).
JSON file, path from env MTPROXY_STANDIN_FAULTS, default /etc/mtproxy-standin/faults.json (must
be readable by the -u user when the C flavour drops privileges). A missing file means no faults.
One section per flavour; keys absent = off::

    {"c":  {...},
     "go": {...}}

Read at start (all keys) and re-read every 0.5 s by the running server (runtime keys):

start-time keys
  fail_at_start   string, or {"message": str, "exit_code": int}: log the message in the
                  flavour's style after option parsing and exit (default code 1).
  reject_flags    list of option names as written, e.g. ["-p", "--http-stats"]: if any appears on
                  the command line, behave like the later Go snapshot: print
                  "flag provided but not defined: -p" + its usage, twice, and exit 2.
  ready_delay_s   number. Go: has_current_config stays 0 (config not loaded) this long
                  (default 0.3). C: the stats port is opened only after this delay.
runtime keys
  crash_after_s   number: die this many seconds after start. "crash_signal": "SIGABRT" (or any
                  signal name) kills the process with that signal; otherwise it exits with
                  "crash_exit_code" (default 1).
  error_rate      {stats_key: per_second}: that counter rises at this rate while set, e.g.
                  {"ingress_invalid_frames": 5} (Go) or {"dropped_queries": 5} (C). Keys that are
                  not a counter of the flavour's format (gauges, identity, text) are ignored.
  stats_hang      true: accept /stats connections, read the request, never answer.
  stats_garbage   true or a string: answer /stats with 200 and a body that is not stats
                  (default "<html><body>standin garbage</body></html>\n").
  ignore_sigterm  true: SIGTERM is ignored (supervisor and workers included).
  exit_delay_s    number: after SIGTERM/SIGINT keep serving (ports held) this long, then stop.
  exit_threads_s  number: C only, how long a process's sockets outlive its main thread when it
                  ends (default 0.015, see "Signals" above; 0: the sockets close with the process).
  drain_s         number: Go only, the wait for open client connections at stop (default 2.0).
"""
from __future__ import print_function

import errno
import hashlib
import os
import pwd
import selectors
import signal
import socket
import sys
import time

import mtproxy_wire as wire

# json and subprocess are imported where they are used: a real binary starts in 11-37 ms, and every
# module imported at start adds to the start that the flip benchmark measures.

C_VERSION = "mtproxy-0.02 compiled at Nov 27 2026 01:45:17 by gcc 12.2.0 64-bit after commit "
DEFAULT_FAULTS_PATH = "/etc/mtproxy-standin/faults.json"
FAULTS_REREAD_S = 0.5
TICK_S = 0.05
HANDSHAKE_TIMEOUT_S = 10.0
SESSION_IDLE_TIMEOUT_S = 300.0
HTTP_REQUEST_TIMEOUT_S = 5.0
HUNG_STATS_CAP = 64
BACKEND_PROBE_EVERY_S = 2.0
BACKEND_ON_DEMAND_PROBE_S = 1.0
BACKEND_CONNECT_TIMEOUT_S = 0.5
BACKEND_SEND_TIMEOUT_S = 1.0
RPC_HANDSHAKE_LIMIT_S = wire.RPC_HANDSHAKE_TIMEOUT_S
GO_REPLY_TIMEOUT_S = 0.25
# Measured on the real C: packets of a client that closes right behind them (its FIN already
# there) move no counter; a client still connected a few ms later has them forwarded or dropped.
C_CLOSE_CHECK_S = 0.005
MAX_BACKEND_TARGETS = 64
AES_PWD_MIN, AES_PWD_MAX = 32, 256  # bytes of an --aes-pwd file the C takes
GO_DEFAULT_CONFIG_DELAY_S = 0.3
GO_DEFAULT_DRAIN_S = 2.0
C_SIGINT_WORKER_WAIT_S = 1.0
# The real C runs ~25 threads per process. When one exits, its main thread is a zombie at once while
# the kernel ends the others over 0.2-19 ms (measured), and they keep the process's descriptors:
# its listening sockets still complete connections meanwhile. The stand-in's C processes end so too.
C_EXIT_THREADS_S = 0.015
PARENT_CHECK_S = 0.5
DEFAULT_MAX_CONNECTIONS = 65536
VALID_TAGS = (b"\xef\xef\xef\xef", b"\xee\xee\xee\xee", b"\xdd\xdd\xdd\xdd")
C_404_BODY = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body bgcolor=\"white\">\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>MTProxy/1.0</center>\r\n</body>\r\n</html>\r\n"
)
GO_404_BODY = "404 page not found\n"
GARBAGE_BODY = "<html><body>standin garbage</body></html>\n"

C_USAGE = (
    'usage: {argv0} [-v] [-6] [-p<port>] [-H<http-port>{,<http-port>}] [-M<workers>] [-u<username>] '
    '[-b<backlog>] [-c<max-conn>] [-l<log-name>] [-W<window-size>] <config-file>\n'
    'mtproxy-0.02 compiled at Nov 27 2026 01:45:17 by gcc 12.2.0 64-bit after commit \n'
    '\tSimple MT-Proto proxy\n'
    '\t--ipv6/-6                          \tenables ipv6 TCP/UDP support\n'
    '\t--max-special-connections/-C <arg> \tsets maximal number of accepted client connections per worker\n'
    '\t--domain/-D <arg>                  \tadds allowed domain for TLS-transport mode, disables other transports; can be specified more than once\n'
    '\t--http-ports/-H <arg>              \tcomma-separated list of client (HTTP) ports to listen\n'
    '\t--slaves/-M <arg>                  \tspawn several slave workers; not recommended for TLS-transport mode for better replay protection\n'
    '\t--proxy-tag/-P <arg>               \t16-byte proxy tag in hex mode to be passed along with all forwarded queries\n'
    '\t--mtproto-secret/-S <arg>          \t16-byte secret in hex mode\n'
    '\t--ping-interval/-T <arg>           \tsets ping interval in second for local TCP connections (default 5.000)\n'
    '\t--window-clamp/-W <arg>            \tsets window clamp for client TCP connections\n'
    '\t--backlog/-b <arg>                 \tsets backlog size\n'
    '\t--connections/-c <arg>             \tsets maximal connections number\n'
    '\t--daemonize/-d {arg}               \tchanges between daemonize/not daemonize mode\n'
    '\t--help/-h                          \tprints help and exits\n'
    '\t--log/-l <arg>                     \tsets log file name\n'
    '\t--port/-p <arg>                    \t<port> or <sport>:<eport> sets listening port number or port range\n'
    '\t--user/-u <arg>                    \tsets user name to make setuid\n'
    '\t--verbosity/-v {arg}               \tsets or increases verbosity level\n'
    '\t--aes-pwd <arg>                    \tsets custom secret.conf file\n'
    '\t--nice <arg>                       \tsets niceness\n'
    '\t--msg-buffers-size <arg>           \tsets maximal buffers size (default 268435456)\n'
    '\t--disable-tcp                      \tdo not open listening tcp socket\n'
    '\t--crc32c                           \tTry to use crc32c instead of crc32 in tcp rpc\n'
    '\t--cpu-threads <arg>                \tNumber of CPU threads (1-64, default 8)\n'
    '\t--io-threads <arg>                 \tNumber of I/O threads (1-64, default 16)\n'
    '\t--allow-skip-dh                    \tAllow skipping DH during RPC handshake\n'
    '\t--force-dh                         \tForce using DH for all outbound RPC connections\n'
    '\t--max-accept-rate <arg>            \tmax number of connections per second that is allowed to accept\n'
    '\t--max-dh-accept-rate <arg>         \tmax number of DH connections per second that is allowed to accept\n'
    '\t--multithread {arg}                \trun in multithread mode\n'
    '\t--tcp-cpu-threads <arg>            \tnumber of tcp-cpu threads\n'
    '\t--tcp-iothreads <arg>              \tnumber of tcp-io threads\n'
    '\t--nat-info <arg>                   \t<local-addr>:<global-addr>\tsets network address translation for RPC protocol handshake\n'
    '\t--address <arg>                    \ttries to bind socket only to specified address\n'
    '\t--http-stats                       \tallow http server to answer on stats queries\n'
    '\t--mtproto-secret-file <arg>        \tpath to file with mtproto secrets (comma or whitespace-separated)\n'
)
GO_USAGE = (
    'usage: {argv0} [-v] [-6] [-p<port>] [-H<http-port>{,<http-port>}] [-M<workers>] [-u<username>] '
    '[-b<backlog>] [-c<max-conn>] [-l<log-name>] [-W<window-size>] <config-file>\n'
    'mtproxy-go-dev\n'
    '\tSimple MT-Proto proxy\n'
    '\t-S, --mtproto-secret\t16-byte secret in hex mode\n'
    '\t--mtproto-secret-file\tpath to file with mtproto secrets\n'
    '\t-P, --proxy-tag\t16-byte proxy tag in hex mode\n'
    '\t-D, --domain\tadds allowed domain for TLS-transport mode\n'
    '\t--http-stats\tallow http server to answer on stats queries\n'
    '\t-H, --http-ports\tcomma-separated list of client (HTTP) ports to listen\n'
    '\t-M, --slaves\tspawn several slave workers\n'
    '\t-C, --max-special-connections\tmax accepted client connections per worker\n'
    '\t-W, --window-clamp\tsets window clamp for client TCP connections\n'
    '\t-T, --ping-interval\tsets ping interval for local TCP connections\n'
    '\t-l, --log\tpath to log file\n'
    '\t-u, --user\tusername used for privilege drop\n'
    '\t-p, --port\tlocal port or port range start:end\n'
    '\t-v, --verbosity\tincrease verbosity or set explicit level\n'
    '\t--allow-skip-dh\tallow skipping DH during RPC handshake\n'
    '\t--disable-tcp\tdo not open listening tcp socket\n'
    '\t--crc32c\ttry to use crc32c instead of crc32 in tcp rpc\n'
    '\t--force-dh\tforce using DH for all outbound RPC connections\n'
    '\t--max-accept-rate\tmax accepted connections per second\n'
    '\t--max-dh-accept-rate\tmax DH accepted connections per second\n'
    '\t--address\tbind socket only to specified address\n'
    '\t--msg-buffers-size\tsets maximal buffers size\n'
    '\t--nice\tsets niceness\n'
    '\t--nat-info\t<local-addr>:<global-addr>\n'
)
GONEW_USAGE = (
    'mtproxy-0.02 (Go port)\n'
    '\tSimple MT-Proto proxy\n'
    '\n'
    'Usage: {argv0} [options] <config-file>\n'
    '\n'
    'Options:\n'
    '  -S, --mtproto-secret <hex>      16-byte secret in hex (32 chars); repeatable\n'
    '      --mtproto-secret-file <path> file with secrets (comma/whitespace sep)\n'
    '  -P, --proxy-tag <hex>           16-byte proxy tag in hex (32 chars)\n'
    '  -M, --slaves <N>                spawn N worker processes (default 1)\n'
    '  -H, --http-ports <ports>        comma-separated HTTP listen ports\n'
    '      --aes-pwd <path>            AES secret file for RPC\n'
    '      --http-stats                enable HTTP stats on main port\n'
    '  -C, --max-special-connections N max accepted client connections per worker\n'
    '  -W, --window-clamp N            TCP window clamp for client connections\n'
    '  -D, --domain <domain>           TLS domain; disables other transports; repeatable\n'
    '  -T, --ping-interval <sec>       ping interval for local TCP (default 5.0)\n'
    '  -u, --user <username>           setuid to this user\n'
    '  -6                              prefer IPv6 for outbound\n'
    '  -v, --verbosity [N]             increase or set verbosity level\n'
    '  -d, --daemonize                 daemonize\n'
    '  -h, --help                      print this help\n'
    '\n'
    'Positional:\n'
    '  <config-file>                   path to proxy-multi.conf\n'
)

C_STATS_TEMPLATE = """\
pid 29952
start_time 1795744426
current_time 1795744426
uptime 0
tot_idle_time 0.013
average_idle_percent 0.000
recent_idle_percent 0.013
active_network_events 0
time_after_epoll 0.000060
epoll_calls 14
epoll_intr 0
PID [192.0.2.2:19105:29952:1795744426]
>>>>>>connections>>>>>> start
active_connections 1
active_dh_connections 0
outbound_connections 0
ready_outbound_connections 0
active_outbound_connections 0
outbound_connections_created 8
total_connect_failures 8
inbound_connections 1
active_inbound_connections 1
inbound_connections_accepted 4
listening_connections 2
unused_connections_closed 0
ready_targets 0
allocated_targets 2
active_targets 2
inactive_targets 0
free_targets 0
max_connections 512
active_special_connections 0
max_special_connections 512
max_accept_rate 0
cur_accept_rate_remaining 0.000000
max_connection 15
conn_generation 12
allocated_connections 1
allocated_outbound_connections 0
allocated_inbound_connections 1
allocated_socket_connections 1
tcp_readv_calls 4
tcp_readv_intr 0
tcp_readv_bytes 130
tcp_writev_calls 1
tcp_writev_intr 0
tcp_writev_bytes 5948
free_later_size 0
free_later_total 0
accept_calls_failed 0
accept_nonblock_set_failed 0
accept_connection_limit_failed 0
accept_rate_limit_failed 0
accept_init_accepted_failed 0
<<<<<<connections<<<<<< end
>>>>>>raw_msg>>>>>> start
rwm_total_msgs 8
rwm_total_msg_parts 2
<<<<<<raw_msg<<<<<< end
>>>>>>raw_msg_buffer>>>>>> start
total_used_buffers_size 266240
total_used_buffers 130
allocated_buffer_bytes 4194176
buffer_chunk_alloc_ops 2
allocated_buffer_chunks 2
max_allocated_buffer_chunks 2
max_buffer_chunks 128
max_allocated_buffer_bytes 268435456
<<<<<<raw_msg_buffer<<<<<< end
>>>>>>tl_parse>>>>>> start
rpc_queries_received 0
rpc_answers_error 0
rpc_answers_received 0
rpc_sent_errors 0
rpc_sent_answers 0
rpc_sent_queries 0
tl_in_allocated 0
tl_out_allocated 0
rpc_qps 0.000000
default_rpc_flags 2048
<<<<<<tl_parse<<<<<< end
>>>>>>crypto_aes>>>>>> start
allocated_aes_crypto 0
allocated_aes_crypto_temp 0
aes_pwd_hash ed8123f2649f53eb2c67037ed971f93a
<<<<<<crypto_aes<<<<<< end
>>>>>>crypto_dh>>>>>> start
tot_dh_rounds 0 0 0
<<<<<<crypto_dh<<<<<< end
>>>>>>jobs>>>>>> start
thread_average_idle_percent 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_recent_idle_percent 0.000 100.000 100.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
tot_threads 0 16 8 1  0 0 0 0  0 0 0 0  0 0 0 0
thread_load_average_user 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_load_average_sys 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_load_average 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_load_recent_user 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_load_recent_sys 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
thread_load_recent 0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000  0.000 0.000 0.000 0.000
load_average_user 0.000
load_average_sys 0.000
load_average_total 0.000
load_recent_user 0.000
load_recent_sys 0.000
load_recent_total 0.000
max_average_user 0.000
max_average_sys 0.000
max_average_total 0.000
max_recent_user 0.000
max_recent_sys 0.000
max_recent_total 0.000
job_timers_allocated 1
jobs_created 29
jobs_active 11
jobs_running 0 0 0 0  1 0 0 0  0 0 0 0  0 0 0 0
jobs_allocated_memory 2128
timer_ops 30
timer_ops_scheduler 0
<<<<<<jobs<<<<<< end
>>>>>>mp_queue>>>>>> start
mpq_blocks_allocated 0
mpq_blocks_allocated_max 0
mpq_blocks_allocations 41
mpq_blocks_true_allocations 41
mpq_blocks_wasted 0
mpq_blocks_prepared 0
mpq_small_blocks_allocated 14
mpq_small_blocks_allocated_max 35
mpq_active 10
mpq_allocated 9
<<<<<<mp_queue<<<<<< end
>>>>>>timers>>>>>> start
event_timer_insert_ops 18
event_timer_remove_ops 12
event_timer_alarms 12
total_timers 4
<<<<<<timers<<<<<< end
>>>>>>rpc_targets>>>>>> start
total_rpc_targets 0
total_connections_in_rpc_targets 0
<<<<<<rpc_targets<<<<<< end
stats_generate_time 0.000199
vmsize_bytes 1275486208
vmrss_bytes 5013504
vmdata_bytes 262537216
config_filename backend.conf
config_loaded_at 1795744426
config_size 129
config_md5 90c1bb2aca8da6832abc098abc42d4e3
config_auth_clusters 4
workers 0
queries_get 0
qps_get 0.000
tot_forwarded_queries 0
expired_forwarded_queries 0
dropped_queries 0
tot_forwarded_responses 0
dropped_responses 0
tot_forwarded_simple_acks 0
dropped_simple_acks 0
active_rpcs_created 0
active_rpcs 0
rpc_dropped_answers 0
rpc_dropped_running 0
window_clamp 131072
total_ready_targets 0
total_allocated_targets 2
total_declared_targets 2
total_inactive_targets 0
total_connections 1
total_encrypted_connections 0
total_allocated_connections 1
total_allocated_outbound_connections 0
total_allocated_inbound_connections 1
total_allocated_socket_connections 1
total_dh_connections 0
total_dh_rounds 0 0 0
total_special_connections 0
total_max_special_connections 512
total_accept_connections_failed 0 0 0 0 0
ext_connections 0
ext_connections_created 0
total_active_network_events 0
total_network_buffers_used_size 266240
total_network_buffers_allocated_bytes 4194176
total_network_buffers_used 130
total_network_buffer_chunks_allocated 2
total_network_buffer_chunks_allocated_max 2
mtproto_proxy_errors 0
connections_failed_lru 0
connections_failed_flood 0
http_connections 1
pending_http_queries 0
http_queries 1
http_bad_headers 0
http_qps 0.000000
proxy_mode 2
proxy_tag_set 0
version
secret_1_active_connections 0
secret_1_active_auth_keys 0
"""
GO_STATS_TEMPLATE = """\
stats_generated_at 1795744467
has_current_config 1
config_filename backend.conf
config_loaded_at 1795744467
config_size 129
config_md5 90c1bb2aca8da6832abc098abc42d4e3
config_auth_clusters 4
router_default_cluster 2
router_clusters 4
router_targets 4
targets_healthy 4
targets_unhealthy 0
bootstrap_warnings 0
config_check_calls 1
config_reload_calls 1
config_reload_success 1
config_reload_last_error
forward_total 0
forward_successful 0
forward_failed 0
forward_used_default 0
forward_bytes 0
forward_avg_payload_bytes 0.000
forward_last_error
dataplane_active_sessions 0
dataplane_session_limit 512
dataplane_sessions_created 0
dataplane_sessions_closed 0
dataplane_packets_total 0
dataplane_packets_encrypted 0
dataplane_packets_handshake 0
dataplane_packets_dropped 0
dataplane_packets_parse_errors 0
dataplane_packets_route_errors 0
dataplane_packets_rejected_limit 0
dataplane_packets_rejected_dh_rate 0
dataplane_packets_outbound_errors 0
dataplane_bytes_total 0
outbound_dials 0
outbound_dial_errors 0
outbound_sends 0
outbound_send_errors 0
outbound_bytes_sent 0
outbound_responses 0
outbound_response_errors 0
outbound_response_bytes 0
outbound_active_sends 0
outbound_active_conns 0
outbound_pool_hits 0
outbound_pool_misses 0
outbound_reconnects 0
outbound_idle_evictions 0
outbound_closed_after_send 0
ingress_active_connections 0
ingress_accepted_connections 0
ingress_accept_rate_limited 0
ingress_closed_connections 0
ingress_frames_received 0
ingress_frames_handled 0
ingress_frames_returned 0
ingress_frames_failed 0
ingress_bytes_received 0
ingress_bytes_returned 0
ingress_read_errors 0
ingress_write_errors 0
ingress_invalid_frames 0
"""

NO_ARG, REQ_ARG, OPT_ARG = 0, 1, 2

# (long name, short letter or None, argument mode), as listed by the C binary's usage.
OPTIONS = [
    ("ipv6", "6", NO_ARG), ("max-special-connections", "C", REQ_ARG), ("domain", "D", REQ_ARG),
    ("http-ports", "H", REQ_ARG), ("slaves", "M", REQ_ARG), ("proxy-tag", "P", REQ_ARG),
    ("mtproto-secret", "S", REQ_ARG), ("ping-interval", "T", REQ_ARG), ("window-clamp", "W", REQ_ARG),
    ("backlog", "b", REQ_ARG), ("connections", "c", REQ_ARG), ("daemonize", "d", OPT_ARG),
    ("help", "h", NO_ARG), ("log", "l", REQ_ARG), ("port", "p", REQ_ARG), ("user", "u", REQ_ARG),
    ("verbosity", "v", OPT_ARG), ("aes-pwd", None, REQ_ARG), ("nice", None, REQ_ARG),
    ("msg-buffers-size", None, REQ_ARG), ("disable-tcp", None, NO_ARG), ("crc32c", None, NO_ARG),
    ("cpu-threads", None, REQ_ARG), ("io-threads", None, REQ_ARG), ("allow-skip-dh", None, NO_ARG),
    ("force-dh", None, NO_ARG), ("max-accept-rate", None, REQ_ARG),
    ("max-dh-accept-rate", None, REQ_ARG), ("multithread", None, OPT_ARG),
    ("tcp-cpu-threads", None, REQ_ARG), ("tcp-iothreads", None, REQ_ARG), ("nat-info", None, REQ_ARG),
    ("address", None, REQ_ARG), ("http-stats", None, NO_ARG), ("mtproto-secret-file", None, REQ_ARG),
]
LONG = dict((o[0], o) for o in OPTIONS)
SHORT = dict((o[1], o) for o in OPTIONS if o[1])


class OptionError(Exception):
    """Bad command line; `c_text` is glibc getopt's message, `go_text` the Go port's."""

    def __init__(self, c_text, go_text):
        Exception.__init__(self, go_text)
        self.c_text = c_text
        self.go_text = go_text


def _match_long(name, prefixes, argv0):
    if name in LONG:
        return LONG[name]
    if prefixes:
        hits = [o for o in OPTIONS if o[0].startswith(name)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            poss = " ".join("'--%s'" % o[0] for o in hits)
            raise OptionError("%s: option '--%s' is ambiguous; possibilities: %s" % (argv0, name, poss),
                              "unrecognized option --%s" % name)
    return None


def parse_args(argv0, args, prefixes):
    """GNU getopt_long-style parse. Returns ([(long_name, value)], positionals)."""
    opts, pos = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            pos.extend(args[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            opt = _match_long(name, prefixes, argv0)
            if opt is None:
                raise OptionError("%s: unrecognized option '%s'" % (argv0, arg),
                                  "unrecognized option --%s" % name)
            if opt[2] == NO_ARG:
                if eq:
                    raise OptionError("%s: option '--%s' doesn't allow an argument" % (argv0, opt[0]),
                                      "option --%s doesn't allow an argument" % opt[0])
                opts.append((opt[0], None))
            elif opt[2] == OPT_ARG:
                opts.append((opt[0], value if eq else None))
            elif eq:
                opts.append((opt[0], value))
            elif i < len(args):
                opts.append((opt[0], args[i]))
                i += 1
            else:
                raise OptionError("%s: option '--%s' requires an argument" % (argv0, opt[0]),
                                  "option --%s requires an argument" % opt[0])
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                opt = SHORT.get(letter)
                if opt is None:
                    raise OptionError("%s: invalid option -- '%s'" % (argv0, letter),
                                      "unrecognized option -%s" % letter)
                rest = arg[j:]
                if opt[2] == NO_ARG:
                    opts.append((opt[0], None))
                    continue
                if opt[2] == OPT_ARG:
                    opts.append((opt[0], rest or None))
                elif rest:
                    opts.append((opt[0], rest))
                elif i < len(args):
                    opts.append((opt[0], args[i]))
                    i += 1
                else:
                    raise OptionError("%s: option requires an argument -- '%s'" % (argv0, letter),
                                      "option -%s requires an argument" % letter)
                break
        else:
            pos.append(arg)
    return opts, pos


def option_names_used(args):
    """Option names as written on the command line (for reject_flags)."""
    names = []
    for arg in args:
        if arg == "--":
            break
        if arg.startswith("--"):
            names.append(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            names.append(arg[:2])
    return names


def to_int(text, default=0):
    """atoi(): leading integer, else default."""
    text = (text or "").strip()
    digits = ""
    for k, ch in enumerate(text):
        if ch.isdigit() or (k == 0 and ch in "+-"):
            digits += ch
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return default


def is_hex32(value):
    if len(value) != 32:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


class Settings(object):
    """The parsed command line."""

    def __init__(self, opts, pos):
        values = {}
        for name, value in opts:
            values.setdefault(name, []).append(value)
        self.values = values
        self.positionals = pos
        self.config = pos[0] if len(pos) == 1 else None
        self.stats_port = to_int(self.last("port").split(":")[0]) if self.has("port") else None
        self.http_ports = []
        for v in values.get("http-ports", []):
            self.http_ports.extend(to_int(p) for p in v.split(",") if p.strip())
        self.workers = to_int(self.last("slaves")) if self.has("slaves") else 0
        self.max_connections = to_int(self.last("connections")) if self.has("connections") else DEFAULT_MAX_CONNECTIONS
        self.max_special = (to_int(self.last("max-special-connections"))
                            if self.has("max-special-connections") else self.max_connections)
        self.window_clamp = to_int(self.last("window-clamp")) if self.has("window-clamp") else 131072
        self.max_accept_rate = to_int(self.last("max-accept-rate")) if self.has("max-accept-rate") else 0
        self.secrets = list(values.get("mtproto-secret", []))
        self.secret_file = self.last("mtproto-secret-file")
        self.aes_pwd = self.last("aes-pwd")
        self.address = self.last("address")
        self.user = self.last("user")
        self.log_file = self.last("log")
        self.http_stats = self.has("http-stats")
        self.proxy_tag = self.last("proxy-tag")

    def has(self, name):
        return name in self.values

    def last(self, name):
        vals = self.values.get(name)
        return vals[-1] if vals else None


# ---------------------------------------------------------------- backend config (proxy-multi.conf)

class ConfigError(Exception):
    """A config the proxy cannot use; ``code`` is the C's "config check failed! (code N)" (it exits -N)."""

    def __init__(self, c_lines, go_text, code=-1):
        Exception.__init__(self, go_text)
        self.c_lines = c_lines
        self.go_text = go_text
        self.code = code


def go_quote(text):
    out = ['"']
    for ch in text:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class BackendConfig(object):
    def __init__(self, filename, data, targets, default_cluster):
        self.filename = filename
        self.size = len(data)
        self.md5 = hashlib.md5(data).hexdigest()
        self.targets = targets
        self.clusters = sorted(set(t[0] for t in targets))
        self.unique_targets = len(set(t[1] for t in targets))
        self.default_cluster = default_cluster
        self.loaded_at = int(time.time())


def _tokens(text):
    """(token, line, end offset) with '#' comments removed; ';' is its own token."""
    toks = []
    line = 1
    k = 0
    n = len(text)
    while k < n:
        ch = text[k]
        if ch == "\n":
            line += 1
            k += 1
        elif ch.isspace():
            k += 1
        elif ch == "#":
            while k < n and text[k] != "\n":
                k += 1
        elif ch == ";":
            toks.append((";", line, k, k + 1))
            k += 1
        else:
            start = k
            while k < n and not text[k].isspace() and text[k] not in ";#":
                k += 1
            toks.append((text[start:k], line, start, k))
    return toks


def _rest_of_line(text, offset):
    end = text.find("\n", offset)
    return text[offset:] if end < 0 else text[offset:end]


def parse_backend_config(path):
    if os.path.isdir(path):
        # measured: C opens it and fails reading (code -2, exit 2); Go fails reading it (exit 1)
        raise ConfigError(["error reading configuration file (null): Is a directory"],
                          "cannot re-read config file %s: read %s: is a directory" % (path, path), code=-2)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (IOError, OSError) as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        go_reason = reason[0].lower() + reason[1:] if reason else reason
        raise ConfigError(["cannot re-read config file %s: %s" % (path, reason)],
                          "cannot re-read config file %s: open %s: %s" % (path, path, go_reason))
    text = data.decode("latin-1")
    toks = _tokens(text)
    targets = []
    default_cluster = None
    stmt = []
    for tok in toks + [None]:
        if tok is not None and tok[0] != ";":
            stmt.append(tok)
            continue
        if not stmt:
            continue
        if tok is None:
            first = stmt[0]
            raise ConfigError(["%s:%d: fatal: ; expected near %s" % (path, first[1], _rest_of_line(text, first[3]))],
                              "missing ';' after directive: %s" % go_quote(text[first[2]:stmt[-1][3]]))
        word = stmt[0][0]
        raw = text[stmt[0][2]:stmt[-1][3]]
        if word == "proxy_for":
            ok = len(stmt) >= 3 and _is_int(stmt[1][0]) and ":" in stmt[2][0]
            if not ok or len(stmt) > 3:
                bad = stmt[3] if ok else stmt[min(len(stmt) - 1, 2)]
                expected = "; expected" if ok else "cluster id and host:port expected"
                raise ConfigError(["%s:%d: fatal: %s near %s" % (path, bad[1], expected, _rest_of_line(text, bad[3]))],
                                  "invalid proxy_for directive: %s" % go_quote(raw))
            targets.append((int(stmt[1][0]), stmt[2][0]))
        elif word in ("default", "timeout", "min_connections", "max_connections"):
            if len(stmt) != 2 or not _is_int(stmt[1][0]):
                raise ConfigError(["%s:%d: fatal: integer expected near %s" % (path, stmt[0][1], _rest_of_line(text, stmt[0][3]))],
                                  "invalid %s directive: %s" % (word, go_quote(raw)))
            if word == "default":
                default_cluster = int(stmt[1][0])
        elif word == "proxy":
            if len(stmt) != 2 or ":" not in stmt[1][0]:
                raise ConfigError(["%s:%d: fatal: host:port expected near %s" % (path, stmt[0][1], _rest_of_line(text, stmt[0][3]))],
                                  "invalid proxy directive: %s" % go_quote(raw))
            targets.append((0, stmt[1][0]))
        else:
            raise ConfigError(["%s:%d: fatal: 'proxy_for' expected near %s" % (path, stmt[0][1], _rest_of_line(text, stmt[0][2]))],
                              "unknown directive: %s" % go_quote(raw))
        stmt = []
    if not targets:
        raise ConfigError(["%s: fatal: no MTProto next proxy servers defined to forward queries to" % path],
                          "no proxy_for targets in %s" % path)
    if default_cluster is None:
        default_cluster = targets[0][0]
    return BackendConfig(path, data, targets, default_cluster)


def _is_int(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- backends (proxy_for targets)

HTTP_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HTTP_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(when=None):
    """RFC 7231 Date header value (what email.utils.formatdate(usegmt=True) gives)."""
    t = time.gmtime(when)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (HTTP_DAYS[t.tm_wday], t.tm_mday, HTTP_MONTHS[t.tm_mon - 1],
                                                    t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def loopback_target(addr):
    """(ip, port) of a "host:port" in 127.0.0.0/8; None for anything else (never dialed)."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        return None
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        port = int(port)
    except (OSError, ValueError):
        return None
    if packed[0] != 127 or not 0 < port < 65536:
        return None
    return socket.inet_ntop(socket.AF_INET, packed), port


def dial(addr):
    """A connected blocking socket (bounded timeouts) to a loopback target, or None."""
    target = loopback_target(addr)
    if target is None:
        return None
    try:
        sock = socket.create_connection(target, timeout=BACKEND_CONNECT_TIMEOUT_S)
    except OSError:
        return None
    sock.settimeout(BACKEND_SEND_TIMEOUT_S)
    return sock


def still_open(sock):
    """False once the backend closed or reset the connection (data waiting to be read is open)."""
    try:
        sock.setblocking(False)
        try:
            return bool(sock.recv(1, socket.MSG_PEEK))
        finally:
            sock.settimeout(BACKEND_SEND_TIMEOUT_S)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


def peer_closed(sock):
    """Whether the peer's FIN is already waiting behind the data read so far."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def rpc_open(addr, aes_pwd):
    """C: a connection to a target with the proxy's RPC nonce sent, as (socket, RpcSession), or
    None when nothing listens. The handshake goes on in the event loop (Server.on_backend_read):
    the real C never waits for a target, so neither /stats nor clients stall behind one."""
    sock = dial(addr)
    if sock is None:
        return None
    try:
        session = wire.RpcSession("proxy", sock.getsockname()[:2], sock.getpeername()[:2], aes_pwd)
        sock.sendall(session.start())
    except (OSError, wire.WireError):
        sock.close()
        return None
    session.opened = time.time()
    return sock, session


class Backends(object):
    """The unique proxy_for targets: probed health, one pooled outbound connection each.

    ``healthy``: the last connect (probe or dial) to the target worked; for C that includes the
    RPC handshake (``sessions`` holds each pooled connection's RpcSession). ``marked``: Go only,
    (cluster, target) entries that failed a dial, a send or a reply: unhealthy until the process
    restarts (a reload keeps the mark), as measured on the real port, which keeps health per cluster
    entry and its connections per address (``used``: addresses dialed before, for the pool counters).
    ``watch``/``unwatch``: the server's hooks to read a C connection's answers in its event loop.
    """

    def __init__(self, count):
        self.count = count
        self.addrs = []
        self.targets = []
        self.default_cluster = 0
        self.healthy = {}
        self.marked = set()
        self.used = set()
        self.pool = {}
        self.sessions = {}
        self.readers = {}
        self.aes_pwd = None
        self.watch = self.unwatch = None
        self.next_probe = 0.0
        self.last_probe = 0.0

    def configure(self, cfg):
        addrs = []
        for _cluster, addr in cfg.targets:
            if addr not in addrs:
                addrs.append(addr)
        self.addrs = addrs[:MAX_BACKEND_TARGETS]
        self.targets = [(c, a) for c, a in cfg.targets if a in self.addrs]
        self.default_cluster = cfg.default_cluster
        for addr in list(self.pool):
            if addr not in self.addrs:
                self.close(addr)
        self.healthy = dict((a, self.healthy.get(a, False)) for a in self.addrs)
        self.marked = set(t for t in self.marked if t in self.targets)
        self.next_probe = 0.0

    def close(self, addr):
        sock = self.pool.pop(addr, None)
        self.sessions.pop(addr, None)
        self.readers.pop(addr, None)
        if sock is not None:
            if self.unwatch is not None:
                self.unwatch(sock)
            try:
                sock.close()
            except OSError:
                pass

    def pooled(self, addr):
        """The pooled connection if it is still open (a dead one is closed and forgotten)."""
        sock = self.pool.get(addr)
        if sock is not None and not still_open(sock):
            self.close(addr)
            return None
        return sock

    def route(self, dc):
        """(targets for the client's DC, whether the default cluster stood in): the DC's own
        ``proxy_for`` cluster, else the ``default`` one, as both binaries route."""
        own = [a for c, a in self.targets if c == dc]
        if own:
            return own, False
        return [a for c, a in self.targets if c == self.default_cluster], True

    def cluster_of(self, dc, by_default):
        return self.default_cluster if by_default else dc

    def ready_count(self):
        return sum(1 for a in self.addrs if self.healthy.get(a))

    def marked_count(self):
        return len(self.marked)

    def probe(self, now, c_style):
        """C keeps an RPC connection to every target (each connect attempt counted like the C
        binary); Go only checks reachability here (it dials on demand; a mark stays)."""
        self.last_probe = now
        self.next_probe = now + BACKEND_PROBE_EVERY_S
        for addr in self.addrs:
            if self.pooled(addr) is not None:
                session = self.sessions.get(addr)
                if session is not None and not session.ready and now - session.opened >= RPC_HANDSHAKE_LIMIT_S:
                    self.close(addr)  # the real C fails a connection not ready 3 s after it opened
                else:
                    self.healthy[addr] = session is None or session.ready
                    continue
            if loopback_target(addr) is None:
                self.healthy[addr] = False
                continue
            if c_style:
                self.healthy[addr] = False
                self.count("outbound_connections_created")
                opened = rpc_open(addr, self.aes_pwd) if self.aes_pwd else None
                if opened is None:
                    self.count("total_connect_failures")
                    continue
                sock, self.sessions[addr] = opened[0], opened[1]
                self.pool[addr] = sock
                if self.watch is not None:
                    self.watch(sock)
                continue
            sock = dial(addr)
            self.healthy[addr] = sock is not None
            if sock is not None:
                sock.close()

    def send(self, addr, sock, data):
        try:
            sock.sendall(data)
            return True
        except OSError:
            self.close(addr)
            self.healthy[addr] = False
            return False

    def go_exchange(self, addr, sock, packet):
        """Go: one request frame, then one reply frame within GO_REPLY_TIMEOUT_S on the same
        connection. Returns ("reply", body), ("silent", None) for a timeout (connection kept),
        ("eof", None) for a clean close, ("error", None) for a reset or a reply above 8 MiB, or
        ("send_error", None), as measured on the real port (the Go port's internal/proxy/outbound.go)."""
        if not self.send(addr, sock, wire.go_frame(packet)):
            return "send_error", None
        reader = self.readers.setdefault(addr, wire.GoFrameReader())
        deadline = time.time() + GO_REPLY_TIMEOUT_S
        try:
            while True:
                left = deadline - time.time()
                if left <= 0:
                    return "silent", None
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    self.close(addr)
                    return "eof", None
                bodies = reader.feed(data)
                if bodies:
                    reader.buf[:0] = b"".join(wire.go_frame(b) for b in bodies[1:])
                    return "reply", bodies[0]
        except socket.timeout:
            return "silent", None
        except (OSError, wire.WireError):
            self.close(addr)
            return "error", None
        finally:
            if addr in self.pool:
                sock.settimeout(BACKEND_SEND_TIMEOUT_S)


# ---------------------------------------------------------------- faults

class Faults(object):
    """The flavour's section of the fault file, re-read when its mtime/size changes."""

    def __init__(self, flavour, path, log=None):
        self.flavour = flavour
        self.path = path
        self.section = {}
        self.stamp = None
        self.next_check = 0.0
        self.log = log
        self.refresh(force=True)

    def refresh(self, force=False):
        now = time.time()
        if not force and now < self.next_check:
            return
        self.next_check = now + FAULTS_REREAD_S
        try:
            st = os.stat(self.path)
        except OSError:
            self.section, self.stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            with open(self.path) as handle:
                import json
                data = json.load(handle)
            section = data.get(self.flavour) or {}
            if not isinstance(section, dict):
                raise ValueError("section %s is not an object" % self.flavour)
            self.section = section
        except (IOError, OSError, ValueError, AttributeError) as exc:
            if self.log:
                self.log.plain("standin: ignoring fault file %s: %s" % (self.path, exc))

    def get(self, key, default=None):
        value = self.section.get(key, default)
        return default if value is None else value

    def number(self, key, default=None):
        value = self.section.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return default
        return float(value)


# ---------------------------------------------------------------- logging

class Log(object):
    """Writes log lines in the flavour's style to stderr or the -l file."""

    def __init__(self, flavour, prefix="", log_file=None, file_from_start=False):
        self.flavour = flavour
        self.prefix = prefix
        self.log_file = log_file
        self.muted = False
        self.stream = sys.stderr
        if log_file and file_from_start:
            self.reopen()

    def reopen(self):
        try:
            stream = open(self.log_file, "a")
        except (IOError, OSError):
            return False
        if self.stream is not sys.stderr:
            try:
                self.stream.close()
            except (IOError, OSError):
                pass
        self.stream = stream
        return True

    def write(self, line):
        if self.muted:
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (IOError, OSError, ValueError):
            pass

    def plain(self, msg):
        self.write(self.prefix + msg)

    def c(self, msg):
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + ".%06d" % int((now % 1) * 1e6)
        self.write("[%d][%s local] %s" % (os.getpid(), stamp, msg))

    def c_sig(self, msg):
        self.write("[pid %d] [time %d] %s" % (os.getpid(), int(time.time()), msg))

    def info(self, msg):
        if self.flavour == "c":
            self.c(msg)
        else:
            self.plain(msg)


def c_cmdline_words(argv):
    """The words the real C's /proc/PID/cmdline shows for ``argv``: net_add_nat_info()
    (net/net-connections.c) writes a NUL over the first ':' of each ``--nat-info`` value in place,
    so ``--nat-info L:G`` shows as three words and ``--nat-info=L:G`` as two."""
    shown = []
    value_next = False
    for word in argv:
        if (value_next or word.startswith("--nat-info=")) and ":" in word:
            shown += word.split(":", 1)
        else:
            shown.append(word)
        value_next = word == "--nat-info"
    return shown


def present_binary_cmdline(argv, shown=None):
    """Make /proc/self/cmdline read ``argv`` (script path as exec'd + args), like a real binary's,
    or ``shown`` when given (the words a real binary's cmdline shows once it edited its argv).

    Started through its ``#!/usr/bin/env python3`` line the kernel shows ``python3 <path> args``;
    only that form (interpreter words + exactly ``argv``) is rewritten, so a launcher that already
    set its own cmdline is left alone. The area is overwritten in place, the rest padded with NULs. The last
    byte of the area stays NUL, so the kernel returns the whole area (proc(5)): readers see the
    argv followed by padding NULs and must strip trailing empty words. Checked by reading back;
    on any failure (no /proc, no permission, too long) the original bytes stay (restored).
    Returns the original words (bytes, interpreter first), or None when /proc is unreadable.
    """
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            original = handle.read()
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return None
    words = original.rstrip(b"\0").split(b"\0")
    try:
        # field 3 (state) is fields[0]; arg_start/arg_end are fields 48/49
        arg_start, arg_end = int(fields[45]), int(fields[46])
        tail = [os.fsencode(a) for a in argv]
    except (IndexError, ValueError, UnicodeError):
        return words
    wanted = b"\0".join(os.fsencode(a) for a in (argv if shown is None else shown)) + b"\0"
    size = arg_end - arg_start
    if len(words) <= len(tail) or words[len(words) - len(tail):] != tail:
        return words
    if arg_start <= 0 or size != len(original) or len(wanted) > size:
        return words
    try:
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(arg_start)
            mem.write(wanted + b"\0" * (size - len(wanted)))
            with open("/proc/self/cmdline", "rb") as handle:
                shown = handle.read()
            if shown.rstrip(b"\0").split(b"\0") != wanted.rstrip(b"\0").split(b"\0"):
                mem.seek(arg_start)
                mem.write(original)
    except (IOError, OSError, ValueError, OverflowError):
        pass
    return words


ORIGINAL_CMDLINE = None


def set_process_name(name):
    # What prctl(PR_SET_NAME) does, without loading ctypes at every start.
    try:
        with open("/proc/self/comm", "w") as handle:
            handle.write(name[:15])
    except (IOError, OSError):  # best effort: only cosmetic (ps / pgrep by name)
        pass


GO_SIGNAL_NAMES = {
    signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGINT: "interrupt",
    signal.SIGABRT: "aborted", signal.SIGSEGV: "segmentation fault", signal.SIGHUP: "hangup",
    signal.SIGQUIT: "quit", signal.SIGBUS: "bus error", signal.SIGUSR1: "user defined signal 1",
}


def go_exit_text(status):
    if status < 0:
        return "signal: %s" % GO_SIGNAL_NAMES.get(-status, "signal %d" % -status)
    return "exit status %d" % status


def wait_status(pid, block=False):
    """Exit code (negative: signal) of child pid, or None while it runs."""
    try:
        got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return 0
    if got == 0:
        return None
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def local_ip():
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if not addr.startswith("127."):
            return addr
    except Exception:  # no resolver in the container: the real binary would show loopback too
        pass
    return "127.0.0.1"


LOCAL_IP = None


def proc_status_bytes(field):
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (IOError, OSError, ValueError, IndexError):
        pass
    return 0


def parse_template(text):
    lines = []
    for line in text.splitlines():
        key, _sep, value = line.partition(" ")
        lines.append([key, value])
    return lines


C_LINES = None
GO_LINES = None


# ---------------------------------------------------------------- sockets

def listen_tcp(host, port, dual_stack=False):
    """Bound, listening, non-blocking socket; SO_REUSEADDR like both binaries, never SO_REUSEPORT."""
    if dual_stack and socket.has_ipv6:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            sock = None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("::", port))
                sock.listen(4096)
                sock.setblocking(False)
                return sock, "[::]"
            except OSError as exc:
                sock.close()
                if exc.errno == errno.EADDRINUSE:
                    raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock, host


def bind_reason(exc):
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return reason[0].lower() + reason[1:] if reason else reason


class Client(object):
    """One client connection: its obfuscated2 streams once the header checked out, and (C) the
    ext_conn_id its packets go to the backend under, with the target that carried them."""
    __slots__ = ("sock", "hdr", "valid", "tag", "dc", "rx", "tx", "reader", "deadline", "session",
                 "ext_id", "ext_addr", "peer", "local")

    def __init__(self, sock, now, ext_id):
        self.sock = sock
        self.hdr = bytearray()
        self.valid = None
        self.tag = None
        self.dc = 0
        self.rx = self.tx = self.reader = None
        self.deadline = now + HANDSHAKE_TIMEOUT_S
        self.session = False
        self.ext_id = ext_id
        self.ext_addr = None
        try:
            self.peer, self.local = sock.getpeername()[:2], sock.getsockname()[:2]
        except OSError:
            self.peer = self.local = ("127.0.0.1", 0)


class HttpConn(object):
    __slots__ = ("sock", "buf", "deadline", "peer", "hung", "since")

    def __init__(self, sock, peer, now):
        self.sock = sock
        self.buf = bytearray()
        self.deadline = now + HTTP_REQUEST_TIMEOUT_S
        self.peer = peer
        self.hung = False
        self.since = now


# ---------------------------------------------------------------- the serving process

class Server(object):
    """Event loop of the process that owns the sockets (C master / no -M, Go worker 0 / no -M)."""

    def __init__(self, flavour, settings, log, faults, cfg=None, c_workers=None, go_worker=None):
        self.flavour = flavour
        self.s = settings
        self.log = log
        self.faults = faults
        self.cfg = cfg
        self.c_workers = c_workers or []
        self.go_worker = go_worker
        self.start = time.time()
        self.start_int = int(self.start)
        self.sel = selectors.DefaultSelector()
        self.client_listeners = []
        self.stats_listener = None
        self.clients = {}
        self.https = {}
        self.signals = []
        self.ctr = {}
        self.acc = {}
        self.last_tick = self.start
        self.next_sweep = self.start
        self.next_parent_check = self.start + PARENT_CHECK_S
        self.supervisor_pid = None
        self.scheduled = []
        self.stop_sig = None
        self.stop_phase = None
        self.stop_until = 0.0
        self.c_stats_ready = False
        self.aes_hash = "0" * 32
        self.ip = LOCAL_IP or local_ip()
        self.backends = Backends(self.count)
        self.backends.watch, self.backends.unwatch = self.c_watch, self.c_unwatch
        if cfg is not None:
            self.backends.configure(cfg)
        self.secret_bytes = []
        self.next_ext_id = 0
        self.ext_clients = {}
        self.last_forward_error = ""
        self.reload_error = ""

    # ---- plumbing
    def count(self, key, n=1):
        self.ctr[key] = self.ctr.get(key, 0) + n

    def add_listener(self, sock, handler):
        self.sel.register(sock, selectors.EVENT_READ, handler)

    def drop(self, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass

    def install_signals(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        self.signals.append(signum)

    def schedule(self, when, action):
        self.scheduled.append((when, action))

    def run(self):
        self.install_signals()
        while True:
            wait = TICK_S
            if self.scheduled:
                wait = max(0.0, min(wait, min(when for when, _action in self.scheduled) - time.time()))
            try:
                events = self.sel.select(wait)
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise
                events = []
            for key, _mask in events:
                key.data(key.fileobj)
            self.tick()

    def exit(self, code):
        linger = c_exit_threads_s(self.faults) if self.flavour == "c" else 0.0
        if not linger:
            for sock in list(self.client_listeners) + ([self.stats_listener] if self.stats_listener else []):
                self.drop(sock)
        for c in list(self.clients.values()):
            self.drop(c.sock)
        for h in list(self.https.values()):
            self.drop(h.sock)
        try:
            sys.stderr.flush()
        except (IOError, OSError, ValueError):
            pass
        end_process(code, linger)

    # ---- periodic work
    def tick(self):
        now = time.time()
        self.faults.refresh()
        while self.signals:
            self.handle_signal(self.signals.pop(0))
        due = [a for a in self.scheduled if a[0] <= now]
        if due:
            self.scheduled = [a for a in self.scheduled if a[0] > now]
            for _when, action in due:
                action()
        self.apply_error_rate(now)
        crash = self.faults.number("crash_after_s")
        if crash is not None and now - self.start >= crash:
            self.crash()
        if now >= self.next_sweep:
            self.next_sweep = now + 0.5
            self.sweep(now)
        if self.client_listeners and self.cfg is not None and now >= self.backends.next_probe:
            self.backends.probe(now, self.flavour == "c")
        if self.go_worker is not None and now >= self.next_parent_check:
            self.next_parent_check = now + PARENT_CHECK_S
            if os.getppid() != self.supervisor_pid:
                self.exit(1)
        self.check_c_workers()
        self.progress_stop(now)
        self.last_tick = now

    def sweep(self, now):
        for c in list(self.clients.values()):
            if now >= c.deadline:
                if c.valid is None:
                    self.client_invalid()
                self.close_client(c)
        hung = []
        for h in list(self.https.values()):
            if h.hung:
                hung.append(h)
            elif now >= h.deadline:
                self.close_http(h)
        if len(hung) > HUNG_STATS_CAP:
            for h in sorted(hung, key=lambda x: x.since)[:len(hung) - HUNG_STATS_CAP]:
                self.close_http(h)

    def counter_keys(self):
        return C_COUNTER_KEYS if self.flavour == "c" else GO_COUNTER_KEYS

    def apply_error_rate(self, now):
        rates = self.faults.get("error_rate", {})
        dt = max(0.0, now - self.last_tick)
        if not isinstance(rates, dict):
            return
        for key, rate in rates.items():
            if key in self.counter_keys() and isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
                self.acc[key] = self.acc.get(key, 0.0) + float(rate) * dt

    def crash(self):
        self.log.info("standin fault: crash_after_s reached, crashing")
        name = self.faults.get("crash_signal")
        if isinstance(name, str) and hasattr(signal, name.upper()):
            sig = getattr(signal, name.upper())
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            time.sleep(1)
        code = self.faults.number("crash_exit_code", 1)
        self.exit(int(code))

    # ---- signals and stopping
    def handle_signal(self, sig):
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.on_stop_signal(sig)
        elif sig == signal.SIGHUP:
            if self.flavour == "c":
                self.log.c_sig("received signal 01")
            else:
                self.reload()
        elif sig == signal.SIGUSR1:
            self.on_usr1()

    def on_usr1(self):
        if self.flavour == "c":
            self.log.c_sig("received signal 10")
            for pid in self.c_workers:
                try:
                    os.kill(pid, signal.SIGUSR1)
                except OSError:
                    pass
            if self.s.log_file:
                self.log.reopen()
            else:
                self.log.muted = True
            return
        if self.s.log_file and self.log.reopen():
            self.log.plain("SIGUSR1 received: log file reopened.")
        elif self.go_worker is not None:
            self.log.plain("SIGUSR1 log reopen failed: reopen not supported by wrapped writer")
        else:
            self.log.plain("SIGUSR1 received: no log file configured, skipping reopen.")

    def on_stop_signal(self, sig):
        name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
        if sig == signal.SIGTERM and self.faults.get("ignore_sigterm"):
            return
        if self.flavour == "c":
            if self.stop_sig == signal.SIGINT and sig == signal.SIGINT and self.stop_phase == "c-int-wait":
                self.log.c_sig("SIGINT handled immediately.")
                self.exit(1)
            self.log.c_sig("%s handled." % name)
            if self.stop_sig is not None:
                if sig == signal.SIGTERM:
                    self.stop_sig = sig
                return
        elif self.stop_sig is not None:
            return
        self.stop_sig = sig
        self.stop_phase = "delay"
        self.stop_until = time.time() + max(0.0, self.faults.number("exit_delay_s", 0.0))

    def progress_stop(self, now):
        if self.stop_phase is None or (self.stop_phase in ("delay", "c-int-wait") and now < self.stop_until):
            return
        name = "SIGTERM" if self.stop_sig == signal.SIGTERM else "SIGINT"
        if self.stop_phase == "delay":
            if self.flavour == "c":
                if not self.c_workers:
                    self.log.c("Terminated by %s." % name)
                    self.exit(0)
                if self.stop_sig == signal.SIGTERM:
                    self.signal_workers(signal.SIGTERM)
                    self.stop_phase = "c-term-wait"
                else:
                    self.stop_phase = "c-int-wait"
                self.stop_until = now + C_SIGINT_WORKER_WAIT_S
                return
            self.close_listeners()
            self.log.plain("Terminated by %s." % name)
            if not self.clients:
                self.exit(0)
            self.stop_phase = "go-drain"
            self.stop_until = now + max(0.0, self.faults.number("drain_s", GO_DEFAULT_DRAIN_S))
            return
        if self.stop_phase == "go-drain":
            if not self.clients:
                self.exit(0)
            if now >= self.stop_until:
                self.log.plain("ingress server shutdown error: context deadline exceeded")
                self.exit(0)
            return
        if self.stop_phase == "c-term-wait":
            if self.c_workers and now < self.stop_until:
                return
        if self.c_workers:
            left = len(self.c_workers)
            self.signal_workers(signal.SIGKILL)
            for pid in self.c_workers:
                wait_status(pid, block=True)
            self.c_workers = []
            self.log.c("WARNING: %d children unfinished --> they are now killed" % left)
        self.log.c("Terminated by %s." % name)
        self.exit(0)

    def signal_workers(self, sig):
        for pid in self.c_workers:
            try:
                os.kill(pid, sig)
            except OSError:
                pass

    def check_c_workers(self):
        for pid in list(self.c_workers):
            status = wait_status(pid)
            if status is None:
                continue
            self.c_workers.remove(pid)
            if self.stop_phase in ("c-term-wait",):
                continue
            if self.stop_phase == "c-int-wait":
                continue
            self.log.c("Child %d terminated, aborting" % pid)
            self.signal_workers(signal.SIGTERM)
            deadline = time.time() + 1.0
            for other in list(self.c_workers):
                while wait_status(other) is None and time.time() < deadline:
                    time.sleep(0.01)
            self.exit(1)

    def close_listeners(self):
        for sock in self.client_listeners:
            self.drop(sock)
        self.client_listeners = []
        if self.stats_listener is not None:
            self.drop(self.stats_listener)
            self.stats_listener = None

    # ---- Go config
    def go_load_config(self):
        try:
            cfg = parse_backend_config(self.s.config)
        except ConfigError as exc:
            self.log.plain("signal loop error: %s" % exc.go_text)
            self.exit(1)
        self.cfg = cfg
        self.backends.configure(cfg)
        for key in ("config_check_calls", "config_reload_calls", "config_reload_success"):
            self.count(key)
        self.log.plain("runtime initialized: targets=%d clusters=%d bytes=%d md5=%s"
                       % (len(cfg.targets), len(cfg.clusters), cfg.size, cfg.md5))

    def reload(self):
        self.count("config_check_calls")
        self.count("config_reload_calls")
        try:
            cfg = parse_backend_config(self.s.config)
        except ConfigError as exc:
            self.reload_error = exc.go_text
            self.log.plain("configuration reload failed: %s" % exc.go_text)
            return
        self.cfg = cfg
        self.backends.configure(cfg)
        self.reload_error = ""
        self.count("config_reload_success")
        self.log.plain("configuration file %s re-read successfully (%d bytes parsed), new configuration active"
                       % (self.s.config, cfg.size))

    # ---- client connections
    def on_client_accept(self, lsock):
        for _attempt in range(256):
            try:
                sock, _peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            if len(self.clients) >= max(1, self.s.max_connections):
                if self.flavour == "go":
                    self.count("ingress_accept_rate_limited")
                sock.close()
                continue
            if self.flavour == "c":
                if not self.s.workers:
                    self.count("inbound_connections_accepted", 2)
                    self.count("conn_generation")
            else:
                self.count("ingress_accepted_connections")
            self.next_ext_id += 1
            c = Client(sock, time.time(), (1 << 22) + self.next_ext_id)
            self.clients[sock.fileno()] = c
            self.sel.register(sock, selectors.EVENT_READ, self.on_client_read)

    def client_invalid(self):
        if self.flavour == "go":
            self.count("ingress_invalid_frames")
            self.count("ingress_frames_failed")

    def close_client(self, c):
        if self.clients.pop(c.sock.fileno(), None) is None:
            return
        self.drop(c.sock)
        if self.flavour == "go":
            self.count("ingress_closed_connections")
            if c.session:
                self.count("dataplane_sessions_closed")
        elif c.ext_addr is not None:
            self.ext_clients.pop(c.ext_id, None)
            self.c_backend_send(c.ext_addr, wire.close_conn(c.ext_id))

    def on_client_read(self, sock):
        c = self.clients.get(sock.fileno())
        if c is None:
            self.drop(sock)
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            if self.flavour == "go":
                self.count("ingress_read_errors")
            data = b""
        if not data:
            if c.valid is None:
                self.client_invalid()
            self.close_client(c)
            return
        if self.flavour == "c" and not self.s.workers:
            self.count("tcp_readv_calls")
            self.count("tcp_readv_bytes", len(data))
        now = time.time()
        if c.valid is False:
            return
        if c.valid is None:
            need = 64 - len(c.hdr)
            c.hdr += data[:need]
            data = data[need:]
            if len(c.hdr) < 64:
                return
            accepted = wire.accept_handshake(bytes(c.hdr), self.secret_bytes)
            if accepted is None:
                # Measured: Go closes at once; C keeps the connection and ignores what follows.
                c.valid = False
                self.client_invalid()
                if self.flavour == "go":
                    self.close_client(c)
                return
            c.valid = True
            c.tag, c.dc, _index, c.rx, c.tx = accepted
            c.reader = wire.FrameReader(c.tag)
        c.deadline = now + SESSION_IDLE_TIMEOUT_S
        if not data:
            return
        try:
            packets = c.reader.feed(c.rx.update(data))
        except wire.WireError:
            if self.flavour == "go":
                self.count("ingress_frames_failed")
            self.close_client(c)
            return
        if self.flavour == "c" and packets:
            # Measured: packets from a client that closed right after sending them move no C
            # counter and never reach a backend; they are handled a moment later, if it is still there.
            self.schedule(now + C_CLOSE_CHECK_S, lambda: self.c_packets(c, packets))
            return
        for packet in packets:
            if self.clients.get(sock.fileno()) is not c:
                return
            self.on_packet(c, packet)

    def c_packets(self, c, packets):
        if self.clients.get(c.sock.fileno()) is not c or peer_closed(c.sock):
            return
        for packet in packets:
            self.on_packet(c, packet)

    def client_write(self, c, body):
        """Send one answer to a client in its transport, encrypted; a body that is not a multiple
        of 4 closes the client (Go: ingress_write_errors, as measured)."""
        if len(body) % 4:
            if self.flavour == "go":
                self.count("ingress_write_errors")
                self.count("ingress_frames_failed")
            self.close_client(c)
            return False
        try:
            c.sock.setblocking(True)
            c.sock.settimeout(BACKEND_SEND_TIMEOUT_S)
            c.sock.sendall(c.tx.update(wire.encode_frame(c.tag, body)))
        except OSError:
            if self.flavour == "go":
                self.count("ingress_write_errors")
            self.close_client(c)
            return False
        finally:
            if self.clients.get(c.sock.fileno()) is c:
                c.sock.setblocking(False)
        return True

    def on_packet(self, c, packet):
        if self.flavour == "c":
            if wire.forwardable(packet):
                self.c_forward(c, packet)
            return
        if not c.session:
            c.session = True
            self.count("dataplane_sessions_created")
        for key in ("ingress_frames_received", "dataplane_packets_total"):
            self.count(key)
        self.count("ingress_bytes_received", len(packet))
        self.count("dataplane_bytes_total", len(packet))
        if not wire.forwardable(packet):
            self.count("dataplane_packets_parse_errors")
            self.count("dataplane_packets_dropped")
            self.count("ingress_frames_failed")
            return
        self.count("dataplane_packets_handshake" if packet[:8] == b"\0" * 8 else "dataplane_packets_encrypted")
        self.count("forward_total")
        outcome = self.go_forward(c, packet)
        if outcome is None:
            self.count("dataplane_packets_dropped")
            self.count("ingress_frames_failed")
            return
        self.count("ingress_frames_handled")
        if outcome and self.client_write(c, outcome):
            self.count("ingress_frames_returned")
            self.count("ingress_bytes_returned", len(outcome))

    # ---- C: middle-proxy RPC to the targets
    def c_forward(self, c, packet):
        """C: RPC_PROXY_REQ over the ready connection of the client's DC target (the same one for
        every later packet of that client); with none ready, the packet is dropped (reconnecting is
        the probe's job, run early at most once a second when a packet finds no ready target)."""
        b = self.backends
        now = time.time()
        if not b.ready_count() and now - b.last_probe >= BACKEND_ON_DEMAND_PROBE_S:
            b.probe(now, True)
        candidates = [c.ext_addr] if c.ext_addr is not None else b.route(c.dc)[0]
        flags = wire.RPC_REQ_FLAGS_ABRIDGED if c.tag == wire.TAG_ABRIDGED else wire.RPC_REQ_FLAGS_INTERMEDIATE
        for addr in candidates:
            if not b.healthy.get(addr) or addr not in b.sessions or not b.sessions[addr].ready:
                continue
            request = wire.proxy_req(c.ext_id, c.peer, c.local, packet, flags)
            if self.c_backend_send(addr, request):
                c.ext_addr = addr
                self.ext_clients[c.ext_id] = c
                self.count("tot_forwarded_queries")
                return
        self.count("dropped_queries")

    def c_backend_send(self, addr, payload):
        b = self.backends
        sock, session = b.pool.get(addr), b.sessions.get(addr)
        if sock is None or session is None:
            return False
        return b.send(addr, sock, session.send(payload))

    def c_watch(self, sock):
        self.sel.register(sock, selectors.EVENT_READ, self.on_backend_read)

    def c_unwatch(self, sock):
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def on_backend_read(self, sock):
        b = self.backends
        addr = next((a for a, s in b.pool.items() if s is sock), None)
        if addr is None:
            self.c_unwatch(sock)
            return
        try:
            sock.setblocking(False)
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        finally:
            if addr in b.pool:
                sock.settimeout(BACKEND_SEND_TIMEOUT_S)
        session = b.sessions[addr]
        try:
            if not data:
                raise wire.WireError("target closed the connection")
            out, messages = session.feed(data)
        except wire.WireError:
            b.close(addr)
            b.healthy[addr] = False
            return
        if out:
            b.send(addr, sock, out)
        b.healthy[addr] = session.ready
        for payload in messages:
            self.on_rpc_message(addr, payload)

    def on_rpc_message(self, addr, payload):
        """A target's answer, counted as the real C counts it (mtproto/mtproto-proxy.c, checked on the build)."""
        op = wire.op_of(payload)
        if op == wire.RPC_PROXY_ANS and len(payload) >= 16:
            ext_id = int.from_bytes(payload[8:16], "little")
            c = self.ext_clients.get(ext_id)
            if c is None or self.clients.get(c.sock.fileno()) is not c:
                self.count("dropped_responses")
                self.c_backend_send(addr, wire.close_conn(ext_id))
            elif self.client_write(c, payload[16:]):
                self.count("tot_forwarded_responses")
        elif op == wire.RPC_SIMPLE_ACK and len(payload) == 16:
            ext_id = int.from_bytes(payload[4:12], "little")
            c = self.ext_clients.get(ext_id)
            self.count("tot_forwarded_simple_acks" if c is not None else "dropped_simple_acks")
        elif op == wire.RPC_CLOSE_EXT and len(payload) == 12:
            c = self.ext_clients.pop(int.from_bytes(payload[4:12], "little"), None)
            if c is not None:
                c.ext_addr = None
                self.close_client(c)
        elif op == wire.RPC_PING and len(payload) == 12:
            self.c_backend_send(addr, wire.struct.pack("<I", wire.RPC_PONG) + payload[4:12])

    # ---- Go: length-prefixed frames to the targets
    def go_forward(self, c, packet):
        """Go: route by the client's DC (default cluster as fallback), skip targets marked by a
        failed dial, dial on demand, exchange one frame. Returns the reply body (b"" when the
        target stayed silent or closed, both counted as success by the real port) or None when the
        packet was dropped; a failed dial, send or reply marks the target for good."""
        b = self.backends
        now = time.time()
        targets, by_default = b.route(c.dc)
        cluster = b.cluster_of(c.dc, by_default)
        addr = None
        for candidate in targets:
            if (cluster, candidate) in b.marked:
                continue
            addr = candidate
            break
        if addr is None:
            self.count("forward_failed")
            self.count("dataplane_packets_route_errors")
            self.last_forward_error = "no healthy targets available for cluster %d" % cluster
            return None
        mark = (cluster, addr)
        if by_default:
            self.count("forward_used_default")
        self.count("forward_successful")
        self.count("forward_bytes", len(packet))
        self.count("outbound_pool_hits" if addr in b.used else "outbound_pool_misses")
        sock = b.pooled(addr)
        if sock is None:
            if addr in b.used:
                self.count("outbound_reconnects")
            b.used.add(addr)
            self.count("outbound_dials")
            sock = dial(addr)
            if sock is None:
                self.count("outbound_dial_errors")
                self.count("dataplane_packets_outbound_errors")
                b.healthy[addr] = False
                b.marked.add(mark)
                return None
            b.pool[addr] = sock
            b.healthy[addr] = True
        outcome, body = b.go_exchange(addr, sock, packet)
        if outcome == "send_error":
            self.count("outbound_send_errors")
            self.count("dataplane_packets_outbound_errors")
            b.marked.add(mark)
            return None
        self.count("outbound_sends")
        self.count("outbound_bytes_sent", len(packet) + 4)
        if outcome == "error":
            self.count("outbound_response_errors")
            self.count("outbound_closed_after_send")
            self.count("dataplane_packets_outbound_errors")
            b.marked.add(mark)
            return None
        if outcome == "eof":
            self.count("outbound_closed_after_send")
            return b""
        if outcome == "reply":
            self.count("outbound_responses")
            self.count("outbound_response_bytes", len(body))
            return body
        return b""

    # ---- /stats
    def on_stats_accept(self, lsock):
        for _attempt in range(64):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            if self.flavour == "c" and self.s.has("ipv6"):
                # Real C with -6: accept() on the IPv4 stats socket gives an IPv4 peer and the
                # assertion in net_accept_new_connections fails; its SIGABRT handler exits 1.
                self.log.write("%s: net/net-connections.c: net_accept_new_connections: Assertion "
                               "`peer_addrlen == sizeof (struct sockaddr_in6)' failed." % sys.argv[0])
                self.exit(1)
            if self.flavour == "c":
                self.count("inbound_connections_accepted", 2)
                self.count("conn_generation")
            h = HttpConn(sock, peer, time.time())
            self.https[sock.fileno()] = h
            self.sel.register(sock, selectors.EVENT_READ, self.on_http_read)

    def close_http(self, h):
        self.https.pop(h.sock.fileno(), None)
        self.drop(h.sock)

    def on_http_read(self, sock):
        h = self.https.get(sock.fileno())
        if h is None:
            self.drop(sock)
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close_http(h)
            return
        if h.hung:
            return
        if self.flavour == "c":
            self.count("tcp_readv_calls")
            self.count("tcp_readv_bytes", len(data))
        h.buf += data
        if b"\r\n\r\n" in h.buf or b"\n\n" in h.buf or len(h.buf) > 16384:
            self.answer(h)

    def answer(self, h):
        self.faults.refresh(force=True)
        line = bytes(h.buf).split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        target = parts[1] if len(parts) > 1 else ""
        version = parts[2] if len(parts) > 2 and parts[2] in ("HTTP/1.0", "HTTP/1.1") else "HTTP/1.1"
        if self.faults.get("stats_hang"):
            h.hung = True
            return
        if self.flavour == "c":
            self.count("http_queries")
        garbage = self.faults.get("stats_garbage")
        if garbage:
            body = garbage if isinstance(garbage, str) else GARBAGE_BODY
            status, ctype = "200 OK", "text/plain"
        elif self.flavour == "c":
            if self.s.http_stats and target == "/stats" and h.peer[0] == "127.0.0.1":
                body, status, ctype = self.c_stats(), "200 OK", "text/plain"
            else:
                body, status, ctype = C_404_BODY, "404 Not Found", "text/html"
        else:
            if target.split("?", 1)[0] == "/stats":
                body, status, ctype = self.go_stats(), "200 OK", "text/plain; charset=utf-8"
            else:
                body, status, ctype = GO_404_BODY, "404 Not Found", "text/plain; charset=utf-8"
        payload = body.encode("utf-8")
        date = http_date()
        if self.flavour == "c":
            head = ("HTTP/1.1 %s\r\nServer: MTProxy/1.0\r\nDate: %s\r\nContent-Type: %s\r\n"
                    "Connection: close\r\nContent-Length: %d\r\n\r\n" % (status, date, ctype, len(payload)))
        else:
            # Go would keep an HTTP/1.1 connection open; the stand-in closes it after one answer.
            extra = "X-Content-Type-Options: nosniff\r\n" if status.startswith("404") else ""
            head = ("%s %s\r\nContent-Type: %s\r\n%sDate: %s\r\nContent-Length: %d\r\n\r\n"
                    % (version, status, ctype, extra, date, len(payload)))
        self.https.pop(h.sock.fileno(), None)
        try:
            self.sel.unregister(h.sock)
        except (KeyError, ValueError):
            pass
        try:
            h.sock.setblocking(True)
            h.sock.settimeout(2.0)
            h.sock.sendall(head.encode("latin-1") + payload)
            h.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        h.sock.close()

    def bumped(self, key, value):
        extra = int(self.acc.get(key, 0.0))
        return value + extra if extra else value

    def render(self, lines, values):
        out = []
        for key, default in lines:
            if key in values:
                value = values[key]
                if value is None:
                    continue
            else:
                value = default
            if key in self.acc:
                try:
                    value = self.bumped(key, int(value))
                except (TypeError, ValueError):
                    pass
            out.append("%s\t%s\n" % (key, value))
        return "".join(out)

    def c_stats(self):
        t0 = time.time()
        cur = int(t0)
        up = max(0, cur - self.start_int)
        el = max(0.0, t0 - self.start)
        s, cfg = self.s, self.cfg
        noM = not s.workers
        clients = len(self.clients)
        https = max(1, len(self.https))
        serving = clients + https if noM else https
        outbound = len(self.backends.pool)
        ready = self.backends.ready_count()
        ticks = int(el * 493)
        v = {
            "pid": os.getpid(), "start_time": self.start_int, "current_time": cur, "uptime": up,
            "tot_idle_time": "%.3f" % (el * 0.996),
            "average_idle_percent": "%.3f" % (99.6 if up else 0.0),
            "recent_idle_percent": "%.3f" % (99.3 if up else el * 1.0),
            "epoll_calls": 14 + int(el * 850),
            "PID": "[%s:%d:%d:%d]" % (self.ip, s.stats_port or 0, os.getpid(), self.start_int),
            "active_connections": serving, "inbound_connections": serving,
            "active_inbound_connections": serving, "allocated_connections": serving,
            "allocated_inbound_connections": serving, "allocated_socket_connections": serving,
            "outbound_connections_created": self.ctr.get("outbound_connections_created", 0),
            "total_connect_failures": self.ctr.get("total_connect_failures", 0),
            "outbound_connections": outbound, "ready_outbound_connections": outbound,
            "active_outbound_connections": outbound, "allocated_outbound_connections": outbound,
            "ready_targets": ready, "total_ready_targets": ready,
            "total_allocated_outbound_connections": outbound,
            "inbound_connections_accepted": self.ctr.get("inbound_connections_accepted", 0),
            "listening_connections": (1 if self.stats_listener else 0) + (len(self.client_listeners) if noM else 0),
            "allocated_targets": cfg.unique_targets, "active_targets": cfg.unique_targets,
            "max_connections": s.max_connections, "active_special_connections": clients if noM else 0,
            "max_special_connections": s.max_special, "max_accept_rate": s.max_accept_rate,
            "conn_generation": 10 + self.ctr.get("conn_generation", 0),
            "tcp_readv_calls": self.ctr.get("tcp_readv_calls", 0),
            "tcp_readv_bytes": self.ctr.get("tcp_readv_bytes", 0),
            "tcp_writev_calls": self.ctr.get("http_queries", 0),
            "tcp_writev_bytes": self.ctr.get("http_queries", 0) * 5940,
            "aes_pwd_hash": self.aes_hash,
            "jobs_created": 29 + int(el * 15), "timer_ops": 30 + int(el * 985),
            "mpq_blocks_allocations": 41 + int(el * 23), "mpq_blocks_true_allocations": 41 + int(el * 23),
            "event_timer_insert_ops": 18 + ticks, "event_timer_remove_ops": 12 + ticks,
            "event_timer_alarms": 12 + int(el * 487),
            "vmsize_bytes": proc_status_bytes("VmSize"), "vmrss_bytes": proc_status_bytes("VmRSS"),
            "vmdata_bytes": proc_status_bytes("VmData"),
            "config_filename": cfg.filename, "config_loaded_at": cfg.loaded_at, "config_size": cfg.size,
            "config_md5": cfg.md5, "config_auth_clusters": len(cfg.clusters), "workers": s.workers,
            "dropped_queries": self.ctr.get("dropped_queries", 0), "window_clamp": s.window_clamp,
            "tot_forwarded_queries": self.ctr.get("tot_forwarded_queries", 0),
            "tot_forwarded_responses": self.ctr.get("tot_forwarded_responses", 0),
            "dropped_responses": self.ctr.get("dropped_responses", 0),
            "tot_forwarded_simple_acks": self.ctr.get("tot_forwarded_simple_acks", 0),
            "dropped_simple_acks": self.ctr.get("dropped_simple_acks", 0),
            "total_allocated_targets": cfg.unique_targets, "total_declared_targets": cfg.unique_targets,
            "total_connections": clients + https, "total_allocated_connections": clients + https,
            "total_allocated_inbound_connections": clients + https,
            "total_allocated_socket_connections": clients + https,
            "total_encrypted_connections": sum(1 for c in self.clients.values() if c.valid),
            "total_special_connections": clients, "total_max_special_connections": s.max_special,
            "http_connections": https, "http_queries": self.ctr.get("http_queries", 0),
            "http_qps": "%.6f" % (float(self.ctr.get("http_queries", 0)) / up if up else 0.0),
            "proxy_tag_set": 1 if s.proxy_tag else 0, "version": C_VERSION,
        }
        if not noM:
            for key in ("total_network_buffers_used_size", "total_network_buffers_allocated_bytes",
                        "total_network_buffers_used", "total_network_buffer_chunks_allocated",
                        "total_network_buffer_chunks_allocated_max"):
                v[key] = 0
        lines = [l for l in C_LINES if not l[0].startswith("secret_")]
        for n in range(1, self.secret_count + 1):
            lines.append(["secret_%d_active_connections" % n, "0"])
            lines.append(["secret_%d_active_auth_keys" % n, "0"])
        v["stats_generate_time"] = "%.6f" % max(0.000050, time.time() - t0)
        return self.render(lines, v)

    def go_stats(self):
        now = time.time()
        cfg = self.cfg
        v = dict((k, self.ctr.get(k, 0)) for k in GO_COUNTER_KEYS)
        v["stats_generated_at"] = int(now)
        v["has_current_config"] = 1 if cfg else 0
        if cfg:
            unhealthy = min(len(cfg.targets), self.backends.marked_count())
            v.update({
                "config_filename": cfg.filename, "config_loaded_at": cfg.loaded_at, "config_size": cfg.size,
                "config_md5": cfg.md5, "config_auth_clusters": len(cfg.clusters),
                "router_default_cluster": cfg.default_cluster, "router_clusters": len(cfg.clusters),
                "router_targets": len(cfg.targets), "targets_healthy": len(cfg.targets) - unhealthy,
                "targets_unhealthy": unhealthy,
            })
        else:
            for key in ("config_filename", "config_loaded_at", "config_size", "config_md5", "config_auth_clusters"):
                v[key] = None
            v.update({"router_default_cluster": 0, "router_clusters": 0, "router_targets": 0,
                      "targets_healthy": 0, "targets_unhealthy": 0})
        ok = self.ctr.get("forward_successful", 0)
        v["forward_avg_payload_bytes"] = "%.3f" % (float(self.ctr.get("forward_bytes", 0)) / ok if ok else 0.0)
        v["forward_last_error"] = self.last_forward_error
        v["config_reload_last_error"] = self.reload_error
        v["dataplane_session_limit"] = self.s.max_connections
        v["dataplane_active_sessions"] = sum(1 for c in self.clients.values() if c.session)
        v["ingress_active_connections"] = len(self.clients)
        v["outbound_active_conns"] = len(self.backends.pool)
        return self.render(GO_LINES, v)

    secret_count = 0


# ---------------------------------------------------------------- start-up shared by both flavours

def reject_flag_exit(argv0, name):
    """Exit as the later Go port does on a flag it does not define (measured on its build)."""
    usage = GONEW_USAGE.replace("{argv0}", argv0)
    sys.stderr.write("flag provided but not defined: %s\n%serror: flag provided but not defined: %s\n%s"
                     % (name, usage, name, usage))
    sys.stderr.flush()
    sys.exit(2)


def reject_flags_check(argv0, args, faults):
    rejected = faults.get("reject_flags", [])
    if not isinstance(rejected, list):
        return
    for name in option_names_used(args):
        if name in rejected:
            reject_flag_exit(argv0, name)


def go_master_flags_check(argv0, args):
    """The later Go port's parser (Go's flag package): flags up to the first positional word (the
    config file), each one it defines (GO_MASTER_OPTIONS, with or without a value) or the first
    undefined one rejected, -p and -c among them."""
    words = list(args)
    while words:
        word = words.pop(0)
        if word == "--" or not word.startswith("-") or word == "-":
            return
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
        if name not in GO_MASTER_OPTIONS:
            reject_flag_exit(argv0, name)
        if GO_MASTER_OPTIONS[name] and "=" not in word and len(word) == len(name) and words:
            words.pop(0)


def fail_at_start_check(log, faults):
    fault = faults.get("fail_at_start")
    if not fault:
        return
    code = 1
    message = "standin fault: fail_at_start"
    if isinstance(fault, str):
        message = fault
    elif isinstance(fault, dict):
        message = str(fault.get("message", message))
        code = int(fault.get("exit_code", 1))
    log.info(message)
    sys.exit(code)


def load_secrets(settings):
    """The client secrets as 16-byte values: every -S, then every entry of --mtproto-secret-file
    (comma or whitespace separated); an entry that is not 32 hex digits can match no client.
    Never logged."""
    texts = list(settings.secrets)
    if settings.secret_file:
        with open(settings.secret_file) as handle:
            texts.extend(handle.read().replace(",", " ").split())
    secrets = []
    for text in texts:
        try:
            secrets.append(wire.parse_secret(text))
        except ValueError:
            secrets.append(b"\0" * 15 + b"\1")
    return secrets


# ---------------------------------------------------------------- C flavour

def c_usage_exit(argv0):
    sys.stdout.write(C_USAGE.replace("{argv0}", argv0))
    sys.stdout.flush()
    sys.exit(2)


def drop_privileges(user):
    """As the real C's change_user_group(): groups [the user's gid], that gid, that uid (CapEff then 0)."""
    entry = pwd.getpwnam(user)
    os.setgroups([entry.pw_gid])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def run_c(argv0, args, faults):
    log = Log("c")
    faults.log = log
    log.c("Invoking engine " + C_VERSION)
    try:
        opts, pos = parse_args(argv0, args, prefixes=True)
    except OptionError as exc:
        log.write(exc.c_text)
        log.c("Unrecognized option")
        c_usage_exit(argv0)
    s = Settings(opts, pos)
    if s.has("help"):
        c_usage_exit(argv0)
    if any(not is_hex32(sec) for sec in s.secrets):
        log.c("--mtproto-secret option requires exactly 32 hex digits")
        c_usage_exit(argv0)
    if s.proxy_tag is not None and not is_hex32(s.proxy_tag):
        log.c("--proxy-tag option requires exactly 32 hex digits")
        c_usage_exit(argv0)
    if s.config is None:
        c_usage_exit(argv0)
    fail_at_start_check(log, faults)
    log.c("config_filename = '%s'" % s.config)
    try:
        cfg = parse_backend_config(s.config)
    except ConfigError as exc:
        if exc.c_lines[0].startswith("cannot re-read"):
            log.c(exc.c_lines[0])
        else:
            for line in exc.c_lines:
                log.write(line)
            log.c("error while re-reading config file %s, new configuration NOT applied" % s.config)
        log.write("config check failed! (code %d)" % exc.code)
        sys.exit(-exc.code)
    try:
        secrets = load_secrets(s)
    except (IOError, OSError) as exc:
        log.c("fatal: cannot open mtproto secret file %s: %s" % (s.secret_file, os.strerror(exc.errno or 0)))
        sys.exit(1)
    listeners = []
    for port in s.http_ports:
        try:
            sock, _host = listen_tcp(s.address or "0.0.0.0", port)
        except OSError as exc:
            log.write("bind(): %s" % os.strerror(exc.errno or 0))
            log.c("cannot open http/tcp server socket at port %d: Invalid argument" % port)
            sys.exit(1)
        listeners.append(sock)
    aes_pwd = None
    if s.aes_pwd:
        try:
            with open(s.aes_pwd, "rb") as handle:
                aes_pwd = handle.read()
        except (IOError, OSError):
            aes_pwd = None
        # The real C takes 32 to 256 bytes (net-crypto-aes.c, MIN_PWD_LEN..MAX_PWD_LEN) and ends otherwise.
        if aes_pwd is None or not AES_PWD_MIN <= len(aes_pwd) <= AES_PWD_MAX:
            log.c("fatal: cannot load secret definition file `%s'" % s.aes_pwd)
            sys.exit(1)
    if s.user and os.geteuid() == 0:
        # The RPC needs cryptography; import it while the interpreter's files are surely readable
        # (a Python under /root is not, once this process is the -u user). The client port
        # already listens, so this ~30 ms does not widen a flip's refused window.
        wire.load_crypto()
        try:
            drop_privileges(s.user)
        except (KeyError, OSError):
            log.c("fatal: cannot change user to %s" % s.user)
            sys.exit(1)
    master = os.getpid()
    workers = []
    if s.workers > 0:
        log.c("creating %d workers" % s.workers)
        for _worker in range(s.workers):
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                c_worker_main(s, cfg, faults, master)
            workers.append(pid)
    server = Server("c", s, log, faults, cfg=cfg, c_workers=workers)
    server.aes_hash = hashlib.md5(aes_pwd).hexdigest() if aes_pwd is not None else "0" * 32
    server.backends.aes_pwd = aes_pwd
    server.secret_count = len(secrets)
    server.secret_bytes = secrets
    server.client_listeners = listeners
    for sock in listeners:
        server.add_listener(sock, server.on_client_accept)
    log.c("Started as [%s:%d:%d:%d]" % (server.ip, s.stats_port or 0, master, server.start_int))
    log.c("configuration file %s re-read successfully (%d bytes parsed), new configuration active" % (s.config, cfg.size))

    def open_stats():
        if s.stats_port:
            try:
                sock, _host = listen_tcp("127.0.0.1", s.stats_port)
            except OSError as exc:
                log.write("bind(): %s" % os.strerror(exc.errno or 0))
                log.c("cannot open server socket at port %d: Invalid argument" % s.stats_port)
                server.signal_workers(signal.SIGKILL)
                server.exit(1)
            server.stats_listener = sock
            server.add_listener(sock, server.on_stats_accept)
        log.c("main loop")

    delay = faults.number("ready_delay_s", 0.0) or 0.0
    if delay > 0:
        server.schedule(time.time() + delay, open_stats)
    else:
        open_stats()
    server.run()


def c_exit_threads_s(faults):
    return max(0.0, faults.number("exit_threads_s", C_EXIT_THREADS_S) or 0.0)


def end_process(code, linger=0.0):
    """os._exit(code), after ``linger`` s in which only the main thread is gone (see C_EXIT_THREADS_S):
    /proc/PID/stat shows a zombie, the process's sockets stay open, its parent hears of it at the end."""
    if linger > 0:
        try:
            import ctypes
            import threading
            threading.Thread(target=exit_after, args=(linger, code)).start()
            ctypes.CDLL(None).pthread_exit(None)
        except (ImportError, OSError, AttributeError, RuntimeError):
            pass
    os._exit(code)


def exit_after(delay, code):
    time.sleep(delay)
    os._exit(code)


def c_worker_main(s, cfg, faults, master):
    """A forked C worker: holds the inherited listening sockets, logs like one, follows its master."""
    log = Log("c")
    pending = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        log.c("Started as [%s:%d:%d:%d]" % (LOCAL_IP, s.stats_port or 0, os.getpid(), int(time.time())))
        log.c("configuration file %s re-read successfully (%d bytes parsed), new configuration active" % (s.config, cfg.size))
        log.c("main loop")
        next_check = time.time() + PARENT_CHECK_S
        while True:
            time.sleep(TICK_S)
            faults.refresh()
            while pending:
                sig = pending.pop(0)
                if sig == signal.SIGTERM and not faults.get("ignore_sigterm"):
                    log.c_sig("SIGTERM handled.")
                    log.c("Terminated by SIGTERM.")
                    end_process(0, c_exit_threads_s(faults))
                if sig == signal.SIGUSR1:
                    log.c_sig("received signal 10")
                    if s.log_file:
                        log.reopen()
                    else:
                        log.muted = True
            if time.time() >= next_check:
                next_check = time.time() + PARENT_CHECK_S
                ppid = os.getppid()
                if ppid != master:
                    log.c("Parent %d is changed to %d, aborting" % (master, ppid))
                    end_process(1, c_exit_threads_s(faults))
    finally:
        os._exit(1)


# ---------------------------------------------------------------- Go flavour

def go_usage_exit(argv0, message):
    sys.stderr.write("Can not parse options: %s\n%s" % (message, GO_USAGE.replace("{argv0}", argv0)))
    sys.stderr.flush()
    sys.exit(2)


def run_go(argv0, args, faults):
    worker_id = None
    if os.environ.get("MTPROXY_GO_SUPERVISED_WORKER") == "1":
        worker_id = to_int(os.environ.get("MTPROXY_GO_WORKER_ID"), 0)
    try:
        opts, pos = parse_args(argv0, args, prefixes=False)
    except OptionError as exc:
        go_usage_exit(argv0, exc.go_text)
    s = Settings(opts, pos)
    if s.has("help"):
        go_usage_exit(argv0, "help requested")
    for sec in s.secrets:
        if not is_hex32(sec):
            go_usage_exit(argv0, "invalid -S/--mtproto-secret value: expected exactly 32 hex chars, got %d" % len(sec))
    if s.proxy_tag is not None and not is_hex32(s.proxy_tag):
        go_usage_exit(argv0, "invalid -P/--proxy-tag value: expected exactly 32 hex chars, got %d" % len(s.proxy_tag))
    if s.config is None:
        go_usage_exit(argv0, "exactly one <config-file> argument is required")
    try:
        secrets = load_secrets(s)
    except (IOError, OSError) as exc:
        go_usage_exit(argv0, "cannot read --mtproto-secret-file: open %s: %s"
                      % (s.secret_file, bind_reason(exc)))
    if worker_id is None:
        fail_at_start_check(Log("go", log_file=s.log_file, file_from_start=True), faults)
        if s.workers > 0:
            go_supervisor(argv0, args, s, faults)
            return
    go_server(s, faults, worker_id, secrets)


def own_cmdline(argv0, args):
    """The words this process was started with (interpreter first, before present_binary_cmdline).

    Workers are started with the same words, so after their own rewrite their /proc/PID/cmdline
    is byte for byte the supervisor's (same area size, same padding).
    """
    tail = [os.fsencode(argv0)] + [os.fsencode(a) for a in args]
    words = ORIGINAL_CMDLINE or []
    head = words[:len(words) - len(tail)]
    if head and words[len(head):] == tail:
        return head + tail
    # already masqueraded by whoever started us (no interpreter word left): run the script again
    return [os.fsencode(sys.executable)] + tail


def go_supervisor(argv0, args, s, faults):
    import subprocess
    log = Log("go", log_file=s.log_file, file_from_start=True)
    faults.log = log
    log.plain("Go bootstrap supervisor enabled: workers=%d" % s.workers)
    procs = []
    for wid in range(s.workers):
        env = dict(os.environ)
        env.update({"MTPROXY_GO_SUPERVISED_WORKER": "1", "MTPROXY_GO_WORKER_ID": str(wid),
                    "MTPROXY_GO_SUPERVISOR_PID": str(os.getpid())})
        proc = subprocess.Popen(own_cmdline(argv0, args), executable=sys.executable, env=env)
        procs.append((wid, proc))
        log.plain("supervisor started worker id=%d pid=%d" % (wid, proc.pid))
    pending = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    stopping = False
    kill_at = None
    failure = None
    live = dict((wid, proc) for wid, proc in procs)

    def forward(sig):
        for proc in live.values():
            try:
                proc.send_signal(sig)
            except OSError:
                pass

    def begin_stop(sig):
        forward(sig)
        grace = (faults.number("drain_s", GO_DEFAULT_DRAIN_S) or 0.0) + (faults.number("exit_delay_s", 0.0) or 0.0)
        return time.time() + grace + 5.0

    while live:
        time.sleep(TICK_S)
        faults.refresh()
        while pending:
            sig = pending.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                if sig == signal.SIGTERM and faults.get("ignore_sigterm"):
                    continue
                if not stopping:
                    stopping = True
                    log.plain("supervisor received %s, shutting down workers" % ("SIGTERM" if sig == signal.SIGTERM else "SIGINT"))
                    kill_at = begin_stop(sig)
            elif sig == signal.SIGHUP:
                forward(signal.SIGHUP)
            elif sig == signal.SIGUSR1:
                if s.log_file and log.reopen():
                    log.plain("supervisor SIGUSR1: log file reopened.")
                else:
                    log.plain("supervisor SIGUSR1: no log file configured, skipping reopen.")
                forward(signal.SIGUSR1)
        for wid, proc in sorted(live.items()):
            status = proc.poll()
            if status is None:
                continue
            del live[wid]
            if stopping:
                log.plain("worker id=%d pid=%d stopped" % (wid, proc.pid))
            else:
                text = go_exit_text(status)
                log.plain("worker id=%d pid=%d exited unexpectedly: %s" % (wid, proc.pid, text))
                failure = "worker %d exited unexpectedly: %s" % (wid, text)
                stopping = True
                kill_at = begin_stop(signal.SIGTERM)
        if kill_at is not None and time.time() >= kill_at:
            forward(signal.SIGKILL)
            kill_at = None
    if failure:
        log.plain("supervisor error: %s" % failure)
        sys.exit(1)
    sys.exit(0)


def go_server(s, faults, worker_id, secrets):
    prefix = "[worker %d] " % worker_id if worker_id is not None else ""
    log = Log("go", prefix=prefix, log_file=s.log_file, file_from_start=True)
    faults.log = log
    server = Server("go", s, log, faults, go_worker=worker_id)
    server.secret_count = len(secrets)
    server.secret_bytes = secrets
    if worker_id is not None:
        server.supervisor_pid = to_int(os.environ.get("MTPROXY_GO_SUPERVISOR_PID"), os.getppid())
    log.plain("Go runtime enabled: send SIGHUP to reload config, SIGTERM/SIGINT to stop.")
    if worker_id:
        if s.http_stats:
            log.plain("http-stats requested in supervisor mode, only worker 0 serves stats (current worker=%d), "
                      "skipping stats server startup" % worker_id)
        if s.http_ports:
            log.plain("ingress requested in supervisor mode, only worker 0 serves ingress (current worker=%d), "
                      "skipping ingress startup" % worker_id)
        server.go_load_config()
        server.run()
        return
    if s.http_stats and s.stats_port:
        try:
            sock, _host = listen_tcp("127.0.0.1", s.stats_port)
            server.stats_listener = sock
            server.add_listener(sock, server.on_stats_accept)
            log.plain("stats server listening on 127.0.0.1:%d" % s.stats_port)
        except OSError as exc:
            log.plain("failed to start stats server on 127.0.0.1:%d: listen tcp 127.0.0.1:%d: bind: %s "
                      "(continuing without stats server)" % (s.stats_port, s.stats_port, bind_reason(exc)))
    for port in s.http_ports:
        host = s.address or "0.0.0.0"
        try:
            sock, shown = listen_tcp(host, port, dual_stack=not s.address)
        except OSError as exc:
            log.plain("failed to start ingress server on %s:%d: listen tcp %s:%d: bind: %s"
                      % (host, port, host, port, bind_reason(exc)))
            server.exit(2)
        server.client_listeners.append(sock)
        server.add_listener(sock, server.on_client_accept)
        log.plain("ingress server listening on %s:%d" % (shown, port))
    log.plain("outbound transport enabled.")
    delay = faults.number("ready_delay_s", GO_DEFAULT_CONFIG_DELAY_S)
    server.schedule(time.time() + max(0.0, delay), server.go_load_config)
    server.run()


# ---------------------------------------------------------------- entry point

def main(argv, variant=None):
    """Run as the binary argv[0] names. ``variant="go-master"`` (mtproxy_standin_master_launcher.py)
    is the later Go port (skrashevich/MTProxy master): it rejects the C flags it does not define, as
    that build does ("flag provided but not defined: -p", usage, exit 2); with only flags it
    defines it runs as the Go flavour (its other differences, e.g. /stats on the first -H port +
    8000, are not reproduced)."""
    global C_LINES, GO_LINES, C_COUNTER_KEYS, GO_COUNTER_KEYS, LOCAL_IP, ORIGINAL_CMDLINE
    argv0 = argv[0]
    flavour = "go" if "go" in os.path.basename(os.path.realpath(argv0) if os.sep in argv0 else argv0) else "c"
    if variant == "go-master":
        flavour = "go"
    ORIGINAL_CMDLINE = present_binary_cmdline(argv, c_cmdline_words(argv) if flavour == "c" else None)
    LOCAL_IP = local_ip()
    C_LINES = parse_template(C_STATS_TEMPLATE)
    GO_LINES = parse_template(GO_STATS_TEMPLATE)
    C_COUNTER_KEYS = set(k for k, d in C_LINES if d.isdigit()) - C_NOT_COUNTERS
    GO_COUNTER_KEYS = set(k for k, d in GO_LINES if d.isdigit()) - GO_NOT_COUNTERS
    if variant == "go-master":
        go_master_flags_check(argv0, argv[1:])
    set_process_name(os.path.basename(argv0))
    faults = Faults(flavour, os.environ.get("MTPROXY_STANDIN_FAULTS", DEFAULT_FAULTS_PATH))
    reject_flags_check(argv0, argv[1:], faults)
    if flavour == "c":
        run_c(argv0, argv[1:], faults)
    else:
        run_go(argv0, argv[1:], faults)


# The later Go port's options (its --help, measured on its build): name -> whether it takes a value.
GO_MASTER_OPTIONS = {
    "-S": True, "--mtproto-secret": True, "--mtproto-secret-file": True, "-P": True, "--proxy-tag": True,
    "-M": True, "--slaves": True, "-H": True, "--http-ports": True, "--aes-pwd": True, "--http-stats": False,
    "-C": True, "--max-special-connections": True, "-W": True, "--window-clamp": True, "-D": True,
    "--domain": True, "-T": True, "--ping-interval": True, "-u": True, "--user": True, "-6": False,
    "-v": False, "--verbosity": False, "-d": False, "--daemonize": False, "-h": False, "--help": False,
}
C_NOT_COUNTERS = set(["pid", "start_time", "current_time", "uptime", "config_loaded_at", "config_size",
                      "config_auth_clusters", "workers", "max_connections", "max_special_connections",
                      "total_max_special_connections", "window_clamp", "default_rpc_flags", "proxy_mode",
                      "max_buffer_chunks", "max_allocated_buffer_bytes"])
GO_NOT_COUNTERS = set(["stats_generated_at", "has_current_config", "config_loaded_at", "config_size",
                       "config_auth_clusters", "router_default_cluster", "router_clusters", "router_targets",
                       "targets_healthy", "targets_unhealthy", "dataplane_session_limit",
                       "dataplane_active_sessions", "ingress_active_connections", "outbound_active_sends",
                       "outbound_active_conns"])
C_COUNTER_KEYS = set()
GO_COUNTER_KEYS = set()


if __name__ == "__main__":
    main(sys.argv)
