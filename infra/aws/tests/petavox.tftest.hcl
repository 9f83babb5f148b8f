# Offline plan-time checks of the AWS stack: a mocked provider, no credentials, nothing created.
# Computed values (ARNs, the OIDC issuer) get fake values during plan, so the policies the stack
# renders with jsonencode are known and can be parsed here.

# api_public_cidrs has no default: every run gets one documentation address (RFC 5737) unless
# it sets its own.
variables {
  api_public_cidrs = ["203.0.113.7/32"]
}

mock_provider "aws" {
  override_during = plan

  mock_data "aws_availability_zones" {
    defaults = { names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"] }
  }

  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }

  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::petavox-123456789012-us-east-1" }
  }

  mock_resource "aws_eks_cluster" {
    defaults = {
      identity = [{ oidc = [{ issuer = "https://oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF" }] }]
    }
  }

  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF"
    }
  }
}

run "bucket_is_private_versioned_and_expires_intermediate_files" {
  command = plan

  assert {
    condition     = aws_s3_bucket.data.bucket == "petavox-123456789012-us-east-1"
    error_message = "The default bucket name is <name_prefix>-<account id>-<region>."
  }

  assert {
    condition     = aws_s3_bucket_versioning.data.versioning_configuration[0].status == "Enabled"
    error_message = "Versioning must be enabled."
  }

  assert {
    condition = alltrue([
      aws_s3_bucket_public_access_block.data.block_public_acls,
      aws_s3_bucket_public_access_block.data.block_public_policy,
      aws_s3_bucket_public_access_block.data.ignore_public_acls,
      aws_s3_bucket_public_access_block.data.restrict_public_buckets,
    ])
    error_message = "Every public access block setting must be true."
  }

  assert {
    condition     = aws_s3_bucket_ownership_controls.data.rule[0].object_ownership == "BucketOwnerEnforced"
    error_message = "ACLs must be disabled (BucketOwnerEnforced)."
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.data.rule).apply_server_side_encryption_by_default).sse_algorithm == "AES256"
    error_message = "Default encryption must be SSE-S3."
  }

  # Rules are listed as configured: one per intermediate prefix, then the noncurrent-version rule.
  assert {
    condition = (
      aws_s3_bucket_lifecycle_configuration.data.rule[0].id == "expire-intermediate-0"
      && aws_s3_bucket_lifecycle_configuration.data.rule[0].status == "Enabled"
      && aws_s3_bucket_lifecycle_configuration.data.rule[0].filter[0].prefix == "intermediate/"
      && aws_s3_bucket_lifecycle_configuration.data.rule[0].expiration[0].days == 30
    )
    error_message = "Objects under intermediate/ must expire after intermediate_expiry_days (30)."
  }

  assert {
    condition = (
      aws_s3_bucket_lifecycle_configuration.data.rule[1].id == "expire-noncurrent-versions"
      && aws_s3_bucket_lifecycle_configuration.data.rule[1].status == "Enabled"
      && length(aws_s3_bucket_lifecycle_configuration.data.rule[1].filter[0].and) == 0
      && aws_s3_bucket_lifecycle_configuration.data.rule[1].noncurrent_version_expiration[0].noncurrent_days == 7
      && aws_s3_bucket_lifecycle_configuration.data.rule[1].expiration[0].expired_object_delete_marker
    )
    error_message = "Noncurrent versions of every object must expire after noncurrent_version_expiry_days (7)."
  }

  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.data.rule) == 2
    error_message = "Two lifecycle rules: intermediate files, noncurrent versions (no other object expires)."
  }
}

run "worker_role_reads_and_writes_the_bucket_only" {
  command = plan

  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.worker.policy).Statement : s.Resource
    ])) == toset([aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"])
    error_message = "The worker policy must name exactly the bucket and bucket/*."
  }

  assert {
    condition = alltrue([
      for s in jsondecode(aws_iam_role_policy.worker.policy).Statement :
      s.Effect == "Allow" && !can(s.Condition) && (
        (toset(s.Action) == toset(["s3:ListBucket"]) && s.Resource == [aws_s3_bucket.data.arn]) ||
        (toset(s.Action) == toset(["s3:GetObject", "s3:PutObject"])
        && s.Resource == ["${aws_s3_bucket.data.arn}/*"])
      )
    ]) && length(jsondecode(aws_iam_role_policy.worker.policy).Statement) == 2
    error_message = "Only s3:ListBucket on the bucket and s3:GetObject/PutObject on its objects."
  }

  # petavox never deletes: no s3:Delete* action, and no wildcard that could include one.
  assert {
    condition = !anytrue([
      for a in flatten([for s in jsondecode(aws_iam_role_policy.worker.policy).Statement : s.Action]) :
      strcontains(lower(a), "delete") || strcontains(a, "*")
    ])
    error_message = "The worker policy must grant no s3:Delete* action and no wildcard action (s3:*, s3:Delete*)."
  }

  assert {
    condition     = aws_iam_role_policy.worker.role == aws_iam_role.worker.name
    error_message = "The bucket policy must be attached to the worker role."
  }
}

run "worker_role_trusts_only_the_service_account" {
  command = plan

  assert {
    condition     = length(jsondecode(aws_iam_role.worker.assume_role_policy).Statement) == 1
    error_message = "The worker role has one trust statement."
  }

  assert {
    condition = jsondecode(aws_iam_role.worker.assume_role_policy).Statement[0] == {
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF:sub" = "system:serviceaccount:petavox:petavox-worker"
          "oidc.eks.us-east-1.amazonaws.com/id/0123456789ABCDEF:aud" = "sts.amazonaws.com"
        }
      }
    }
    error_message = "Only petavox/petavox-worker, through the cluster's OIDC provider, may assume the worker role."
  }

  assert {
    condition     = aws_iam_openid_connect_provider.eks.client_id_list == toset(["sts.amazonaws.com"])
    error_message = "The OIDC provider's audience is STS."
  }
}

