#!/bin/sh
# The matrix guest's /init (busybox sh): for each probe mode, attach, take
# the anon_vma slab count, run the workload to its hold point, take the
# count again, let interim reports come, release, stop, and print
# everything between RMW-... markers, which the host's checks parse
# (xtask/src/vm/checks.rs). Its parameters come from /etc/rmw.conf, written
# by xtask/src/vm/guest.rs: RMW_MODES (the default probe modes), RMW_KSYMS
# (the kallsyms fixtures' symbols, an awk alternation), RMW_K, RMW_F and
# RMW_STORM (regions, children, storm forks), RMW_WORKLOAD (the recording's
# workload arguments), RMW_HOST_PHASE_SECS and RMW_PHASE_SECS (the
# watchdog's budget of any other phase).
# shellcheck source=/dev/null # written into the initramfs by xtask
. /etc/rmw.conf
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tracefs nodev /sys/kernel/tracing; mount -t bpf bpf /sys/fs/bpf
# The kernel's messages off the console (console loglevel 1: KERN_EMERG
# only) while the guest prints its lines: printk writes to the serial port
# between any two bytes of a line of ours (a report a few KB long), which
# the host could then not parse. An oops or a panic still prints whole (they
# make the console verbose); everything else is in the kernel's buffer,
# printed after the marker below as RMW-KMSG lines before the end (kmsg).
echo 1 > /proc/sys/kernel/printk
echo "rmw: init starts" > /dev/kmsg
# (All of it when the marker is gone: the buffer wrapped.)
kmsg() {
  dmesg > /tmp/kmsg
  if grep -q 'rmw: init starts' /tmp/kmsg; then
    sed -n '/rmw: init starts/,$p' /tmp/kmsg | sed '1d; s/^/RMW-KMSG /'
  else
    sed 's/^/RMW-KMSG /' /tmp/kmsg
  fi
}
# A hung phase, said before the guest powers off (the watchdog's last
# act, so its forks no longer matter): the phase, every user process (pid,
# command line, state, wait channel, each thread's kernel stack) and the
# kernel's blocked tasks and last messages, as RMW-HUNG lines
# (checks::hung).
hung() {
  echo "RMW-HUNG phase '$1' ran past its $2 s"
  for d in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$d/cmdline" 2>/dev/null | cut -c1-120)
    [ -n "$c" ] || continue
    echo "RMW-HUNG pid ${d#/proc/}: $c; state $(cut -d' ' -f3 "$d/stat" 2>/dev/null), wchan $(cat "$d/wchan" 2>/dev/null)"
    for t in "$d"/task/*; do
      sed "s|^|RMW-HUNG   task ${t##*/}: |" "$t/stack" 2>/dev/null | head -12
    done
  done
  # The running CPUs' backtraces (a running thread's stack is empty
  # above), then the blocked tasks.
  echo l > /proc/sysrq-trigger 2>/dev/null
  echo w > /proc/sysrq-trigger 2>/dev/null
  dmesg | tail -80 | sed 's/^/RMW-HUNG dmesg: /'
}
# The watchdog: one background shell that forks nothing until it fires
# (builtin read with a timeout on a fifo it holds open both ways). Each
# stamp re-arms it with the new phase's name; a phase that runs past
# RMW_PHASE_SECS (the host phase: RMW_HOST_PHASE_SECS + 60) is a hang,
# said (hung) before the guest powers off: the host fails the boot at once
# with what hung, not at its 900 s timeout with the console's last lines.
mkfifo /tmp/wd.fifo
(
  exec 9<> /tmp/wd.fifo
  what=start
  while :; do
    lim=$RMW_PHASE_SECS
    [ "$what" = "host phase" ] && lim=$((RMW_HOST_PHASE_SECS + 60))
    # shellcheck disable=SC3045 # busybox sh has read -t (POSIX leaves it undefined)
    if read -r -t "$lim" line <&9; then what=$line; continue; fi
    hung "$what" "$lim"
    poweroff -f
  done
) &
# RMW-T <uptime> <phase>: where the boot's time goes (checks::phases),
# read without a fork; the watchdog re-armed (a write that never blocks:
# the watchdog holds the fifo open).
stamp() { read -r up _ < /proc/uptime; echo "RMW-T $up $*"; echo "$*" 1<> /tmp/wd.fifo; }
stamp start
slab() { echo 1 > /sys/kernel/slab/anon_vma/shrink; cut -d' ' -f1 /sys/kernel/slab/anon_vma/objects; }
cpuslabs() { cut -d' ' -f1 /sys/kernel/slab/anon_vma/cpu_slabs; }
# With slab_nomerge (the GKI-like boot) the AVC cache is its own: counted too.
avcslab() { [ -L /sys/kernel/slab/anon_vma_chain ] && { echo -1; return; }; echo 1 > /sys/kernel/slab/anon_vma_chain/shrink; cut -d' ' -f1 /sys/kernel/slab/anon_vma_chain/objects; }
avccpu() { [ -L /sys/kernel/slab/anon_vma_chain ] && { echo -1; return; }; cut -d' ' -f1 /sys/kernel/slab/anon_vma_chain/cpu_slabs; }
echo "RMW-KERNEL $(uname -r) $(uname -m)"
# The kallsyms lines rmapwatch reads (and each one's successor, which ends
# its range): the unit tests' fixtures.
echo RMW-KSYMS-START
# [.] rather than \. : awk -v would read the backslash as an escape.
# grep first (a superset, each with its successor): busybox awk compiles a
# regex held in a variable again on every line, which took 144 of a 7.3
# boot's 263 s under TCG (8 s natively); grep compiles it once.
grep -E -A1 "[[:space:]]($RMW_KSYMS)([.][^[:space:]]*)?([[:space:]]|\$)" /proc/kallsyms |
  awk -v re="^($RMW_KSYMS)([.].*)?\$" 'p{print;p=0} $3 ~ re {print;p=1}'
