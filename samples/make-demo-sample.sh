#!/usr/bin/env bash
# Rebuild diary-demo.ogg from diary-demo.txt with espeak-ng (synthesized speech, made by
# the project). Paragraph breaks become pauses of different lengths, as in real speech.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
parts=()
while IFS= read -r -d '' para; do
  [ -n "${para//[$'\n ']/}" ] || continue
  espeak-ng -v en-us -s 150 -w "$tmp/p$i.wav" "$para"
  gap=$(awk -v i="$i" 'BEGIN { printf "%.1f", 0.6 + ((i * 37) % 9) * 0.2 }')
  sox -n -r 22050 -c 1 "$tmp/gap$i.wav" trim 0 "$gap"
  parts+=("$tmp/p$i.wav" "$tmp/gap$i.wav")
  i=$((i + 1))
done < <(awk 'BEGIN{RS="";ORS="\0"}{print}' diary-demo.txt)
sox "${parts[@]}" -r 16000 "$tmp/all.wav"
sox "$tmp/all.wav" -C 5 diary-demo.ogg
soxi diary-demo.ogg
