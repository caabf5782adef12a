#!/bin/sh
# page-cache writer: 100 MB every 2 s, bounded
end=$(( $(date +%s) + ${1:-600} ))
while [ $(date +%s) -lt $end ]; do dd if=/dev/zero of=/tmp/disturb.bin bs=1M count=100 conv=notrunc status=none; sleep 2; done
rm -f /tmp/disturb.bin
