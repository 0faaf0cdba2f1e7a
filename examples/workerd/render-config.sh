#!/usr/bin/env bash
# Writes config.capnp from config.capnp.in.
# Usage: PULLKV_TOKEN=pkv_… ./render-config.sh 127.0.0.1:8787 <namespace id>
set -euo pipefail
cd "$(dirname "$0")"
address=${1:?address of a pullkv node, e.g. 127.0.0.1:8787}
namespace=${2:?namespace id (32 hex characters)}
token=${PULLKV_TOKEN:?set PULLKV_TOKEN to a pullkv token (a read-only one is enough to read)}
sed -e "s|@PULLKV_ADDRESS@|${address}|" -e "s|@PULLKV_NAMESPACE@|${namespace}|" \
    -e "s|@PULLKV_TOKEN@|${token}|" config.capnp.in > config.capnp
chmod 600 config.capnp
echo "wrote config.capnp; run: ../../node_modules/.bin/workerd serve config.capnp"
