#!/usr/bin/env bash
# local-cluster.sh: a whole rmfs cluster on 127.0.0.1, for a newcomer, a test
# or a benchmark. Run it with no arguments (or -h) for the usage.
#
# Layout of DIR (default ./cluster):
#   DIR/ports      one line per process: NAME GRPC_PORT HTTP_PORT ("-" = none);
#                  chosen at the first `up`, reused after (same ports, same data)
#   DIR/masters    the masters' gRPC addresses, host:port,host:port,... (one line)
#   DIR/bin-dir    the MFS_BIN_DIR the cluster was started with, if any
#   DIR/NAME/      per process: its config file, data, `log` (stdout+stderr,
#                  appended) and `pid`
#   DIR/mnt        the mount point
#   DIR/tls/       with --tls: the cluster's CA (ca.pem, ca.key) and the one
#                  certificate every daemon serves (server.pem, server.key,
#                  for 127.0.0.1); its presence makes the cluster a TLS one
# Processes are stopped by the pid in DIR/NAME/pid, never by name.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HOST=127.0.0.1
STOP_WAIT=10   # seconds between SIGTERM and SIGKILL

usage() {
	cat <<EOF
Usage: $PROG COMMAND [OPTIONS]

Runs a whole rmfs cluster on 127.0.0.1: masters (a Raft group), metaloggers,
chunkservers and a FUSE mount, each in DIR/NAME/ with its config, data, log
and pid. Ports are picked once and kept in DIR/ports, so restarts reuse the
same ports and data.

Commands:
  up [--dir DIR] [--masters N] [--metaloggers N] [--chunkservers N] [--no-mount]
     [--timeout SECS] [--tls]
        Build release binaries if missing or stale, start every process not
        running yet, and return when the cluster has a leader, every
        chunkserver is registered and the mount (DIR/mnt) answers.
        Defaults: DIR ./cluster, 3 masters, 1 metalogger, 3 chunkservers,
        a mount, 60 s timeout per step. On an existing DIR its layout is kept.
        --tls (for a new DIR; needs openssl): every gRPC link over TLS, with
        a CA and a certificate made in DIR/tls; give clients the CA
        (mfscli --tls-ca DIR/tls/ca.pem, mfsmount -o mfstlsca=DIR/tls/ca.pem).
  down [--dir DIR]      Unmount and stop everything (SIGTERM, SIGKILL after
                        ${STOP_WAIT} s); data is kept.
  status [--dir DIR]    Each process: name, pid, address, running or stopped.
  leader [--dir DIR] [--timeout SECS]
                        Print the NAME of the current leader (e.g. master2).
  stop NAME [--dir DIR]   Stop one process (SIGTERM, SIGKILL after ${STOP_WAIT} s).
  kill NAME [--dir DIR]   Kill one process with SIGKILL.
  start NAME [--dir DIR] [--timeout SECS]
                        Start one process again (same ports, same data) and
                        wait (30 s) until its port, or the mount, answers.

NAME is master1.., metalogger1.., chunk1.., or mount.

Environment:
  MFS_BIN_DIR   directory with prebuilt binaries (e.g. target/debug); when set,
                nothing is built. Other MFS_* variables (e.g. MFS_SESSION_TIMEOUT)
                reach the daemons as settings.

Exit status: 0 ok, 1 failure, 2 usage error.

Examples:
  $PROG up                      # 3 masters, 1 metalogger, 3 chunkservers, mount
  $PROG up --dir /tmp/c --masters 1 --chunkservers 0 --no-mount
  $PROG kill "\$($PROG leader)"   # fail the leader over
  $PROG down
EOF
}

die() {
	echo "$PROG: $*" >&2
	exit 1
}

usage_error() {
	echo "$PROG: $*" >&2
	echo >&2
	usage >&2
	exit 2
}

# ---------------------------------------------------------------- arguments

VERB=""
NAME=""
DIR="./cluster"
N_MASTERS=""
N_METALOGGERS=""
N_CHUNKSERVERS=""
NO_MOUNT=0
TIMEOUT=""
TLS=0

