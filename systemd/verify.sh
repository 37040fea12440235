#!/usr/bin/env bash
# Checks the unit file: `systemd-analyze verify` must pass, and the exposure that
# `systemd-analyze security --offline=true` reports must stay at or below 2.0.
set -euo pipefail
cd "$(dirname "$0")"
unit=iewatch.service
limit=2.0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq systemd >/dev/null
fi

# verify wants the ExecStart binary to exist: point it at a stand-in in a scratch copy.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sed "s|/usr/bin/iewatch|$scratch/iewatch|" "$unit" > "$scratch/$unit"
printf '#!/bin/sh\n' > "$scratch/iewatch" && chmod +x "$scratch/iewatch"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$scratch/$unit" 2>&1 | tee "$scratch/verify.log"
if grep -v 'not executable\|Failed to open /etc/iewatch' "$scratch/verify.log" | grep -qi .; then
    echo "systemd-analyze verify reported problems" >&2
    exit 1
fi

score=$(systemd-analyze security --offline=true "$scratch/$unit" 2>/dev/null | grep 'Overall exposure level' | grep -oE '[0-9]+\.[0-9]+' | head -1)
echo "exposure: $score (limit $limit)"
awk -v s="$score" -v l="$limit" 'BEGIN { exit !(s != "" && s <= l) }' || {
    echo "exposure $score is above $limit" >&2
    systemd-analyze security --offline=true "$scratch/$unit" | grep -v '✓' >&2 || true
    exit 1
}
