# packages_lib.sh — the installer of the Debian packages a script needs;
# sourced by scripts/deps.sh and scripts/portability_lib.sh, not run on its
# own.
# shellcheck shell=bash

# need_packages WHO LOG PACKAGE PROBE [PACKAGE PROBE]...: installs the
# Debian packages whose PROBE is missing — a path that must exist (or the
# package is installed), or a command that must be on PATH — only those,
# --no-install-recommends; root or password-less sudo for that; apt's
# output to LOG. WHO prefixes the messages. Returns non-zero when something
# is missing and cannot be installed.
need_packages() {
  local who=$1 log=$2 missing=() sudo=() t0 pkg file
  shift 2
  while [[ $# -ge 2 ]]; do
    pkg=$1 file=$2
    shift 2
    if [[ $file == /* ]]; then
      [[ -e $file ]] || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    else
      command -v "$file" >/dev/null 2>&1 || missing+=("$pkg")
    fi
  done
  [[ ${#missing[@]} -gt 0 ]] || return 0
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "$who: missing Debian packages: ${missing[*]}" >&2
      echo "$who: run as root, or: apt-get install -y --no-install-recommends ${missing[*]}" >&2
      return 1
    fi
  fi
  echo "$who: installing ${missing[*]}"
  t0=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  if ! { "${sudo[@]}" apt-get update -qq &&
         "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "$who: apt-get install failed (log: $log)" >&2
    return 1
  fi
  echo "$who: installed in $(($(date +%s) - t0)) s"
}
