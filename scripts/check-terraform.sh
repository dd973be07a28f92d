#!/usr/bin/env bash
# Static checks of terraform/ (what CI can do without the provider registry):
#   terraform fmt -check, then checkov with every skip explained inline in the .tf files
#   (#checkov:skip=CKV_...:reason); a skip without a reason fails this script.
# checkov is heavy, so it lives in a venv of its own: .venv-checkov (gitignored), created on
# the first run. CHECKOV=/path/to/checkov uses an existing one instead.
# `terraform validate` needs the google provider from the registry: terraform/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v terraform >/dev/null || { echo "check-terraform: terraform is not on PATH" >&2; exit 2; }
echo "check-terraform: terraform fmt -check -recursive terraform"
terraform fmt -check -recursive -diff terraform

unexplained=$(grep -rnE '#[[:space:]]*checkov:skip=CKV[0-9A-Z_]*(:[[:space:]]*)?$' terraform --include='*.tf' || true)
if [ -n "$unexplained" ]; then
  echo "check-terraform: checkov skips without a reason (write #checkov:skip=CKV_...:why):" >&2
  echo "$unexplained" >&2
  exit 1
fi

checkov=${CHECKOV:-}
if [ -z "$checkov" ]; then
  venv=.venv-checkov
  if [ ! -x "$venv/bin/checkov" ]; then
    echo "check-terraform: installing checkov into $venv (once)"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet checkov
  fi
  checkov=$venv/bin/checkov
fi
echo "check-terraform: checkov -d terraform"
# --skip-download: no calls to the Prisma Cloud API (CI has no network for it, and needs none).
"$checkov" -d terraform --framework terraform --quiet --compact --skip-download
