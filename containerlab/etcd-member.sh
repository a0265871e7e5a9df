#!/bin/sh
# Usage: etcd-member.sh NAME ADDRESS INITIAL_CLUSTER
# One member of the lab's etcd cluster, with the flags test/lab/etcd.ts uses. The data dir can be moved
# with ETCD_LAB_DATA_DIR (default /var/lib/etcd/NAME).
set -eu
name=$1
addr=$2
cluster=$3
here=$(dirname "$0")
exec "$here/wait-addr.sh" "$addr" etcd \
  --name "$name" \
  --data-dir "${ETCD_LAB_DATA_DIR:-/var/lib/etcd/$name}" \
  --listen-client-urls "http://$addr:2379,http://127.0.0.1:2379" \
  --advertise-client-urls "http://$addr:2379" \
  --listen-peer-urls "http://$addr:2380" \
  --initial-advertise-peer-urls "http://$addr:2380" \
  --initial-cluster "$cluster" \
  --initial-cluster-token vipd-lab \
  --initial-cluster-state new \
  --heartbeat-interval 100 \
  --election-timeout 1000 \
  --logger zap \
  --log-outputs stderr
