#!/usr/bin/env bash
# A private containerd (CRI plugin, runc, CNI bridge network) for a test run, all of its
# state under one directory DIR, next to any system containerd without touching it.
#
#   scripts/containerd.sh install      apt-get the packages it needs (only the missing ones)
#   scripts/containerd.sh start DIR    configure and start containerd, import the local
#                                      images; prints the socket path (DIR/containerd.sock)
#   scripts/containerd.sh stop DIR     stop it, its shims and containers; unmount under DIR
#   scripts/containerd.sh status DIR   prints the socket path if it runs, else exits 1
#
# Layout of DIR: config.toml, containerd.sock (+ .ttrpc), containerd.pid, containerd.log,
# root/ and state/ (containerd's), runc/ (runc state), cni/net.d/10-logbook.conflist,
# cni/ipam/ (host-local leases), images/*.tar (scripts/oci-images.py: busybox and the
# pause image; nothing is ever pulled), snapshotter (the one chosen: overlayfs, or native
# where overlay mounts or containers on them do not work), cni-subnet.
#
# Environment: LBK_SNAPSHOTTER=overlayfs|native skips the detection; LBK_CNI_BRIDGE
# (default lbk0) names the bridge. The bridge, its subnet and the iptables masquerade rules
# are host-wide: run one instance at a time.
#
# Must run as root. `stop` (and `start`, after a dead instance) deletes only under DIR, plus
# the bridge, the NAT rules tagged with this network's name, libcni's cache files for it and
# the empty cgroups of containers whose shim it had to kill. One thing lands outside DIR
# regardless: containerd 1.6 shims put their sockets in /run/containerd/s/ (hard-coded; the
# names hash DIR's socket, so no clash with a system containerd; removed when shims exit).
#
# By hand: ctr --address DIR/containerd.sock -n k8s.io run --rm \
#   --snapshotter "$(cat DIR/snapshotter)" --runc-root DIR/runc --fifo-dir DIR/fifo \
#   docker.io/library/busybox:latest hello echo hello
set -euo pipefail

SOCKET_WAIT_S=30     # containerd: start until its socket answers
STOP_WAIT_S=10       # containerd / shims: SIGTERM until SIGKILL
CTR_TIMEOUT_S=20     # one ctr call (list, kill, delete)
IMPORT_TIMEOUT_S=120 # one image import (unpack included)
SMOKE_TIMEOUT_S=30   # the start-time test container
LOCK_WAIT_S=120      # another start/stop on the same DIR
APT_TIMEOUT_S=600    # apt-get install (and update)

CNI_BIN_DIR=/usr/lib/cni
CNI_BRIDGE=${LBK_CNI_BRIDGE:-lbk0}
CNI_NETWORK="logbook-$CNI_BRIDGE"
# First one that overlaps no route and no address of the host wins.
CNI_SUBNET_CANDIDATES="10.88.0.0/16 10.89.0.0/16 10.99.0.0/16 172.30.0.0/16 192.168.213.0/24"
SANDBOX_IMAGE=registry.k8s.io/pause:3.9
BUSYBOX_IMAGE=docker.io/library/busybox:latest
NS=k8s.io
PACKAGES="containerd runc containernetworking-plugins busybox-static iproute2 iptables python3"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

