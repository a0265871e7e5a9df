#!/bin/sh
# Usage: wait-addr.sh ADDRESS COMMAND [ARG...]
# containerlab adds the lab addresses with the node's `exec` lines only after the container has
# started, so a program that binds to its lab address must wait for it. Gives up after 60 s.
set -eu
addr=$1
shift
i=0
until ip -o addr show | grep -q " inet6\? $addr/"; do
  i=$((i + 1))
  if [ "$i" -ge 600 ]; then
    echo "wait-addr: $addr never appeared" >&2
    exit 1
  fi
  sleep 0.1
done
exec "$@"
