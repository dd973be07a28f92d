"""terraform/: every .tf file parses (python-hcl2) and the landing zone keeps its promises.

The invariants: a private, versioned bucket without a retention policy (a re-export replaces a
date's objects) whose lifecycle matches the VM's prune retention, with soft delete; one
notification per uploaded run (OBJECT_FINALIZE on the manifests' control prefix only) that the
storage service agent may publish; dead letters; least-privilege service accounts granted on the
bucket or the subscription, never on the project, the exporter replacing objects only under
<prefix>/exports/ and <prefix>/_control/latest/ and only creating manifests; BigQuery external
tables over the Parquet files of the runtime tree, Hive-partitioned on as_of_date (which the
Parquet files leave to the folder name), reading nothing under _control/; one remote layout in
every module; typed and described variables; `terraform fmt` clean. The lake: a bucket of its own
with no lifecycle rule that deletes a live object (a Delta table's current version uses files of
any age), versioned, soft delete, the writer creating, overwriting and deleting under
<prefix>/lake/ only; BigQuery reading it through a BigLake connection whose service account is
the only reader of the bucket, a DELTA_LAKE table per captured table and a change-log table
Hive-partitioned on commit_date, both matching what a real `abaco lake sync` writes and reading
neither the lake's state nor its batch manifests.
`terraform validate` needs the provider registry and is not run here (terraform/README.md); the
versions are pinned with `~>`, and the provider lock file is checked once it is committed.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
import shutil
import subprocess
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from abaco_cli.datasets import REGISTRY
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.settings import Settings
from tests.conftest import invoke
from tests.ops import add_loans

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
TF_FILES = sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)
MODULE_DIRS = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
EXAMPLE_DIRS = sorted(p for p in (TERRAFORM / "examples").iterdir() if p.is_dir())


# --- loading -----------------------------------------------------------------------------------


def _plain(node: Any) -> Any:
    """python-hcl2's output without its bookkeeping: no __meta__ keys, no quotes around strings
    or block labels (older releases already give it this way)."""
    if isinstance(node, dict):
        return {_unquote(k): _plain(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return _unquote(node) if isinstance(node, str) else node


def _unquote(text: str) -> str:
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        return text[1:-1].replace('\\"', '"')
    return text


@cache
def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        options = getattr(hcl2, "SerializationOptions", None)
        if options is not None:
            parsed = hcl2.load(
                handle,
                serialization_options=options(
                    with_comments=False, explicit_blocks=False, strip_string_quotes=True
                ),
            )
        else:  # python-hcl2 before 8
            parsed = hcl2.load(handle)
    return dict(_plain(parsed))


def module(folder: Path) -> dict[str, list[Any]]:
    """Every top-level block of a module's .tf files, merged."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(folder.glob("*.tf")):
        for kind, blocks in load(path).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def resources(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """name -> body of every resource of one type in a module."""
    found: dict[str, dict[str, Any]] = {}
    for block in module(folder).get("resource", []):
        for name, body in block.get(kind, {}).items():
            found[name] = body
    return found


def the(folder: Path, kind: str, name: str) -> dict[str, Any]:
    found = resources(folder, kind)
    assert name in found, f"{folder.name}: no {kind}.{name}"
    return found[name]


def variables(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        name: body for block in module(folder).get("variable", []) for name, body in block.items()
    }


def default(folder: Path, name: str) -> Any:
    found = variables(folder)
    assert name in found, f"{folder.name}: no variable {name}"
    assert "default" in found[name], f"{folder.name}: variable {name} has no default"
    return found[name]["default"]


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """A nested block that appears once (python-hcl2 gives blocks as lists)."""
    found = body.get(name)
    assert isinstance(found, list) and len(found) == 1, f"want one {name} block, got {found!r}"
    return dict(found[0])


def dynamic(body: dict[str, Any], name: str) -> dict[str, Any]:
    """A `dynamic "name"` block: its for_each and its content."""
    for entry in body.get("dynamic", []):
        if name in entry:
            return dict(entry[name])
    raise AssertionError(f"no dynamic {name!r} block")


def all_resources() -> list[tuple[Path, str, str, dict[str, Any]]]:
    found = []
    for path in TF_FILES:
        for entry in load(path).get("resource", []):
            for kind, named in entry.items():
                for name, body in named.items():
                    found.append((path, kind, name, body))
    return found


def local(folder: Path, name: str) -> Any:
    """The expression of one `locals` entry of a module."""
    for entry in module(folder).get("locals", []):
        if name in entry:
            return entry[name]
    raise AssertionError(f"{folder.name}: no local.{name}")


# --- the remote layout ---------------------------------------------------------------------------
#
# `abaco upload` to gs://BUCKET/<prefix> mirrors the runtime tree's data files under
# <prefix>/exports/ and keeps, under <prefix>/_control/, one manifest per run
# (manifests/<dataset>/<dataset>_<D>.<run_id>.manifest.json, created once) and one pointer per
# dataset (latest/<dataset>.json, moved by compare-and-swap). The modules see these as strings
# with ${local.root} ("" or "<prefix>/") and ${var.bucket_name}; render() fills them in.

DAY = date(2025, 6, 30)
RUN_ID = "20250701T043112Z-9f8e7d"
PREFIXES = ("", "prod", "team/prod")


def object_root(prefix: str) -> str:
    return f"{prefix}/" if prefix else ""


def render(expression: str, prefix: str) -> str:
    """A string of the modules with var.prefix = prefix and the bucket named b."""
    text = expression.replace("${local.root}", object_root(prefix))
    text = text.replace("${var.bucket_name}", "b")
    assert "${" not in text, text
    return text


def remote_data_files(prefix: str) -> list[str]:
    """Object names of one as-of date's data files, every format of every table, and the
    dashboard's KPI JSON (its dated file and kpi_latest.json)."""
    tree = RuntimeTree(Path("/r"))
    names = [
        tree.relative(tree.table_file(name, table.name, DAY, file_format))
        for name, spec in REGISTRY.items()
        for table in spec.tables
        for file_format in ("parquet", "csv", "json")
    ]
    names += [f"kpi/json/kpi_{DAY}.json", "kpi/json/kpi_latest.json"]
    return [f"{object_root(prefix)}exports/{name}" for name in names]


def remote_manifest(prefix: str, dataset: str = "dpd") -> str:
    return (
        f"{object_root(prefix)}_control/manifests/{dataset}/{dataset}_{DAY}.{RUN_ID}.manifest.json"
    )


def remote_latest(prefix: str, dataset: str = "dpd") -> str:
    return f"{object_root(prefix)}_control/latest/{dataset}.json"


BUCKET = TERRAFORM / "modules" / "export_bucket"
NOTIFY = TERRAFORM / "modules" / "export_notifications"
ACCESS = TERRAFORM / "modules" / "export_access"
BIGQUERY = TERRAFORM / "modules" / "bigquery_exports"
LAKE_BUCKET = TERRAFORM / "modules" / "lake_bucket"
BIGQUERY_LAKE = TERRAFORM / "modules" / "bigquery_lake"
EXAMPLE = TERRAFORM / "examples" / "landing_zone"
# Every versions.tf pins these; .terraform.lock.hcl (terraform/README.md) pins the exact release.
TERRAFORM_CONSTRAINT = "~> 1.5"
GOOGLE_CONSTRAINT = "~> 6.0"


# --- files and layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_tf_file_parses(path: Path) -> None:
    assert isinstance(load(path), dict)


@pytest.mark.parametrize("folder", [*MODULE_DIRS, *EXAMPLE_DIRS], ids=lambda p: p.name)
def test_terraform_google_modules_layout(folder: Path) -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (folder / name).is_file(), f"{folder.relative_to(ROOT)} lacks {name}"
    versions = load(folder / "versions.tf")["terraform"][0]
    assert versions["required_version"] == TERRAFORM_CONSTRAINT
    google = versions["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google"
    assert google["version"] == GOOGLE_CONSTRAINT


def _pessimistic(constraint: str, version: str) -> bool:
    """Terraform's `~> X.Y`: X.Y or newer, below (X+1).0."""
    match = re.fullmatch(r"~>\s*(\d+)\.(\d+)", constraint)
    assert match, f"not a ~> X.Y constraint: {constraint}"
    major, minor = int(match[1]), int(match[2])
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    return parts[0] == major and parts[1:2] >= [minor]


def test_versions_are_pinned_with_pessimistic_constraints() -> None:
    """`~>` on Terraform and the provider: a new major release never arrives unasked."""
    for path in TERRAFORM.rglob("versions.tf"):
        text = path.read_text(encoding="utf-8")
        assert ">=" not in text.split("required_providers")[1].split("}")[0], path
    assert _pessimistic(GOOGLE_CONSTRAINT, "6.0.0")
    assert _pessimistic(GOOGLE_CONSTRAINT, "6.49.1")
    assert not _pessimistic(GOOGLE_CONSTRAINT, "7.0.0")
    assert not _pessimistic(GOOGLE_CONSTRAINT, "5.45.0")
    assert not _pessimistic(TERRAFORM_CONSTRAINT, "2.0.0")


def test_provider_lock_file_pins_the_provider_with_hashes_or_is_documented() -> None:
    """`.terraform.lock.hcl` needs the registry (unreachable here): until it is committed, the
    README says how to make it; once it is, it must pin hashicorp/google inside the constraint
    with checksums."""
    lock = EXAMPLE / ".terraform.lock.hcl"
    if not lock.exists():
        readme = (TERRAFORM / "README.md").read_text(encoding="utf-8")
        assert "terraform providers lock -platform=linux_amd64" in readme
        assert ".terraform.lock.hcl" in readme
        return
    providers = {name: body for entry in load(lock)["provider"] for name, body in entry.items()}
    assert set(providers) == {"registry.terraform.io/hashicorp/google"}, providers
    google = providers["registry.terraform.io/hashicorp/google"]
    assert _pessimistic(GOOGLE_CONSTRAINT, google["version"]), google["version"]
    assert google["constraints"] == GOOGLE_CONSTRAINT
    assert google["hashes"] and all(h.startswith(("h1:", "zh:")) for h in google["hashes"])


def test_the_expected_modules_and_one_example() -> None:
    assert [p.name for p in MODULE_DIRS] == [
        "bigquery_exports",
        "bigquery_lake",
        "export_access",
        "export_bucket",
        "export_notifications",
        "lake_bucket",
    ]
    assert [p.name for p in EXAMPLE_DIRS] == ["landing_zone"]


@pytest.mark.parametrize("folder", [*MODULE_DIRS, *EXAMPLE_DIRS], ids=lambda p: p.name)
def test_variables_are_typed_and_described_and_outputs_described(folder: Path) -> None:
    for name, body in variables(folder).items():
        assert body.get("type"), f"{folder.name}: variable {name} has no type"
        assert len(str(body.get("description", ""))) >= 10, f"{folder.name}: {name} undescribed"
    for entry in module(folder).get("output", []):
        for name, body in entry.items():
            assert len(str(body.get("description", ""))) >= 10, f"{folder.name}: output {name}"


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not on PATH")
def test_terraform_fmt_is_clean() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_checkov_skip_says_why() -> None:
    for path in TF_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if "checkov:skip" not in line:
                continue
            match = re.search(r"#\s*checkov:skip=(CKV2?_[A-Z]+_\d+):(.+)$", line)
            assert match and len(match[2].strip()) >= 20, f"{path.name}:{number}: {line.strip()}"


# --- the bucket ----------------------------------------------------------------------------------


def prune_retention_days() -> int:
    """The retention the VM prunes with (systemd unit and cron file must agree)."""
    unit = (ROOT / "deploy/systemd/abaco-prune.service").read_text(encoding="utf-8")
    cron = (ROOT / "deploy/cron/abaco.cron").read_text(encoding="utf-8")
    in_unit = set(re.findall(r"prune --retention (\d+)d", unit))
    in_cron = set(re.findall(r"prune --retention (\d+)d", cron))
    assert len(in_unit) == 1 and in_unit == in_cron, (in_unit, in_cron)
    return int(in_unit.pop())


def test_bucket_is_private() -> None:
    bucket = the(BUCKET, "google_storage_bucket", "exports")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert default(BUCKET, "force_destroy") is False
    for path, _kind, name, body in all_resources():
        text = str(body)
        assert "allUsers" not in text and "allAuthenticatedUsers" not in text, f"{path}: {name}"


def test_bucket_is_versioned_and_has_no_retention_policy() -> None:
    """A re-export replaces a date's objects and deletes those of the previous run that the new
    manifest does not name: a retention policy (let alone a locked one) refuses both, and Cloud
    Storage allows no versioning beside one. Versioning, the noncurrent-version lifecycle and
    soft delete keep what a re-export replaces instead."""
    bucket = the(BUCKET, "google_storage_bucket", "exports")
    assert block(bucket, "versioning")["enabled"] is True
    assert "retention_policy" not in bucket
    assert all("retention_policy" not in entry for entry in bucket.get("dynamic", []))
    for folder in (BUCKET, EXAMPLE):
        for name in ("retention_policy_days", "lock_retention_policy", "exporter_may_replace"):
            assert name not in variables(folder), f"{folder.name}: variable {name} is gone"
    for path in TF_FILES:
        text = path.read_text(encoding="utf-8")
        assert "is_locked" not in text and "retention_period" not in text, path


def test_lifecycle_matches_the_prune_retention() -> None:
    bucket = the(BUCKET, "google_storage_bucket", "exports")
    rules = bucket["lifecycle_rule"]
    live = [
        r
        for r in rules
        if block(r, "action")["type"] == "Delete"
        and block(r, "condition").get("age") == "${var.retention_days}"
        and block(r, "condition").get("with_state") == "LIVE"
    ]
    assert len(live) == 1, "one rule deletes live objects after var.retention_days"
    days = prune_retention_days()
    assert days == 90
    assert default(BUCKET, "retention_days") == days
    assert default(EXAMPLE, "retention_days") == days
    noncurrent = [
        r
        for r in rules
        if block(r, "action")["type"] == "Delete"
        and block(r, "condition").get("with_state") == "ARCHIVED"
        and "days_since_noncurrent_time" in block(r, "condition")
    ]
    assert noncurrent, "noncurrent versions must expire (and stay restorable until then)"
    assert default(BUCKET, "noncurrent_version_days") >= 7


def test_soft_delete_is_on() -> None:
    bucket = the(BUCKET, "google_storage_bucket", "exports")
    policy = block(bucket, "soft_delete_policy")
    assert policy["retention_duration_seconds"] == "${var.soft_delete_days * 86400}"
    assert 7 <= default(BUCKET, "soft_delete_days") <= 90


# --- notifications ------------------------------------------------------------------------------


def test_bucket_notifies_a_topic_on_object_finalize() -> None:
    notification = the(NOTIFY, "google_storage_notification", "exports")
    assert notification["event_types"] == ["OBJECT_FINALIZE"]
    assert notification["topic"] == "${google_pubsub_topic.exports.id}"
    assert notification["bucket"] == "${var.bucket_name}"
    # the object resource, custom metadata (dataset, as_of_date, run_id) included
    assert notification["payload_format"] == "JSON_API_V1"
    grant = the(NOTIFY, "google_pubsub_topic_iam_member", "storage_publishes")
    assert grant["role"] == "roles/pubsub.publisher"
    assert grant["topic"] == "${google_pubsub_topic.exports.name}"
    assert "data.google_storage_project_service_account.gcs.email_address" in grant["member"]
    assert "${google_pubsub_topic_iam_member.storage_publishes}" in notification["depends_on"]


def test_one_message_per_uploaded_run_the_manifests_control_prefix() -> None:
    """The notification announces objects under <prefix>/_control/manifests/ only: a run's
    manifest is uploaded last and once (put-if-absent), so each run gives one message, and no
    data file gives any."""
    notification = the(NOTIFY, "google_storage_notification", "exports")
    assert notification["object_name_prefix"] == "${local.manifests_prefix}"
    assert local(NOTIFY, "manifests_prefix") == "${local.root}_control/manifests/"
    assert "object_name_prefix" not in variables(NOTIFY)  # not something to point elsewhere
    for prefix in ("", "prod", "team/prod"):
        announced = render(local(NOTIFY, "manifests_prefix"), prefix)
        assert fnmatch.fnmatch(remote_manifest(prefix), f"{announced}*")
        assert announced.startswith(render("${local.root}_control/", prefix))
        for data_file in remote_data_files(prefix):
            assert not data_file.startswith(announced), data_file
        assert not remote_latest(prefix).startswith(announced)


def test_dead_letters_have_a_topic_and_a_subscription() -> None:
    subscription = the(NOTIFY, "google_pubsub_subscription", "exports")
    assert subscription["topic"] == "${google_pubsub_topic.exports.id}"
    policy = block(subscription, "dead_letter_policy")
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert policy["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert 5 <= default(NOTIFY, "max_delivery_attempts") <= 100
    keeper = the(NOTIFY, "google_pubsub_subscription", "dead_letter")
    assert keeper["topic"] == "${google_pubsub_topic.dead_letter.id}"
    # Dead lettering needs the Pub/Sub service agent on both ends.
    publisher = the(NOTIFY, "google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter.name}"
    subscriber = the(
        NOTIFY, "google_pubsub_subscription_iam_member", "dead_letter_source_subscriber"
    )
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["subscription"] == "${google_pubsub_subscription.exports.name}"
    for grant in (publisher, subscriber):
        assert grant["member"] == "${local.pubsub_service_agent}"
    agent = next(
        entry["pubsub_service_agent"]
        for entry in module(NOTIFY)["locals"]
        if "pubsub_service_agent" in entry
    )
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in agent


# --- least privilege --------------------------------------------------------------------------


def test_no_project_level_iam_and_no_keys() -> None:
    for path, kind, name, _body in all_resources():
        assert not kind.startswith(("google_project_iam", "google_organization_iam")), (
            f"{path.relative_to(ROOT)}: {kind}.{name} grants on the project"
        )
        assert kind != "google_service_account_key", f"{path}: no service account keys"


def _grants(member: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(resource type, name, body) of every grant of one member in the access module."""
    return [
        (kind, name, body)
        for _path, kind, name, body in all_resources()
        if kind.endswith("_iam_member") and body.get("member") == member
    ]


def test_exporter_replaces_only_exports_and_pointers_and_only_creates_manifests() -> None:
    """Unconditionally: create (objectCreator) and read (objectViewer), which cannot overwrite or
    delete. Overwrite and delete (objectUser) only on object names under <prefix>/exports/ and
    <prefix>/_control/latest/, by IAM conditions; never under <prefix>/_control/manifests/."""
    assert the(ACCESS, "google_service_account", "exporter")
    grants = _grants("${local.exporter_member}")
    assert all(k == "google_storage_bucket_iam_member" for k, _n, _b in grants)
    assert all(b["bucket"] == "${var.bucket_name}" and "count" not in b for _k, _n, b in grants)
    unconditional = sorted(b["role"] for _k, _n, b in grants if "condition" not in b)
    assert unconditional == ["roles/storage.objectCreator", "roles/storage.objectViewer"]
    conditional = {n: b for _k, n, b in grants if "condition" in b}
    assert {b["role"] for b in conditional.values()} == {"roles/storage.objectUser"}
    expressions = {n: block(b, "condition")["expression"] for n, b in conditional.items()}
    for name, body in conditional.items():
        assert block(body, "condition")["title"], name
    objects = "projects/_/buckets/${var.bucket_name}/objects/"
    assert local(ACCESS, "objects") == objects
    assert local(ACCESS, "exports_prefix") == "${local.root}exports/"
    assert local(ACCESS, "latest_prefix") == "${local.root}_control/latest/"
    assert local(ACCESS, "manifests_prefix") == "${local.root}_control/manifests/"
    starts = 'resource.name.startsWith("${local.objects}${local.%s}")'
    assert expressions == {
        "exporter_replaces_exports": starts % "exports_prefix",
        "exporter_moves_latest": starts % "latest_prefix",
    }
    assert "exporter_may_replace" not in variables(ACCESS)

    # What the conditions allow, for the names the upload really writes (IAM sees an object as
    # projects/_/buckets/<bucket>/objects/<name>).
    for prefix in ("", "prod", "team/prod"):
        allowed = [
            render(local(ACCESS, "objects") + local(ACCESS, key), prefix)
            for key in ("exports_prefix", "latest_prefix")
        ]

        def replaceable(name: str, allowed: list[str] = allowed) -> bool:
            return any(f"projects/_/buckets/b/objects/{name}".startswith(a) for a in allowed)

        for data_file in remote_data_files(prefix):
            assert replaceable(data_file), data_file
        assert replaceable(remote_latest(prefix))
        assert not replaceable(remote_manifest(prefix)), "manifests are create-only"
        if prefix:  # "prod" does not cover a neighbour "prod2/exports/..."
            assert not replaceable(f"{prefix}2/exports/dpd/loans/as_of_date=2025-06-30/x.parquet")


def test_consumer_may_read_objects_and_subscribe() -> None:
    grants = {(kind, body["role"]) for kind, _n, body in _grants("${local.consumer_member}")}
    assert grants == {
        ("google_storage_bucket_iam_member", "roles/storage.objectViewer"),
        ("google_pubsub_subscription_iam_member", "roles/pubsub.subscriber"),
    }
    subscribe = the(ACCESS, "google_pubsub_subscription_iam_member", "consumer_subscribes")
    assert subscribe["subscription"] == "${var.subscription_name}"


# --- one remote layout -----------------------------------------------------------------------


def test_every_module_reads_the_same_prefix_and_the_example_passes_it() -> None:
    """access, notifications and bigquery_exports agree on <prefix> and on where things are
    below it; the example gives each the same var.prefix, and says where the VM uploads."""
    prefixed = [ACCESS, NOTIFY, BIGQUERY, EXAMPLE]
    root = '${var.prefix == "" ? "" : "${var.prefix}/"}'
    validation = None
    for folder in prefixed:
        assert local(folder, "root") == root, folder.name
        assert default(folder, "prefix") == "", folder.name
        body = variables(folder)["prefix"]
        assert "ABACO_UPLOAD__DESTINATION" in body["description"], folder.name
        rule = block(body, "validation")["condition"]
        assert validation in (None, rule), f"{folder.name}: another validation of prefix"
        validation = rule
    calls = {
        name: body for entry in module(EXAMPLE).get("module", []) for name, body in entry.items()
    }
    for name in ("access", "notifications", "bigquery"):
        assert calls[name]["prefix"] == "${var.prefix}", name
    assert "prefix" not in calls["bucket"]
    outputs = {
        name: body for entry in module(EXAMPLE).get("output", []) for name, body in entry.items()
    }
    assert outputs["upload_destination"]["value"] == (
        '${trimsuffix("gs://${module.bucket.name}/${var.prefix}", "/")}'
    )
    assert outputs["manifests_url"]["value"] == (
        "gs://${module.bucket.name}/${local.root}_control/manifests"
    )


# --- BigQuery ---------------------------------------------------------------------------------


def test_external_tables_read_the_parquet_files_of_the_runtime_tree() -> None:
    assert the(BIGQUERY, "google_bigquery_dataset", "exports")
    table = the(BIGQUERY, "google_bigquery_table", "exports")
    assert table["for_each"] == "${var.tables}"
    config = block(table, "external_data_configuration")
    assert config["source_format"] == "PARQUET"
    (uri,) = config["source_uris"]
    prefix = "${local.exports}/${each.value.dataset}/${each.value.table}"
    assert uri == f"{prefix}/*.parquet"
    assert local(BIGQUERY, "exports") == "gs://${var.bucket_name}/${local.root}exports"

    # Hive partitioning, on by default: the table folder, then the as_of_date=D folders, the key
    # typed DATE (CUSTOM mode). The Parquet files do not carry the key as a column (below).
    hive = dynamic(config, "hive_partitioning_options")
    assert "var.hive_partitioning" in hive["for_each"]
    options = hive["content"][0]
    assert options["mode"] == "CUSTOM"
    assert options["source_uri_prefix"] == f"{prefix}/{{as_of_date:DATE}}"
    assert options["require_partition_filter"] == "${var.require_partition_filter}"
    assert default(BIGQUERY, "hive_partitioning") is True
    assert default(BIGQUERY, "require_partition_filter") is False
    assert default(EXAMPLE, "hive_partitioning") is True
    bigquery = next(
        body
        for entry in module(EXAMPLE).get("module", [])
        for name, body in entry.items()
        if name == "bigquery"
    )
    assert bigquery["hive_partitioning"] == "${var.hive_partitioning}"

    # The pattern matches what abaco really uploads, and only the Parquet files: never a CSV or
    # JSON file, the KPI JSON, a manifest or a pointer under _control/.
    tree = RuntimeTree(Path("/r"))
    for remote_prefix in PREFIXES:
        exports = render(local(BIGQUERY, "exports"), remote_prefix)
        assert exports == f"gs://b/{object_root(remote_prefix)}exports"
        patterns = [
            f"{exports}/{spec['dataset']}/{spec['table']}/*.parquet"
            for spec in default(BIGQUERY, "tables").values()
        ]
        for spec, pattern in zip(default(BIGQUERY, "tables").values(), patterns, strict=True):
            for file_format in ("parquet", "csv", "json"):
                written = tree.table_file(spec["dataset"], spec["table"], DAY, file_format)
                uploaded = f"gs://b/{object_root(remote_prefix)}exports/{tree.relative(written)}"
                assert fnmatch.fnmatch(uploaded, pattern) == (file_format == "parquet"), uploaded
        outside = [remote_manifest(remote_prefix, dataset) for dataset in REGISTRY]
        outside += [remote_latest(remote_prefix, dataset) for dataset in REGISTRY]
        outside += [f"{object_root(remote_prefix)}exports/kpi/json/kpi_{DAY}.json"]
        for name in outside:
            assert not any(fnmatch.fnmatch(f"gs://b/{name}", p) for p in patterns), name


def test_parquet_files_leave_the_partition_key_to_the_folder(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    """What Hive partitioning needs of the files abaco really writes: BigQuery refuses a partition
    key that is also a column in the files, so the Parquet files carry as_of_date only in their
    folder name and their key-value metadata; CSV and JSON keep the column."""
    add_loans(db_conninfo)
    done = invoke(
        cli,
        "export",
        "all",
        "--as-of",
        "2025-06-30",
        "--months",
        "2",
        "--format",
        "parquet,csv,json",
    )
    assert done.exit_code == 0, done.output
    tree = RuntimeTree(runtime_dir)
    for spec in default(BIGQUERY, "tables").values():
        day = date(2025, 6, 30)
        parquet = tree.table_file(spec["dataset"], spec["table"], day, "parquet")
        assert parquet.parent.name == "as_of_date=2025-06-30"
        schema = pq.read_schema(parquet)
        assert "as_of_date" not in schema.names, f"{parquet.name} carries as_of_date"
        assert (schema.metadata or {}).get(b"abaco.as_of_date") == b"2025-06-30"
        csv_file = tree.table_file(spec["dataset"], spec["table"], day, "csv")
        with csv_file.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle))
        assert "as_of_date" in header, csv_file.name
        document = json.loads(
            tree.table_file(spec["dataset"], spec["table"], day, "json").read_text("utf-8")
        )
        assert "as_of_date" in [column["name"] for column in document["columns"]]


def test_external_tables_cover_every_exported_table() -> None:
    declared = {(t["dataset"], t["table"]) for t in default(BIGQUERY, "tables").values()}
    written = {(name, table.name) for name, spec in REGISTRY.items() for table in spec.tables}
    assert declared <= written, f"tables abaco does not write: {declared - written}"
    missing = written - declared
    assert not missing, (
        f"add these to the `tables` default in terraform/modules/bigquery_exports: {missing}"
    )


def test_the_example_wires_every_module() -> None:
    calls = {
        name: body for entry in module(EXAMPLE).get("module", []) for name, body in entry.items()
    }
    sources = {body["source"] for body in calls.values()}
    assert sources == {f"../../modules/{p.name}" for p in MODULE_DIRS}
    for source in sources:
        assert (EXAMPLE / source).resolve().is_dir()
    outputs = {name for entry in module(EXAMPLE).get("output", []) for name in entry}
    assert {"bucket_name", "exporter_service_account", "consumer_subscription"} <= outputs


# --- the lake ----------------------------------------------------------------------------------
#
# `abaco lake` with ABACO_LAKE__DESTINATION=gs://LAKE_BUCKET/<prefix> writes below
# <prefix>/lake/ (docs/lake.md): _state/lake.json, _batches/<start>_<end>.json,
# changes/<schema>.<table>/commit_date=D/changes_<start>_<end>.parquet and the Delta tables
# tables/<schema>.<table>/ (_delta_log/ and Parquet files). render_lake() fills in the modules'
# strings for one prefix and the bucket named b.

START, END = "00000000016B3748", "00000000016B3800"


def render_lake(expression: str, prefix: str, table: str | None = None) -> str:
    text = expression.replace("${local.root}", object_root(prefix))
    text = text.replace("${var.bucket_name}", "b").replace("${var.name}", "b")
    text = text.replace("${local.lake}", f"gs://b/{object_root(prefix)}lake")
    if table is not None:
        text = text.replace("${each.value}", table)
    assert "${" not in text, text
    return text


def lake_objects(prefix: str, table: str = "core_banking.loans") -> dict[str, list[str]]:
    """Object names the lake writes for one table, by kind."""
    lake = f"{object_root(prefix)}lake"
    return {
        "state": [f"{lake}/_state/lake.json"],
        "batches": [f"{lake}/_batches/{START}_{END}.json"],
        "changes": [
            f"{lake}/changes/{table}/commit_date=2025-06-30/changes_{START}_{END}.parquet",
        ],
        "delta": [
            f"{lake}/tables/{table}/_delta_log/00000000000000000000.json",
            f"{lake}/tables/{table}/part-00001-0a1b2c3d-c000.snappy.parquet",
        ],
    }


def contract_tables() -> list[str]:
    """The source contract's tables (tables.* of the configuration), which the lake captures by
    default."""
    tables = Settings().tables
    return [str(getattr(tables, role)) for role in tables.roles()]


def test_lake_bucket_is_private_versioned_and_never_deletes_live_objects() -> None:
    """A Delta table's current version keeps using files of any age (the initial load, rows that
    never change): no lifecycle rule may delete a live object, unlike the exports' bucket. What
    vacuum or a crashed sync's cleanup deletes stays restorable (versions, soft delete)."""
    bucket = the(LAKE_BUCKET, "google_storage_bucket", "lake")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert default(LAKE_BUCKET, "force_destroy") is False
    assert block(bucket, "versioning")["enabled"] is True
    assert "retention_policy" not in bucket
    policy = block(bucket, "soft_delete_policy")
    assert policy["retention_duration_seconds"] == "${var.soft_delete_days * 86400}"
    assert 7 <= default(LAKE_BUCKET, "soft_delete_days") <= 90
    deletes = [r for r in bucket["lifecycle_rule"] if block(r, "action")["type"] == "Delete"]
    assert deletes, "noncurrent versions must expire"
    for rule in deletes:
        assert block(rule, "condition").get("with_state") == "ARCHIVED", rule
    assert default(LAKE_BUCKET, "noncurrent_version_days") >= 7
    assert "retention_days" not in variables(LAKE_BUCKET)


def test_lake_writer_writes_under_the_lake_prefix_only() -> None:
    """The exporter reads and lists the lake's bucket and creates, overwrites and deletes only
    under <prefix>/lake/ (the state's compare-and-swap, a batch written again, vacuum)."""
    member = "${var.writer_member}"
    grants = [
        (name, body)
        for _path, kind, name, body in all_resources()
        if kind == "google_storage_bucket_iam_member" and body.get("member") == member
    ]
    assert all(b["bucket"] == "${google_storage_bucket.lake.name}" for _, b in grants)
    unconditional = sorted(b["role"] for _, b in grants if "condition" not in b)
    assert unconditional == ["roles/storage.objectViewer"]
    conditional = [b for _, b in grants if "condition" in b]
    assert [b["role"] for b in conditional] == ["roles/storage.objectUser"]
    expression = block(conditional[0], "condition")["expression"]
    assert expression == 'resource.name.startsWith("${local.objects}${local.lake_prefix}")'
    assert local(LAKE_BUCKET, "objects") == "projects/_/buckets/${var.name}/objects/"
    assert local(LAKE_BUCKET, "lake_prefix") == "${local.root}lake/"
    for prefix in PREFIXES:
        allowed = render_lake(
            local(LAKE_BUCKET, "objects") + local(LAKE_BUCKET, "lake_prefix"), prefix
        )
        for kind, names in lake_objects(prefix).items():
            for name in names:
                assert f"projects/_/buckets/b/objects/{name}".startswith(allowed), (kind, name)
        outside = [f"{object_root(prefix)}exports/x.parquet", f"{object_root(prefix)}lakes/x"]
        if prefix:  # "prod" does not cover a neighbour "prod2/lake/..."
            outside.append(f"{prefix}2/lake/_state/lake.json")
        for name in outside:
            assert not f"projects/_/buckets/b/objects/{name}".startswith(allowed), name


def test_lake_modules_read_the_same_prefix_and_the_example_passes_it() -> None:
    """lake_bucket and bigquery_lake agree on <prefix> (the one of ABACO_LAKE__DESTINATION) and
    validate it as every other module does; the example passes both its lake_prefix and says
    where the VM's lake goes."""
    root = '${var.prefix == "" ? "" : "${var.prefix}/"}'
    rule = block(variables(ACCESS)["prefix"], "validation")["condition"]
    for folder in (LAKE_BUCKET, BIGQUERY_LAKE):
        assert local(folder, "root") == root, folder.name
        body = variables(folder)["prefix"]
        assert default(folder, "prefix") == ""
        assert "ABACO_LAKE__DESTINATION" in body["description"], folder.name
        assert block(body, "validation")["condition"] == rule, folder.name
    example_rule = block(variables(EXAMPLE)["lake_prefix"], "validation")["condition"]
    assert example_rule == rule.replace("var.prefix", "var.lake_prefix")
    calls = {
        name: body for entry in module(EXAMPLE).get("module", []) for name, body in entry.items()
    }
    assert calls["lake_bucket"]["prefix"] == "${var.lake_prefix}"
    assert calls["bigquery_lake"]["prefix"] == "${var.lake_prefix}"
    assert calls["bigquery_lake"]["bucket_name"] == "${module.lake_bucket.name}"
    assert calls["lake_bucket"]["writer_member"] == (
        "serviceAccount:${module.access.exporter_email}"
    )
    # its own bucket, never the exports' one (whose lifecycle deletes objects after 90 days)
    assert calls["lake_bucket"]["name"] == "${local.lake_bucket_name}"
    assert local(EXAMPLE, "lake_bucket_name") != local(EXAMPLE, "bucket_name")
    outputs = {
        name: body for entry in module(EXAMPLE).get("output", []) for name, body in entry.items()
    }
    assert outputs["lake_destination"]["value"] == "${module.lake_bucket.destination}"
    lake_outputs = {
        name: body
        for entry in module(LAKE_BUCKET).get("output", [])
        for name, body in entry.items()
    }
    assert lake_outputs["destination"]["value"] == (
        '${trimsuffix("gs://${google_storage_bucket.lake.name}/${var.prefix}", "/")}'
    )


def test_bigquery_reads_the_lake_through_a_biglake_connection() -> None:
    """A Cloud resource connection whose service account may read the lake's bucket (and is the
    only reader it needs: the dataset's readers never get the bucket); every table reads through
    it and is created after that grant."""
    connection = the(BIGQUERY_LAKE, "google_bigquery_connection", "lake")
    assert block(connection, "cloud_resource") == {}
    assert connection["location"] == "${var.location}"
    grant = the(BIGQUERY_LAKE, "google_storage_bucket_iam_member", "connection_reads_lake")
    assert grant == {
        "bucket": "${var.bucket_name}",
        "role": "roles/storage.objectViewer",
        "member": "serviceAccount:"
        "${google_bigquery_connection.lake.cloud_resource[0].service_account_id}",
    }
    readers = the(BIGQUERY_LAKE, "google_bigquery_dataset_iam_member", "readers")
    assert readers["role"] == "roles/bigquery.dataViewer"
    for name in ("current", "changes"):
        table = the(BIGQUERY_LAKE, "google_bigquery_table", name)
        assert table["for_each"] == "${local.tables}"
        assert table["dataset_id"] == "${google_bigquery_dataset.lake.dataset_id}"
        config = block(table, "external_data_configuration")
        assert config["connection_id"] == "${google_bigquery_connection.lake.name}"
        assert config["autodetect"] is True
        assert "${google_storage_bucket_iam_member.connection_reads_lake}" in table["depends_on"]
    assert local(BIGQUERY_LAKE, "lake") == "gs://${var.bucket_name}/${local.root}lake"
    assert local(BIGQUERY_LAKE, "tables") == (
        '${{for table in var.tables : replace(table, ".", "_") => table}}'
    )
    calls = {
        name: body for entry in module(EXAMPLE).get("module", []) for name, body in entry.items()
    }
    assert calls["bigquery_lake"]["count"] == "${var.lake_in_bigquery ? 1 : 0}"
    assert default(EXAMPLE, "lake_in_bigquery") is False  # after `abaco lake init` only


def test_lake_tables_are_the_contract_tables_by_default() -> None:
    assert default(BIGQUERY_LAKE, "tables") == contract_tables()
    assert default(EXAMPLE, "lake_tables") == contract_tables()


def test_lake_table_uris_match_the_lake_layout_and_skip_its_state() -> None:
    """The Delta table is its folder; the change-log table reads the table's change files,
    partitioned on commit_date (CUSTOM, DATE); neither reads the state, the batch manifests or
    another table's files."""
    current = block(
        the(BIGQUERY_LAKE, "google_bigquery_table", "current"), "external_data_configuration"
    )
    changes = block(
        the(BIGQUERY_LAKE, "google_bigquery_table", "changes"), "external_data_configuration"
    )
    assert current["source_format"] == "DELTA_LAKE"
    assert current["source_uris"] == ["${local.lake}/tables/${each.value}"]
    assert "hive_partitioning_options" not in current
    assert changes["source_format"] == "PARQUET"
    assert changes["source_uris"] == ["${local.lake}/changes/${each.value}/*"]
    hive = block(changes, "hive_partitioning_options")
    assert hive["mode"] == "CUSTOM"
    assert hive["source_uri_prefix"] == "${local.lake}/changes/${each.value}/{commit_date:DATE}"
    assert hive["require_partition_filter"] == "${var.require_partition_filter}"
    tables = default(BIGQUERY_LAKE, "tables")
    for prefix in PREFIXES:
        for table in tables:
            folder = render_lake(current["source_uris"][0], prefix, table)
            pattern = render_lake(changes["source_uris"][0], prefix, table)
            mine = lake_objects(prefix, table)
            for name in mine["delta"]:
                assert f"gs://b/{name}".startswith(folder + "/"), name
            for name in mine["changes"]:
                assert fnmatch.fnmatch(f"gs://b/{name}", pattern), name
            others = [t for t in tables if t != table]
            outside = mine["state"] + mine["batches"] + mine["delta"]
            for other in others:
                outside += lake_objects(prefix, other)["changes"]
            for name in outside:
                assert not fnmatch.fnmatch(f"gs://b/{name}", pattern), name
            for other in others:
                for name in lake_objects(prefix, other)["delta"]:
                    assert not f"gs://b/{name}".startswith(folder + "/"), name


def test_lake_writes_what_the_bigquery_tables_read(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A real `abaco lake init`, changes and `abaco lake sync` into a folder: every captured table
    has its Delta table where the DELTA_LAKE table reads it, and change files that the change-log
    table's pattern and Hive prefix match, which carry commit_date only in their folder name
    (BigQuery refuses a partition key that is also a column in the files) and its five
    bookkeeping columns; the state and the batch manifests are outside every table's URIs."""
    import psycopg
    from deltalake import DeltaTable

    slot = f"abaco_lake_terraform_{os.getpid()}"
    dest = tmp_path / "lake-dest"
    monkeypatch.setenv("ABACO_LAKE__SLOT", slot)
    monkeypatch.setenv("ABACO_LAKE__PUBLICATION", slot)
    monkeypatch.setenv("ABACO_LAKE__DESTINATION", str(dest))
    add_loans(db_conninfo)
    try:
        assert invoke(cli, "lake", "init").exit_code == 0
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute("UPDATE core_banking.loans SET principal = 1500.00 WHERE loan_id = 'L1'")
        sync = invoke(cli, "lake", "sync")
        assert sync.exit_code == 0, sync.output
    finally:
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (slot,),
            )
    lake = dest / "lake"
    current = block(
        the(BIGQUERY_LAKE, "google_bigquery_table", "current"), "external_data_configuration"
    )
    changes = block(
        the(BIGQUERY_LAKE, "google_bigquery_table", "changes"), "external_data_configuration"
    )
    written = sorted(p.relative_to(dest).as_posix() for p in lake.rglob("*") if p.is_file())
    assert any(name.startswith("lake/_state/") for name in written)
    assert any(name.startswith("lake/_batches/") for name in written)
    for table in default(BIGQUERY_LAKE, "tables"):
        folder = render_lake(current["source_uris"][0], "", table).removeprefix("gs://b/")
        assert (dest / folder / "_delta_log").is_dir(), folder
        assert DeltaTable(str(dest / folder)).version() >= 0
        pattern = render_lake(changes["source_uris"][0], "", table).removeprefix("gs://b/")
        files = [name for name in written if name.startswith(pattern.removesuffix("*"))]
        assert files, f"no change files for {table}"
        for name in files:
            assert fnmatch.fnmatch(name, pattern), name
            partition = Path(name).parent.name
            assert re.fullmatch(r"commit_date=\d{4}-\d{2}-\d{2}", partition), name
            assert date.fromisoformat(partition.removeprefix("commit_date="))
            schema = pq.read_schema(dest / name)
            assert "commit_date" not in schema.names, name
            assert schema.names[:5] == ["_op", "_commit_lsn", "_xid", "_commit_time", "_seq"]
    every = [
        render_lake(changes["source_uris"][0], "", t) for t in default(BIGQUERY_LAKE, "tables")
    ]
    for name in written:
        if name.startswith(("lake/_state/", "lake/_batches/")):
            assert not any(fnmatch.fnmatch(f"gs://b/{name}", p) for p in every), name
