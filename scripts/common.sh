# Shared by scripts/demo and scripts/bench: start and stop a local cluster
# of `mezzo` processes. Source it; it defines new_home, start_master,
# start_agent, wait_agents, mcurl and stop_cluster; callers trap
# stop_cluster on EXIT.
#
# Security is on: each cluster has its own MEZZO_HOME (new_home DIR, before
# the first master), where its first master creates the CA (pki/) and the
# administrator's client configuration (config.toml, with an agent join
# token). The agents, the CLI and the frameworks started from the script
# find them there; mcurl is curl as the administrator.

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

# new_home DIR: exports MEZZO_HOME=DIR/home for this cluster (and forgets
# any other credential of the caller's environment).
new_home() {
  export MEZZO_HOME=$1/home
  unset MEZZO_CLIENT_CONFIG MEZZO_TOKEN MEZZO_INSECURE
}

# admin_pem: the administrator's certificate and key from the client
# configuration, as files for curl ($MEZZO_HOME/admin.crt, admin.key).
admin_pem() {
  python3 - "$MEZZO_HOME" <<'PY'
import os, sys, tomllib
home = sys.argv[1]
cfg = tomllib.load(open(os.path.join(home, "config.toml"), "rb"))
for name, key in (("admin.crt", "cert"), ("admin.key", "key")):
    fd = os.open(os.path.join(home, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cfg[key])
PY
}

# mcurl ARGS...: curl as the administrator, verifying the server against
# the cluster's CA (masters and agents name 127.0.0.1 in their certificates).
mcurl() {
  [ -f "$MEZZO_HOME/admin.key" ] || admin_pem
  curl --cacert "$MEZZO_HOME/pki/ca.crt" --cert "$MEZZO_HOME/admin.crt" --key "$MEZZO_HOME/admin.key" "$@"
}

# start_master DIR LISTEN [FLAGS...]: starts a master; sets ADDR to its address.
# (Not to be called in $(...): the pid must reach PIDS in this shell.)
start_master() {
  local dir=$1 listen=$2
  shift 2
  : "${MEZZO_HOME:?call new_home DIR before start_master}"
  mkdir -p "$dir"
  "$MEZZO" master --listen "$listen" --work-dir "$dir/master" "$@" >"$dir/master.out" 2>"$dir/master.log" &
  PIDS+=($!)
  wait_line "$dir/master.out"
}

# wait_leader MASTERS: waits until a master leads and serves (/state).
wait_leader() {
  for _ in $(seq 1 400); do
    "$MEZZO" status --master "$1" --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "no master leads" >&2
  return 1
}

# start_agent DIR NAME MASTER LISTEN RESOURCES [FLAGS...]: starts an agent; sets ADDR.
# A new agent joins the cluster first (it asks again while no leader is
# elected); waiting for a leader here keeps the logs quiet.
start_agent() {
  local dir=$1 name=$2 master=$3 listen=$4 res=$5
  shift 5
  wait_leader "$master"
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