need_value() {
	[[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
}

need_count() {
	[[ $2 =~ ^[0-9]+$ ]] || usage_error "$1 takes a number, got '$2'"
}

parse_args() {
	[[ $# -ge 1 ]] || usage_error "no command given"
	case $1 in
	-h | --help | help)
		usage
		exit 0
		;;
	up | down | status | leader | stop | kill | start) VERB=$1 ;;
	*) usage_error "unknown command '$1'" ;;
	esac
	shift
	while [[ $# -gt 0 ]]; do
		case $1 in
		--dir=*) DIR=${1#*=} ;;
		--dir)
			need_value "$@"
			DIR=$2
			shift
			;;
		--masters | --metaloggers | --chunkservers | --timeout)
			need_value "$@"
			need_count "$1" "$2"
			case $1 in
			--masters) N_MASTERS=$2 ;;
			--metaloggers) N_METALOGGERS=$2 ;;
			--chunkservers) N_CHUNKSERVERS=$2 ;;
			--timeout) TIMEOUT=$2 ;;
			esac
			shift
			;;
		--no-mount) NO_MOUNT=1 ;;
		--tls) TLS=1 ;;
		-h | --help)
			usage
			exit 0
			;;
		-*) usage_error "unknown option '$1'" ;;
		*)
			[[ -z $NAME ]] || usage_error "unexpected argument '$1'"
			NAME=$1
			;;
		esac
		shift
	done
	case $VERB in
	stop | kill | start)
		[[ -n $NAME ]] || usage_error "$VERB needs a NAME (master1.., metalogger1.., chunk1.., mount)"
		[[ $NAME =~ ^(master[1-9][0-9]*|metalogger[1-9][0-9]*|chunk[1-9][0-9]*|mount)$ ]] ||
			usage_error "bad NAME '$NAME': expected master1.., metalogger1.., chunk1.., or mount"
		;;
	*) [[ -z $NAME ]] || usage_error "unexpected argument '$NAME'" ;;
	esac
	[[ $TLS == 0 || $VERB == up ]] || usage_error "only up takes --tls"
	case $VERB in
	up) ;;
	leader | start)
		[[ -z $N_MASTERS$N_METALOGGERS$N_CHUNKSERVERS && $NO_MOUNT == 0 ]] ||
			usage_error "only up takes --masters, --metaloggers, --chunkservers, --no-mount"
		;;
	*)
		[[ -z $N_MASTERS$N_METALOGGERS$N_CHUNKSERVERS$TIMEOUT && $NO_MOUNT == 0 ]] ||
			usage_error "only up takes --masters, --metaloggers, --chunkservers, --no-mount, --timeout"
		;;
	esac
	if [[ -n $N_MASTERS && $N_MASTERS -lt 1 ]]; then usage_error "--masters must be at least 1"; fi
	if [[ -n $TIMEOUT && $TIMEOUT -lt 1 ]]; then usage_error "--timeout must be at least 1"; fi
	[[ -n $DIR ]] || usage_error "--dir must not be empty"
	# Absolute, so that configs and pid files stay right from any cwd.
	DIR=$(realpath -m -- "$DIR")
}

# ---------------------------------------------------------------- roles

bin_of() {
	case $1 in
	master*) echo mfsmaster ;;
	metalogger*) echo mfsmetalogger ;;
	chunk*) echo mfschunkserver ;;
	mount) echo mfsmount ;;
	esac
}

# ---------------------------------------------------------------- binaries

BIN_DIR=""

# The directory the binaries come from: MFS_BIN_DIR, else the one recorded by
# the `up` that created the cluster, else the release build.
resolve_bin_dir() {
	if [[ -n ${MFS_BIN_DIR:-} ]]; then
		BIN_DIR=$(realpath -m -- "$MFS_BIN_DIR")
	elif [[ -s $DIR/bin-dir ]]; then
		BIN_DIR=$(<"$DIR/bin-dir")
	else
		BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
	fi
}

have_bin() {
	[[ -x $BIN_DIR/$1 ]]
}

