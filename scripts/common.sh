# Shared by scripts/demo and scripts/bench: start and stop a local cluster
# of `mezzo` processes. Source it; it defines start_master, start_agent,
# wait_agents and stop_cluster; callers trap stop_cluster on EXIT.

MEZZO=${MEZZO:-target/release/mezzo}
PIDS=()
# The agents' runtime dirs (task checkpoints), on a tmpfs like the agent's
# default, but made here so that stop_cluster removes them with the rest.
RUNTIME_BASE=

stop_cluster() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  PIDS=()
  if [ -n "$RUNTIME_BASE" ]; then rm -rf "$RUNTIME_BASE"; RUNTIME_BASE=; fi
}

# wait_line FILE: waits for "listening on ADDR" in FILE and sets ADDR.
wait_line() {
  for _ in $(seq 1 200); do
    if grep -q ' listening on ' "$1" 2>/dev/null; then
      ADDR=$(grep -m1 ' listening on ' "$1" | sed 's/.* listening on //')
      return 0
    fi
    sleep 0.05
  done
  echo "no 'listening on' line in $1" >&2
  cat "${1%.out}.log" >&2 || true
  return 1
}

# start_master DIR LISTEN [FLAGS...]: starts a master; sets ADDR to its address.
# (Not to be called in $(...): the pid must reach PIDS in this shell.)
start_master() {
  local dir=$1 listen=$2
  shift 2
  mkdir -p "$dir"
  "$MEZZO" master --listen "$listen" --work-dir "$dir/master" "$@" >"$dir/master.out" 2>"$dir/master.log" &
  PIDS+=($!)
  wait_line "$dir/master.out"
}

# start_agent DIR NAME MASTER LISTEN RESOURCES [FLAGS...]: starts an agent; sets ADDR.
start_agent() {
  local dir=$1 name=$2 master=$3 listen=$4 res=$5
  shift 5
  if [ -z "$RUNTIME_BASE" ]; then
    RUNTIME_BASE=$(mktemp -d /dev/shm/mezzo-run.XXXXXX 2>/dev/null || mktemp -d /tmp/mezzo-run.XXXXXX)
  fi
  "$MEZZO" agent --master "$master" --listen "$listen" --work-dir "$dir/$name" --hostname "$name" \
    --runtime-dir "$RUNTIME_BASE/$name" --resources "$res" "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  PIDS+=($!)
  wait_line "$dir/$name.out"
}

# wait_agents MASTER N [active]: waits until N agents are registered (with
# "active": until N are active, not counting disconnected ones).
wait_agents() {
  local count='len(agents)'
  [ "${3:-}" = active ] && count='sum(a["status"] == "active" for a in agents)'
  for _ in $(seq 1 400); do
    n=$("$MEZZO" status --master "$1" --json 2>/dev/null |
      python3 -c "import json,sys; agents = json.load(sys.stdin)['agents']; print($count)" 2>/dev/null || echo 0)
    [ "$n" -ge "$2" ] && return 0
    sleep 0.05
  done
  echo "agents did not register" >&2
  return 1
}
