#!/usr/bin/env bash
# The manual pages: mandoc -Tlint finds no warning or error in any page;
# every function declared in the public headers is named in a page; the
# installed pages (with their .so links) render with man -l without a
# single diagnostic.
#
# usage: check.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
fail=0
for tool in mandoc man col; do
  command -v $tool >/dev/null ||
    { echo "man_pages: $tool not installed (scripts/deps.sh)"; exit 1; }
done

# 1. Lint (warnings and errors; style notes such as "referenced manual
# not found" depend on the host's manual database and are not counted).
pages=("$src"/man/*.3)
lint=$(cd "$src/man" && mandoc -Tlint -W warning ./*.3 2>&1 || true)
if [ -n "$lint" ]; then
  echo "mandoc -Tlint:"; echo "$lint"; fail=1
fi

# 2. Every public function has a page (is named by .Nm in one).
documented=$(grep -h '^\.Nm [a-z_0-9]*' "${pages[@]}" | awk '{print $2}' | sort -u)
declared=$(grep -hoE '^[A-Za-z_][A-Za-z0-9_ 	*]*[ *]([a-z][a-z0-9_]*)\(' \
  "$src"/include/vmem/*.h | grep -v '^typedef' |
  sed -E 's/.*[ *]([a-z][a-z0-9_]*)\($/\1/' | sort -u)
missing=$(comm -23 <(echo "$declared") <(echo "$documented"))
if [ -n "$missing" ]; then
  echo "public functions without a manual page:"; echo "$missing"; fail=1
fi

# 3. Install and render: every page, and every tenth link (a link renders
# exactly its target's page; every link is checked to point at a page
# that names it).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp" --component man >/dev/null
mandir=$(find "$tmp" -type d -name man3 | head -1)
[ -n "$mandir" ] || { echo "no man3 directory installed"; exit 1; }
count=0 rendered=0
for f in "$mandir"/*.3; do
  name=$(basename "$f" .3)
  count=$((count + 1))
  first=$(head -1 "$f")
  if [ "${first#.so }" != "$first" ]; then
    target=${first#.so man3/}
    if [ ! -f "$mandir/$target" ] ||
       ! grep -Eq "^\.Nm $name( ,)?$" "$mandir/$target"; then
      echo "link $name.3 -> $target is broken"; fail=1
    fi
    [ $((count % 10)) -eq 0 ] || continue
  fi
  # man resolves .so relative to the top of the manual tree.
  out=$(cd "$mandir/.." && MANWIDTH=80 man -l "man3/$name.3" 2>"$tmp/err" |
    col -b)
  rendered=$((rendered + 1))
  if [ -s "$tmp/err" ]; then
    echo "man -l $name.3:"; cat "$tmp/err"; fail=1
  fi
  if ! grep -q "$name" <<<"$out"; then
    echo "man -l $name.3 does not show $name"; fail=1
  fi
done
echo "man_pages: ${#pages[@]} pages, $count installed names" \
  "($rendered rendered), $(echo "$declared" | wc -l) public functions"
exit $fail