# True when a source file of the workspace is newer than $1.
sources_newer_than() {
	local ref=$1 crate hit
	for crate in "$ROOT"/*/; do
		[[ -f $crate/Cargo.toml && $crate != "$ROOT/target/" ]] || continue
		hit=$(find "$crate" -path "${crate}target" -prune -o -type f \
			\( -name '*.rs' -o -name '*.proto' -o -name Cargo.toml \) \
			-newer "$ref" -print -quit 2>/dev/null)
		[[ -z $hit ]] || return 0
	done
	[[ $ROOT/Cargo.toml -nt $ref || $ROOT/Cargo.lock -nt $ref ]]
}

# mode "up": build when a needed binary is missing or any is stale;
# mode "start": build only when the needed binary is missing.
ensure_binaries() {
	local mode=$1
	shift
	local needed=("$@") b oldest="" reason=""
	if [[ -n ${MFS_BIN_DIR:-} || ($mode != up && -s $DIR/bin-dir) ]]; then
		for b in "${needed[@]}"; do
			have_bin "$b" || die "$b not found in $BIN_DIR (MFS_BIN_DIR): build it first"
		done
		return 0
	fi
	for b in "${needed[@]}"; do
		have_bin "$b" || reason="$b is missing"
	done
	# The reference time: the oldest binary, or the start of the last build
	# made here if later (cargo does not relink a binary whose crates did not
	# change, so binaries alone would look stale for ever).
	local stamp=$BIN_DIR/.local-cluster-build
	if [[ -z $reason && $mode == up ]]; then
		for b in mfsmaster mfscli mfsmetalogger mfschunkserver mfsmount; do
			have_bin "$b" || continue
			if [[ -z $oldest || $BIN_DIR/$b -ot $oldest ]]; then oldest=$BIN_DIR/$b; fi
		done
		if [[ -n $oldest && -f $stamp && $stamp -nt $oldest ]]; then oldest=$stamp; fi
		if [[ -n $oldest ]] && sources_newer_than "$oldest"; then
			reason="sources changed since the last build"
		fi
	fi
	[[ -n $reason ]] || return 0
	command -v cargo >/dev/null || die "cargo not found: install Rust, or set MFS_BIN_DIR to prebuilt binaries"
	echo "building release binaries ($reason): cargo build --release" >&2
	local started
	started=$(date +%s)
	(cd "$ROOT" && cargo build --release) ||
		die "cargo build --release failed (see above); fix it, or set MFS_BIN_DIR to prebuilt binaries"
	touch -d "@$started" "$stamp" 2>/dev/null || true
	for b in "${needed[@]}"; do
		have_bin "$b" || die "cargo build --release did not produce $BIN_DIR/$b"
	done
}

need_python() {
	command -v python3 >/dev/null || die "python3 is needed (picking ports, reading mfscli JSON)"
}

# ---------------------------------------------------------------- layout

declare -a NAMES=()
declare -A PORT=() HTTP=()

load_ports() {
	NAMES=()
	PORT=()
	HTTP=()
	[[ -f $DIR/ports ]] || return 0
	local name port http
	while read -r name port http; do
		[[ -n $name && $name != \#* ]] || continue
		NAMES+=("$name")
		PORT[$name]=$port
		HTTP[$name]=$http
	done <"$DIR/ports"
	# masters, metaloggers, chunkservers, mount; by number within a role
	[[ ${#NAMES[@]} -gt 0 ]] || return 0
	mapfile -t NAMES < <(printf '%s\n' "${NAMES[@]}" |
		awk '{ print (/^master/ ? 1 : /^metalogger/ ? 2 : /^chunk/ ? 3 : 4), $0 }' |
		sort -k1,1n -k2,2V | cut -d' ' -f2)
}

require_cluster() {
	[[ -f $DIR/ports ]] || die "no cluster in $DIR (no $DIR/ports): run '$PROG up --dir $DIR' first"
	load_ports
}

count_role() {
	local prefix=$1 n=0 name
	for name in "${NAMES[@]}"; do
		[[ $name =~ ^${prefix}[0-9]+$ ]] && n=$((n + 1))
	done
	echo "$n"
}

names_of_role() {
	local prefix=$1 name
	for name in "${NAMES[@]}"; do
		[[ $name =~ ^${prefix}[0-9]+$ ]] && echo "$name"
	done
	return 0
}

has_name() {
	local want=$1 name
	for name in "${NAMES[@]}"; do
		[[ $name == "$want" ]] && return 0
	done
	return 1
}

# Prints N distinct TCP ports free on 127.0.0.1, below the usual ephemeral
# range so that outgoing connections do not take them between restarts.
pick_ports() {
	python3 - "$1" "$HOST" <<'PY'
import random, socket, sys
n, host = int(sys.argv[1]), sys.argv[2]
cands = list(range(20000, 32000))
random.shuffle(cands)
held, got = [], []
for p in cands:
    if len(got) == n:
        break
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, p))
    except OSError:
        s.close()
        continue
    held.append(s)
    got.append(p)
if len(got) < n:
    sys.exit("not enough free ports in 20000-32000")
print(" ".join(map(str, got)))
PY
}

# Adds the processes that `up` asks for and DIR/ports lacks, with new ports.
plan_layout() {
	local have_m have_ml have_cs want_m want_ml want_cs
	have_m=$(count_role master)
	have_ml=$(count_role metalogger)
	have_cs=$(count_role chunk)
	if [[ $have_m -eq 0 ]]; then
		want_m=${N_MASTERS:-3}
		want_ml=${N_METALOGGERS:-1}
		want_cs=${N_CHUNKSERVERS:-3}
	else
		if [[ -n $N_MASTERS && $N_MASTERS -ne $have_m ]]; then
			die "$DIR already holds a cluster of $have_m master(s); it cannot be changed to $N_MASTERS here (use 'mfscli add-master', or a new --dir)"
		fi
		want_m=$have_m
		want_ml=${N_METALOGGERS:-$have_ml}
		want_cs=${N_CHUNKSERVERS:-$have_cs}
		if [[ $want_ml -lt $have_ml || $want_cs -lt $have_cs ]]; then
			die "$DIR already has $have_ml metalogger(s) and $have_cs chunkserver(s); up can add more, not fewer"
		fi
	fi
	local new=() i
	for ((i = 1; i <= want_m; i++)); do has_name "master$i" || new+=("master$i"); done
	for ((i = 1; i <= want_ml; i++)); do has_name "metalogger$i" || new+=("metalogger$i"); done
	for ((i = 1; i <= want_cs; i++)); do has_name "chunk$i" || new+=("chunk$i"); done
	local want_mount=0
	if [[ $NO_MOUNT == 0 ]] && ! has_name mount; then want_mount=1; fi
	[[ ${#new[@]} -gt 0 || $want_mount == 1 ]] || return 0

	local ports=() name
	if [[ ${#new[@]} -gt 0 ]]; then
		need_python
		read -r -a ports <<<"$(pick_ports $((2 * ${#new[@]})))" || true
		[[ ${#ports[@]} -eq $((2 * ${#new[@]})) ]] || die "could not pick free ports on $HOST"
	fi
	mkdir -p "$DIR"
	if [[ ! -f $DIR/ports ]]; then
		echo "# NAME GRPC_PORT HTTP_PORT: written by local-cluster.sh up, reused by every restart" >"$DIR/ports"
	fi
	{
		i=0
		for name in "${new[@]}"; do
			echo "$name ${ports[i]} ${ports[i + 1]}"
			i=$((i + 2))
		done
		if [[ $want_mount == 1 ]]; then echo "mount - -"; fi
	} >>"$DIR/ports"
	load_ports
}

masters_list() {
	local name out=""
	for name in $(names_of_role master); do
		out+="${out:+,}$HOST:${PORT[$name]}"
	done
	echo "$out"
}

peers_list() {
	local name out=""
	for name in $(names_of_role master); do
		out+="${out:+,}${name#master}=$HOST:${PORT[$name]}"
	done
	echo "$out"
}

# What `status` and `up` show as the process's address.
address_of() {
	case $1 in
	master* | chunk* | metalogger*) echo "$HOST:${PORT[$1]}" ;;
	mount) echo "$DIR/mnt" ;;
	*) echo "-" ;;
	esac
}

http_of() {
	case $1 in
	master* | chunk* | metalogger*) echo "http://$HOST:${HTTP[$1]}/metrics" ;;
	*) echo "-" ;;
	esac
}

# ---------------------------------------------------------------- processes

CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
BOOT_TIME=$(awk '/^btime/ { print $2 }' /proc/stat 2>/dev/null || echo 0)

# Prints the pid of NAME if it runs (the pid in DIR/NAME/pid, alive, not a
# zombie, and the process that wrote that file: it runs NAME's binary, or it
# started no later than the file was written); fails otherwise.
running_pid() {
	local name=$1 pid bin stat state arg fields started written
	[[ -f $DIR/$name/pid ]] || return 1
	# (plain reads: a failed $(<file) would end the script under set -e)
	{ read -r pid <"$DIR/$name/pid"; } 2>/dev/null || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	{ read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
	read -r -a fields <<<"${stat##*) }"
	state=${fields[0]}
	[[ $state != Z && $state != X ]] || return 1
	bin=$(bin_of "$name")
	while IFS= read -r -d '' arg; do
		if [[ ${arg##*/} == "$bin" ]]; then
			echo "$pid"
			return 0
		fi
	done 2>/dev/null <"/proc/$pid/cmdline"
	# not our binary by name (a wrapper that exec'd something else?): the
	# same process if it started before the pid file was written
	started=$((BOOT_TIME + fields[19] / CLK_TCK))
	written=$(stat -c %Y "$DIR/$name/pid" 2>/dev/null) || return 1
	[[ $started -le $((written + 1)) ]] || return 1
	echo "$pid"
}

