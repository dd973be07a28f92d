#!/usr/bin/env bash
# Put abaco in place on a Debian/Ubuntu VM, from a checkout of this repository (run as root):
#
#   sudo deploy/install.sh                  # systemd timers (the default when systemd runs)
#   sudo deploy/install.sh --cron           # /etc/cron.d/abaco instead, for hosts without systemd
#   sudo deploy/install.sh --dry-run        # print every step, change nothing
#
# It creates the `abaco` system user, installs abaco into the venv /opt/abaco/venv, the
# wrapper /opt/abaco/bin/abaco (linked as /usr/local/bin/abaco), the runbooks in
# /opt/abaco/runbooks, /etc/abaco/abaco.env (mode 0600, owner abaco; never overwritten) and
# /etc/abaco/abaco.toml, the runtime tree /var/lib/abaco (mode 0750), and the units or the cron
# file. Running it again upgrades abaco and the units and keeps the configuration.
# The whole walk from a new VM to a green health check: runbooks/new-vm.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(cd "$here/.." && pwd)

mode=""
dry_run=0
start=1
package="$source_dir"
python=${PYTHON:-python3}
metrics_reader=prometheus
textfile_dir=/var/lib/prometheus/node-exporter

usage() {
  cat <<USAGE
usage: $0 [--systemd | --cron] [--dry-run] [--no-start] [--package SPEC] [--python PYTHON]
          [--metrics-reader USER] [--textfile-dir DIR]

  --systemd            install the systemd units and enable their timers (default with systemd)
  --cron               install /etc/cron.d/abaco and /etc/logrotate.d/abaco instead
  --dry-run            print the steps, change nothing
  --no-start           install and enable, but do not start the timers
  --package SPEC       what pip installs into /opt/abaco/venv (default: this checkout;
                       e.g. dist/abaco-0.1.0-py3-none-any.whl)
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

if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0 $*), or add --dry-run to see the steps" >&2
  exit 2
fi

timers=(abaco-export-dpd.timer abaco-export-kpi.timer abaco-export-pricing.timer
        abaco-export-analytics.timer abaco-prune.timer abaco-healthcheck.timer)

# 1. The user: a system account without a login shell; its home is the runtime tree.
if ! id abaco >/dev/null 2>&1; then
  say "creating the system user abaco"
  run useradd --system --user-group --home-dir /var/lib/abaco --no-create-home \
    --shell /usr/sbin/nologin --comment "abaco exports" abaco
fi

# 2. The runtime tree: exports, locks, audit log, metrics; no access for other users.
run install -d -m 0750 -o abaco -g abaco /var/lib/abaco
for sub in exports locks audit metrics; do
  run install -d -m 0750 -o abaco -g abaco "/var/lib/abaco/$sub"
done

# 3. The program: a venv of its own in /opt/abaco (read-only for abaco), the wrapper, runbooks.
say "installing abaco from $package into /opt/abaco/venv"
run install -d -m 0755 /opt/abaco /opt/abaco/bin /opt/abaco/runbooks
if [ ! -x /opt/abaco/venv/bin/python ]; then
  run "$python" -m venv /opt/abaco/venv
fi
run /opt/abaco/venv/bin/python -m pip install --quiet --upgrade pip
run /opt/abaco/venv/bin/python -m pip install --quiet --upgrade "$package"
run install -m 0755 "$here/bin/abaco" /opt/abaco/bin/abaco
run ln -sfn /opt/abaco/bin/abaco /usr/local/bin/abaco
run install -m 0644 "$source_dir"/runbooks/*.md /opt/abaco/runbooks/

# 4. Configuration: the environment file holds the database password: 0600, owner abaco.
#    An existing file is never overwritten; its mode and owner are corrected.
run install -d -m 0750 -o root -g abaco /etc/abaco
if [ ! -e /etc/abaco/abaco.env ]; then
  say "creating /etc/abaco/abaco.env from the example: put the real ABACO_DATABASE_URL in it"
  run install -m 0600 -o abaco -g abaco "$here/abaco.env.example" /etc/abaco/abaco.env
else
  run chown abaco:abaco /etc/abaco/abaco.env
  run chmod 0600 /etc/abaco/abaco.env
fi
if [ ! -e /etc/abaco/abaco.toml ]; then
  run install -m 0640 -o root -g abaco "$source_dir/abaco.example.toml" /etc/abaco/abaco.toml
fi

# 5. Metrics: abaco writes /var/lib/abaco/metrics/abaco.prom; node_exporter reads it through a
#    link in its textfile directory, with read access to that one folder only (ACLs).
if id "$metrics_reader" >/dev/null 2>&1; then
  if command -v setfacl >/dev/null 2>&1; then
    run setfacl -m "u:$metrics_reader:--x" /var/lib/abaco
    run setfacl -m "u:$metrics_reader:r-x" -m "d:u:$metrics_reader:r--" /var/lib/abaco/metrics
  else
    say "setfacl is missing (apt-get install acl): $metrics_reader cannot read the metrics yet"
  fi
  if [ -d "$textfile_dir" ]; then
    run ln -sfn /var/lib/abaco/metrics/abaco.prom "$textfile_dir/abaco.prom"
  else
    say "no $textfile_dir: point node_exporter's --collector.textfile.directory at it"
  fi
else
  say "no user $metrics_reader: give node_exporter read access to /var/lib/abaco/metrics yourself"
fi

# 6. The schedule.
if [ "$mode" = systemd ]; then
  say "installing the systemd units"
  run install -d -m 0755 /etc/systemd/system/abaco-.service.d
  run install -m 0644 "$here"/systemd/*.service "$here"/systemd/*.timer /etc/systemd/system/
  run install -m 0644 "$here/systemd/abaco-.service.d/sandbox.conf" \
    /etc/systemd/system/abaco-.service.d/sandbox.conf
  run systemctl daemon-reload
  if [ "$start" -eq 1 ]; then
    run systemctl enable --now "${timers[@]}"
  else
    run systemctl enable "${timers[@]}"
  fi
  say "done; next: edit /etc/abaco/abaco.env, then sudo -u abaco abaco healthcheck"
  say "timers: systemctl list-timers 'abaco-*'"
else
  say "installing /etc/cron.d/abaco (the host clock must be UTC: timedatectl set-timezone UTC)"
  run install -d -m 0750 -o abaco -g adm /var/log/abaco
  run install -m 0644 "$here/cron/abaco.cron" /etc/cron.d/abaco
  run install -m 0644 "$here/cron/abaco.logrotate" /etc/logrotate.d/abaco
  say "done; next: edit /etc/abaco/abaco.env and MAILTO in /etc/cron.d/abaco,"
  say "then sudo -u abaco abaco healthcheck"
fi
