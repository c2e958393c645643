#!/usr/bin/env bash
# tandem's VIP hook: puts a virtual IP on an interface and announces it, or takes it off.
#
#   vip-hook.sh STATE VIP_NAME ADDRESS/PREFIX INTERFACE
#
# STATE is MASTER (add the address, announce it), or BACKUP, FAULT or STOP (stop any
# announcer, remove the address). Every run is idempotent: tandem runs it again after any
# doubt. Environment (set by tandem and by `tandem vip-agent`):
#   TANDEM_NODE, TANDEM_VIP, TANDEM_EPOCH   who runs it, for which VIP, at which epoch
#   TANDEM_GARP_COUNT      gratuitous ARPs (IPv6: unsolicited NAs) sent on MASTER (default 3)
#   TANDEM_GARP_INTERVAL   milliseconds between them (default 200)
#   TANDEM_GARP_REFRESH    milliseconds between re-announcements while holding; 0: none (default 60000)
#   TANDEM_RUN_DIR         where announcer pid files live (default /run/tandem, else $TMPDIR)
#
# The announcer runs in the background in its own session, so the hook returns at once:
# iputils arping sends its packet immediately but then lingers about a second, and no
# state change may wait for that. On any other state the announcer's whole process group
# is killed first, so a lingering arping cannot flip clients back to this host's MAC; an
# announcer records its own pid, so none escapes that even when tandem kills the hook
# at its timeout midway.
set -u

log() { echo "vip-hook: $*" >&2; }