mnt_dir() {
	echo "$DIR/mnt"
}

is_mounted() {
	local mnt
	mnt=$(mnt_dir)
	awk -v p="$mnt" '$2 == p { found = 1 } END { exit !found }' /proc/self/mounts 2>/dev/null
}

unmount() {
	local mnt
	mnt=$(mnt_dir)
	is_mounted || return 0
	fusermount3 -u "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null ||
		fusermount3 -uz "$mnt" 2>/dev/null || fusermount -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null ||
		echo "$PROG: could not unmount $mnt" >&2
}

write_config() {
	local name=$1 d=$DIR/$1 cfg
	case $name in
	master*)
		cfg=$d/mfsmaster.cfg
		[[ -f $cfg ]] && return 0
		cat >"$cfg" <<EOF
# $name of the local cluster in $DIR, written by local-cluster.sh.
# local-cluster.sh also passes the layout keys (id, listen, http, data, peers)
# as flags, so they win over this file; add other settings below. Delete this
# file to get it written again.
MASTER_ID = ${name#master}
LISTEN_HOST = $HOST
LISTEN_PORT = ${PORT[$name]}
HTTP_LISTEN = $HOST:${HTTP[$name]}
DATA_PATH = $d/data
MASTER_PEERS = $(peers_list)
EOF
		tls_keys >>"$cfg"
		;;
	metalogger*)
		cfg=$d/mfsmetalogger.cfg
		[[ -f $cfg ]] && return 0
		cat >"$cfg" <<EOF
# $name of the local cluster in $DIR, written by local-cluster.sh.
MASTER_HOST = $(masters_list)
DATA_PATH = $d/data
LISTEN_HOST = $HOST
LISTEN_PORT = ${PORT[$name]}
HTTP_LISTEN = $HOST:${HTTP[$name]}
EOF
		tls_keys >>"$cfg"
		;;
	chunk*)
		cfg=$d/mfschunkserver.cfg
		mkdir -p "$d/hdd"
		[[ -f $d/mfshdd.cfg ]] || echo "$d/hdd" >"$d/mfshdd.cfg"
		[[ -f $cfg ]] && return 0
		cat >"$cfg" <<EOF
