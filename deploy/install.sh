#!/usr/bin/env bash
# Put abaco in place on a Debian/Ubuntu VM, from a checkout of this repository (run as root):
#
#   sudo deploy/install.sh                  # systemd timers (the default when systemd runs)
#   sudo deploy/install.sh --cron           # /etc/cron.d/abaco instead, for hosts without systemd
#   sudo deploy/install.sh --dry-run        # print every step, change nothing
#
# It creates the `abaco` system user; installs abaco into a venv of its own,
# /opt/abaco/venvs/<id>, from requirements/runtime.lock (every file checked against its sha256,
# pip --require-hashes) and then the package itself (--no-deps), and points the link
# /opt/abaco/venv at that venv; installs the wrapper /opt/abaco/bin/abaco (linked as
# /usr/local/bin/abaco), the runbooks in /opt/abaco/runbooks, /etc/abaco/abaco.env (root:abaco,
# mode 0640; never overwritten) and /etc/abaco/abaco.toml (never overwritten), the runtime tree
# /var/lib/abaco (mode 0750), and the units or the cron file (exports, prune, health check, and
# the upload of runs not yet uploaded, a no-op until ABACO_UPLOAD__DESTINATION is set, and the
# daily HTML report). The lake's sync (abaco-lake-sync.timer, or its cron line) is installed
# but scheduled only while /etc/abaco/abaco.env has ABACO_LAKE_ENABLED='1': a sync before
# `abaco lake init` exits 2 (deploy/README.md, "The lake").
#
# Upgrades: with systemd, the timers are stopped before anything changes and started again at
# the end. The new venv is built beside the old one and the link is switched with one rename, so
# a job (a cron job too) runs either the old venv or the new one, never half of one. The venv's id
# is a hash of the lock, the package and the Python, so a second run with the same checkout
# changes nothing. The previous venv is kept for a rollback; older ones are removed. An
# operator's edits are kept: abaco.env and abaco.toml, MAILTO and commented-out jobs in
# /etc/cron.d/abaco, timers disabled with `systemctl disable`.
# The whole walk from a new VM to a green health check: runbooks/new-vm.md.
#
# For tests only: ABACO_INSTALL_ROOT=/some/dir puts every file under that folder instead of /,
# and ABACO_INSTALL_USER / ABACO_INSTALL_GROUP name an existing account to use instead of abaco.
set -euo pipefail
shopt -s nullglob
umask 022

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/.." && pwd)

mode=""
dry_run=0
start=1
package="$source_dir"
lock="$source_dir/requirements/runtime.lock"
python=${PYTHON:-python3}
metrics_reader=prometheus
textfile_dir=/var/lib/prometheus/node-exporter

R=${ABACO_INSTALL_ROOT:-/}
R=${R%/}                                  # "" for the real system
user=${ABACO_INSTALL_USER:-abaco}
group=${ABACO_INSTALL_GROUP:-$user}
opt=$R/opt/abaco

usage() {
  cat <<USAGE
usage: $0 [--systemd | --cron] [--dry-run] [--no-start] [--package SPEC] [--lock FILE]
          [--python PYTHON] [--metrics-reader USER] [--textfile-dir DIR]

  --systemd            install the systemd units and enable their timers (default with systemd)
  --cron               install /etc/cron.d/abaco and /etc/logrotate.d/abaco instead
  --dry-run            print the steps, change nothing
  --no-start           install and enable, but do not start the timers (they stay stopped)
  --package SPEC       abaco itself, installed with --no-deps: this checkout (default) or a
                       wheel, e.g. dist/abaco-0.1.0-py3-none-any.whl
  --lock FILE          the hash-pinned dependencies (default: requirements/runtime.lock)
  --python PYTHON      the interpreter for the venv (default: python3; 3.11 or newer)
  --metrics-reader U   the user node_exporter runs as, given read access to
                       /var/lib/abaco/metrics (default: prometheus, when that user exists)
  --textfile-dir DIR   node_exporter's textfile directory: abaco.prom is linked there
                       (default: /var/lib/prometheus/node-exporter, when it exists)
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --systemd) mode=systemd ;;
    --cron) mode=cron ;;
    --dry-run) dry_run=1 ;;
    --no-start) start=0 ;;
    --package) package=$2; shift ;;
    --lock) lock=$2; shift ;;
    --python) python=$2; shift ;;
    --metrics-reader) metrics_reader=$2; shift ;;
    --textfile-dir) textfile_dir=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$mode" ]; then
  if [ -d /run/systemd/system ]; then mode=systemd; else mode=cron; fi
