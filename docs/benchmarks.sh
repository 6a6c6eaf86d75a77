#!/usr/bin/env bash
# Every case of docs/BENCHMARKS.md in one run, against a fresh local redis-server.
# Usage: bash docs/benchmarks.sh   (needs redis-server and hyperfine; prints JSON lines)
set -euo pipefail
cd "$(dirname "$0")/.."
HS=${HS:-.venv/bin/hostsched}
PY=${PY:-.venv/bin/python}
port=$((20000 + RANDOM % 20000))
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
  --pidfile "$dir/redis.pid" >/dev/null
trap 'kill "$(cat "$dir/redis.pid")"; rm -rf "$dir"' EXIT
export HOSTSCHED_REDIS_URL="redis://127.0.0.1:$port"
sleep 0.5
bench() { echo "{\"case\": \"$1\", \"result\": $("$HS" bench --json "${@:2}")}"; }
# One process at 10, 1,000 and 10,000 hosts. The machine's speed drifts between cases, so the
# sizes alternate in three rounds, 10 and 10,000 hosts next to each other and in turn first, and
# the 10,000 ÷ 10-host rate is the median of the rounds'.
for round in 1 2 3; do
  sizes="10 10000 1000"
  if [ "$round" = 2 ]; then sizes="1000 10000 10"; fi
  for n in $sizes; do
    bench "1 process, $n hosts, round $round" --hosts "$n" --placements 5000 | tee -a "$dir/sizes"
  done
done
"$PY" - "$dir/sizes" <<'PY'
import json, statistics, sys
rate = {}
for line in open(sys.argv[1]):
    case = json.loads(line)
    rate.setdefault(case["result"]["hosts"], []).append(case["result"]["per_second"])
ratios = sorted(big / small for small, big in zip(rate[10], rate[10000]))
print(json.dumps({"case": "1 process, 10000 hosts vs 10 hosts, by round",
                  "ratio": round(statistics.median(ratios), 3),
                  "ratios": [round(r, 3) for r in ratios]}))
PY
# The bound over that rate: a bare placement loop at both sizes, with nothing but what any
# design needs, then with the per-host keys hostsched keeps (docs/barest.py).
"$PY" docs/barest.py --pairs 4
# And hostsched's own scripts under the leanest client, publishing to the fleet view (either
# way) or not, the sizes taking turns in blocks (docs/lean.py).
"$PY" docs/lean.py
bench "--count 100, 20 hosts" --hosts 20 --placements 10000 --count 100
bench "1 process, 20 hosts" --hosts 20 --placements 8000
bench "8 processes, 20 hosts" --hosts 20 --placements 8000 --processes 8
# The floors under that case's p99, right after it: 8 bare redis-py loops of PING, and of the
# barest reservation any design needs (a script that reads, checks and writes one host's hash).
"$PY" docs/ping_tail.py --processes 8 --calls 1000
"$PY" docs/ping_tail.py --processes 8 --calls 1000 --call reserve
bench "8 processes, 20 hosts, best_fit" --hosts 20 --placements 8000 --processes 8 --strategy best_fit

# The CLI: a whole `hostsched schedule` process on the embedded default (no Redis URL), and
# on 10 and 10,000 hosts stored in Redis (written as bench writes its fleet).
# hyperfine times all runs of one command, then all of the other; as the machine's speed drifts
# within a minute, each pair is timed in five rounds of 10 runs and the median ratio reported.
cli() {
  for round in 1 2 3 4 5; do
    hyperfine -N -w 3 -r 10 --export-json "$dir/hf$round.json" "$1" "$2" >/dev/null
  done
  "$PY" -c "import json,statistics,sys
pairs = [[r['median'] for r in json.load(open(f))['results']] for f in sys.argv[2:]]
ratios = sorted(b / a for a, b in pairs)
a, b = (statistics.median(x) for x in zip(*pairs))
print(json.dumps({'case': sys.argv[1], 'baseline_ms': round(a*1e3,1), 'ms': round(b*1e3,1),
      'ratio': round(statistics.median(ratios), 2), 'ratios': [round(r, 2) for r in ratios]}))" \
    "$3" "$dir"/hf[1-5].json
}
# As an operator installs it (pip install ., not -e: an editable install adds an import hook
# and, with PYTHONDONTWRITEBYTECODE, compiles the package on every start).
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install -q . 2>/dev/null
(
  unset HOSTSCHED_REDIS_URL
  export HOSTSCHED_CONFIG=config.example.yaml HOSTSCHED_STATE_DIR="$dir/state"
  "$dir/venv/bin/hostsched" collect >/dev/null
  cli "$dir/venv/bin/python -c 'import redis, typer, rich.table, yaml'" \
    "$dir/venv/bin/hostsched schedule --cpu 0.001 --mem 1M" \
    "CLI schedule, embedded default, vs import redis, typer, rich.table, yaml"
  "$dir/venv/bin/hostsched" store stop >/dev/null
)
for n in 10 10000; do
  "$PY" - "$n" <<'PY'
