#!/usr/bin/env bash
# A small lantian cluster on this machine: three NATS JetStream nodes, a
# Mosquitto broker (lossless settings), one edge and two workers (cluster
# mode, writing the Parquet archive: no InfluxDB needed), and the
# simulated Beijing fleet publishing to the broker.
#
#   scripts/cluster-demo.sh          # until Ctrl-C: 2 h of history, then live
#   scripts/cluster-demo.sh --once   # the history only; prints what each
#                                    # process did and exits (a smoke test)
#
# Needs nats-server and mosquitto (apt install nats-server mosquitto) and
# python3 (to find free ports). Uses target/debug/lantian (built if
# missing) or $LANTIAN. Everything lives in a temporary directory, removed
# at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

once=false
[[ "${1:-}" == "--once" ]] && once=true
for cmd in nats-server mosquitto python3; do
  command -v "$cmd" >/dev/null || { echo "cluster-demo: needs $cmd (apt install nats-server mosquitto python3)" >&2; exit 1; }
done
lantian=${LANTIAN:-target/debug/lantian}
if [[ ! -x "$lantian" ]]; then
  echo "==> cargo build"
  cargo build --quiet
fi

dir=$(mktemp -d /tmp/lantian-cluster-demo.XXXXXX)
pids=()
cleanup() {
  # lantian first (it drains into NATS), then the broker, then NATS.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "kept: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports (the kernel's choice; taken again at once below).
read -r -a port <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(10)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
nats=("${port[0]}" "${port[1]}" "${port[2]}")
routes=("${port[3]}" "${port[4]}" "${port[5]}")
mqtt=${port[6]}
admin=("${port[7]}" "${port[8]}" "${port[9]}")

echo "==> NATS JetStream, three nodes: ${nats[*]}"
for i in 0 1 2; do
  cat >"$dir/n$i.conf" <<EOF
server_name: n$i
listen: "127.0.0.1:${nats[$i]}"
max_payload: 8MB
jetstream { store_dir: "$dir/js$i", max_memory_store: 64MB, max_file_store: 2GB }
cluster { name: demo, listen: "127.0.0.1:${routes[$i]}", routes: [
  "nats-route://127.0.0.1:${routes[0]}", "nats-route://127.0.0.1:${routes[1]}", "nats-route://127.0.0.1:${routes[2]}" ] }
EOF
  nats-server -c "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done

echo "==> Mosquitto: $mqtt"
cat >"$dir/mosquitto.conf" <<EOF
listener $mqtt 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
EOF
mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
pids+=($!)

servers="\"nats://127.0.0.1:${nats[0]}\", \"nats://127.0.0.1:${nats[1]}\", \"nats://127.0.0.1:${nats[2]}\""
names=(edge worker-1 worker-2)
for i in 0 1 2; do
  name=${names[$i]}
  role=worker
  [[ $name == edge ]] && role=edge
  mkdir -p "$dir/$name"
  cat >"$dir/$name.toml" <<EOF
[mqtt]
host = "127.0.0.1"
port = $mqtt
client_id = "demo-$name"
[[mqtt.subscriptions]]
filter = "\$share/lantian/env/#"
qos = 1
[influxdb]
enabled = false
[archive]
enabled = true
dir = "$dir/$name/archive"
[spool]
enabled = false
dir = "$dir/$name/spool"
[alerts]
dir = "$dir/$name/alerts"
[admin]
listen = "127.0.0.1:${admin[$i]}"
[pipeline]
stats_interval = "0s"
[cluster]
$role = true
nats = [$servers]
instance = "$name"
partitions = 8
replicas = 3
EOF
  "$lantian" run --config "$dir/$name.toml" >"$dir/$name.log" 2>&1 &
  pids+=($!)
done

# Polls the processes' /metrics (python3: no curl needed):
#   watch.py up|drained=N EDGE_PORT WORKER_PORT... : until the cluster is
#   up (every unit owned, by both workers, the edge subscribed), or drained
#   (N messages forwarded by the edge and N readings stored);
#   prints each process's figures.
cat >"$dir/watch.py" <<'EOF'
import sys, time, urllib.request

def metrics(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0].split(" ")[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out

what, edge, workers = sys.argv[1], sys.argv[2], sys.argv[3:]
deadline = time.time() + 180
while True:
    e, ws = metrics(edge), [metrics(w) for w in workers]
    owned = sum(w.get("lantian_cluster_partitions_owned", 0) for w in ws)
    shared = all(w.get("lantian_cluster_partitions_owned", 0) > 0 for w in ws)
    done = owned == 9 and shared and e.get("lantian_mqtt_subscribed") == 1
    if what.startswith("drained="):
        # Each of the fleet's messages is one reading: all of them
        # forwarded by the edge and stored by the workers. (Not the lag
        # gauge: it can stay at 1 on a drained partition, a known defect.)
        published = float(what.split("=")[1])
        forwarded = e.get("lantian_cluster_forwarded_total", 0)
        done = (done and forwarded >= published
                and sum(w.get("lantian_readings_written_total", 0) for w in ws) >= published)
    if done:
        break
    if time.time() > deadline:
        # What it saw last, so that a failure says which condition held out.
        seen = lambda m: {k: v for k, v in m.items() if k.startswith(("lantian_cluster", "lantian_mqtt_sub", "lantian_readings_written"))}
        sys.exit(f"cluster-demo: not {what.split('=')[0]} within 180 s; edge {seen(e) or 'no answer'}; "
                 + "; ".join(f"worker-{n} {seen(w) or 'no answer'}" for n, w in enumerate(ws, 1)))
    time.sleep(0.5)
if what.startswith("drained="):
    print(f"edge: forwarded {e.get('lantian_cluster_forwarded_total', 0):.0f}")
    for n, w in enumerate(ws, 1):
        print(f"worker-{n}: stored {w.get('lantian_readings_written_total', 0):.0f} readings, "
              f"units owned {w.get('lantian_cluster_partitions_owned', 0):.0f}")
EOF
watch() {
  python3 "$dir/watch.py" "$1" "${admin[@]}" || { KEEP=1; echo "logs in $dir" >&2; exit 1; }
}
watch up
echo "==> up: status pages http://127.0.0.1:${admin[0]}/ (edge), http://127.0.0.1:${admin[1]}/ and http://127.0.0.1:${admin[2]}/ (workers)"

if $once; then
  # simulate reports on stderr: "history: N messages ..., M acknowledged
  # by the broker"; drained is when M readings are stored.
  "$lantian" simulate --broker "127.0.0.1:$mqtt" --history 2h --rate 0 --no-live 2>"$dir/simulate.log"
  cat "$dir/simulate.log" >&2
  acked=$(sed -n 's/.* \([0-9][0-9]*\) acknowledged by the broker.*/\1/p' "$dir/simulate.log")
  watch "drained=${acked:?simulate did not say what the broker acknowledged}"
  exit 0
fi
echo "==> the simulated fleet: 2 h of history, then a reading a minute (Ctrl-C stops everything)"
"$lantian" simulate --broker "127.0.0.1:$mqtt" --history 2h --rate 0
