#!/bin/sh
# Refresh the vendored caniemail data (newsletter/data/caniemail.json, MIT) from the npm package
# `caniemail`, which ships it as data/caniemail.json. Needs npm here, never at run time.
#
#   scripts/update-caniemail.sh            # the registry's latest version
#   scripts/update-caniemail.sh 2.0.2      # a given version
#
# Then run `pytest tests/test_compat.py`: a feature the data gained and the scanner does not know
# yet fails test_every_feature_in_the_data_is_scanned_or_listed; teach newsletter/compat_scan.py about it.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/newsletter/data"
# ask for the version explicitly: `npm pack caniemail` alone has been seen to pick an older release
version=${1:-$(npm view caniemail version)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "caniemail@$version" >/dev/null)
tar -xzf "$tmp/caniemail-$version.tgz" -C "$tmp"
python3 - "$tmp/package/data/caniemail.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1], encoding="utf-8"))
assert isinstance(data.get("data"), list) and data["data"], "no features in the file"
assert {"slug", "category", "stats"} <= set(data["data"][0]), "unexpected feature format"
assert "family" in data.get("nicenames", {}), "no client names in the file"
PY
mkdir -p "$dest"
cp "$tmp/package/data/caniemail.json" "$dest/caniemail.json"
cp "$tmp/package/LICENSE" "$dest/caniemail-LICENSE"
updated=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['last_update_date'])" "$dest/caniemail.json")
printf 'caniemail %s (npm; data from caniemail.com, last updated %s)\n' "$version" "$updated" \
    > "$dest/caniemail-version.txt"
echo "newsletter/data: caniemail $version, data of $updated"