log() { echo "containerd.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

# --- install -----------------------------------------------------------------------------

cmd_install() {
  local missing=() p
  for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout "$APT_TIMEOUT_S" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    log "apt-get install failed; apt-get update and retry"
    timeout "$APT_TIMEOUT_S" apt-get update -qq >&2
    timeout "$APT_TIMEOUT_S" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

ensure_installed() {
  local need=0 b
  for b in containerd ctr containerd-shim-runc-v2 runc iptables ip python3; do
    command -v "$b" >/dev/null 2>&1 || need=1
  done
  for b in bridge host-local portmap loopback; do
    [ -x "$CNI_BIN_DIR/$b" ] || need=1
  done
  [ -x /bin/busybox ] || need=1
  if [ $need -eq 1 ]; then cmd_install; fi
}

# --- helpers -----------------------------------------------------------------------------

set_paths() { # DIR -> globals
  [ -n "${1:-}" ] || usage
  DIR=$(realpath -m -- "$1")
  [ "$DIR" != / ] || die "refusing DIR=/"
  SOCK="$DIR/containerd.sock"
  PIDFILE="$DIR/containerd.pid"
  LOGFILE="$DIR/containerd.log"
  CONFIG="$DIR/config.toml"
  # sun_path holds 107 bytes; containerd adds ".ttrpc" for its second socket.
  [ $(( ${#SOCK} + 6 )) -le 107 ] || die "DIR too long for a unix socket path: $SOCK"
}

ctr_() { timeout "$CTR_TIMEOUT_S" ctr --address "$SOCK" "$@"; }

lock() { # serialises start/stop on DIR; fd 9 is closed for every daemon started
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock -w "$LOCK_WAIT_S" 9 || die "another start/stop holds $DIR/.lock"
}

daemon_pid() { # prints the pid of our containerd if it is alive
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--config $CONFIG" || return 1
  echo "$pid"
}

answers() { [ -S "$SOCK" ] && timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1; }

wait_ready() {
  local pid=$1 deadline=$((SECONDS + SOCKET_WAIT_S))
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$LOGFILE" >&2 || true
      die "containerd exited during start (log: $LOGFILE)"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$LOGFILE" >&2 || true
      die "containerd did not answer on $SOCK within ${SOCKET_WAIT_S}s (log: $LOGFILE)"
    fi
    sleep 0.2
  done
}

# --- configuration -----------------------------------------------------------------------

probe_overlay() { # can we mount overlayfs with its upper dir on DIR's filesystem?
  local p="$DIR/overlay-probe" ok=1
  rm -rf "$p"
  mkdir -p "$p/lower" "$p/upper" "$p/work" "$p/merged"
  echo probe >"$p/lower/f"
  if mount -t overlay overlay -o "lowerdir=$p/lower,upperdir=$p/upper,workdir=$p/work" \
      "$p/merged" 2>/dev/null; then
    if [ "$(cat "$p/merged/f" 2>/dev/null)" = probe ] && echo w >"$p/merged/g" 2>/dev/null; then
      ok=0
    fi
    umount "$p/merged" 2>/dev/null || umount -l "$p/merged" || true
  fi
  rm -rf "$p"
  return $ok
}

choose_snapshotter() {
  if [ -n "${LBK_SNAPSHOTTER:-}" ]; then
    echo "$LBK_SNAPSHOTTER"
  elif [ -s "$DIR/snapshotter" ]; then
    cat "$DIR/snapshotter"
  elif grep -qw overlay /proc/filesystems && probe_overlay; then
    echo overlayfs
  else
    log "overlayfs mounts do not work under $DIR: using the native snapshotter"
    echo native
  fi
}

choose_subnet() {
  python3 - "$CNI_BRIDGE" $CNI_SUBNET_CANDIDATES <<'EOF'
import ipaddress, subprocess, sys
bridge, candidates = sys.argv[1], sys.argv[2:]
used = []
for cmd in (["ip", "-4", "-o", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr", "show"]):
    for line in subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if "dev" in f and f[f.index("dev") + 1] == bridge or (len(f) > 1 and f[1].rstrip(":") == bridge):
            continue  # our own bridge, left from an earlier run
        for tok in f[:4]:
            try:
                net = ipaddress.ip_network(tok, strict=False)
            except ValueError:
                continue
            if not net.is_loopback and net.prefixlen > 0:
                used.append(net)
for c in candidates:
    c = ipaddress.ip_network(c)
    if not any(c.overlaps(u) for u in used):
        print(c)
        sys.exit(0)
sys.exit("no free subnet among " + " ".join(candidates))
EOF
}

write_cni_config() {
  local subnet=$1
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  echo "$subnet" >"$DIR/cni-subnet"
  # The CRI plugin sets up the pod's loopback itself (go-cni WithLoNetwork, the `loopback`
  # binary from bin_dir): the list holds the pod network only. `loopback` must not be
  # chained here, its result (lo, no IP) would hide eth0's address from the CRI plugin.
  cat >"$DIR/cni/net.d/10-logbook.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$subnet" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$DIR/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

write_config() {
  local snapshotter=$1
  mkdir -p "$DIR/root" "$DIR/state" "$DIR/tmp" "$DIR/opt" "$DIR/runc"
  cat >"$CONFIG" <<EOF
# Written by scripts/containerd.sh start: a private containerd under $DIR.
version = 2
root = "$DIR/root"
state = "$DIR/state"
temp = "$DIR/tmp"
# Snapshotters that cannot work here; they would only log why.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$SOCK"
  # no TCP listener
  tcp_address = ""

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  # no debug socket
  address = ""
  level = "info"

[metrics]
  # no metrics listener
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$DIR/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$SANDBOX_IMAGE"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    disable_tcp_service = true
    # No AppArmor in this sandbox (and no profile to load); oom_score_adj of containers
    # is clamped to containerd's own, which an unprivileged parent may have raised.
    disable_apparmor = true
    restrict_oom_score_adj = true
    disable_hugetlb_controller = true
    tolerate_missing_hugetlb_controller = true
    enable_selinux = false
    # Pod network namespaces are bind-mounted under $DIR/state, not /var/run/netns.
    netns_mounts_under_state_dir = true

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "$CNI_BIN_DIR"
      conf_dir = "$DIR/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snapshotter"
      default_runtime_name = "runc"
      discard_unpacked_layers = false

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$(command -v runc)"
          Root = "$DIR/runc"
          SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
EOF
}

# --- start -------------------------------------------------------------------------------

launch() {
  rm -f "$SOCK" "$SOCK.ttrpc"
  echo "=== $(date -u +%FT%TZ) containerd.sh start" >>"$LOGFILE"
  # Its own session (setsid), so the caller's terminal signals do not reach it, and no
  # inherited descriptor beyond 0-2 (our lock, or a caller's pipe it would keep open).
  # No fork in between: the subshell is not a process group leader, so setsid just execs.
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid containerd --config "$CONFIG" </dev/null >>"$LOGFILE" 2>&1
  ) &
  echo $! >"$PIDFILE"
  wait_ready "$!"
}

check_cri() {
  local line
  line=$(ctr_ plugins ls | awk '$1 == "io.containerd.grpc.v1" && $2 == "cri"') || true
  if ! grep -qw ok <<<"$line"; then
    grep -iE 'level=(error|fatal)|failed' "$LOGFILE" | tail -n 20 >&2 || true
    die "the CRI plugin did not load: '${line:-missing}' (log: $LOGFILE)"
  fi
}

import_images() {
  local snapshotter=$1 f
  if [ ! -s "$DIR/images/busybox.tar" ] || [ ! -s "$DIR/images/pause.tar" ]; then
    python3 "$SCRIPTS/oci-images.py" "$DIR/images" >&2
  fi
  for f in "$DIR/images/busybox.tar" "$DIR/images/pause.tar"; do
    timeout "$IMPORT_TIMEOUT_S" ctr --address "$SOCK" -n "$NS" images import \
      --snapshotter "$snapshotter" "$f" >&2 || die "ctr images import $f failed"
  done
}

smoke_test() { # does a container start with this snapshotter? (no network: own netns)
  local snapshotter=$1 id="lbk-smoke-$$" out
  out=$(timeout "$SMOKE_TIMEOUT_S" ctr --address "$SOCK" -n "$NS" run --rm \
          --snapshotter "$snapshotter" --runc-root "$DIR/runc" \
          --fifo-dir "$DIR/fifo" "$BUSYBOX_IMAGE" "$id" /bin/echo smoke-ok 2>&1) || true
  if [ "$out" = smoke-ok ]; then return 0; fi
  log "test container with $snapshotter failed: $out"
  # best effort: leave no half-created container behind
  ctr_ -n "$NS" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  ctr_ -n "$NS" tasks delete "$id" >/dev/null 2>&1 || true
  ctr_ -n "$NS" containers rm "$id" >/dev/null 2>&1 || true
  return 1
}

cmd_start() {
  set_paths "${1:-}"
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  lock
  local pid
  if pid=$(daemon_pid); then
    wait_ready "$pid"
    echo "$SOCK"
    return 0
  fi
  ensure_installed
  # A dead instance may have left shims, mounts or a bridge behind.
  do_stop quiet

  local snapshotter subnet
  snapshotter=$(choose_snapshotter)
  subnet=$(choose_subnet) || die "no free subnet for the CNI bridge"
  write_cni_config "$subnet"
  write_config "$snapshotter"
  log "starting containerd (snapshotter $snapshotter, pod subnet $subnet, log $LOGFILE)"
  # A start that fails half-way leaves nothing running (a later start would take a live
  # daemon for a ready one).
  trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed: stopping"; do_stop quiet || true; fi' EXIT
  launch
  check_cri
  import_images "$snapshotter"
  if ! smoke_test "$snapshotter"; then
    [ "$snapshotter" = overlayfs ] && [ -z "${LBK_SNAPSHOTTER:-}" ] \
      || die "containers do not start (snapshotter $snapshotter; log: $LOGFILE)"
    log "containers do not start on overlayfs here: restarting with the native snapshotter"
    do_stop quiet
    snapshotter=native
    write_config "$snapshotter"
    launch
    check_cri
    import_images "$snapshotter"
    smoke_test "$snapshotter" || die "containers do not start with native either (log: $LOGFILE)"
  fi
  echo "$snapshotter" >"$DIR/snapshotter"
  trap - EXIT
  echo "$SOCK"
}

cmd_status() {
  set_paths "${1:-}"
  daemon_pid >/dev/null && answers || exit 1
  echo "$SOCK"
}

# --- stop --------------------------------------------------------------------------------

descendants() { # pids of all descendants of the given pids
  ps -eo pid=,ppid= | awk -v roots=" $* " '
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      split(roots, r, " "); for (i in r) mark[r[i]] = 1
      do { changed = 0
        for (i in pids) { p = pids[i]
          if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; out[p] = 1; changed = 1 } }
      } while (changed)
      for (p in out) print p
    }'
}

our_helpers() { # containerd shims and runc processes whose command line names DIR
  local pid cmd
  for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^(containerd-shim|runc)/ { print $1 }'); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    case "$cmd" in *"$DIR/"*) echo "$pid" ;; esac
  done
}

term_then_kill() { # pids...
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_WAIT_S)) p alive
  while :; do
    alive=()
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then
      log "SIGKILL ${alive[*]} after ${STOP_WAIT_S}s"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      return 0
    fi
    sleep 0.2
  done
}

cgroups_of() { # cgroup paths (relative to a hierarchy's root) that hold the given pids
  local pid
  for pid in "$@"; do
    cut -d: -f3- "/proc/$pid/cgroup" 2>/dev/null || true
  done | grep -vx / | sort -u || true
}

remove_cgroups() { # rmdir each path in every cgroup hierarchy; only empty cgroups go
  [ $# -gt 0 ] || return 0
  local mnt path left deadline=$((SECONDS + STOP_WAIT_S))
  while :; do
    left=0
    while read -r mnt; do
      for path in "$@"; do
        if [ -d "$mnt$path" ] && ! rmdir "$mnt$path" 2>/dev/null; then left=1; fi
      done
    done < <(awk '{ for (i = 7; i < NF; i++) if ($i == "-") break
                    if ($(i + 1) ~ /^cgroup2?$/) print $5 }' /proc/self/mountinfo)
    [ $left -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then log "cgroups not removed: $*"; return 0; fi
    sleep 0.2
  done
}

mounts_under_dir() { # deepest first; mountinfo escapes blanks as \040 etc.
  awk '{ print $5 }' /proc/self/mountinfo | while read -r m; do
    m=$(printf '%b' "$m")
    case "$m" in "$DIR" | "$DIR"/*) echo "$m" ;; esac
  done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-
}

do_stop() {
  local quiet=${1:-} pid ids id
  # 1. Containers, best effort, while containerd still answers.
  if answers; then
    ids=$(ctr_ -n "$NS" tasks ls -q 2>/dev/null) || ids=""
    for id in $ids; do ctr_ -n "$NS" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do ctr_ -n "$NS" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    ids=$(ctr_ -n "$NS" containers ls -q 2>/dev/null) || ids=""
    for id in $ids; do ctr_ -n "$NS" containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  # 2. containerd.
  if pid=$(daemon_pid); then
    [ -n "$quiet" ] || log "stopping containerd $pid"
    term_then_kill "$pid"
  fi
  # 3. Shims (and runc) still running for DIR, whatever runs under them (the containers),
  #    and the containers' cgroups, which runc would have removed.
  local helpers=() kids=() cgroups=()
  mapfile -t helpers < <(our_helpers)
  if [ ${#helpers[@]} -gt 0 ]; then
    mapfile -t kids < <(descendants "${helpers[@]}")
    log "killing leftover shims ${helpers[*]} and their processes ${kids[*]:-}"
    if [ ${#kids[@]} -gt 0 ]; then
      mapfile -t cgroups < <(cgroups_of "${kids[@]}")
      kill -KILL "${kids[@]}" 2>/dev/null || true
    fi
    term_then_kill "${helpers[@]}"
    remove_cgroups "${cgroups[@]}"
  fi
  # 4. Mounts under DIR (rootfs, shm, pod netns bind mounts), deepest first.
  local m
  while read -r m; do
    [ -n "$m" ] || continue
    umount -l "$m" 2>/dev/null || log "cannot unmount $m"
  done < <(mounts_under_dir)
  # 5. Host-wide leftovers of our pod network: the bridge, the NAT rules the bridge plugin
  #    tagged with our network's name (left when pods were not torn down through CRI), and
  #    libcni's result cache for it.
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    ip link del "$CNI_BRIDGE" || log "cannot delete bridge $CNI_BRIDGE"
  fi
  local rule chain
  iptables -t nat -S POSTROUTING 2>/dev/null | grep -F "name: \\\"$CNI_NETWORK\\\"" \
    | while read -r rule; do
        chain=$(sed -n 's/.* -j \(CNI-[0-9a-f]*\).*/\1/p' <<<"$rule")
        eval "iptables -t nat ${rule/-A /-D }" 2>/dev/null || true
        if [ -n "$chain" ]; then
          iptables -t nat -F "$chain" 2>/dev/null || true
          iptables -t nat -X "$chain" 2>/dev/null || true
        fi
      done || true
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  rm -f "$PIDFILE" "$SOCK" "$SOCK.ttrpc"
}

cmd_stop() {
  set_paths "${1:-}"
  [ "$(id -u)" -eq 0 ] || die "must run as root"
  [ -d "$DIR" ] || return 0
  lock
  do_stop
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  *) usage ;;
esac
