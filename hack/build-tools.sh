#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) plus helm and ferretdb from the Go module proxy, into a cache outside
# the repository keyed by version. Rebuilds only what is missing.
#
#   hack/build-tools.sh [component ...]     components: kube etcd kwok helm ferretdb (default: all)
#
# Environment:
#   SRVTHREDS_CACHE      cache root (default ~/.cache/srvthreds)
#   KUBEBUILDER_ASSETS   a folder of prebuilt binaries (envtest convention); when it holds a
#                        binary, that binary is used and nothing is built for it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${SRVTHREDS_CACHE:-$HOME/.cache/srvthreds}"
export GOMODCACHE="${GOMODCACHE_OVERRIDE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE_OVERRIDE:-$CACHE/go/build}"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-mod=mod"
LOGDIR="$CACHE/logs"
mkdir -p "$LOGDIR" "$GOMODCACHE" "$GOCACHE"

log() { printf '[build-tools %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

bin_dir() { echo "$CACHE/$1/$2/bin"; }

# prebuilt NAME: succeed when KUBEBUILDER_ASSETS already holds an executable NAME.
prebuilt() { [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/$1" ]]; }

# run_logged LOGNAME CMD...: runs a build step, keeping its output in a log file, and names the
# log when the step fails.
run_logged() {
  local logfile="$LOGDIR/$1.log"; shift
  if ! "$@" >>"$logfile" 2>&1; then
    tail -n 30 "$logfile" >&2 || true
    die "'$*' (full log: $logfile)"
  fi
}

build_kube() {
  local out; out="$(bin_dir k8s "$KUBE_VERSION")"
  if prebuilt kube-apiserver && prebuilt kube-controller-manager && prebuilt kube-scheduler; then
    log "kube: using prebuilt binaries in KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"; return
  fi
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" ]] \
     && "$out/kube-apiserver" --version 2>/dev/null | grep -q "v$KUBE_VERSION"; then
    log "kube v$KUBE_VERSION: cached in $out"; return
  fi
  local start=$SECONDS wrap="$CACHE/k8s/$KUBE_VERSION/wrapper" sv="0.${KUBE_VERSION#1.}"
  log "kube v$KUBE_VERSION: generating the wrapper module in $wrap"
  rm -rf "$wrap"; mkdir -p "$wrap" "$out"; : >"$LOGDIR/kube.log"
  (
    cd "$wrap"
    run_logged kube go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION"
    local kmod
    kmod="$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    run_logged kube go mod init srvthreds.local/tools/kube
    run_logged kube go mod edit -go="$(sed -n 's/^go //p' "$kmod")"
    # Every staging module k/k maps to ./staging must be replaced by its published v0.X.Y.
    sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*|\1|p' "$kmod" | sort -u | while read -r m; do
      go mod edit -replace="$m=$m@v$sv"
    done
    log "kube: resolving modules (go get)"
    run_logged kube go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBE_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBE_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@v$KUBE_VERSION"
    run_logged kube go mod tidy
    local maj="${KUBE_VERSION%%.*}" rest="${KUBE_VERSION#*.}" min date ld p
    min="${rest%%.*}"; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"; ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=$maj -X $p.gitMinor=$min"
      ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    local cmd
    for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
      log "kube: compiling $cmd (cold: several minutes on 2 cores)"
      run_logged kube go build -trimpath -buildvcs=false -tags=selinux,notest -ldflags="$ld" \
        -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
  )
  "$out/kube-apiserver" --version | grep -q "v$KUBE_VERSION" || die "kube-apiserver reports the wrong version"
  log "kube v$KUBE_VERSION: built in $((SECONDS - start)) s into $out"
}

build_etcd() {
  local out; out="$(bin_dir etcd "$ETCD_VERSION")"
  if prebuilt etcd; then log "etcd: using KUBEBUILDER_ASSETS"; return; fi
  if [[ -x "$out/etcd" ]] && "$out/etcd" --version 2>/dev/null | grep -q "$ETCD_VERSION"; then
    log "etcd v$ETCD_VERSION: cached in $out"; return
  fi
  local start=$SECONDS wrap="$CACHE/etcd/$ETCD_VERSION/wrapper"
  rm -rf "$wrap"; mkdir -p "$wrap" "$out"; : >"$LOGDIR/etcd.log"
  log "etcd v$ETCD_VERSION: building"
  (
    cd "$wrap"
    run_logged etcd go mod init srvthreds.local/tools/etcd
    run_logged etcd go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    run_logged etcd go mod tidy
    run_logged etcd go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
  )
  log "etcd v$ETCD_VERSION: built in $((SECONDS - start)) s into $out"
}

# go_install COMPONENT VERSION PACKAGE BINARY [LDFLAGS]: for modules without replace directives.
go_install() {
  local comp="$1" ver="$2" pkg="$3" binary="$4" ldflags="${5:-}" out
  out="$(bin_dir "$comp" "$ver")"
  if prebuilt "$binary"; then log "$comp: using KUBEBUILDER_ASSETS"; return; fi
  if [[ -x "$out/$binary" ]]; then log "$comp v$ver: cached in $out"; return; fi
  local start=$SECONDS; mkdir -p "$out"; : >"$LOGDIR/$comp.log"
  log "$comp v$ver: building"
  GOBIN="$out" run_logged "$comp" go install -trimpath -ldflags "-s -w $ldflags" "$pkg@v$ver"
  log "$comp v$ver: built in $((SECONDS - start)) s into $out"
}

# kwok v0.8.0 has no built-in stages (it exits with "no stages found"): the harness passes the
# fast node/pod stages, which ship as YAML inside the kwok module. Copy them next to the binary
# so they survive a cleaned GOMODCACHE; `go mod download` fetches the module when only a
# prebuilt kwok binary (KUBEBUILDER_ASSETS) exists.
KWOK_STAGES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

install_kwok_stages() {
  local dest="$CACHE/kwok/$KWOK_VERSION/stages" stage missing=0 dir
  for stage in "${KWOK_STAGES[@]}"; do [[ -f "$dest/$stage" ]] || missing=1; done
  [[ $missing == 1 ]] || return 0
  dir="$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" \
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  for stage in "${KWOK_STAGES[@]}"; do
    mkdir -p "$(dirname "$dest/$stage")"
    install -m 0644 "$dir/kustomize/stage/$stage" "$dest/$stage"
  done
  log "kwok v$KWOK_VERSION: stages copied into $dest"
}

build_kwok() {
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok
  install_kwok_stages
}

build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm \
    "-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

# ferretdb_version_ok BINARY: it starts and reports the pinned version (a binary from the old
# build panics here). Output captured first: grep -q closing the pipe early fails under pipefail.
ferretdb_version_ok() {
  local reported; reported="$("$1" --version 2>&1)" || return 1
  [[ "$reported" == *"version: v$FERRETDB_VERSION"* ]]
}

# FerretDB panics at start unless build/version/version.txt (generated by its own release
# tooling, absent from the module zip) holds "v<version>": Go reports the module of the main
# package as the main module, so a plain wrapper module does not skip that check. The build
# therefore compiles a writable copy of the module source, with version.txt written, through a
# replace directive in a wrapper module.
build_ferretdb() {
  local out; out="$(bin_dir ferretdb "$FERRETDB_VERSION")"
  if prebuilt ferretdb; then log "ferretdb: using KUBEBUILDER_ASSETS"; return; fi
  if [[ -x "$out/ferretdb" ]] && ferretdb_version_ok "$out/ferretdb"; then
    log "ferretdb v$FERRETDB_VERSION: cached in $out"; return
  fi
  local start=$SECONDS wrap="$CACHE/ferretdb/$FERRETDB_VERSION/wrapper" mod="github.com/FerretDB/FerretDB"
  rm -rf "$wrap"; mkdir -p "$wrap" "$out"; : >"$LOGDIR/ferretdb.log"
  log "ferretdb v$FERRETDB_VERSION: building (cold: several minutes on 2 cores)"
  (
    cd "$wrap"
    run_logged ferretdb go mod download -json "$mod@v$FERRETDB_VERSION"
    local src
    src="$(go mod download -json "$mod@v$FERRETDB_VERSION" \
           | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    cp -r "$src" "$wrap/src"; chmod -R u+w "$wrap/src"
    printf 'v%s\n' "$FERRETDB_VERSION" >"$wrap/src/build/version/version.txt"
    printf 'srvthreds-build-tools\n' >"$wrap/src/build/version/package.txt"
    run_logged ferretdb go mod init srvthreds.local/tools/ferretdb
    run_logged ferretdb go mod edit -replace="$mod=./src" -require="$mod@v$FERRETDB_VERSION"
    run_logged ferretdb go get -tool "$mod/cmd/ferretdb"
    run_logged ferretdb go mod tidy
    run_logged ferretdb go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$out/ferretdb" \
      "$mod/cmd/ferretdb"
  )
  ferretdb_version_ok "$out/ferretdb" \
    || die "ferretdb --version does not report v$FERRETDB_VERSION: $("$out/ferretdb" --version 2>&1 | head -3)"
  log "ferretdb v$FERRETDB_VERSION: built in $((SECONDS - start)) s into $out"
}

command -v go >/dev/null || die "Go is not installed (need Go >= 1.26)"
components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(kube etcd kwok helm)
for c in "${components[@]}"; do
  case "$c" in
    kube|etcd|kwok|helm|ferretdb) "build_$c" ;;
    *) die "unknown component '$c' (known: kube etcd kwok helm ferretdb)" ;;
  esac
done
log "done: ${components[*]}"