echo RMW-KSYMS-END
# Refusals a phone can produce (rmw.refusals=1): the last thing a guest
# does, as the lockdown it ends with cannot be lifted.
refusals() {
  grep -q 'rmw\.refusals=1' /proc/cmdline || return 0
  cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
  mount -t tmpfs none /sys/kernel/btf
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE nobtf rc=$? $(grep error /tmp/e | head -1)"
  rmapwatch --btf /tmp/vmlinux.btf report --duration 1 --json > /tmp/j 2>/tmp/e; echo "RMW-REFUSE btf-file rc=$? reports=$(grep -c schema /tmp/j)"
  umount /sys/kernel/btf
  K=$(cat /proc/sys/kernel/kptr_restrict)
  echo 2 > /proc/sys/kernel/kptr_restrict
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE kptr rc=$? after=$(cat /proc/sys/kernel/kptr_restrict) $(grep kptr_restrict /tmp/e | head -1)"
  echo "$K" > /proc/sys/kernel/kptr_restrict
  # shellcheck disable=SC3045 # busybox sh has ulimit -l (POSIX leaves it undefined)
  (ulimit -l 64; rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE memlock rc=$? $(grep -i memlock /tmp/e | head -1)")
  mount -t securityfs none /sys/kernel/security 2>/dev/null
  echo confidentiality > /sys/kernel/security/lockdown
  rmapwatch report --duration 1 > /dev/null 2>/tmp/e; echo "RMW-REFUSE lockdown rc=$? $(grep error /tmp/e | head -1)"
}
# rmw.net=1: a virtio-net NIC on QEMU's user network. Its modules (the host
# puts this kernel's in /lib/modules/RELEASE, net.list in load order), then
# QEMU's user-net defaults. Done late (in the host phase): nothing measured
# before sees a NIC driver.
net_up() {
  D=/lib/modules/$(uname -r)
  [ -f "$D/net.list" ] || { echo "RMW-NET no modules for $(uname -r)"; return 1; }
  while read -r m; do insmod "$D/$m" 2>/tmp/e || echo "RMW-NET insmod $m failed: $(cat /tmp/e)"; done < "$D/net.list"
  i=0
  while [ ! -e /sys/class/net/eth0 ]; do sleep 0.2; i=$((i+1)); [ $i -gt 100 ] && { echo "RMW-NET no eth0"; return 1; }; done
  ip link set lo up
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || echo "RMW-NET ip failed"
}
# Whether a TCP port (4 hex digits) of the guest is listening.
listening() { cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -q ":$1 [0-9A-F]*:0000 0A"; }
# The guest's side of the host phase: servers on 5555 (the host reaches it
# on 127.0.0.1:<HostPhase::port>), started in the background, their pids in
# PHASE_PIDS (killed after the phase); PHASE_PORTS are waited for (listening)
# before RMW-NET-READY. Here: the project's ADB device stand-in, a
# userdebug "phone" whose adbd runs as root, for the host's real adb client.
adb_phase() {
  mkdir -p /data/local/tmp
  printf 'ro.build.type=userdebug\nro.debuggable=1\nro.build.version.sdk=34\nro.product.model=arm64 guest\nro.product.cpu.abi=arm64-v8a\n' > /tmp/adb.props
  # As Android's init leaves them: kernel addresses hidden, 64 KiB of
  # locked memory for everything it starts.
  echo 2 > /proc/sys/kernel/kptr_restrict
  # shellcheck disable=SC3045 # busybox sh has ulimit -l (POSIX leaves it undefined)
  (ulimit -l 64; exec rmw-adbd --listen 0.0.0.0:5555 --props /tmp/adb.props --uid 0 > /tmp/adbd.out 2> /tmp/adbd.err) & PHASE_PIDS="$PHASE_PIDS $!"
  PHASE_PORTS="$PHASE_PORTS 15B3"
}
# The host phase (rmw.net=1): NIC up, adb_phase, then RMW-NET-READY on the
# console; blocked until the host connects to 5556 and closes (at most
# $RMW_HOST_PHASE_SECS s, so a broken host never hangs the boot).
host_phase() {
  grep -q 'rmw\.net=1' /proc/cmdline || return 0
  net_up
  PHASE_PIDS=; PHASE_PORTS=15B4
  timeout "$RMW_HOST_PHASE_SECS" nc -l -p 5556 < /dev/null > /dev/null 2>&1 &
  N=$!
  adb_phase
  for p in $PHASE_PORTS; do
    i=0
    while ! listening "$p"; do sleep 0.2; i=$((i+1)); [ $i -gt 300 ] && { echo "RMW-NET port $p not listening"; break; }; done
  done
  echo RMW-NET-READY
  wait "$N"; echo "RMW-NET-RELEASED rc=$?"
  for p in $PHASE_PIDS; do kill "$p" 2>/dev/null; done
  [ -e /tmp/adbd.err ] && tail -5 /tmp/adbd.err | sed 's/^/RMW-NET adbd: /'
}
# Fork work and rmap walks against an independent count (checks::time):
# tracefs kprobe events on dup_mmap (where it is inlined, as on Debian's
# 5.10 and 6.12: uprobe_start_dup_mmap, which only dup_mmap calls, first)
# and rmap_walk_anon, counted in the trace buffer (5.10 has no hist
# triggers) over a window inside rmapwatch's (enabled once it said it
# attached, disabled before it is stopped; only shell builtins between
# those and rmapwatch's own start and stop), around a fork storm and a
# compaction while a forked family holds its written pages (compaction
# migrates them: rmap walks over their anon_vmas).
time_check() {
  T=/sys/kernel/tracing
  if [ ! -e /sys/bus/event_source/devices/kprobe ]; then echo "RMW-TIME $1 skipped: no kprobes"; return 0; fi
  DM=$(awk '$3 ~ /^dup_mmap([.].*)?$/ {print $3; exit}' /proc/kallsyms)
  [ -n "$DM" ] || DM=$(awk '$3 == "uprobe_start_dup_mmap" {print $3; exit}' /proc/kallsyms)
  RW=$(awk '$3 ~ /^rmap_walk_anon([.].*)?$/ {print $3; exit}' /proc/kallsyms)
  EV=
  [ -n "$DM" ] && echo "p:rmwcheck/dm $DM" >> $T/kprobe_events && EV="$EV dm"
  [ -n "$RW" ] && echo "p:rmwcheck/rw $RW" >> $T/kprobe_events && EV="$EV rw"
  # Every rwsem's slow path (anon_vma's and all others): an upper bound of
  # the anon_vma rwsem waits.
  grep -q ' rwsem_down_read_slowpath$' /proc/kallsyms && echo "p:rmwcheck/sr rwsem_down_read_slowpath" >> $T/kprobe_events && EV="$EV sr"
  grep -q ' rwsem_down_write_slowpath$' /proc/kallsyms && echo "p:rmwcheck/sw rwsem_down_write_slowpath" >> $T/kprobe_events && EV="$EV sw"
  echo 16384 > $T/buffer_size_kb
  # The trace names each line's task from a cache of 128 pids by default:
  # after the storm's forks kdamond's name could be gone (shown "<...>"),
  # and its hits (RWD) uncounted.
  [ -e $T/saved_cmdlines_size ] && echo 8192 > $T/saved_cmdlines_size
  echo > $T/trace
  rm -f /tmp/t.json /tmp/t.err /tmp/tw.out /tmp/ts.out /tmp/tc.out /tmp/hold5
  mkfifo /tmp/hold5
  rmw-workload --regions "$RMW_K" --children "$RMW_F" --noise 0 --hold < /tmp/hold5 > /tmp/tw.out &
  TW=$!
  exec 7>/tmp/hold5
  i=0
  while ! grep -q ready /tmp/tw.out 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && break; done
  # rmapwatch's stderr through a fifo, kept by a subshell started before
  # rmapwatch (builtin read and echo only) for as long as rmapwatch runs,
  # so that the pipe never fills. It passes the first "attached" (or
  # error) line on through a second fifo, which this shell reads with its
  # builtin read: no fork of the shell between rmapwatch's "attached" and
  # the events' enabling (a polling loop's grep and sleep would be counted
  # by rmapwatch only; seen: 5 more on arm64 TCG).
  rm -f /tmp/t.fifo /tmp/t.sig; mkfifo /tmp/t.fifo /tmp/t.sig
  : > /tmp/t.err
  (
    said=
    while IFS= read -r line; do
      echo "$line" >> /tmp/t.err
      if [ -z "$said" ]; then
        case "$line" in *attached*|*error*) said=1; echo "$line" > /tmp/t.sig ;; esac
      fi
    done
    [ -n "$said" ] || echo "exited before attaching" > /tmp/t.sig
  ) < /tmp/t.fifo &
  TD=$!
  rmapwatch --probe-mode "$1" report --json > /tmp/t.json 2>/tmp/t.fifo &
  TP=$!
  IFS= read -r _ < /tmp/t.sig
  for e in $EV; do echo 1 > "$T/events/rmwcheck/$e/enable"; done
  rmw-workload --regions "$RMW_K" --noise 0 --storm "$RMW_STORM" > /tmp/ts.out
  # Siblings forking at once from a shared parent's anon_vmas: waits on
  # their root's rwsem.
  rmw-workload --regions "$RMW_K" --noise 0 --siblings 4 --storm 25 > /tmp/tc.out
  echo 1 > /proc/sys/vm/compact_memory
  for e in $EV; do echo 0 > "$T/events/rmwcheck/$e/enable"; done
  kill -INT "$TP"; wait "$TP"; RC=$?
  wait "$TD"
  exec 7>&-
  wait "$TW"
  DMH=-1; RWH=-1; RWD=-1; SRH=-1; SWH=-1
  # Every count before any event is removed: removing one empties the
  # trace buffer.
  for e in $EV; do
    H=$(grep -c " $e: " $T/trace)
    [ "$e" = dm ] && DMH=$H
    # DAMON's kdamond threads (7.x: damon_stat, on by default) walk rmaps
    # of sampled folios all the time, in the gaps too: counted apart.
    [ "$e" = rw ] && RWH=$H && RWD=$(grep " rw: " $T/trace | grep -c '^ *kdamond')
    [ "$e" = sr ] && SRH=$H
    [ "$e" = sw ] && SWH=$H
  done
  LOST=$(cat $T/per_cpu/cpu*/stats | awk '/^overrun:/ {s+=$2} END {print s+0}')
  echo > $T/trace
  for e in $EV; do echo "-:rmwcheck/$e" >> $T/kprobe_events; done
  echo "RMW-TIME $1 rc=$RC dm=$DMH rw=$RWH rwd=$RWD sr=$SRH sw=$SWH lost=$LOST dmsym=${DM:-none} rwsym=${RW:-none} $(tr '\n' ' ' < /tmp/ts.out) $(grep contend /tmp/tc.out)"
  sed 's/^/RMW-TIME-ERR /' /tmp/t.err
  sed 's/^/RMW-TIME-JSON /' /tmp/t.json
}
# rmw.modes=a,b on the command line picks the modes (none: no mode, as
# arm64's 6.12, whose host phase is its check); rmw.zombie=0 skips the
# zombie-leader check, rmw.record=0 the recording and the replays.
MODES=$(sed -n 's/.*rmw\.modes=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
[ -n "$MODES" ] || MODES="$RMW_MODES"
[ "$MODES" = none ] && MODES=
# rmw.split=MODE: that mode's run also attaches the cost split's variants.
SPLIT=$(sed -n 's/.*rmw\.split=\([a-z]*\).*/\1/p' /proc/cmdline)
for mode in $MODES; do
  stamp mode "$mode"
  rm -f /tmp/r.json /tmp/r.err /tmp/w.out /tmp/hold
  echo "RMW-STORM $mode base $(rmw-workload --regions "$RMW_K" --noise 0 --storm "$RMW_STORM")"
  if [ -n "$SPLIT" ] && [ "$SPLIT" = "$mode" ]; then export RMAPWATCH_COST_SPLIT=1; else unset RMAPWATCH_COST_SPLIT; fi
  # RMAPWATCH_FLOOR: the empty program beside ours, for the cost ratio.
  RMAPWATCH_FLOOR=1 rmapwatch --probe-mode "$mode" report --json --interval 0.5 > /tmp/r.json 2>/tmp/r.err &
  P=$!
  i=0
  while ! grep -q -e attached -e error /tmp/r.err 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 600 ] && break; done
  sleep 2.5
  echo "RMW-PRE $mode $(wc -l < /tmp/r.json)"
  S0=$(slab); C0=$(cpuslabs); A0=$(avcslab); AC0=$(avccpu)
  mkfifo /tmp/hold
  rmw-workload --regions "$RMW_K" --children "$RMW_F" --noise 20 --hold < /tmp/hold > /tmp/w.out &
  W=$!
  exec 3>/tmp/hold
  while ! grep -q ready /tmp/w.out 2>/dev/null; do sleep 0.1; done
  S1=$(slab); C1=$(cpuslabs); A1=$(avcslab); AC1=$(avccpu)
  sleep 3
  echo "RMW-HOLD $mode $(wc -l < /tmp/r.json)"
  exec 3>&-
  wait "$W"
  echo "RMW-STORM $mode traced $(rmw-workload --regions "$RMW_K" --noise 0 --storm "$RMW_STORM")"
  sleep 1
  kill -INT "$P"; wait "$P"; RC=$?
  sleep 1
  # JIT-ed programs are in kallsyms as bpf_prog_<tag>_<name> [bpf] while loaded.
  LEFT=$(grep '\[bpf\]' /proc/kallsyms | grep -c -e kmem_cache -e sched_process -e fork_e -e fentry_ -e kprobe_ -e task_vma)
  echo "RMW-MODE $mode rc=$RC s0=$S0 s1=$S1 c0=$C0 c1=$C1 ops=$(cat /sys/kernel/slab/anon_vma/objs_per_slab) a0=$A0 a1=$A1 ac0=$AC0 ac1=$AC1 aops=$(cat /sys/kernel/slab/anon_vma_chain/objs_per_slab) sheaf=$(cat /sys/kernel/slab/anon_vma/sheaf_capacity 2>/dev/null || echo 0) asheaf=$(cat /sys/kernel/slab/anon_vma_chain/sheaf_capacity 2>/dev/null || echo 0) cpus=$(grep -c ^processor /proc/cpuinfo) left=$LEFT $(grep -e regions -e ready /tmp/w.out | tr '\n' ' ')"
  sed 's/^/RMW-ERR /' /tmp/r.err
  sed 's/^/RMW-JSON /' /tmp/r.json
  # rmw.time=0: this boot runs no time check (the host expects none);
  # rmw.time=MODE: only that mode's.
  T=$(sed -n 's/.*rmw\.time=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
  if [ -z "$T" ] || [ "$T" = "$mode" ]; then stamp time "$mode"; time_check "$mode"; fi
done
# A process whose main thread exited (rmw-workload --zombie-leader): its
# leader is a zombie without an mm, its other thread holds every VMA.
# rmapwatch attaches first (the leader's exit is among its events), inspect
# reads the process while it holds; the host checks both (checks::zombie).
zombie_check() {
  stamp zombie
  rm -f /tmp/z.json /tmp/z.err /tmp/zw.out /tmp/hold3 /tmp/zi.json /tmp/zi.err
  rmapwatch report --json > /tmp/z.json 2>/tmp/z.err &
  Z=$!
  i=0
  while ! grep -q -e attached -e error /tmp/z.err 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 600 ] && break; done
  mkfifo /tmp/hold3
  rmw-workload --regions "$RMW_K" --children "$RMW_F" --noise 0 --zombie-leader --hold < /tmp/hold3 > /tmp/zw.out &
  W=$!
  exec 5>/tmp/hold3
  i=0
  while ! grep -q ready /tmp/zw.out 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && break; done
  ZP=$(sed -n 's/^ready \([0-9]*\).*/\1/p' /tmp/zw.out)
  LEADER=$(cut -d' ' -f3 "/proc/$ZP/task/$ZP/stat" 2>/dev/null)
  rmapwatch inspect "$ZP" --json > /tmp/zi.json 2>/tmp/zi.err; IRC=$?
  sleep 1.5
  kill -INT "$Z"; wait "$Z"; RC=$?
  exec 5>&-
  wait "$W"
  echo "RMW-ZOMBIE rc=$RC inspect=$IRC leader=$LEADER $(grep -e regions -e ready /tmp/zw.out | tr '\n' ' ')"
  cat /tmp/z.err /tmp/zi.err | sed 's/^/RMW-ZOMBIE-ERR /'
  sed 's/^/RMW-ZOMBIE-JSON /' /tmp/z.json
  echo "RMW-ZOMBIE-INSPECT $(tr -d '\n' < /tmp/zi.json)"
}
# A recording made here, for the host to replay (another architecture on
# arm64), and the host's fixtures replayed here.
record_check() {
  stamp record
  rm -f /tmp/rec.rmw /tmp/hold2
  rmapwatch record -o /tmp/rec.rmw --json --interval 0.5 > /tmp/rec.json 2>/tmp/rec.err &
  R=$!
  i=0
  while ! grep -q -e attached -e error /tmp/rec.err 2>/dev/null; do sleep 0.2; i=$((i+1)); [ $i -gt 600 ] && break; done
  sleep 0.8
  mkfifo /tmp/hold2
  # shellcheck disable=SC2086 # RMW_WORKLOAD is split into its arguments on purpose
  rmw-workload $RMW_WORKLOAD --hold < /tmp/hold2 > /tmp/w2.out &
  W=$!
  exec 4>/tmp/hold2
  while ! grep -q ready /tmp/w2.out 2>/dev/null; do sleep 0.1; done
  # Beside it, an Android-like tree (rmw-workload --zygote): the designs'
  # numbers for it are known by construction (checks::recording). Its lines
  # (proc, libs, heap, own, moved, zygote, ready) go to the host as RMW-ZYG.
  rm -f /tmp/hold4 /tmp/zg.out
  mkfifo /tmp/hold4
  rmw-workload --zygote --hold < /tmp/hold4 > /tmp/zg.out 2>/tmp/zg.err &
  G=$!
  exec 6>/tmp/hold4
  i=0
  while ! grep -q '^ready' /tmp/zg.out 2>/dev/null; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && break; done
  sleep 1.5
  kill -INT "$R"; wait "$R"; RC=$?
  exec 4>&-
  exec 6>&-
  wait "$W"
  wait "$G"
  echo "RMW-REC rc=$RC $(grep -e regions -e ready /tmp/w2.out | tr '\n' ' ')"
  sed 's/^/RMW-ZYG /' /tmp/zg.out
  sed 's/^/RMW-ZYG-ERR /' /tmp/zg.err
  sed 's/^/RMW-REC-ERR /' /tmp/rec.err
  sed 's/^/RMW-REC-JSON /' /tmp/rec.json
  echo RMW-REC-B64-START
  base64 /tmp/rec.rmw
  echo RMW-REC-B64-END
  stamp replays
  for f in /fixtures/*.rmw; do
    [ -e "$f" ] || continue
    echo "RMW-REPLAY $(basename "$f") $(rmapwatch report --from "$f" --json 2>/tmp/replay.err | tr '\n' ' ')"
  done
}
grep -q 'rmw\.zombie=0' /proc/cmdline || zombie_check
grep -q 'rmw\.record=0' /proc/cmdline || record_check
stamp host phase
host_phase
stamp refusals
refusals
stamp end
kmsg
echo RMW-END
poweroff -f
