#!/bin/sh
# wordcount.sh FILE: count the words in FILE and write NAME.counts.txt to the
# current directory (NAME = FILE's base name without its extension), one
# "COUNT WORD" line per distinct lower-cased word, most frequent first.
set -eu
if [ "$#" -ne 1 ]; then
  echo "usage: wordcount.sh FILE" >&2
  exit 2
fi
in=$1
name=$(basename "$in")
name=${name%.*}
out="$name.counts.txt"
LC_ALL=C
export LC_ALL
tr -cs 'A-Za-z' '\n' <"$in" | tr 'A-Z' 'a-z' | grep -v '^$' | sort | uniq -c \
  | awk '{ print $1, $2 }' | sort -k1,1nr -k2,2 >"$out"
echo "wordcount: $in -> $out ($(wc -l <"$out" | tr -d ' ') distinct words)"
