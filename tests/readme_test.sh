#!/usr/bin/env bash
# Compiles and runs every C snippet of README.md (```c blocks), each as its
# own program with -Wall -Wextra -Wpedantic -Werror. Last line: "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY'
import re, sys
text = open("README.md").read()
for i, block in enumerate(re.findall(r"```c\n(.*?)```", text, re.S)):
    open(f"{sys.argv[1]}/snippet{i}.c", "w").write(block)
PY
passed=0 failed=0
for src in "$dir"/snippet*.c; do
  if cc -std=c99 -Wall -Wextra -Wpedantic -Werror -I. "$src" -o "${src%.c}" && "${src%.c}" >/dev/null; then
    passed=$((passed + 1)); echo "ok $(basename "$src")"
  else
    failed=$((failed + 1)); echo "FAIL $(basename "$src")"
  fi
done
[[ $passed -gt 0 ]] || { echo "no C snippet found in README.md"; failed=$((failed + 1)); }
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
