#!/bin/bash
# syscount.sh TWISTD PORT SECS : syscalls per answered crash in the workers, 400k conc 32
set -eu
TW=$1 PORT=$2 SECS=$3
D=/tmp/intake-sc/run-$PORT; rm -rf $D; mkdir -p $D
cd $D
SPOOL_DIR=$D/spool CRASHSTORAGE_CLASS=fs CRASHSTORAGE_FS_ROOT=$D/crashes METRICS_CLASS=none LOGGING_LEVEL=INFO SPOOL_FSYNC=false BASEDIR=$D \
  setsid $TW -n --pidfile= antenna --port tcp:$PORT:interface=127.0.0.1 --workers 2 > $D/log 2>&1 &
P=$!
sleep 5
W=$(pgrep -P $P | paste -sd,)
WARMUP=1 CONN_CLOSE=1 LOG_DIR=$D timeout 60 /work/shared/bench/run_load.sh http://127.0.0.1:$PORT/submit /tmp/intake-prof/scratch/payloads 400k 32 $SECS > $D/wrk.txt &
L=$!
sleep 1.5
timeout -s INT $((SECS-1)) perf stat -x, -e 'syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_accept4,syscalls:sys_enter_sendto,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_getsockname' -p $W -o $D/perf.txt || true
wait $L
kill -TERM $P; sleep 3
cat $D/wrk.txt; cat $D/perf.txt
