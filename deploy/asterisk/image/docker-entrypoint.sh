#!/bin/sh
# corral's Asterisk node: renders this node's configuration and starts
# Asterisk in the foreground (its PID is the container's).
#
# The configs in /etc/asterisk (the image's base files, and deploy/asterisk/
# mounted over them by docker-compose.yml) are copied to a directory Asterisk
# may own, and only these lines are set there, in the shipped files' shape
# (a commented key is uncommented; each key must be there exactly once):
#
#   asterisk.conf [options] entityid   = $ASTERISK_ENTITYID   (02:00:00:00:00:11)
#   asterisk.conf [options] systemname = $ASTERISK_SYSTEMNAME (ast1: the node id)
#   ari.conf      [corral]  password   = $ASTERISK_ARI_PASSWORD
#
# and asterisk.conf gets a [directories] astetcdir naming that directory.
# Every node of a farm needs its own entity id and system name (cloned
# machines share MAC-derived entity ids, and channel ids then collide), and
# the ARI password is a secret: it comes from the environment, never from a
# committed file. All three are required.
#
# Arguments are passed to asterisk (after -C <rendered asterisk.conf> -f -n).
#
# Knobs for tests and unusual layouts:
#   ASTERISK_CONFIG_SOURCE  where the configs are read   (/etc/asterisk)
#   ASTERISK_CONFIG_DIR     where they are rendered      (/run/asterisk/etc)
#   ASTERISK_BINARY         the asterisk binary          (/usr/sbin/asterisk)
#   ASTERISK_RENDER_ONLY=1  render, print the directory, do not start
set -eu

SRC=${ASTERISK_CONFIG_SOURCE:-/etc/asterisk}
DST=${ASTERISK_CONFIG_DIR:-/run/asterisk/etc}
BIN=${ASTERISK_BINARY:-/usr/sbin/asterisk}

die() {
	echo "corral-asterisk: $*" >&2
	exit 2
}

[ -n "${ASTERISK_ENTITYID:-}" ] || die "set ASTERISK_ENTITYID (this node's entity id, e.g. 02:00:00:00:00:11, different on every node)"
[ -n "${ASTERISK_SYSTEMNAME:-}" ] || die "set ASTERISK_SYSTEMNAME (this node's name, e.g. ast1: its id in corral.toml)"
[ -n "${ASTERISK_ARI_PASSWORD:-}" ] || die "set ASTERISK_ARI_PASSWORD (corral's ARI password: CORRAL_NODE_<ID>_PASSWORD on corral's side)"
echo "$ASTERISK_ENTITYID" | grep -Eqx '([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}' ||
	die "ASTERISK_ENTITYID must look like 02:00:00:00:00:11, not '$ASTERISK_ENTITYID'"
echo "$ASTERISK_SYSTEMNAME" | grep -Eqx '[A-Za-z0-9_.-]+' ||
	die "ASTERISK_SYSTEMNAME may only hold letters, digits, _ . -"
case "$ASTERISK_ARI_PASSWORD" in
*';'* | *'
'*) die "ASTERISK_ARI_PASSWORD may not hold ';' or a newline (Asterisk configs read ';' as a comment)" ;;
esac
for f in asterisk.conf ari.conf; do
	[ -f "$SRC/$f" ] || die "no $SRC/$f: mount deploy/asterisk/$f there (docker-compose.yml does)"
done

# set_ini FILE SECTION KEY VARIABLE: KEY = $VARIABLE in [SECTION] of FILE,
# keeping the line's comment; the key must be on exactly one line there.
set_ini() {
	awk -v section="$2" -v key="$3" -v var="$4" '
		function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
		BEGIN { value = ENVIRON[var]; hits = 0 }
		{
			t = $0; sub(/^[ \t]+/, "", t)
			if (substr(t, 1, 1) == "[") { cur = substr(t, 2); sub(/\].*/, "", cur); cur = trim(cur) }
			u = t; sub(/^;+/, "", u); sub(/^[ \t]+/, "", u)
			eq = index(u, "=")
			if (cur == section && eq > 0 && trim(substr(u, 1, eq - 1)) == key) {
				hits++
				rest = substr(u, eq + 1)
				c = index(rest, ";")
				comment = (c > 0) ? " ;" substr(rest, c + 1) : ""
				print key " = " value comment
				next
			}
			print
		}
		END {
			if (hits != 1) {
				printf "corral-asterisk: %s: [%s] %s found %d times, expected once\n", FILENAME, section, key, hits | "cat 1>&2"
				exit 1
			}
		}
	' "$1" >"$1.new" || exit 2
	mv "$1.new" "$1"
}

case "$DST" in
/?*) ;;
*) die "ASTERISK_CONFIG_DIR must be an absolute path below / (it is emptied at every start)" ;;
esac
[ "$DST" != "$SRC" ] || die "ASTERISK_CONFIG_DIR must differ from ASTERISK_CONFIG_SOURCE"
rm -rf "$DST"
mkdir -p "$DST"
cp -RL "$SRC"/. "$DST"/
chmod -R u+w "$DST"

set_ini "$DST/asterisk.conf" options entityid ASTERISK_ENTITYID
set_ini "$DST/asterisk.conf" options systemname ASTERISK_SYSTEMNAME
set_ini "$DST/ari.conf" corral password ASTERISK_ARI_PASSWORD
if grep -Eq '^[[:space:]]*\[directories\]' "$DST/asterisk.conf"; then
	die "$SRC/asterisk.conf has a [directories] section: leave it to this script"
fi
{
	printf '[directories]\nastetcdir => %s\n\n' "$DST"
	cat "$DST/asterisk.conf"
} >"$DST/asterisk.conf.new"
mv "$DST/asterisk.conf.new" "$DST/asterisk.conf"

if [ "${ASTERISK_RENDER_ONLY:-}" = 1 ]; then
	echo "$DST"
	exit 0
fi
echo "corral-asterisk: node $ASTERISK_SYSTEMNAME, entity id $ASTERISK_ENTITYID, configuration in $DST" >&2
exec "$BIN" -C "$DST/asterisk.conf" -f -n "$@"