fi

run() {
  if [ "$dry_run" -eq 1 ]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 2; }

if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0 $*), or add --dry-run to see the steps" >&2
  exit 2
fi

timers=(abaco-export-dpd.timer abaco-export-kpi.timer abaco-export-pricing.timer
        abaco-export-analytics.timer abaco-prune.timer abaco-healthcheck.timer
        abaco-upload.timer abaco-report.timer)
# Enabled only while the environment file says ABACO_LAKE_ENABLED='1' (below), never by default.
lake_timer=abaco-lake-sync.timer
# How install.sh comments out the lake's cron line while the lake is off; a line the operator
# commented out (plain "#") stays commented out whatever the switch says.
lake_off_mark="# [off until ABACO_LAKE_ENABLED='1' in /etc/abaco/abaco.env] "

tmp=$(mktemp -d)                        # scratch space (also with --dry-run); removed at exit
trap 'rm -rf "$tmp"' EXIT

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

# --- helpers: each changes a path only when it differs, so a second run changes nothing -----

changes=0                               # how many files put_file/put_link replaced

# has MODE OWNER GROUP PATH: PATH exists (not as a link) with this mode and owner.
has() {
  [ -e "$4" ] && [ ! -L "$4" ] && [ "$(stat -c '%a %U:%G' "$4")" = "${1#0} $2:$3" ]
}

# put_dir MODE OWNER GROUP DIR: a folder of ours, with this mode and owner.
put_dir() {
  has "$@" && [ -d "$4" ] && return 0
  run install -d -m "$1" -o "$2" -g "$3" "$4"
}

# need_dir DIR: a folder of the system (/etc/cron.d, /usr/local/bin, ...): created when missing,
# otherwise left as it is.
need_dir() {
  [ -d "$1" ] || run install -d -m 0755 "$1"
}

# same_file MODE OWNER GROUP SRC DST: DST already has SRC's content, this mode and this owner.
same_file() {
  has "$1" "$2" "$3" "$5" && [ -f "$5" ] && cmp -s "$4" "$5"
}

# put_file MODE OWNER GROUP SRC DST: DST gets SRC's content, mode and owner by a rename, so no
# reader (cron, systemd, a shell) ever sees it half-written.
put_file() {
  same_file "$@" && return 0
  run install -m "$1" -o "$2" -g "$3" "$4" "$5.abaco-new"
  run mv -fT "$5.abaco-new" "$5"
  changes=$((changes + 1))
}

# put_link TARGET LINK: LINK points at TARGET, switched by a rename (atomic).
put_link() {
  [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ] && return 0
  run ln -sfn "$1" "$2.abaco-new"
  run mv -fT "$2.abaco-new" "$2"
  changes=$((changes + 1))
}

in_list() {
  local item=$1; shift
  local each
  for each in "$@"; do [ "$each" = "$item" ] && return 0; done
  return 1
}

# The files of a source folder that make the package, NUL-separated, in a stable order.
package_files() {
  (cd "$1" && find pyproject.toml README.md src -type f ! -name '*.pyc' \
     ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z)
}

# copy_source SRC DST: those files only, so the build never writes into the checkout.
copy_source() {
  mkdir -p "$2"
  package_files "$1" | tar -C "$1" --null -T - -cf - | tar -C "$2" -xf -
}

