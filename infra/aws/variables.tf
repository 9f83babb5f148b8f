variable "region" {
  description = "AWS region for every resource."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (cluster, node groups, roles, ECR repository)."
  type        = string
  default     = "petavox"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix: 2-20 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

# ---- bucket -------------------------------------------------------------------------------------

variable "bucket_name" {
  description = "Name of the data bucket. Default: <name_prefix>-<account id>-<region>."
  type        = string
  default     = null
}

variable "intermediate_prefixes" {
  description = "Key prefixes whose objects expire after intermediate_expiry_days: petavox writes its intermediate files under <run root>/intermediate/, so add '<run root>/intermediate/' for each run root that is not the bucket root."
  type        = list(string)
  default     = ["intermediate/"]

  validation {
    condition     = length(var.intermediate_prefixes) > 0 && alltrue([for p in var.intermediate_prefixes : can(regex("^[^/].*/$", p))])
    error_message = "intermediate_prefixes: at least one prefix, each ending with '/' and not starting with '/'."
  }
}

variable "intermediate_expiry_days" {
  description = "Days after which objects under intermediate_prefixes expire. A run resumed later than this may miss intermediate files of an unfinished stage."
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

variable "vpc_cidr" {
  description = "CIDR block of the VPC: a /24 public subnet (NAT gateway) and a /19 private subnet (nodes, pods) per availability zone are cut from it."
  type        = string
  default     = "10.0.0.0/16"
}

variable "availability_zone_count" {
  description = "Number of availability zones for the subnets (EKS needs at least 2; more zones, more spot capacity)."
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 2 && var.availability_zone_count <= 7
    error_message = "availability_zone_count must be between 2 and 7."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.33"
}

# No default on purpose: the Kubernetes API is never open to the internet by accident.
variable "api_public_cidrs" {
  description = "Required. IPv4 CIDR blocks allowed to reach the cluster's public Kubernetes API endpoint, e.g. your own address as a /32: -var 'api_public_cidrs=[\"203.0.113.7/32\"]', or your office or VPN ranges. An empty list [] turns the public endpoint off: the API is then reachable only from inside the VPC (VPN, bastion). 0.0.0.0/0 (any /0) is refused."
  type        = list(string)

  validation {
    condition = alltrue([
      for c in var.api_public_cidrs : can(cidrnetmask(c)) && try(cidrsubnet(c, 0, 0) == c, false)
    ])
    error_message = "api_public_cidrs: each entry must be an IPv4 CIDR block written with its network address, e.g. \"203.0.113.7/32\" or \"198.51.100.0/24\"."
  }

  validation {
    condition     = !anytrue([for c in var.api_public_cidrs : try(tonumber(split("/", c)[1]) == 0, false)])
    error_message = "api_public_cidrs: 0.0.0.0/0 would open the Kubernetes API to the whole internet; pass your own address as a /32 (or [] for a private endpoint only)."
  }
}

variable "node_disk_gib" {
  description = "Root volume size of every node in GiB (images with CUDA and PyTorch are several GiB)."
  type        = number
  default     = 100
}

variable "head_instance_types" {
  description = "On-demand instance types of the always-on pool (Ray head, cluster add-ons)."
  type        = list(string)
  default     = ["m6i.xlarge"]
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

variable "cpu_instance_types" {
  description = "Spot instance types of the CPU worker pool; list several of the same size so spot capacity is found."
  type        = list(string)
  default     = ["m6i.2xlarge", "m6a.2xlarge", "m5.2xlarge"]
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

variable "gpu_instance_types" {
  description = "Spot instance types of the GPU worker pool (NVIDIA, same vCPU and memory)."
  type        = list(string)
  default     = ["g4dn.xlarge", "g5.xlarge"]
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
  description = "Kubernetes service account of the Ray head and workers: the only identity that can assume the worker role."
  type        = string
  default     = "petavox-worker"
}

variable "untagged_image_expiry_days" {
  description = "Days after which untagged images in the ECR repository expire."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_image_expiry_days >= 1
    error_message = "untagged_image_expiry_days must be at least 1."
  }
}
