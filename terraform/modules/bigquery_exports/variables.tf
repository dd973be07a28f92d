variable "project_id" {
  type        = string
  description = "Project of the BigQuery dataset."
}

variable "dataset_id" {
  type        = string
  description = "BigQuery dataset that holds the external tables."
  default     = "abaco_exports"
}

variable "location" {
  type        = string
  description = "Dataset location; must match the bucket's location (or contain it, for a multi-region)."
}

variable "bucket_name" {
  type        = string
  description = "The landing bucket the tables read."
}

variable "prefix" {
  type        = string
  description = "Folder of abaco's objects in the bucket, without slashes at the ends: the <prefix> of the VM's destination gs://BUCKET/<prefix> (ABACO_UPLOAD__DESTINATION); \"\" for the bucket's root. The tables read gs://BUCKET/<prefix>/exports/<dataset>/<table>/*.parquet."
  default     = ""

  validation {
    condition     = var.prefix == "" || (can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", var.prefix)) && alltrue([for segment in split("/", var.prefix) : segment != "." && segment != ".."]))
    error_message = "prefix must be \"\" or folder names separated by single slashes, without a slash at either end and without . or .. (e.g. \"prod\")."
  }
}

variable "tables" {
  type = map(object({
    dataset     = string
    table       = string
    description = optional(string, "")
  }))
  description = "External tables to create, keyed by BigQuery table id: each reads gs://BUCKET/<prefix>/exports/<dataset>/<table>/as_of_date=D/*.parquet."
  default = {
    dpd_loans = {
      dataset     = "dpd"
      table       = "loans"
      description = "Loan-level delinquency per as-of date (abaco export dpd)."
    }
    dpd_aging = {
      dataset     = "dpd"
      table       = "aging"
      description = "Aging summary per delinquency bucket and as-of date (abaco export dpd)."
    }
    kpi_snapshot = {
      dataset     = "kpi"
      table       = "snapshot"
      description = "One row per KPI per as-of date (abaco export kpi)."
    }
    kpi_series = {
      dataset     = "kpi"
      table       = "series"
      description = "KPIs over trailing month-ends (abaco export kpi --months N)."
    }
    pricing_grid = {
      dataset     = "pricing"
      table       = "grid"
      description = "Realized pricing by product, risk band, tenor and ticket band (abaco export pricing)."
    }
    pricing_adherence = {
      dataset     = "pricing"
      table       = "adherence"
      description = "Rate-card adherence per loan disbursed in the window (abaco export pricing)."
    }
    analytics_portfolio_overview = {
      dataset     = "analytics"
      table       = "portfolio_overview"
      description = "Monthly portfolio overview (abaco export analytics)."
    }
    analytics_vintages = {
      dataset     = "analytics"
      table       = "vintages"
      description = "Vintages: disbursement cohort x months on book (abaco export analytics)."
    }
    analytics_roll_rates = {
      dataset     = "analytics"
      table       = "roll_rates"
      description = "Roll rates between consecutive month-ends (abaco export analytics)."
    }
    analytics_concentration = {
      dataset     = "analytics"
      table       = "concentration"
      description = "Concentration by customer (abaco export analytics)."
    }
    analytics_customer_types = {
      dataset     = "analytics"
      table       = "customer_types"
      description = "New, recurrent, reactivated and recovered customers per month (abaco export analytics)."
    }
    analytics_repayment_curve = {
      dataset     = "analytics"
      table       = "repayment_curve"
      description = "Share of the principal due each month repaid by the due date + k days (abaco export analytics)."
    }
    analytics_provisions = {
      dataset     = "analytics"
      table       = "provisions"
      description = "IFRS 9 provision matrix: exposure, loss rate and expected credit loss per stage (abaco export analytics)."
    }
  }
}

variable "hive_partitioning" {
  type        = bool
  description = "Read the as_of_date=D folders as a Hive partition key (mode CUSTOM, {as_of_date:DATE}), so that a filter on as_of_date reads only the matching folders. abaco's Parquet files do not carry as_of_date as a column (the folder name and the key-value metadata abaco.as_of_date do), which BigQuery requires of a partition key. Set false only for a bucket that still holds Parquet files from an abaco release that wrote the column (terraform/README.md): BigQuery refuses a partition key that is also a column in the files."
  default     = true
}

variable "require_partition_filter" {
  type        = bool
  description = "With hive_partitioning: refuse queries without a filter on as_of_date."
  default     = false
}

variable "reader_members" {
  type        = map(string)
  description = "Principals given roles/bigquery.dataViewer on the dataset, keyed by a fixed label (the key must be known at plan time, the value may come from another module), e.g. { consumer = \"serviceAccount:abaco-consumer@P.iam.gserviceaccount.com\" }. Readers of external tables also need roles/storage.objectViewer on the bucket (module export_access) and, to run queries, roles/bigquery.jobUser in some project."
  default     = {}
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key for the dataset's default encryption (CMEK); null uses Google-managed encryption."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Labels on the dataset and tables."
  default     = {}
}