# The shipped cron file with the operator's edits of the installed one carried over: its MAILTO
# line, and the jobs commented out there (a job is known by its log file, export-kpi.log, ...).
# The lake's line (lake-sync.log) follows the switch: with LAKE_ON=0 it gets $lake_off_mark in
# front; a line that carries that mark in the installed file was install.sh's doing, not the
# operator's, so it does not keep the line off once the switch is on.
merge_cron() {
  local shipped=$1 installed=$2 mailto="" off="" key
  if [ -f "$installed" ]; then
    mailto=$(grep -m1 '^MAILTO=' "$installed" || true)
    local active commented
    active=$(sed -n 's|^[[:space:]]*[^#[:space:]].*>>/var/log/abaco/\([A-Za-z0-9_-]*\)\.log.*|\1|p' \
      "$installed")
    commented=$(grep -vF "$lake_off_mark" "$installed" \
      | sed -n 's|^[[:space:]]*#.*>>/var/log/abaco/\([A-Za-z0-9_-]*\)\.log.*|\1|p')
    for key in $commented; do
      # shellcheck disable=SC2086
      in_list "$key" $active || off="$off $key"
    done
  fi
  MAILTO_LINE=$mailto DISABLED=$off LAKE_OFF_MARK=$lake_off_mark LAKE_ON=$lake_enabled awk '
    BEGIN { n = split(ENVIRON["DISABLED"], keys, " "); for (i = 1; i <= n; i++) off[keys[i]] = 1 }
    /^MAILTO=/ && ENVIRON["MAILTO_LINE"] != "" { print ENVIRON["MAILTO_LINE"]; next }
    $0 !~ /^[ \t]*#/ && match($0, />>\/var\/log\/abaco\/[A-Za-z0-9_-]+\.log/) {
      key = substr($0, RSTART + 17, RLENGTH - 21)
      if (key in off) { print "# " $0; next }
      if (key == "lake-sync" && ENVIRON["LAKE_ON"] != "1") { print ENVIRON["LAKE_OFF_MARK"] $0; next }
    }
    { print }
  ' "$shipped"
}

# --- what to install ------------------------------------------------------------------------

[ -f "$lock" ] || die "no lock file $lock (see requirements/README.md)"
python_id=$("$python" -c 'import sys
assert sys.version_info >= (3, 11), "abaco needs Python 3.11 or newer"
print(sys.implementation.name, sys.version.split()[0])') || die "$python cannot run abaco"
case "$package" in
  *.whl)
    [ -f "$package" ] || die "no such wheel: $package"
    package=$(cd "$(dirname "$package")" && pwd)/$(basename "$package")
    version=$(basename "$package" | cut -d- -f2)
    package_hash=$(sha256sum <"$package" | cut -d' ' -f1)
    ;;
  *)
    [ -f "$package/pyproject.toml" ] \
      || die "--package takes a wheel (.whl) or a source folder with pyproject.toml: $package"
    package=$(cd "$package" && pwd)
    version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$package/pyproject.toml" | head -n1)
    package_hash=$(package_files "$package" | (cd "$package" && xargs -0 sha256sum) | sha256sum \
      | cut -d' ' -f1)
    ;;
esac
lock_hash=$(sha256sum <"$lock" | cut -d' ' -f1)
# The same lock, package and Python give the same id: then the venv is already there.
venv_id=abaco-$version-$(printf '%s\n' "$lock_hash" "$package_hash" "$python_id" | sha256sum \
  | cut -c1-12)
