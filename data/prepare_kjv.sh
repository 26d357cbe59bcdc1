#!/bin/sh
# Exports the King James Bible from Debian's bible-kjv as plain text: the default byte-level
# corpus (SPEC §7, about 4.3 MB of ASCII). Usage: prepare_kjv.sh OUT
# Idempotent: an existing non-empty OUT is left alone. Writes to a temporary file first, so
# an interrupted run never leaves a partial corpus behind.
set -eu

if [ "$#" -ne 1 ]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
out=$1

if [ -s "$out" ]; then
  echo "prepare_kjv.sh: $out exists, skipping"
  exit 0
fi
if ! command -v bible >/dev/null 2>&1; then
  echo "prepare_kjv.sh: 'bible' not found; install Debian's bible-kjv and bible-kjv-text" >&2
  exit 1
fi

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
if ! bible -p /usr/lib "gen1:1-rev22:21" >"$tmp"; then
  echo "prepare_kjv.sh: 'bible' failed (is bible-kjv-text installed under /usr/lib?)" >&2
  exit 1
fi
# bible prints its errors on stdout; a real export starts with Genesis 1:1.
if ! grep -q "In the beginning God created the heaven and the earth" "$tmp"; then
  echo "prepare_kjv.sh: 'bible' did not print the King James Bible:" >&2
  head -c 200 "$tmp" >&2
  exit 1
fi
mv "$tmp" "$out"
echo "prepare_kjv.sh: wrote $out ($(wc -c <"$out") bytes)"