# $name of the local cluster in $DIR, written by local-cluster.sh.
MASTER_HOST = $(masters_list)
CSSERV_LISTEN_HOST = $HOST
CSSERV_LISTEN_PORT = ${PORT[$name]}
HTTP_LISTEN = $HOST:${HTTP[$name]}
DATA_PATH = $d/data
HDD_CONF_FILENAME = $d/mfshdd.cfg
EOF
		tls_keys >>"$cfg"
		;;
	esac
}

# The command line of NAME.
command_of() {
	local name=$1 d=$DIR/$1
	case $name in
	master*)
		CMD=("$BIN_DIR/mfsmaster" -c "$d/mfsmaster.cfg" --id "${name#master}" --listen-host "$HOST"
			-p "${PORT[$name]}" --http-listen "$HOST:${HTTP[$name]}" -d "$d/data" --peers "$(peers_list)")
		;;
	metalogger*) CMD=("$BIN_DIR/mfsmetalogger" -c "$d/mfsmetalogger.cfg") ;;
	chunk*) CMD=("$BIN_DIR/mfschunkserver" -c "$d/mfschunkserver.cfg") ;;
	mount)
		CMD=("$BIN_DIR/mfsmount" "$(mnt_dir)" -H "$(masters_list)" -f)
		if uses_tls; then CMD+=(-o "mfstlsca=$(tls_dir)/ca.pem"); fi
		;;
	esac
}

# ---------------------------------------------------------------- TLS

tls_dir() {
	echo "$DIR/tls"
}

# Whether the cluster in DIR runs TLS (made with --tls).
uses_tls() {
	[[ -f $DIR/tls/ca.pem ]]
}

# The TLS lines of a daemon's config (none for a plain cluster).
tls_keys() {
	uses_tls || return 0
	local t
	t=$(tls_dir)
	cat <<EOF
# TLS on every gRPC link (local-cluster.sh --tls): serve this certificate,
# dial others trusting only this CA.
TLS_CERT_FILE = $t/server.pem
TLS_KEY_FILE = $t/server.key
TLS_CA_FILE = $t/ca.pem
EOF
}

# A CA and one certificate for $HOST signed by it, in DIR/tls.
make_tls() {
	command -v openssl >/dev/null || die "--tls needs openssl to make the certificates (Debian: apt-get install openssl)"
	local t err
	t=$(tls_dir)
	mkdir -p "$t"
	err=$t/openssl.err
	{
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$t/ca.key" -out "$t/ca.pem.new" -days 3650 -subj "/CN=rmfs local cluster CA" &&
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
				-keyout "$t/server.key" -out "$t/server.csr" -subj "/CN=$HOST" &&
			printf 'subjectAltName=IP:%s\n' "$HOST" >"$t/server.ext" &&
			openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem.new" -CAkey "$t/ca.key" \
				-CAcreateserial -days 3650 -extfile "$t/server.ext" -out "$t/server.pem"
	} >"$err" 2>&1 || die "making the TLS certificates in $t failed: $(tail -n 1 "$err")"
	chmod 600 "$t/ca.key" "$t/server.key"
	rm -f "$err" "$t/server.csr" "$t/server.ext"
	# Last: ca.pem is what marks the cluster as a TLS one.
	mv "$t/ca.pem.new" "$t/ca.pem"
	echo "TLS: CA and certificate for $HOST made in $t"
}

# Starts NAME in the background, in its own session, so it outlives this
# script; its pid goes to DIR/NAME/pid (written by the process itself, which
# then execs the daemon and so keeps that pid).
start_proc() {
	local name=$1 d=$DIR/$1 i
	mkdir -p "$d/data"
	write_config "$name"
	if [[ $name == mount ]]; then
		unmount # a mount left by a killed mfsmount
		mkdir -p "$(mnt_dir)"
	fi
	local port ports=()
	case $name in
	master*) ports=("${PORT[$name]}" "${HTTP[$name]}") ;;
	chunk* | metalogger*) ports=("${PORT[$name]}" "${HTTP[$name]}") ;;
	esac
	for port in "${ports[@]}"; do
		if port_in_use "$port"; then
			echo "$PROG: port $port of $name is taken by another process (see 'ss -ltnp'); stop it, or use a new --dir" >&2
			return 1
		fi
	done
	command_of "$name"
	rm -f "$d/pid"
	printf '=== %s: local-cluster.sh starts %s:%s\n' "$(date '+%F %T')" "$name" "$(printf ' %q' "${CMD[@]}")" >>"$d/log"
	(
		exec 9>&- # not the lock
		cd "$d"
		# shellcheck disable=SC2016 # $$ and $@ are for the inner bash
		exec setsid env -u MFS_BIN_DIR bash -c 'echo $$ >"$0"; exec "$@"' "$d/pid" "${CMD[@]}" \
			>>"$d/log" 2>&1 </dev/null
	) &
	for ((i = 0; i < 50; i++)); do
		[[ -s $d/pid ]] && break
		sleep 0.1
	done
	[[ -s $d/pid ]] || {
		echo "$PROG: $name did not start (see $d/log)" >&2
		return 1
	}
}

