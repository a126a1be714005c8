#!/usr/bin/env bash
# Installs what `make test` needs, only when it is missing: redis-server,
# chromium and a C compiler for go test -race (Debian packages, through
# apt-get as root or with sudo) and
# versitygw (built with go install into the Go build cache, about 2 minutes
# once). `make test` and CI (.ci/run) run it first; SKIP_TEST_DEPS=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SKIP_TEST_DEPS:-}" ] && exit 0

packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
# The dashboard's browser test (cmd/videoworker/browser_test.go) drives
# headless Chromium, or the binary named by $CHROMIUM_BIN.
if [ -z "${CHROMIUM_BIN:-}" ] && ! command -v chromium >/dev/null 2>&1; then
	packages+=(chromium chromium-driver)
fi
# go test -race needs cgo, hence a C compiler: $(go env CC), gcc by default.
cc="$(go env CC 2>/dev/null || true)"
command -v "${cc%% *}" >/dev/null 2>&1 || command -v "${cc:-gcc}" >/dev/null 2>&1 || packages+=(gcc libc6-dev)
if [ ${#packages[@]} -gt 0 ]; then
	sudo=()
	[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
	if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; }; then
		echo "test dependencies missing: ${packages[*]}; install them (apt-get as root or sudo is not available here) and run make test again" >&2
		exit 1
	fi
	echo "test dependencies missing: installing ${packages[*]} with apt-get"
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The S3 tests run against a real S3 server, versitygw (internal/s3test),
# which would otherwise build it during the test run; the version comes
# from internal/s3test.
if [ -z "${VERSITYGW_BIN:-}" ] && ! command -v versitygw >/dev/null 2>&1; then
	vgw_version="$(sed -n 's/.*VersitygwVersion = "\(v[^"]*\)".*/\1/p' internal/s3test/s3test.go)"
	vgw_bin="$(go env GOCACHE)/videoworker-tools/versitygw-${vgw_version}"
	if [ ! -x "$vgw_bin" ]; then
		echo "test dependencies missing: building versitygw ${vgw_version} for the S3 tests (about 2 minutes, once, into ${vgw_bin})"
		mkdir -p "$(dirname "$vgw_bin")"
		tmp="$(mktemp -d "$(dirname "$vgw_bin")/build-XXXXXX")"
		(cd "$tmp" && GOBIN="$tmp" GOFLAGS= GOWORK=off CGO_ENABLED=0 go install "github.com/versity/versitygw/cmd/versitygw@${vgw_version}")
		mv "$tmp/versitygw" "$vgw_bin"
		rmdir "$tmp"
	fi
fi
