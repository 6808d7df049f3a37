#!/usr/bin/env bash
# shellcheck disable=SC2086 # flag lists are split into words on purpose
# Flash footprint of opstate.h's parts on a Cortex-M4 (DESIGN.md
# "Performance targets": the firmware subset under 8 KiB; every part's size
# reported). scripts/portability.sh runs it; README.md "Embedded use" shows
# its table.
#
# Each part is linked on its own, as a firmware would take it: the library
# (tests/impl.c) and tests/portability/size_parts.c, whose table names that
# part's public functions and is the only root of the link, so
# --gc-sections keeps exactly what the part needs (libgcc helpers
# included). Compiled with
#   arm-none-eabi-gcc -std=c99 -mcpu=cortex-m4 -mthumb -Os
#     -ffunction-sections -fdata-sections -ffreestanding -DOPSTATE_NO_STDLIB
# plus -DOPSTATE_NO_MALLOC for the parts that do not allocate (the others
# run on the caller's opstate_allocator: no malloc is linked), once with
# the default CRC32C (slice-by-8) and once with -DOPSTATE_CRC_SMALL.
# A figure is size(1)'s "text" of the linked image: flash, i.e. .text plus
# .rodata (tables, strings). mem* functions a part calls (the compiler may
# emit memcpy for a struct copy) come from the firmware's C library: listed,
# not counted.
#
# One line per part, the firmware subset (decision + resume + gap + hwm +
# codec + ids) summed part by part and linked as one, then the verdict;
# exits non-zero when the subset's sum with OPSTATE_CRC_SMALL reaches
# 8 KiB (8192 bytes).
#
# Environment: BUILD (default build; objects go to $BUILD/sizes).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${BUILD:-build}/sizes
LIMIT=8192
mkdir -p "$OUT"
# shellcheck source=scripts/portability_lib.sh
source scripts/portability_lib.sh
need_packages sizes "$OUT/apt.log" gcc-arm-none-eabi /usr/bin/arm-none-eabi-gcc || exit 1

M4="-std=c99 -mcpu=cortex-m4 -mthumb -Os -ffunction-sections -fdata-sections"
LINK="-nostdlib -Wl,--gc-sections -Wl,-e,size_roots -Wl,--unresolved-symbols=ignore-all"

# label | SIZE_* parts of tests/portability/size_parts.c | layer
PARTS=(
  "decision|DECIDE|free"
  "resume + gap|RESUME|free"
  "hwm|HWM|free"
  "codec|CODEC|free"
  "ids|IDS|free"
  "result names|RESULTS|free"
  "dedup|DEDUP|free"
  "subjects|SUBJECTS|free"
  "json|JSON|free"
  "flash store|FLASH|free"
  "kv fold|KV|alloc"
  "snapshot|SNAPSHOT|alloc"
  "consumer driver|CONSUMER|alloc"
  "memory log + store|MEMLOG|alloc"
)
FIRMWARE="DECIDE RESUME HWM CODEC IDS" # the subset of the 8 KiB target
CRCS=(default small)

# lib CRC LAYER: the library object (built once)
lib() {
  local o=$OUT/impl-$1-$2.o flags
  flags=$([[ $2 == free ]] && echo "$M_FREESTANDING" || echo "$M_NO_LIBC")
  [[ $1 == small ]] && flags+=" -DOPSTATE_CRC_SMALL"
  [[ -f $o ]] || arm-none-eabi-gcc $M4 $flags $LIBWARN -c tests/impl.c -o "$o" >>"$OUT/build.log" 2>&1 || return 1
  echo "$o"
}
# flash CRC LAYER PARTS...: the flash bytes of the parts linked together
flash() {
  local crc=$1 layer=$2 name flags impl elf
  shift 2
  name=$(echo "$*" | tr 'A-Z ' 'a-z_')
  flags=$([[ $layer == free ]] && echo "$M_FREESTANDING" || echo "$M_NO_LIBC")
  elf=$OUT/$name-$crc.elf
  impl=$(lib "$crc" "$layer") &&
    arm-none-eabi-gcc $M4 $flags $WARN "${@/#/-DSIZE_}" -c tests/portability/size_parts.c -o "$OUT/$name.o" \
      >>"$OUT/build.log" 2>&1 &&
    arm-none-eabi-gcc $M4 $LINK "$OUT/$name.o" "$impl" -lgcc -o "$elf" >>"$OUT/build.log" 2>&1 || return 1
  arm-none-eabi-nm -u "$elf" | awk '{ print $2 }' >>"$OUT/needs"
  arm-none-eabi-size "$elf" | awk 'NR == 2 { print $1 }'
}

# fits N: a figure, or the build log's tail and exit when there is none
fits() {
  [[ -n $1 ]] && return
  tail -n 20 "$OUT/build.log"
  echo "sizes: a part did not build (log: $OUT/build.log)"
  exit 1
}

rm -f "$OUT/build.log" "$OUT"/*.o "$OUT/needs"
printf '%-36s %9s %18s\n' "Cortex-M4 -Os, flash bytes" "default" "OPSTATE_CRC_SMALL"
declare -A SUM=([default]=0 [small]=0)
for entry in "${PARTS[@]}"; do
  IFS='|' read -r label part layer <<<"$entry"
  line=$(printf '%-36s' "$label")
  for crc in "${CRCS[@]}"; do
    n=$(flash "$crc" "$layer" $part)
    fits "$n"
    line+=$(printf ' %9s' "$n")
    [[ " $FIRMWARE " == *" $part "* ]] && SUM[$crc]=$((SUM[$crc] + n))
  done
  [[ $layer == alloc ]] && line+="   (allocates; no malloc linked)"
  echo "$line"
done
printf '%-36s %9s %9s\n' "firmware subset: sum of its 5 lines" "${SUM[default]}" "${SUM[small]}"
line=$(printf '%-36s' "firmware subset linked as one")
for crc in "${CRCS[@]}"; do
  n=$(flash "$crc" free $FIRMWARE)
  fits "$n"
  line+=$(printf ' %9s' "$n")
done
echo "$line"
needs=$(sort -u "$OUT/needs" | tr '\n' ' ' | sed 's/ $//')
echo "from the C library, not counted: ${needs:-nothing}"
if [[ ${SUM[small]} -lt $LIMIT ]]; then
  echo "firmware subset with OPSTATE_CRC_SMALL: ${SUM[small]} bytes < $LIMIT: PASS"
else
  echo "firmware subset with OPSTATE_CRC_SMALL: ${SUM[small]} bytes >= $LIMIT: FAIL"
  exit 1
fi