venv_dir=$opt/venvs/$venv_id
venv_link=$opt/venv
current=""
if [ -L "$venv_link" ]; then
  current=$(readlink "$venv_link")
  current=${current#/opt/abaco/}
fi
venv_ready=0
[ -f "$venv_dir/.abaco-complete" ] && venv_ready=1
switch=1
[ "$venv_ready" -eq 1 ] && [ "$current" = "venvs/$venv_id" ] && switch=0

# 1. The user: a system account without a login shell; its home is the runtime tree.
if ! id "$user" >/dev/null 2>&1; then
  say "creating the system user $user"
  run useradd --system --user-group --home-dir /var/lib/abaco --no-create-home \
    --shell /usr/sbin/nologin --comment "abaco exports" "$user"
fi

# 2. The runtime tree: exports, locks, audit log, metrics; no access for other users.
need_dir "$R/var/lib"
put_dir 0750 "$user" "$group" "$R/var/lib/abaco"
for sub in exports locks audit metrics; do
  put_dir 0750 "$user" "$group" "$R/var/lib/abaco/$sub"
done

# 3. The program: venvs of its own in /opt/abaco (read-only for abaco), the wrapper, runbooks.
need_dir "$R/opt"
for dir in "$opt" "$opt/bin" "$opt/runbooks" "$opt/venvs"; do
  put_dir 0755 root root "$dir"
done
if [ "$dry_run" -eq 0 ]; then           # one install.sh at a time
  exec 9>>"$opt/.install.lock"
  flock -n 9 || die "another install.sh is running (it holds $opt/.install.lock)"
fi

# The lake's switch: ABACO_LAKE_ENABLED='1' in the environment file, which the operator sets once
# `abaco lake init` has run. It schedules the lake's sync (the timer enabled and started, or the
# cron line uncommented); without it install.sh never schedules it. It does not unschedule a
# timer enabled by hand (systemctl disable --now abaco-lake-sync.timer does).
lake_enabled=0
if [ -r "$R/etc/abaco/abaco.env" ] && grep -Eq \
  "^[[:space:]]*ABACO_LAKE_ENABLED=('1'|\"1\"|1)[[:space:]]*\$" "$R/etc/abaco/abaco.env"; then
  lake_enabled=1
fi

# With systemd, the timers stop before anything changes: no job starts while abaco or its
# units are being replaced. (A job already running finishes in the venv it started in: the
# previous venv is kept.) With cron, the link switch below is what keeps jobs consistent.
was_active=()
new_timers=()
to_enable=()
if [ "$mode" = systemd ]; then
  units_differ=0
  for unit in "$here"/systemd/*.service "$here"/systemd/*.timer; do
    same_file 0644 root root "$unit" "$R/etc/systemd/system/$(basename "$unit")" || units_differ=1
  done
  for dropin in "$here"/systemd/*.d/*.conf; do
    same_file 0644 root root "$dropin" \
      "$R/etc/systemd/system/$(basename "$(dirname "$dropin")")/$(basename "$dropin")" \
      || units_differ=1
  done
  for timer in "${timers[@]}"; do
    [ -e "$R/etc/systemd/system/$timer" ] || new_timers+=("$timer")
  done
  to_enable=("${new_timers[@]}")
  if [ "$lake_enabled" -eq 1 ] && ! systemctl is-enabled --quiet "$lake_timer" 2>/dev/null; then
    to_enable+=("$lake_timer")
  fi
  if [ "$switch" -eq 1 ] || [ "$units_differ" -eq 1 ]; then
    for timer in "${timers[@]}" "$lake_timer"; do
      if systemctl is-active --quiet "$timer" 2>/dev/null; then was_active+=("$timer"); fi
    done
    if [ "${#was_active[@]}" -gt 0 ]; then
      say "stopping the timers while abaco is replaced: ${was_active[*]}"
      run systemctl stop "${was_active[@]}"
    fi
  fi
fi

if [ "$venv_ready" -eq 1 ]; then
  say "abaco $version is already installed in /opt/abaco/venvs/$venv_id (same lock and package)"
else
  say "installing abaco $version from $package into /opt/abaco/venvs/$venv_id"
  say "dependencies from $lock, every file checked against its sha256"
  if [ -e "$venv_dir" ]; then
    run rm -rf "$venv_dir"              # left by an interrupted run
  fi
  run "$python" -m venv "$venv_dir"
  run "$venv_dir/bin/python" -m pip install --quiet --require-hashes -r "$lock"
  if [ -f "$package" ]; then
    run "$venv_dir/bin/python" -m pip install --quiet --no-deps "$package"
  else
    run copy_source "$package" "$tmp/source"
    run "$venv_dir/bin/python" -m pip install --quiet --no-deps --no-build-isolation \
      "$tmp/source"
  fi
  run "$venv_dir/bin/python" -m pip check  # the lock satisfies what abaco requires
  run "$venv_dir/bin/abaco" --version
  run touch "$venv_dir/.abaco-complete"
fi

if [ "$switch" -eq 1 ]; then
  if [ -d "$venv_link" ] && [ ! -L "$venv_link" ]; then
    legacy=legacy-$(date -u +%Y%m%dT%H%M%SZ)
    say "moving the venv of an older install.sh aside to /opt/abaco/venvs/$legacy"
    run mv -T "$venv_link" "$opt/venvs/$legacy"
  fi
  say "switching /opt/abaco/venv to venvs/$venv_id${current:+ (was $current)}"
  put_link "venvs/$venv_id" "$venv_link"
  # Keep the new venv and the previous one (a rollback is one link switch); remove the others.
  for old in "$opt"/venvs/*/; do
    name=$(basename "$old")
    if [ "$name" = "$venv_id" ] || [ "venvs/$name" = "$current" ]; then
      continue
    fi
    say "removing the old venv /opt/abaco/venvs/$name"
    run rm -rf "$opt/venvs/$name"
  done
fi

put_file 0755 root root "$here/bin/abaco" "$opt/bin/abaco"
need_dir "$R/usr/local/bin"
put_link /opt/abaco/bin/abaco "$R/usr/local/bin/abaco"
for page in "$source_dir"/runbooks/*.md; do
  put_file 0644 root root "$page" "$opt/runbooks/$(basename "$page")"
done

# 4. Configuration: the environment file holds the database password: root:abaco, mode 0640
#    (abaco reads it and cannot change it). An existing file is never overwritten; its mode and
#    owner are corrected.
need_dir "$R/etc"
put_dir 0750 root "$group" "$R/etc/abaco"
env_file=$R/etc/abaco/abaco.env
if [ ! -e "$env_file" ]; then
  say "creating /etc/abaco/abaco.env from the example: put the real ABACO_DATABASE_URL in it"
  run install -m 0640 -o root -g "$group" "$here/abaco.env.example" "$env_file"
else
  if [ "$(stat -c '%U:%G' "$env_file")" != "root:$group" ]; then
    run chown "root:$group" "$env_file"
  fi
  if [ "$(stat -c '%a' "$env_file")" != 640 ]; then
    run chmod 0640 "$env_file"
  fi
fi
if [ ! -e "$R/etc/abaco/abaco.toml" ]; then
  run install -m 0640 -o root -g "$group" "$source_dir/abaco.example.toml" \
    "$R/etc/abaco/abaco.toml"
fi

# 5. Metrics: abaco writes /var/lib/abaco/metrics/abaco.prom; node_exporter reads it through a
#    link in its textfile directory, with read access to that one folder only (ACLs).
if id "$metrics_reader" >/dev/null 2>&1; then
  if command -v setfacl >/dev/null 2>&1; then
    run setfacl -m "u:$metrics_reader:--x" "$R/var/lib/abaco"
    run setfacl -m "u:$metrics_reader:r-x" -m "d:u:$metrics_reader:r--" "$R/var/lib/abaco/metrics"
  else
    say "setfacl is missing (apt-get install acl): $metrics_reader cannot read the metrics yet"
  fi
  if [ -d "$R$textfile_dir" ]; then
    put_link /var/lib/abaco/metrics/abaco.prom "$R$textfile_dir/abaco.prom"
  else
    say "no $textfile_dir: point node_exporter's --collector.textfile.directory at it"
  fi
else
  say "no user $metrics_reader: give node_exporter read access to /var/lib/abaco/metrics yourself"
fi

# 6. The schedule.
if [ "$mode" = systemd ]; then
  units=$R/etc/systemd/system
  need_dir "$R/etc/systemd"
  need_dir "$units"
  # Drop-ins: abaco-.service.d/ (every abaco-*.service) and any unit's own <unit>.d/.
  for folder in "$here"/systemd/*.d/; do
    put_dir 0755 root root "$units/$(basename "$folder")"
  done
  before=$changes
  for unit in "$here"/systemd/*.service "$here"/systemd/*.timer; do
    put_file 0644 root root "$unit" "$units/$(basename "$unit")"
  done
  for dropin in "$here"/systemd/*.d/*.conf; do
    put_file 0644 root root "$dropin" \
      "$units/$(basename "$(dirname "$dropin")")/$(basename "$dropin")"
  done
  if [ "$changes" -ne "$before" ]; then
    say "installed the systemd units"
    run systemctl daemon-reload
  fi
  # A timer installed for the first time is enabled; the others keep their state, so a timer
  # an operator disabled stays disabled. The lake's timer is enabled by its switch only.
  if [ "${#to_enable[@]}" -gt 0 ]; then
    run systemctl enable "${to_enable[@]}"
  fi
  to_start=()
  for timer in "${timers[@]}" "$lake_timer"; do
    if in_list "$timer" "${to_enable[@]}" "${was_active[@]}"; then
      to_start+=("$timer")
    elif systemctl is-enabled --quiet "$timer" 2>/dev/null \
      && ! systemctl is-active --quiet "$timer" 2>/dev/null; then
      to_start+=("$timer")
    fi
  done
  if [ "${#to_start[@]}" -gt 0 ]; then
    if [ "$start" -eq 1 ]; then
      run systemctl start "${to_start[@]}"
    else
      say "--no-start: not started: ${to_start[*]} (systemctl start them when ready)"
    fi
  fi
  if [ "$lake_enabled" -eq 0 ] && ! systemctl is-enabled --quiet "$lake_timer" 2>/dev/null; then
    say "$lake_timer is installed, not enabled: after abaco lake init, set"
    say "ABACO_LAKE_ENABLED='1' in /etc/abaco/abaco.env and run install.sh again"
  fi
  say "done; next: edit /etc/abaco/abaco.env (the database; ABACO_UPLOAD__DESTINATION to upload),"
  say "then sudo -u abaco abaco healthcheck"
  say "timers: systemctl list-timers 'abaco-*'"
else
  say "installing /etc/cron.d/abaco (the host clock must be UTC: timedatectl set-timezone UTC)"
  put_dir 0750 "$user" adm "$R/var/log/abaco"
  need_dir "$R/etc/cron.d"
  need_dir "$R/etc/logrotate.d"
  merge_cron "$here/cron/abaco.cron" "$R/etc/cron.d/abaco" >"$tmp/abaco.cron"
  if [ -f "$R/etc/cron.d/abaco" ]; then
    say "keeping $(grep -m1 '^MAILTO=' "$R/etc/cron.d/abaco" || echo 'the shipped MAILTO')" \
      "and the jobs commented out in /etc/cron.d/abaco"
  fi
  put_file 0644 root root "$tmp/abaco.cron" "$R/etc/cron.d/abaco"
  if [ "$lake_enabled" -eq 0 ]; then
    say "the lake sync line is commented out: after abaco lake init, set"
    say "ABACO_LAKE_ENABLED='1' in /etc/abaco/abaco.env and run install.sh --cron again"
  fi
  put_file 0644 root root "$here/cron/abaco.logrotate" "$R/etc/logrotate.d/abaco"
  say "done; next: edit /etc/abaco/abaco.env (the database; ABACO_UPLOAD__DESTINATION to upload)"
  say "and MAILTO in /etc/cron.d/abaco,"
  say "then sudo -u abaco abaco healthcheck"
fi
