# The EKS cluster and its three managed node groups:
#   head  on-demand, 1..head_max_nodes: the Ray head and the cluster add-ons (always on)
#   cpu   spot, 0..cpu_max_nodes:  CPU Ray workers
#   gpu   spot, 0..gpu_max_nodes:  GPU Ray workers, tainted nvidia.com/gpu=present:NoSchedule
# Every pool carries the label petavox.io/pool=<name> for the RayCluster's nodeSelectors. The
# worker pools scale to zero; the Kubernetes Cluster Autoscaler (role in irsa.tf) grows them when
# Ray's autoscaler asks for pods.

locals {
  cluster_name   = var.name_prefix
  pool_label_key = "petavox.io/pool"
  gpu_taint      = { key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }

  # What the Cluster Autoscaler must know to scale a pool up from zero nodes (ASG tags below).
  scale_from_zero_tags = {
    cpu = {
      "k8s.io/cluster-autoscaler/node-template/label/${local.pool_label_key}" = "cpu"
    }
    gpu = {
      "k8s.io/cluster-autoscaler/node-template/label/${local.pool_label_key}" = "gpu"
      "k8s.io/cluster-autoscaler/node-template/taint/${local.gpu_taint.key}"  = "${local.gpu_taint.value}:NoSchedule"
    }
  }
}

# ---- control plane ------------------------------------------------------------------------------

resource "aws_iam_role" "cluster" {
  name = "${var.name_prefix}-eks-cluster"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  name     = local.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  # The API's public endpoint admits only api_public_cidrs (no default); [] turns it off, leaving
  # the private endpoint inside the VPC. Nodes always use the private endpoint.
  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    endpoint_public_access  = length(var.api_public_cidrs) > 0
    public_access_cidrs     = length(var.api_public_cidrs) > 0 ? var.api_public_cidrs : null
  }

  # STANDARD: EKS upgrades an expiring version instead of billing extended support (6x the price).
  upgrade_policy {
    support_type = "STANDARD"
  }

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

# The VPC CNI as a managed add-on with its network policy agent on: without it EKS stores
# NetworkPolicies (deploy/kuberay/networkpolicy.yaml) and enforces nothing. It takes over the
# aws-node DaemonSet EKS installs by default.
resource "aws_eks_addon" "vpc_cni" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "vpc-cni"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
  configuration_values        = jsonencode({ enableNetworkPolicy = "true" })
}

# ---- nodes --------------------------------------------------------------------------------------

resource "aws_iam_role" "node" {
  name = "${var.name_prefix}-eks-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
}

# The minimum for a node to join, run the VPC CNI and pull images: no S3 access here, so only
# pods with the worker service account (IRSA) reach the bucket.
resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/${each.value}"
}

# IMDSv2 with a hop limit of 1: pods cannot borrow the node role's credentials. The root volume
# holds the container images.
resource "aws_launch_template" "node" {
  name_prefix            = "${var.name_prefix}-node-"
  update_default_version = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.node_disk_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }
}

resource "aws_eks_node_group" "head" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name_prefix}-head"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "ON_DEMAND"
  instance_types  = var.head_instance_types
  labels          = { (local.pool_label_key) = "head" }

  scaling_config {
    min_size     = 1
    desired_size = 1
    max_size     = var.head_max_nodes
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  # Nodes join the cluster through the NAT route (images) and need their role ready.
  depends_on = [aws_iam_role_policy_attachment.node, aws_route_table_association.private]
}

resource "aws_eks_node_group" "cpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name_prefix}-cpu-spot"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  ami_type        = "AL2023_x86_64_STANDARD"
  capacity_type   = "SPOT"
  instance_types  = var.cpu_instance_types
  labels          = { (local.pool_label_key) = "cpu" }

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.cpu_max_nodes
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_route_table_association.private]
}

resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name_prefix}-gpu-spot"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  ami_type        = "AL2023_x86_64_NVIDIA"
  capacity_type   = "SPOT"
  instance_types  = var.gpu_instance_types
  labels          = { (local.pool_label_key) = "gpu" }

  taint {
    key    = local.gpu_taint.key
    value  = local.gpu_taint.value
    effect = local.gpu_taint.effect
  }

  scaling_config {
    min_size     = 0
    desired_size = 0
    max_size     = var.gpu_max_nodes
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_route_table_association.private]
}

locals {
  worker_node_groups = { cpu = aws_eks_node_group.cpu, gpu = aws_eks_node_group.gpu }
}

resource "aws_autoscaling_group_tag" "scale_from_zero" {
  for_each = merge([
    for pool, tags in local.scale_from_zero_tags : {
      for key, value in tags : "${pool} ${key}" => { pool = pool, key = key, value = value }
    }
  ]...)

  autoscaling_group_name = local.worker_node_groups[each.value.pool].resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.value.key
    value               = each.value.value
    propagate_at_launch = false
  }
}