run "service_account_follows_the_variables" {
  command = plan

  variables {
    k8s_namespace       = "ray"
    k8s_service_account = "connectome"
  }

  assert {
    condition = values(jsondecode(aws_iam_role.worker.assume_role_policy).Statement[0].Condition.StringEquals) == [
      "sts.amazonaws.com", "system:serviceaccount:ray:connectome",
    ]
    error_message = "The trust condition must name the configured namespace and service account."
  }
}

run "worker_pools_scale_to_zero" {
  command = plan

  assert {
    condition = alltrue([
      for g in [aws_eks_node_group.cpu, aws_eks_node_group.gpu] :
      g.scaling_config[0].min_size == 0 && g.scaling_config[0].desired_size == 0 && g.capacity_type == "SPOT"
    ])
    error_message = "The CPU and GPU worker node groups are spot and scale to zero."
  }

  assert {
    condition     = aws_eks_node_group.cpu.scaling_config[0].max_size == 20 && aws_eks_node_group.gpu.scaling_config[0].max_size == 4
    error_message = "Worker maxima come from cpu_max_nodes and gpu_max_nodes."
  }

  assert {
    condition = (
      aws_eks_node_group.head.capacity_type == "ON_DEMAND" && aws_eks_node_group.head.scaling_config[0].min_size == 1
    )
    error_message = "The head pool is on-demand with at least one node."
  }

  assert {
    condition = (
      aws_eks_node_group.gpu.taint == toset([{ key = "nvidia.com/gpu", value = "present", effect = "NO_SCHEDULE" }])
      && aws_eks_node_group.gpu.labels["petavox.io/pool"] == "gpu" && aws_eks_node_group.gpu.ami_type == "AL2023_x86_64_NVIDIA"
    )
    error_message = "The GPU pool has the NVIDIA AMI, the nvidia.com/gpu taint and the petavox.io/pool=gpu label."
  }

  assert {
    condition     = length(aws_eks_node_group.cpu.taint) == 0 && aws_eks_node_group.cpu.labels["petavox.io/pool"] == "cpu"
    error_message = "The CPU pool is untainted and labelled petavox.io/pool=cpu."
  }

  assert {
    condition     = aws_launch_template.node.metadata_options[0].http_put_response_hop_limit == 1 && aws_launch_template.node.metadata_options[0].http_tokens == "required"
    error_message = "Pods must not reach the node role through the instance metadata service."
  }

  assert {
    condition = (
      aws_autoscaling_group_tag.scale_from_zero["gpu k8s.io/cluster-autoscaler/node-template/label/petavox.io/pool"].tag[0].value == "gpu"
      && aws_autoscaling_group_tag.scale_from_zero["gpu k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"].tag[0].value == "present:NoSchedule"
      && aws_autoscaling_group_tag.scale_from_zero["cpu k8s.io/cluster-autoscaler/node-template/label/petavox.io/pool"].tag[0].value == "cpu"
    )
    error_message = "The Cluster Autoscaler must see the worker pools' label and taint while they have no node."
  }
}

run "registry_scans_and_expires_untagged_images" {
  command = plan

  assert {
    condition     = aws_ecr_repository.petavox.image_scanning_configuration[0].scan_on_push
    error_message = "Images are scanned on push."
  }

  assert {
    condition     = jsondecode(aws_ecr_lifecycle_policy.petavox.policy).rules[0].selection.tagStatus == "untagged"
    error_message = "The ECR lifecycle rule expires untagged images."
  }
}

run "expiry_days_must_be_positive" {
  command = plan

  variables {
    intermediate_expiry_days = 0
  }

  expect_failures = [var.intermediate_expiry_days]
}

run "api_endpoint_admits_only_the_given_cidrs" {
  command = plan

  assert {
    condition = (
      aws_eks_cluster.this.vpc_config[0].endpoint_public_access
      && aws_eks_cluster.this.vpc_config[0].public_access_cidrs == toset(["203.0.113.7/32"])
      && aws_eks_cluster.this.vpc_config[0].endpoint_private_access
    )
    error_message = "The public API endpoint admits exactly api_public_cidrs."
  }
}

run "no_api_cidrs_means_a_private_endpoint_only" {
  command = plan

  variables {
    api_public_cidrs = []
  }

  assert {
    condition = (
      !aws_eks_cluster.this.vpc_config[0].endpoint_public_access
      && aws_eks_cluster.this.vpc_config[0].endpoint_private_access
    )
    error_message = "An empty api_public_cidrs turns the public endpoint off (private endpoint only)."
  }
}

run "api_open_to_the_internet_is_refused" {
  command = plan

  variables {
    api_public_cidrs = ["203.0.113.7/32", "0.0.0.0/0"]
  }

  expect_failures = [var.api_public_cidrs]
}

run "api_cidr_must_be_a_cidr_block" {
  command = plan

  variables {
    api_public_cidrs = ["203.0.113.7"]
  }

  expect_failures = [var.api_public_cidrs]
}

run "network_policies_are_enforced" {
  command = plan

  assert {
    condition = (
      aws_eks_addon.vpc_cni.addon_name == "vpc-cni"
      && aws_eks_addon.vpc_cni.cluster_name == aws_eks_cluster.this.name
      && jsondecode(aws_eks_addon.vpc_cni.configuration_values).enableNetworkPolicy == "true"
    )
    error_message = "The VPC CNI add-on must run its network policy agent (enableNetworkPolicy)."
  }
}
