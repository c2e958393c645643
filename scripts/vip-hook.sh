#!/bin/bash
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
# Until clients hear the gratuitous ARP they keep sending to the old holder's MAC, so on
# MASTER the address and the first announcement come before anything else: no pid file,
# directory or check stands in front of them. The first packet is a single-shot arping
# the hook waits for only as long as it takes to leave; the repeats and refreshes come
# from a background announcer started afterwards.
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
# gets "RTNETLINK answers: Operation not permitted"). This shell's own effective set is
# what its children start with (root: the bounding set; others: the ambient set), and it
# is read with builtins: no process may stand before a MASTER's first announcement.
caps=
while read -r key value; do
  [ "$key" = CapEff: ] && { caps=$value; break; }
done < /proc/self/status
if [ -n "$caps" ] && (( (0x$caps >> 12 & 1) == 0 )); then
  log "no CAP_NET_ADMIN for ip (uid $EUID): run the hook as root with NET_ADMIN and NET_RAW" \
    "(a container: user 0, --cap-drop ALL --cap-add NET_ADMIN --cap-add NET_RAW), or as a user" \
    "with them as ambient capabilities (systemd: AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW)"
  exit 1
fi
# As root, arping's own file capability is capped by the bounding set too.
if [ -n "$caps" ] && [ "$EUID" = 0 ] && (( (0x$caps >> 13 & 1) == 0 )); then
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

# Per node and VIP: several nodes (network namespaces, tests) may share one host. Each
# announcer records itself in $announcer.PID.pid; $announcer.want names the one launch
# that may run (see start_announcer). The single-shot sender of a MASTER run does the
# same with $first.PID and $first.want.
use_rundir() {
  rundir=${TANDEM_RUN_DIR:-/run/tandem}
  if ! { [ -d "$rundir" ] || mkdir -p "$rundir" 2>/dev/null; } || [ ! -w "$rundir" ]; then
    rundir=${TMPDIR:-/tmp}/tandem-$EUID
    [ -d "$rundir" ] || mkdir -p "$rundir" || exit 1
  fi
  announcer=$rundir/$node.$vip.announcer
  first=$rundir/$node.$vip.first
}

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

# Waits (at most about 200 ms) until the processes given are gone or zombies, so that
# when a demotion returns nothing of this VIP can still send.
wait_gone() {
  local pid state _ i
  for pid in "$@"; do
    for ((i = 0; i < 40; i++)); do
      { read -r _ _ state _ < "/proc/$pid/stat"; } 2>/dev/null || break
      [ "$state" = Z ] && break
      pause
    done
  done
}

# Sleeps 5 ms without starting a process (`sleep` is one: slow on a busy machine).
pause() {
  [ -n "${pause_fd:-}" ] || exec {pause_fd}<> <(:)
  read -r -t 0.005 -u "$pause_fd" _
}

# Stops every sender of this VIP but the single-shot one given (the current MASTER run's).
stop_announcer() {
  local keep=${1:-} file pid killed=()
  # Withdraw the wish first, then look for pid files: an announcer that has not recorded
  # itself yet checks the wish only after recording, so it either shows up below or
  # finds the wish gone and exits without sending anything.
  rm -f "$announcer.want"
  [ -z "$keep" ] && rm -f "$first.want"
  for file in "$announcer".*.pid; do
    [ -f "$file" ] || continue
    pid=${file#"$announcer".}
    pid=${pid%.pid}
    # Only a group we started for this VIP: a stale pid file must never kill an
    # unrelated process that reused the pid.
    if [ -n "$pid" ] && grep -qaF -- "$announcer" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null && killed+=("$pid")
    fi
    rm -f "$file"
  done
  # Single-shot senders of earlier MASTER runs: one that has sent lingers silently, but
  # one that has not must not send after the address is gone.
  for file in "$first".*; do
    [ -f "$file" ] || continue
    pid=${file##*.}
    case $pid in '' | *[!0-9]*) continue ;; esac
    [ "$pid" = "$keep" ] && continue
    if grep -qaF -- "$ip" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null && killed+=("$pid")
    fi
    rm -f "$file"
  done
  # Left by the hook before announcers recorded themselves.
  rm -f "$announcer.pid"
  [ ${#killed[@]} -eq 0 ] || wait_gone "${killed[@]}"
}

# One unsolicited ARP (IPv6: neighbour advertisement), in the background: iputils arping
# sends at once and then lingers for a second, which no state change may wait for. The
# sender records itself and checks the wish before it execs, as the announcer does, so
# a hook killed at its timeout leaves nothing a later BACKUP cannot find.
send_first() {
  sender=
  : > "$first.want" || return 0
  (
    echo "$BASHPID" > "$first.$BASHPID"
    [ -e "$first.want" ] || exit 0
    if [ "$family" = -4 ]; then
      exec arping -U -c 1 -I "$dev" "$ip"
    else
      exec ndsend "$ip" "$dev"
    fi
  ) </dev/null >/dev/null 2>&1 &
  sender=$!
}

# True once the single-shot sender has sent: it then waits in poll() for replies that an
# unsolicited ARP never gets (or has exited). Read from /proc, so no process is started.
first_sent() {
  local wchan=
  { read -r wchan < "/proc/$1/wchan"; } 2>/dev/null || return 0
  case $wchan in *poll*) return 0 ;; esac
  return 1
}

add_address() {
  local nodad=
  [ "$family" = -6 ] && nodad=nodad
  # Added first and checked after: `ip` fails with "File exists" when the VIP is up
  # already (MASTER is idempotent), which one look at the interface then tells apart.
  ip "$family" addr add "$cidr" dev "$dev" $nodad 2>/dev/null && return 0
  has_address && return 0
  ip "$family" addr add "$cidr" dev "$dev" $nodad
}

# The sender of announcements, or nothing (with a log line) when it is not installed.
announce_tool() {
  local tool=arping package=iputils-arping
  [ "$family" = -6 ] && tool=ndsend package=ndisc6
  command -v "$tool" >/dev/null 2>&1 && return 0
  log "$tool not found: $ip is up but not announced (install $package)"
  return 1
}

start_announcer() {
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
    # The hook sent the first packet itself.
    i=1
    while [ "$i" -lt "$count" ]; do
      sleep "$gap"
      send
      i=$((i + 1))
    done
    [ "$refresh" = 0.000 ] && { wait; rm -f "$mine"; exit 0; }
    while :; do sleep "$refresh"; send; done
  ' tandem-announce "$announcer" "$token" "$family" "$dev" "$ip" "$count" "$(seconds "$interval")" "$(seconds "$refresh")" </dev/null >/dev/null 2>&1 &
}

case $state in
  MASTER)
    # Cheap when it exists: tests for a directory, starts nothing.
    use_rundir
    add_address || exit 1
    sender= tool=yes
    announce_tool || tool=
    [ -n "$tool" ] && [ "$count" -gt 0 ] && send_first
    # Bookkeeping, after the announcement.
    stop_announcer "$sender"
    [ -n "$tool" ] && start_announcer
    # Let the first packet leave before tandem confirms the lease, so the old holder
    # never removes the address before clients have heard of the new one (at most 100 ms).
    for ((i = 0; i < 20; i++)); do
      [ -z "$sender" ] && break
      first_sent "$sender" && break
      pause
    done
    ;;
  BACKUP | FAULT | STOP)
    use_rundir
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
