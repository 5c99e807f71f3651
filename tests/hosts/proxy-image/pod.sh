#!/bin/sh
# Main process of a fleet's pod container (tests/hosts/container_fleet.py). The pod owns the network
# namespace its proxy container joins (--network container:<pod>), so the test backend and the test
# client keep running while the proxy container is recreated from another image:
#   - the test backend on the loopback targets of the baked /etc/mtproxy/proxy-multi.conf, answering
#     the C proxy's RPC (keyed by the image's aes-pwd) and the Go port's frames; with
#     BACKEND_RESET_GO_AFTER=N it answers N frames of each Go connection, then resets it (a fault of
#     the environment that fails the Go port's backend path only, whatever build the proxy is), until
#     SIGUSR1 (its PID is in /tmp/backend.pid);
#   - with CLIENT_RATE > 0, a steady mixed test client against the proxy's port 443 (rate per second,
#     10 % junk connections), from when /tmp/start-clients exists (the fleet tool creates it once the
#     proxy answers), one bounded run after another (CLIENT_RUN_S seconds each, default 60,
#     at most 600); each run's summary line goes to /tmp/client.log. Its secret is
#     /etc/mtproxy-test/client-secret (put there before the start).
# Everything is bounded: the pod stops by itself after LIFETIME seconds (default 7200), and once its
# steady client has not reached the proxy for IDLE_EXIT_S seconds (default 600: the proxy container
# was removed, e.g. by a cleanup that did not know the pod).
set -u
lifetime=${LIFETIME:-7200}
rate=${CLIENT_RATE:-0}
run_s=${CLIENT_RUN_S:-60}
idle_exit_s=${IDLE_EXIT_S:-600}
[ "$run_s" -le 600 ] || run_s=600
deadline=$(($(date +%s) + lifetime))
client=

set --
[ -z "${BACKEND_RESET_GO_AFTER:-}" ] || set -- --reset-go-after "$BACKEND_RESET_GO_AFTER"
python3 /opt/mtproxy-test/mtproxy_testbackend.py --from-config /etc/mtproxy/proxy-multi.conf \
  --aes-pwd /etc/mtproxy/proxy-secret --max-seconds "$lifetime" --stats-file /tmp/backend.json "$@" &
backend=$!
echo "$backend" >/tmp/backend.pid
trap 'kill -TERM $backend $client 2>/dev/null; exit 0' TERM INT

if [ "$rate" != 0 ]; then
  while [ ! -e /tmp/start-clients ] && kill -0 "$backend" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.5
  done
  last_connected=$(date +%s)
  while kill -0 "$backend" 2>/dev/null; do
    left=$((deadline - $(date +%s)))
    [ "$left" -gt 5 ] || break
    [ "$left" -le "$run_s" ] || left=$run_s
    python3 /opt/mtproxy-test/mtproxy_testclient.py --port 443 --secret-file /etc/mtproxy-test/client-secret \
      --mode mixed --rate "$rate" --junk-share 0.1 --count 10000 --max-seconds "$left" >>/tmp/client.log 2>&1 &
    client=$!
    if wait "$client"; then
      last_connected=$(date +%s)
    elif [ $(($(date +%s) - last_connected)) -ge "$idle_exit_s" ]; then
      echo "pod: no connection to the proxy for ${idle_exit_s} s: stopping" >&2
      kill -TERM "$backend" 2>/dev/null
      break
    fi
    client=
    sleep 2
  done
fi
wait "$backend"