import sys
from hostsched.bench import populate
from hostsched.connect import open_store
from hostsched.config import Config, RedisConfig
from hostsched.model import Resources
n = int(sys.argv[1])
import os
store = open_store(Config(redis=RedisConfig(url=os.environ["HOSTSCHED_REDIS_URL"], prefix=f"cli{n}")))
populate(store, [f"hv-{i:05d}" for i in range(n)], Resources(64000, 256 << 30, 2 << 40), ttl=3600)
PY
  printf 'redis:\n  prefix: cli%s\n' "$n" > "$dir/c$n.yaml"
done
cli "$dir/venv/bin/hostsched --config $dir/c10.yaml schedule --cpu 0.001 --mem 1M" \
    "$dir/venv/bin/hostsched --config $dir/c10000.yaml schedule --cpu 0.001 --mem 1M" \
    "CLI schedule, 10,000 hosts vs 10 hosts"

# Redis Cluster: the same bench with the fleet spread over 1 and over 3 primaries (each node
# also binds port + 10000 for its bus), and with WAIT for one replica on a 3+3 cluster.
node() {  # port [extra args]: a cluster node in $dir/$1
  mkdir -p "$dir/$1"
  redis-server --port "$1" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file \
    "$dir/$1/nodes.conf" --cluster-node-timeout 1000 --save "" --appendonly no --dir "$dir/$1" \
    --repl-diskless-sync-delay 0 --daemonize yes --pidfile "$dir/$1/pid" >/dev/null
  sleep 0.3
}
stop_nodes() { for pid in "$dir"/*/pid; do kill "$(cat "$pid")" 2>/dev/null || true; rm -f "$pid"; done; }
trap 'stop_nodes; kill "$(cat "$dir/redis.pid")"; rm -rf "$dir"' EXIT
base=$((20000 + RANDOM % 15000))
node "$base"
redis-cli -p "$base" cluster addslotsrange 0 16383 >/dev/null
sleep 1
export HOSTSCHED_REDIS_URL="redis://127.0.0.1:$base" HOSTSCHED_REDIS_CLUSTER=1
bench "cluster, 1 primary, 1 process" --hosts 60 --placements 5000
bench "cluster, 1 primary, 8 processes" --hosts 60 --placements 8000 --processes 8
stop_nodes
create() {  # first-port primaries replicas-per-primary
  local ports=() i
  for ((i = 0; i < $2 * ($3 + 1); i++)); do node $(($1 + i)); ports+=("127.0.0.1:$(($1 + i))"); done
  redis-cli --cluster create "${ports[@]}" --cluster-replicas "$3" --cluster-yes >/dev/null
  sleep 3
  export HOSTSCHED_REDIS_URL="redis://127.0.0.1:$1"
}
create $((base + 10)) 3 0
bench "cluster, 3 primaries, 1 process" --hosts 60 --placements 5000
bench "cluster, 3 primaries, 8 processes" --hosts 60 --placements 8000 --processes 8
stop_nodes
create $((base + 20)) 3 1
bench "cluster, 3 primaries + 3 replicas, 1 process" --hosts 60 --placements 3000
bench "cluster, 3 primaries + 3 replicas, 1 process, WAIT 1" --hosts 60 --placements 3000 \
  --wait-replicas 1
bench "cluster, 3 primaries + 3 replicas, 8 processes" --hosts 60 --placements 8000 \
  --processes 8
bench "cluster, 3 primaries + 3 replicas, 8 processes, WAIT 1" --hosts 60 --placements 8000 \
  --processes 8 --wait-replicas 1
