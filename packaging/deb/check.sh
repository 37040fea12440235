#!/usr/bin/env bash
# CI's check of the Debian package on this machine (root): builds it, installs it with
# dpkg, verifies the installed unit, runs `iewatch check --online` on the installed
# example config against a simulator, reads a man page, upgrades to a newer version of
# the same package, and purges it, checking that nothing of the package is left.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)

# The next version of the same package, for the upgrade (cargo deb replaces older .debs
# of the package in its output directory, so it goes elsewhere).
mkdir -p target/debian-upgrade
bash packaging/deb/build.sh --deb-version "${version}-2" -o target/debian-upgrade/
bash packaging/deb/build.sh
deb=$(ls target/debian/iewatch_"${version}"-1_*.deb)
upgrade=$(ls target/debian-upgrade/iewatch_"${version}"-2_*.deb)

scratch=$(mktemp -d)
sim_pid=
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

echo "-- install $deb"
dpkg -i "$deb"
test -x /usr/bin/iewatch
test -f /etc/iewatch/iewatch.toml.example
test ! -e /etc/iewatch/iewatch.toml
grep -qx /etc/iewatch/iewatch.toml.example /var/lib/dpkg/info/iewatch.conffiles
test -s /usr/share/bash-completion/completions/iewatch
test -s /usr/share/zsh/vendor-completions/_iewatch
test -s /usr/share/fish/vendor_completions.d/iewatch.fish
# Never started, never enabled by the package.
test ! -e /etc/systemd/system/multi-user.target.wants/iewatch.service
if file /usr/bin/iewatch | grep -q 'not stripped'; then
    echo "the packaged binary is not stripped" >&2
    exit 1
fi

echo "-- systemd-analyze verify"
SYSTEMD_LOG_LEVEL=warning systemd-analyze verify /lib/systemd/system/iewatch.service 2>&1 | tee "$scratch/verify.log"
if grep -v 'Failed to open /etc/iewatch' "$scratch/verify.log" | grep -qi .; then
    echo "systemd-analyze verify reported problems" >&2
    exit 1
fi

echo "-- man -l"
MANPAGER=cat MANWIDTH=80 man -l /usr/share/man/man1/iewatch-run.1.gz > "$scratch/man.txt" 2>/dev/null
grep -q 'iewatch-run' "$scratch/man.txt"
grep -q -- '--config' "$scratch/man.txt"
MANPAGER=cat man -l /usr/share/man/man1/iewatch.1.gz | grep -q 'iewatch-status'

echo "-- iewatch check --online on the installed example, against a simulator"
cat > "$scratch/scenario.toml" <<'SCENARIO'
speed = 1
[[job]]
name = "MySampleJob"
type = "Import"
state = "Transferring"
drive = [{ id = "1W0F9LV1", state = "Transferring" }]
[[job]]
name = "ImportJob2026"
type = "Import"
state = "Shipping"
SCENARIO
/usr/bin/iewatch simulate --listen 127.0.0.1:0 --certs "$scratch/certs" \
    --scenario "$scratch/scenario.toml" > "$scratch/sim.out" 2>"$scratch/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
    grep -q '^simulator listening' "$scratch/sim.out" 2>/dev/null && break
    sleep 0.1
done
classic=$(grep -o 'https://127.0.0.1:[0-9]*' "$scratch/sim.out" | sed -n 1p)
arm=$(grep -o 'https://127.0.0.1:[0-9]*' "$scratch/sim.out" | sed -n 2p)
[ -n "$classic" ] && [ -n "$arm" ] || { cat "$scratch/sim.out" "$scratch/sim.err" >&2; exit 1; }
# The example as installed, pointed at the simulator: endpoints, the simulator's app
# registration, and the files it names.
sed -e "s|https://management.core.windows.net|$classic|" \
    -e "s|https://management.azure.com|$arm|" \
    -e "s|https://login.microsoftonline.com|$arm|" \
    -e 's|^tenant_id = .*|tenant_id = "iewatch-sim-tenant"|' \
    -e 's|^client_id = .*|client_id = "iewatch-sim-client"|' \
    -e "/^kind = \"databox\"/a endpoint = \"$arm\"\nauthority = \"$arm\"" \
    /etc/iewatch/iewatch.toml.example > "$scratch/iewatch.toml"
install -m 600 "$scratch/certs/management.pem" "$scratch/management.pem"
printf 'iewatch-sim-secret' > "$scratch/arm-secret" && chmod 600 "$scratch/arm-secret"
printf 'whsec_%s' "$(head -c 24 /dev/urandom | base64)" > "$scratch/ops-secret" && chmod 600 "$scratch/ops-secret"
SSL_CERT_FILE="$scratch/certs/ca.pem" /usr/bin/iewatch check -c "$scratch/iewatch.toml"
SSL_CERT_FILE="$scratch/certs/ca.pem" /usr/bin/iewatch check -c "$scratch/iewatch.toml" --online | tee "$scratch/online.txt"
grep -q '^prod/MySampleJob: Transferring' "$scratch/online.txt"
grep -q '^arm-prod/ImportJob2026: Shipping' "$scratch/online.txt"

echo "-- upgrade"
echo "# the operator's edit" >> /etc/iewatch/iewatch.toml.example
dpkg -i --force-confold "$upgrade"
dpkg-query -W -f='${Version}\n' iewatch | grep -qx "${version}-2"
grep -q "the operator's edit" /etc/iewatch/iewatch.toml.example

echo "-- purge"
dpkg --purge iewatch
for path in /usr/bin/iewatch /lib/systemd/system/iewatch.service /etc/iewatch \
    /usr/share/man/man1/iewatch.1.gz /usr/share/bash-completion/completions/iewatch; do
    if [ -e "$path" ]; then
        echo "$path is left after the purge" >&2
        exit 1
    fi
done
echo "Debian package: installs, verifies, checks, upgrades and purges cleanly"
