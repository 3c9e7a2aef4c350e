#!/usr/bin/env bash
# Run lantian end to end on this machine: installs Mosquitto and InfluxDB
# 1.x (Debian packages) if missing, starts both on loopback in a temp dir,
# builds and runs lantian against them, publishes seeds/sample-messages.txt
# and shows what landed in InfluxDB. lantian keeps running until Ctrl-C.
#
#   scripts/run-local.sh
#
# Ports: MQTT 18830, InfluxDB 18086 (override with MQTT_PORT / INFLUX_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
MQTT_PORT=${MQTT_PORT:-18830}
ADMIN_PORT=${ADMIN_PORT:-19184}
INFLUX_PORT=${INFLUX_PORT:-18086}
RPC_PORT=$((INFLUX_PORT + 2))

need=()
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/lantian-local.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat > "$work/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 1000
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 & pids+=($!)

cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC_PORT"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$INFLUX_PORT"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$INFLUX_PORT/ping" && break; sleep 0.2; done
curl -sf -XPOST "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode "q=CREATE DATABASE env" >/dev/null

cargo build --release --locked
LANTIAN__MQTT__PORT=$MQTT_PORT LANTIAN__INFLUXDB__URL="http://127.0.0.1:$INFLUX_PORT" \
  LANTIAN__SPOOL__DIR="$work/spool" LANTIAN__ALERTS__DIR="$work/alerts" \
  LANTIAN__ADMIN__LISTEN="127.0.0.1:$ADMIN_PORT" \
  target/release/lantian run --config config/lantian.toml & pids+=($!)
sleep 1

now=$(date +%s%3N); now_s=$((now / 1000))
# Two hours of backdated 1-minute readings for three stations, so closed
# windows and an hourly AQI show up at once (windows close on event time).
echo "Publishing 2 hours of backdated 1-minute readings for 3 stations..."
start=$((now - 2 * 3600 * 1000))
for i in $(seq 0 119); do
  ts=$((start + i * 60000))
  k=0
  for st in dongcheng/dongsi xicheng/guanyuan haidian/wanliu; do
    k=$((k + 1))
    pm=$((30 + k * 15 + (i * 7) % 40))
    mosquitto_pub -p "$MQTT_PORT" -q 1 -t "env/$st/air/aq-1" \
      -m "{\"ts\":$ts,\"pm25\":$pm,\"pm10\":$((pm + 30)),\"no2\":35,\"so2\":6,\"o3\":$((60 + i / 2)),\"co\":0.8}"
  done
done
grep -v '^#' seeds/sample-messages.txt | while IFS=$'\t' read -r topic payload; do
  payload=${payload//\{now\}/$now}; payload=${payload//\{now_s\}/$now_s}
  mosquitto_pub -p "$MQTT_PORT" -q 1 -t "$topic" -m "$payload"
done
sleep 1
q() { curl -sG "http://127.0.0.1:$INFLUX_PORT/query" --data-urlencode db=env --data-urlencode "q=$1"; echo; }
for m in air dust voc sewage; do echo; echo "== $m:"; q "SELECT * FROM $m WHERE sensor != 'aq-1'"; done
echo; echo "== quarantine:"; q 'SELECT reason, topic, detail FROM quarantine'

sleep 2
echo; echo "== air_1h (per site; every field also has _min _max _count _received _expected):"
q "SELECT site, pm25_mean, pm25_count, pm25_received, pm25_valid, o3_mean FROM air_1h WHERE scope = 'site'"
echo; echo "== aqi (hourly, HJ 633-2026):"
q "SELECT site, aqi, category, primary, iaqi_pm25_24h, iaqi_pm10_24h, iaqi_o3_1h, invalid FROM aqi"
echo; echo "Try: target/release/lantian aqi pm25_24h=80 o3_8h=120"
echo
echo "lantian is running (MQTT 127.0.0.1:$MQTT_PORT, InfluxDB http://127.0.0.1:$INFLUX_PORT, db env; status page http://127.0.0.1:$ADMIN_PORT/)."
echo "Publish more with: mosquitto_pub -p $MQTT_PORT -q 1 -t env/dongcheng/dongsi/air/aq-0012 -m '{\"pm25\":40}'"
echo "Ctrl-C stops everything."
wait "${pids[-1]}"
