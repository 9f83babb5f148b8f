variable "project_id" {
  description = "Google Cloud project that holds every resource."
  type        = string
}

variable "region" {
  description = "Region of the subnet, Cloud NAT, bucket and Artifact Registry repository."
  type        = string
  default     = "us-central1"
}

variable "cluster_location" {
  description = "Where the GKE cluster runs: a zone (zonal cluster, control plane covered by GKE's free tier) or the region (regional cluster, about $73/month). Must lie in var.region and offer gpu_type."
  type        = string
  default     = "us-central1-a"
}

variable "name_prefix" {
  description = "Prefix of every resource name (network, cluster, service accounts, repository)."
  type        = string
  default     = "petavox"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix: 2-20 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

# ---- bucket -------------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the data bucket. Default: <project_id>-<name_prefix>."
  type        = string
  default     = null
}

variable "intermediate_prefixes" {
  description = "Object name prefixes whose objects are deleted after intermediate_expiry_days: petavox writes its intermediate files under <run root>/intermediate/, so add '<run root>/intermediate/' for each run root that is not the bucket root."
  type        = list(string)
  default     = ["intermediate/"]

  validation {
    condition     = length(var.intermediate_prefixes) > 0 && alltrue([for p in var.intermediate_prefixes : can(regex("^[^/].*/$", p))])
    error_message = "intermediate_prefixes: at least one prefix, each ending with '/' and not starting with '/'."
  }
}

variable "intermediate_expiry_days" {
  description = "Days after which objects under intermediate_prefixes are deleted. A run resumed later than this may miss intermediate files of an unfinished stage."
  type        = number
  default     = 30

  validation {
    condition     = var.intermediate_expiry_days >= 1 && floor(var.intermediate_expiry_days) == var.intermediate_expiry_days
    error_message = "intermediate_expiry_days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiry_days" {
  description = "Days after which overwritten or deleted object versions are removed (versioning keeps them until then)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiry_days >= 1 && floor(var.noncurrent_version_expiry_days) == var.noncurrent_version_expiry_days
    error_message = "noncurrent_version_expiry_days must be a whole number of days, at least 1."
  }
}

# ---- network and cluster ------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the node subnet."
  type        = string
  default     = "10.0.0.0/20"
}

variable "pods_cidr" {
  description = "Secondary range of the subnet for pod IPs (VPC-native cluster)."
  type        = string
  default     = "10.16.0.0/14"
}

variable "services_cidr" {
  description = "Secondary range of the subnet for Service IPs."
  type        = string
  default     = "10.20.0.0/20"
}

variable "master_cidr" {
  description = "/28 range for the control plane of the private cluster (must not overlap the ranges above)."
  type        = string
  default     = "172.16.0.0/28"
}

# No default on purpose: the Kubernetes API is never open to the internet by accident.
variable "api_authorized_cidrs" {
  description = "Required. IPv4 CIDR blocks allowed to reach the cluster's public Kubernetes API endpoint (master authorized networks), e.g. your own address as a /32: -var 'api_authorized_cidrs=[\"203.0.113.7/32\"]', or your office or VPN ranges. An empty list [] turns the public endpoint off: the API is then reachable only from inside the VPC (VPN, bastion). 0.0.0.0/0 (any /0) is refused."
  type        = list(string)

  validation {
    condition = alltrue([
      for c in var.api_authorized_cidrs : can(cidrnetmask(c)) && try(cidrsubnet(c, 0, 0) == c, false)
    ])
    error_message = "api_authorized_cidrs: each entry must be an IPv4 CIDR block written with its network address, e.g. \"203.0.113.7/32\" or \"198.51.100.0/24\"."
  }

  validation {
    condition     = !anytrue([for c in var.api_authorized_cidrs : try(tonumber(split("/", c)[1]) == 0, false)])
    error_message = "api_authorized_cidrs: 0.0.0.0/0 would open the Kubernetes API to the whole internet; pass your own address as a /32 (or [] for a private endpoint only)."
  }
}

variable "release_channel" {
  description = "GKE release channel (RAPID, REGULAR, STABLE): GKE upgrades the control plane and nodes within it."
  type        = string
  default     = "REGULAR"
}

variable "deletion_protection" {
  description = "Refuse `terraform destroy` of the cluster; set false before tearing the stack down."
  type        = bool
  default     = true
}

variable "node_disk_gb" {
  description = "Boot disk size of every node in GB (images with CUDA and PyTorch are several GB)."
  type        = number
  default     = 100
}

variable "head_machine_type" {
  description = "Machine type of the always-on, on-demand pool (Ray head, cluster add-ons)."
  type        = string
  default     = "e2-standard-4"
}

variable "head_max_nodes" {
  description = "Maximum nodes of the on-demand pool (it never goes below 1)."
  type        = number
  default     = 2

  validation {
    condition     = var.head_max_nodes >= 1
    error_message = "head_max_nodes must be at least 1."
  }
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU spot worker pool."
  type        = string
  default     = "n2-standard-8"
}

variable "cpu_max_nodes" {
  description = "Maximum nodes of the CPU spot worker pool (it scales to zero when idle)."
  type        = number
  default     = 20

  validation {
    condition     = var.cpu_max_nodes >= 1
    error_message = "cpu_max_nodes must be at least 1."
  }
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU spot worker pool (N1 for T4 GPUs; G2 machine types come with L4 GPUs)."
  type        = string
  default     = "n1-standard-4"
}

variable "gpu_type" {
  description = "Accelerator type of the GPU pool (e.g. nvidia-tesla-t4, nvidia-l4)."
  type        = string
  default     = "nvidia-tesla-t4"
}

variable "gpu_count" {
  description = "GPUs per node of the GPU pool."
  type        = number
  default     = 1
}

variable "gpu_max_nodes" {
  description = "Maximum nodes of the GPU spot worker pool (it scales to zero when idle)."
  type        = number
  default     = 4

  validation {
    condition     = var.gpu_max_nodes >= 1
    error_message = "gpu_max_nodes must be at least 1."
  }
}

# ---- workload identity and registry -------------------------------------------------------------

variable "k8s_namespace" {
  description = "Kubernetes namespace of the Ray pods' service account."
  type        = string
  default     = "petavox"
}

variable "k8s_service_account" {
  description = "Kubernetes service account of the Ray head and workers: the only identity that can act as the worker service account."
  type        = string
  default     = "petavox-worker"
}

variable "untagged_image_expiry_days" {
  description = "Days after which untagged images in the Artifact Registry repository are deleted."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_image_expiry_days >= 1
    error_message = "untagged_image_expiry_days must be at least 1."
  }
}
