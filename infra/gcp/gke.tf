# The GKE cluster (private nodes, workload identity) and its three node pools:
#   head  on-demand, 1..head_max_nodes: the Ray head and the cluster add-ons (always on)
#   cpu   spot, 0..cpu_max_nodes:  CPU Ray workers
#   gpu   spot, 0..gpu_max_nodes:  GPU Ray workers, tainted nvidia.com/gpu=present:NoSchedule,
#         NVIDIA driver installed by GKE
# Every pool carries the label petavox.io/pool=<name> for the RayCluster's nodeSelectors. GKE's
# cluster autoscaler grows the worker pools from zero when Ray's autoscaler asks for pods.

locals {
  pool_label_key = "petavox.io/pool"
  gpu_taint      = { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }
  oauth_scopes   = ["https://www.googleapis.com/auth/cloud-platform"] # access is decided by IAM
}

resource "google_container_cluster" "this" {
  name                = var.name_prefix
  location            = var.cluster_location
  network             = google_compute_network.this.id
  subnetwork          = google_compute_subnetwork.nodes.id
  networking_mode     = "VPC_NATIVE"
  deletion_protection = var.deletion_protection

  # Dataplane V2 enforces Kubernetes NetworkPolicies (deploy/kuberay/networkpolicy.yaml); without
  # it GKE stores them and enforces nothing. Fixed at creation: changing it replaces the cluster.
  datapath_provider = "ADVANCED_DATAPATH"

  # Node pools are managed below; GKE's default pool is removed as soon as the cluster exists.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = local.pods_range
    services_secondary_range_name = local.services_range
  }

  # The API's public endpoint admits only api_authorized_cidrs (no default); [] turns it off,
  # leaving the private endpoint inside the VPC.
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = length(var.api_authorized_cidrs) == 0
    master_ipv4_cidr_block  = var.master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.api_authorized_cidrs
      content {
        cidr_block = cidr_blocks.value
      }
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  depends_on = [google_project_service.apis]
}

resource "google_container_node_pool" "head" {
  name               = "head"
  cluster            = google_container_cluster.this.id
  location           = var.cluster_location
  initial_node_count = 1

  autoscaling {
    total_min_node_count = 1
    total_max_node_count = var.head_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.head_machine_type
    disk_size_gb    = var.node_disk_gb
    disk_type       = "pd-balanced"
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.oauth_scopes
    labels          = { (local.pool_label_key) = "head" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "cpu" {
  name               = "cpu-spot"
  cluster            = google_container_cluster.this.id
  location           = var.cluster_location
  initial_node_count = 0

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.cpu_max_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_machine_type
    spot            = true
    disk_size_gb    = var.node_disk_gb
    disk_type       = "pd-balanced"
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.oauth_scopes
    labels          = { (local.pool_label_key) = "cpu" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  name               = "gpu-spot"
  cluster            = google_container_cluster.this.id
  location           = var.cluster_location
  initial_node_count = 0

  autoscaling {
    total_min_node_count = 0
    total_max_node_count = var.gpu_max_nodes
    location_policy      = "ANY"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_machine_type
    spot            = true
    disk_size_gb    = var.node_disk_gb
    disk_type       = "pd-balanced"
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.oauth_scopes
    labels          = { (local.pool_label_key) = "gpu" }

    guest_accelerator {
      type  = var.gpu_type
      count = var.gpu_count
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT"
      }
    }

    taint {
      key    = local.gpu_taint.key
      value  = local.gpu_taint.value
      effect = local.gpu_taint.effect
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}
