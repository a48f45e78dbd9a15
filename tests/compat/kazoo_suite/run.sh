#!/bin/bash
# Runs kazoo's own test suite (from the installed kazoo package) against a
# 3-server ensemble started from kazoo's zoo.cfg files by KAZOO_SUITE_SERVER_CMD.
# usage: run.sh PYTHON OUTFILE [extra pytest args]
# PYTHON must have kazoo, pytest, pytest-timeout, objgraph, pyjks, pyopenssl<24.3.
set -u
py=$1 out=$(realpath -m "$2"); shift 2
[[ $py == */* ]] && py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")  # the suite runs in a fresh temporary directory
here=$(cd "$(dirname "$0")" && pwd)
export ZOOKEEPER_CLASSPATH=${ZOOKEEPER_CLASSPATH:-/usr/share/java/zookeeper.jar}
export ZOOKEEPER_VERSION=${ZOOKEEPER_VERSION:-3.8.0}
export ZOOKEEPER_PORT_OFFSET=${ZOOKEEPER_PORT_OFFSET:-32000}
cd "$(mktemp -d)" || exit 2
PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH} "$py" -m pytest -q -p no:cacheprovider -p zkpy_shim \
  --timeout 90 --pyargs kazoo.tests -k "not gevent and not eventlet and not sasl" -rfE "$@" >"$out" 2>&1
tail -n 1 "$out"
