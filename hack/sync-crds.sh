#!/usr/bin/env bash
# Copies the generated CRDs (crds/, written by `srvthreds-operator crds`) into the Helm chart and
# the kustomize base, which cannot reference files outside their own folders.
# Run by `make crds`; tests/delivery fails when the copies drift from crds/.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source_dir="${repo}/crds"
targets=("${repo}/charts/srvthreds-operator/crds" "${repo}/manifests/base/crds")

shopt -s nullglob
crds=("${source_dir}"/*.yaml)
if (( ${#crds[@]} == 0 )); then
  echo "sync-crds: no CRD in ${source_dir}; run 'make crds' (srvthreds-operator crds --output crds/) first" >&2
  exit 1
fi

for target in "${targets[@]}"; do
  mkdir -p "${target}"
  # Remove copies whose source is gone, so a renamed CRD does not linger in the chart.
  for stale in "${target}"/*.yaml; do
    [[ -e "${source_dir}/$(basename "${stale}")" ]] || { rm -- "${stale}"; echo "sync-crds: removed ${stale#"${repo}/"}"; }
  done
  for crd in "${crds[@]}"; do
    install -m 0644 "${crd}" "${target}/$(basename "${crd}")"
    echo "sync-crds: ${crd#"${repo}/"} -> ${target#"${repo}/"}/"
  done
done