if [ $# -ne 4 ]; then
  log "usage: $0 MASTER|BACKUP|FAULT|STOP VIP_NAME ADDRESS/PREFIX INTERFACE"
  exit 2
fi
state=$1 vip=$2 cidr=$3 dev=$4
ip=${cidr%/*}

# Arguments may come from the admin event stream (vip-agent): an interface name outside
# Linux's rules (and a leading -, which tools read as an option), or a name that could
# leave the run directory, is refused before it reaches any command line or path.
case $dev in
  '' | . | .. | -* | *[!A-Za-z0-9_.@:-]*)
    log "invalid interface name '$dev' (1 to 15 of letters, digits, _ . @ : -)"
    exit 2
    ;;
esac
if [ "${#dev}" -gt 15 ]; then
  log "invalid interface name '$dev' (at most 15 characters)"
  exit 2
fi
case $vip/${TANDEM_NODE:-node} in
  */*/*)
    log "invalid VIP or node name '$vip' / '${TANDEM_NODE:-}' (no /)"
    exit 2
    ;;
esac

# `ip` needs CAP_NET_ADMIN and arping CAP_NET_RAW in the commands this script starts.
# Root passes its capabilities on to them; any other user only its ambient ones, which a
# container runtime does not set (a non-root container with --cap-add NET_ADMIN still
# gets "RTNETLINK answers: Operation not permitted"). Asked of a child process, which
# starts with exactly what `ip` and arping will get.
child_caps=$(sh -c 'while read -r k v; do [ "$k" = CapEff: ] && echo "$v"; done < /proc/self/status' 2>/dev/null)
if [ -n "$child_caps" ] && (( (0x$child_caps >> 12 & 1) == 0 )); then
  log "no CAP_NET_ADMIN for ip (uid $(id -u)): run the hook as root with NET_ADMIN and NET_RAW" \
    "(a container: user 0, --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW), or as a user" \
    "with them as ambient capabilities (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)"
  exit 1
fi
# As root, arping's own file capability is capped by the bounding set too.
if [ -n "$child_caps" ] && [ "$(id -u)" = 0 ] && (( (0x$child_caps >> 13 & 1) == 0 )); then
  log "no CAP_NET_RAW for arping: addresses move but no gratuitous ARP is sent (add NET_RAW)"
fi

count=${TANDEM_GARP_COUNT:-3}
interval=${TANDEM_GARP_INTERVAL:-200}
refresh=${TANDEM_GARP_REFRESH:-60000}
node=${TANDEM_NODE:-node}

case $ip in
  *:*) family=-6 ;;
  *) family=-4 ;;
esac

rundir=${TANDEM_RUN_DIR:-/run/tandem}
if ! mkdir -p "$rundir" 2>/dev/null || [ ! -w "$rundir" ]; then
  rundir=${TMPDIR:-/tmp}/tandem-$(id -u)
  mkdir -p "$rundir" || exit 1
fi
# Per node and VIP: several nodes (network namespaces, tests) may share one host. Each
# announcer records itself in $announcer.PID.pid; $announcer.want names the one launch
# that may run (see start_announcer).
announcer=$rundir/$node.$vip.announcer

# Milliseconds to the seconds `sleep` takes.
seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# The VIP's entries on the interface as `ip` prints them (ADDRESS/PREFIX, one a line).
# Asked by address, not by text: `ip` prints the canonical form (fd00::100, never
# fd00:0::100), so comparing with the argument as written would miss a VIP that is up.
held_addresses() {
  local _idx _dev _fam addr _rest
  ip -o "$family" addr show dev "$dev" to "$ip" 2>/dev/null | while read -r _idx _dev _fam addr _rest; do
    echo "$addr"
  done
}

has_address() {
  [ -n "$(held_addresses)" ]
}

stop_announcer() {
  # Withdraw the wish first, then look for pid files: an announcer that has not recorded
  # itself yet checks the wish only after recording, so it either shows up below or
  # finds the wish gone and exits without sending anything.
  rm -f "$announcer.want"
  local file pid
  for file in "$announcer".*.pid; do
    [ -f "$file" ] || continue
    pid=${file#"$announcer".}
    pid=${pid%.pid}
    # Only a group we started for this VIP: a stale pid file must never kill an
    # unrelated process that reused the pid.
    if [ -n "$pid" ] && grep -qaF -- "$announcer" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null
    fi
    rm -f "$file"
  done
  # Left by the hook before announcers recorded themselves.
  rm -f "$announcer.pid"
}

start_announcer() {
  if [ "$family" = -4 ]; then
    if ! command -v arping >/dev/null 2>&1; then
      log "arping not found: $ip is up but not announced (install iputils-arping)"
      return 0
    fi
  elif ! command -v ndsend >/dev/null 2>&1; then
    log "ndsend not found: $ip is up but no unsolicited neighbour advertisement is sent"
    return 0
  fi
  # A hook killed at its timeout may die after the announcer left its process group but
  # before anything recorded the announcer's pid, so the announcer records itself, then
  # checks that its launch is still the wanted one (stop_announcer withdraws it first).
  local token=$$.${EPOCHREALTIME:-$RANDOM$RANDOM}
  printf '%s\n' "$token" > "$announcer.want.$$" && mv -f "$announcer.want.$$" "$announcer.want" || return 1
  # The script is a constant; interface and address reach it only as arguments, so no
  # value can ever be parsed as shell code.
  # Each packet from its own background sender: a lingering arping never delays the next.
  setsid bash -c '
    announcer=$1 token=$2 family=$3 dev=$4 ip=$5 count=$6 gap=$7 refresh=$8
    mine=$announcer.$$.pid
    echo $$ > "$mine"
    want=
    read -r want < "$announcer.want" 2>/dev/null
    if [ "$want" != "$token" ]; then rm -f "$mine"; exit 0; fi
    send() {
      if [ "$family" = -4 ]; then
        arping -U -c 1 -I "$dev" "$ip" >/dev/null 2>&1 &
      else
        ndsend "$ip" "$dev" >/dev/null 2>&1 &
      fi
    }
    i=0
    while [ "$i" -lt "$count" ]; do
      send
      i=$((i + 1))
      [ "$i" -lt "$count" ] && sleep "$gap"
    done
    [ "$refresh" = 0.000 ] && { wait; rm -f "$mine"; exit 0; }
    while :; do sleep "$refresh"; send; done
  ' tandem-announce "$announcer" "$token" "$family" "$dev" "$ip" "$count" "$(seconds "$interval")" "$(seconds "$refresh")" </dev/null >/dev/null 2>&1 &
  # Give the first packet time to leave before tandem confirms the lease, so the old
  # holder never removes the address before clients have heard of the new one.
  sleep 0.05
}

case $state in
  MASTER)
    stop_announcer
    if ! has_address; then
      if [ "$family" = -6 ]; then
        ip -6 addr add "$cidr" dev "$dev" nodad || exit 1
      else
        ip -4 addr add "$cidr" dev "$dev" || exit 1
      fi
    fi
    start_announcer
    ;;
  BACKUP | FAULT | STOP)
    stop_announcer
    # Each entry as the kernel holds it: deleting by the written form would fail when it
    # is not canonical, or when the address is up with another prefix length.
    for held in $(held_addresses); do
      ip "$family" addr del "$held" dev "$dev" || exit 1
    done
    ;;
  *)
    log "unknown state $state (MASTER, BACKUP, FAULT or STOP)"
    exit 2
    ;;
esac
exit 0
