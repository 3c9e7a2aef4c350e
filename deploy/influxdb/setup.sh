#!/usr/bin/env bash
# Applies deploy/influxdb/setup.iql to an InfluxDB 1.x over its HTTP API.
#   deploy/influxdb/setup.sh [URL]        (default http://127.0.0.1:8086)
# Credentials, if authentication is on: INFLUX_USERNAME, INFLUX_PASSWORD.
# Safe to run again: existing objects are left as they are, and each
# continuous query is replaced by the file's (dropped, then created).
set -euo pipefail
url="${1:-http://127.0.0.1:8086}"
here="$(cd "$(dirname "$0")" && pwd)"
auth=()
if [ -n "${INFLUX_USERNAME:-}" ]; then
  auth=(-u "${INFLUX_USERNAME}:${INFLUX_PASSWORD:-}")
fi
grep -v '^--' "$here/setup.iql" | grep -v '^[[:space:]]*$' | while IFS= read -r stmt; do
  if [[ "$stmt" =~ ^CREATE\ CONTINUOUS\ QUERY\ (\"[^\"]+\")\ ON\ (\"[^\"]+\") ]]; then
    # Not there the first time: its error does not matter.
    curl -sS "${auth[@]}" -XPOST "$url/query" \
      --data-urlencode "q=DROP CONTINUOUS QUERY ${BASH_REMATCH[1]} ON ${BASH_REMATCH[2]}" >/dev/null
  fi
  out="$(curl -sS "${auth[@]}" -XPOST "$url/query" --data-urlencode "q=$stmt")"
  case "$out" in
    *'"error"'*)
      case "$out" in
        *"already exists"*) echo "exists: ${stmt:0:70}…" ;;
        *) echo "FAILED: $stmt" >&2; echo "$out" >&2; exit 1 ;;
      esac ;;
    *) echo "ok: ${stmt:0:70}…" ;;
  esac
done