port_in_use() {
	(exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

log_tail() {
	local name=$1
	echo "--- $name: last 20 lines of $DIR/$name/log ---" >&2
	tail -n 20 "$DIR/$name/log" >&2 2>/dev/null || echo "(no log)" >&2
}

# Sends SIGTERM to each NAME given (unmounting first), waits up to STOP_WAIT
# seconds, then SIGKILLs what is left. Removes the pid files.
stop_procs() {
	local name pid left i
	declare -A pids=()
	for name in "$@"; do
		if [[ $name == mount ]]; then unmount; fi
		if pid=$(running_pid "$name"); then
			kill -TERM "$pid" 2>/dev/null || true
			pids[$name]=$pid
			echo "stopping $name (pid $pid)"
		fi
	done
	for ((i = 0; i < STOP_WAIT * 10; i++)); do
		left=0
		for name in "${!pids[@]}"; do
			if running_pid "$name" >/dev/null; then left=1; fi
		done
		[[ $left == 1 ]] || break
		sleep 0.1
	done
	for name in "${!pids[@]}"; do
		if pid=$(running_pid "$name"); then
			echo "$name (pid $pid) did not stop within ${STOP_WAIT} s: sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
	for name in "$@"; do
		wait_gone "$name"
		rm -f "$DIR/$name/pid"
		if [[ $name == mount ]]; then unmount; fi
	done
}

wait_gone() {
	local i
	for ((i = 0; i < 50; i++)); do
		running_pid "$1" >/dev/null || return 0
		sleep 0.1
	done
	echo "$PROG: $1 still runs" >&2
}

# One command at a time per DIR (fd 9; the daemons do not inherit it).
take_lock() {
	command -v flock >/dev/null || return 0
	exec 9>"$DIR/.lock"
	flock -n 9 || {
		echo "another $PROG works on $DIR: waiting for it" >&2
		flock 9
	}
}

# ---------------------------------------------------------------- mfscli

mfscli() {
	if uses_tls; then
		"$BIN_DIR/mfscli" -H "$(masters_list)" --tls-ca "$(tls_dir)/ca.pem" "$@"
		return
	fi
	"$BIN_DIR/mfscli" -H "$(masters_list)" "$@"
}

# Reads `mfscli info --json` on stdin; prints "ID ADDRESS" of the leader or
# nothing.
json_leader() {
	python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
if v.get("leader") is not None:
    print(v["leader"], v.get("leader_address") or "-")
'
}

# Reads `mfscli info --json` on stdin; prints how many of the given ports are
# registered chunkservers (or the total count, if that is larger).
json_chunkservers() {
	python3 -c '
import json, sys
ports = set(sys.argv[1:])
try:
    v = json.load(sys.stdin)
except ValueError:
    print(0); sys.exit(0)
cs = v.get("chunkservers") or []
mine = sum(1 for c in cs if str(c.get("address", "")).rsplit(":", 1)[-1] in ports)
print(max(mine, len(cs)))
' "$@"
}

# NAME of the master with this id (or address).
master_name() {
	local id=$1 addr=$2 name
	has_name "master$id" && {
		echo "master$id"
		return 0
	}
	for name in $(names_of_role master); do
		[[ $addr == "$HOST:${PORT[$name]}" ]] && {
			echo "$name"
			return 0
		}
	done
	return 1
}

# ---------------------------------------------------------------- commands

print_table() {
	local name pid state
	printf '%-12s %-8s %-22s %-10s %s\n' NAME PID ADDRESS STATE METRICS
	for name in "${NAMES[@]}"; do
		if pid=$(running_pid "$name"); then
			state=running
		else
			pid=-
			state=stopped
			have_bin "$(bin_of "$name")" || state=not-built
		fi
		printf '%-12s %-8s %-22s %-10s %s\n' "$name" "$pid" "$(address_of "$name")" "$state" "$(http_of "$name")"
	done
}

cmd_status() {
	require_cluster
	resolve_bin_dir
	echo "cluster in $DIR (masters: $(masters_list))"
	print_table
}

cmd_leader() {
	require_cluster
	resolve_bin_dir
	need_python
	have_bin mfscli || die "mfscli not found in $BIN_DIR: run '$PROG up' first, or set MFS_BIN_DIR"
	local json id addr name
	json=$(mfscli info --json --timeout "${TIMEOUT:-10}" 2>/dev/null) || true
	read -r id addr <<<"$(json_leader <<<"$json")" || true
	[[ -n ${id:-} ]] || die "no leader answered within ${TIMEOUT:-10} s (masters: $(masters_list))"
	name=$(master_name "$id" "$addr") || die "the leader is master id $id at $addr, which is not one of $DIR's masters"
	echo "$name"
}

cmd_down() {
	require_cluster
	take_lock
	local order=() running=0 name
	# mount first, then the data and metadata servers, masters last
	has_name mount && order+=(mount)
	mapfile -t -O "${#order[@]}" order < <(names_of_role chunk; names_of_role metalogger; names_of_role master)
	for name in "${order[@]}"; do
		if running_pid "$name" >/dev/null; then running=1; fi
	done
	if [[ $running == 0 ]]; then
		unmount
		echo "nothing runs in $DIR"
		return 0
	fi
	# the mount first (so it can flush), then everything else at once
	if [[ ${order[0]} == mount ]]; then
		stop_procs mount
		order=("${order[@]:1}")
	fi
	stop_procs "${order[@]}"
	echo "stopped the cluster in $DIR (data kept; '$PROG up --dir $DIR' starts it again)"
}

cmd_stop_kill() {
	require_cluster
	has_name "$NAME" || usage_error "$DIR has no process named $NAME (it has: ${NAMES[*]})"
	take_lock
	local pid
	if ! pid=$(running_pid "$NAME"); then
		echo "$NAME is not running"
		[[ $NAME != mount || $VERB == kill ]] || unmount
		return 0
	fi
	if [[ $VERB == stop ]]; then
		stop_procs "$NAME"
	else
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$NAME"
		rm -f "$DIR/$NAME/pid"
		echo "killed $NAME (pid $pid)"
	fi
}

cmd_start() {
	require_cluster
	if [[ $NAME == mount ]] && ! has_name mount; then
		echo "mount - -" >>"$DIR/ports" # a cluster made with --no-mount
		load_ports
	fi
	has_name "$NAME" || usage_error "$DIR has no process named $NAME (it has: ${NAMES[*]})"
	take_lock
	resolve_bin_dir
	local pid bin
	if pid=$(running_pid "$NAME"); then
		echo "$NAME already running (pid $pid)"
		return 0
	fi
	bin=$(bin_of "$NAME")
	ensure_binaries start "$bin"
	start_proc "$NAME" || exit 1
	# until it answers: its port accepts connections, or the mount is there
	local timeout=${TIMEOUT:-30} deadline
	deadline=$((SECONDS + timeout))
	while :; do
		sleep 0.2
		pid=$(running_pid "$NAME") || {
			log_tail "$NAME"
			die "$NAME exited right after starting (log: $DIR/$NAME/log)"
		}
		case $NAME in
		master* | chunk* | metalogger*) port_in_use "${PORT[$NAME]}" && break ;;
		mount) is_mounted && timeout 5 stat "$(mnt_dir)" >/dev/null 2>&1 && break ;;
		*) break ;;
		esac
		if [[ $SECONDS -ge $deadline ]]; then
			log_tail "$NAME"
			die "$NAME (pid $pid) runs but did not answer within ${timeout} s (log: $DIR/$NAME/log)"
		fi
	done
	echo "started $NAME (pid $pid) at $(address_of "$NAME"), log $DIR/$NAME/log"
}

