# portability_lib.sh — what scripts/portability.sh and scripts/sizes.sh
# share; sourced by them, not run on its own: the warning sets, the flags of
# the library built as DESIGN.md promises for Cortex-M, and the installer of
# the Debian packages a script needs.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source it

WARN="-Wall -Wextra -Wpedantic -Werror"
LIBWARN="$WARN -Wconversion -Wsign-conversion -Wcast-qual -Wundef -Wstrict-prototypes"
# The library for a microcontroller: no libc (the allocating layer then
# runs on the caller's opstate_allocator), and the pure layer: no malloc.
M_NO_LIBC="-ffreestanding -DOPSTATE_NO_STDLIB"
M_FREESTANDING="$M_NO_LIBC -DOPSTATE_NO_MALLOC"

# need_packages WHO LOG PACKAGE FILE [PACKAGE FILE]...: installs the Debian
# packages whose FILE is missing (only those, --no-install-recommends; root
# or password-less sudo for that; apt's output to LOG). WHO prefixes the
# messages. Returns non-zero when something is missing and cannot be
# installed.
need_packages() {
  local who=$1 log=$2 missing=() sudo=() t0 pkg file
  shift 2
  while [[ $# -ge 2 ]]; do
    pkg=$1 file=$2
    shift 2
    [[ -e $file ]] || dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
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