STARTED=()

# On a failed `up`: show the logs, stop what this `up` started, exit 1.
up_failed() {
	local name
	echo "$PROG: $*" >&2
	for name in "${NAMES[@]}"; do
		[[ -f $DIR/$name/log ]] && log_tail "$name"
	done
	if [[ ${#STARTED[@]} -gt 0 ]]; then
		echo "stopping what this up started: ${STARTED[*]} (logs stay in $DIR)" >&2
		stop_procs "${STARTED[@]}" >&2
	fi
	exit 1
}

# Starts each NAME given that is not running; fails early if one dies at once.
start_group() {
	local name pid
	for name in "$@"; do
		if pid=$(running_pid "$name"); then
			echo "$name already running (pid $pid)"
			continue
		fi
		start_proc "$name" || up_failed "could not start $name"
		STARTED+=("$name")
		echo "started $name (pid $(<"$DIR/$name/pid"))"
	done
	sleep 0.5
	for name in "$@"; do
		running_pid "$name" >/dev/null || up_failed "$name exited right after starting"
	done
}

# Starts the processes of one role, or says in one line why not.
start_role() {
	local prefix=$1 what=$2 names=() bin n
	mapfile -t names < <(names_of_role "$prefix")
	n=${#names[@]}
	[[ $n -gt 0 ]] || return 0
	[[ $n -eq 1 ]] || what+=s
	bin=$(bin_of "${names[0]}")
	if ! have_bin "$bin"; then
		echo "$bin not built yet: skipping $n $what"
		return 0
	fi
	start_group "${names[@]}"
}

# The MooseFS tool names (mfsgetgoal, ...) as links to mfstools in BIN_DIR,
# made when missing; `mfstools NAME ARGS` works without them.
MFS_TOOL_NAMES=(mfsgetgoal mfssetgoal mfsgettrashtime mfssettrashtime mfsgeteattr mfsseteattr mfsdeleattr mfsmakesnapshot mfsrmsnapshot mfsgetquota mfssetquota mfsdelquota mfscheckfile mfsfileinfo mfsdirinfo)
link_tools() {
	have_bin mfstools || return 0
	local t
	for t in "${MFS_TOOL_NAMES[@]}"; do
		[[ -e $BIN_DIR/$t || -L $BIN_DIR/$t ]] && continue
		ln -s mfstools "$BIN_DIR/$t" 2>/dev/null ||
			{ echo "cannot link $BIN_DIR/$t to mfstools: use 'mfstools ${t#mfs} ARGS'" >&2; return 0; }
	done
}

cmd_up() {
	need_python
	mkdir -p "$DIR"
	take_lock
	load_ports
	local was_new=0
	[[ ${#NAMES[@]} -gt 0 ]] || was_new=1
	if [[ $TLS == 1 ]] && ! uses_tls; then
		[[ $was_new == 1 ]] ||
			die "$DIR holds a cluster made without --tls (its configs have no TLS keys): use --tls with a new --dir"
		make_tls
	fi
	plan_layout
	if [[ -n ${MFS_BIN_DIR:-} ]]; then
		realpath -m -- "$MFS_BIN_DIR" >"$DIR/bin-dir"
	else
		rm -f "$DIR/bin-dir"
	fi
	resolve_bin_dir
	ensure_binaries up mfsmaster mfscli
	local timeout=${TIMEOUT:-60} masters name
	masters=$(masters_list)
	printf '%s\n' "$masters" >"$DIR/masters"
	if [[ $was_new == 1 ]]; then
		echo "new cluster in $DIR"
	else
		echo "cluster in $DIR (layout from $DIR/ports)"
	fi

	local all_running=1
	for name in "${NAMES[@]}"; do
		[[ $NO_MOUNT == 1 && $name == mount ]] && continue
		have_bin "$(bin_of "$name")" || continue
		running_pid "$name" >/dev/null || all_running=0
	done
	[[ $all_running == 0 ]] || echo "everything already runs; checking it answers"

	# masters, then a leader
	local group=()
	mapfile -t group < <(names_of_role master)
	start_group "${group[@]}"
	echo "waiting for a leader (up to ${timeout} s)..."
	mfscli wait-leader --timeout "$timeout" >/dev/null 2>"$DIR/.wait-leader.err" ||
		up_failed "no leader within ${timeout} s: $(tail -n 1 "$DIR/.wait-leader.err")"
	rm -f "$DIR/.wait-leader.err"

	start_role metalogger metalogger
	start_role chunk chunkserver

	# every running chunkserver registered
	local want=() ports=() got=0 deadline json
	mapfile -t want < <(names_of_role chunk)
	ports=()
	for name in "${want[@]}"; do
		running_pid "$name" >/dev/null && ports+=("${PORT[$name]}")
	done
	if [[ ${#ports[@]} -gt 0 ]]; then
		echo "waiting for ${#ports[@]} chunkserver(s) to register (up to ${timeout} s)..."
		deadline=$((SECONDS + timeout))
		while :; do
			json=$(mfscli info --json --timeout 5 2>/dev/null) || true
			got=$(json_chunkservers "${ports[@]}" <<<"$json")
			[[ $got -lt ${#ports[@]} ]] || break
			[[ $SECONDS -lt $deadline ]] || up_failed "only $got of ${#ports[@]} chunkservers registered within ${timeout} s"
			sleep 0.5
		done
	fi

	# the mount
	if [[ $NO_MOUNT == 0 ]] && has_name mount; then
		if ! have_bin mfsmount; then
			echo "mfsmount not built yet: skipping the mount"
		else
			start_group mount
			echo "waiting for the mount at $(mnt_dir) to answer (up to ${timeout} s)..."
			deadline=$((SECONDS + timeout))
			until is_mounted && timeout 5 stat "$(mnt_dir)" >/dev/null 2>&1; do
				running_pid mount >/dev/null || up_failed "mfsmount exited"
				[[ $SECONDS -lt $deadline ]] || up_failed "the mount at $(mnt_dir) did not answer within ${timeout} s"
				sleep 0.3
			done
		fi
	fi

	link_tools

	local pid leader
	leader=$(cmd_leader 2>/dev/null) || leader="?"
	echo
	echo "rmfs cluster up in $DIR (leader: $leader)"
	printf '%-12s %-8s %-22s %s\n' NAME PID ADDRESS LOG
	for name in "${NAMES[@]}"; do
		pid=$(running_pid "$name") || continue
		printf '%-12s %-8s %-22s %s\n' "$name" "$pid" "$(address_of "$name")" "$DIR/$name/log"
	done
	echo
	echo "metrics:  $(for name in $(names_of_role master) $(names_of_role metalogger) $(names_of_role chunk); do printf '%s ' "$(http_of "$name")"; done)"
	echo "binaries: $BIN_DIR"
	echo
	echo "  export MFS_MASTERS=$masters"
	if uses_tls; then
		echo "  export MFS_TLS_CA_FILE=$(tls_dir)/ca.pem   # TLS: mfscli and mfstools dial with it"
	fi
	echo "  $BIN_DIR/mfscli info"
	if running_pid mount >/dev/null; then
		echo "  ls $(mnt_dir)"
		have_bin mfstools && echo "  $BIN_DIR/mfsfileinfo $(mnt_dir)/FILE   # or: mfstools fileinfo ..."
	fi
	echo "  $0 status --dir $DIR"
	echo "  $0 down --dir $DIR      # stop everything, keep the data"
}

main() {
	parse_args "$@"
	case $VERB in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	leader) cmd_leader ;;
	stop | kill) cmd_stop_kill ;;
	start) cmd_start ;;
	esac
}

# One line, read whole before it runs: editing this file while it runs is safe.
main "$@"; exit
