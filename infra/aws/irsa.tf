# IAM roles for Kubernetes service accounts (IRSA): the cluster's OIDC issuer is trusted by IAM,
# and each role can be assumed only by the one service account named in its trust condition.

resource "aws_iam_openid_connect_provider" "eks" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
}

locals {
  oidc_issuer = trimprefix(aws_iam_openid_connect_provider.eks.url, "https://")

  # Trust policy of a role that only system:serviceaccount:<namespace>:<name> can assume.
  irsa_trust = {
    for name, subject in {
      worker             = "system:serviceaccount:${var.k8s_namespace}:${var.k8s_service_account}"
      cluster_autoscaler = "system:serviceaccount:kube-system:cluster-autoscaler"
      } : name => jsonencode({
        Version = "2012-10-17"
        Statement = [{
          Effect    = "Allow"
          Principal = { Federated = aws_iam_openid_connect_provider.eks.arn }
          Action    = "sts:AssumeRoleWithWebIdentity"
          Condition = {
            StringEquals = {
              "${local.oidc_issuer}:sub" = subject
              "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
            }
          }
        }]
    })
  }
}

# ---- the Ray head and workers: objects of the data bucket, nothing else ------------------------
# Read, write and list; no delete: petavox never deletes an object (cloud-volume writes with
# delete_black_uploads off, markers and infos are overwritten in place, which S3 allows with
# PutObject alone), and expiry is the bucket's lifecycle rules' job, not the pods'. A pod that
# leaks its credentials can overwrite objects but versioning keeps the old ones for
# noncurrent_version_expiry_days.

resource "aws_iam_role" "worker" {
  name               = "${var.name_prefix}-worker"
  description        = "Ray pods (service account ${var.k8s_namespace}/${var.k8s_service_account}): read, write and list the data bucket."
  assume_role_policy = local.irsa_trust.worker
}

resource "aws_iam_role_policy" "worker" {
  name = "data-bucket"
  role = aws_iam_role.worker.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ListBucket"
        Effect   = "Allow"
        Action   = ["s3:ListBucket"]
        Resource = [aws_s3_bucket.data.arn]
      },
      {
        Sid      = "ReadWriteObjects"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject"]
        Resource = ["${aws_s3_bucket.data.arn}/*"]
      },
    ]
  })
}

# ---- the Kubernetes Cluster Autoscaler: resize this cluster's node groups only -----------------

resource "aws_iam_role" "cluster_autoscaler" {
  name               = "${var.name_prefix}-cluster-autoscaler"
  description        = "Cluster Autoscaler (service account kube-system/cluster-autoscaler) of EKS cluster ${local.cluster_name}."
  assume_role_policy = local.irsa_trust.cluster_autoscaler
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name = "scale-node-groups"
  role = aws_iam_role.cluster_autoscaler.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid    = "Discover"
        Effect = "Allow"
        Action = [
          "autoscaling:DescribeAutoScalingGroups",
          "autoscaling:DescribeAutoScalingInstances",
          "autoscaling:DescribeLaunchConfigurations",
          "autoscaling:DescribeScalingActivities",
          "autoscaling:DescribeTags",
          "ec2:DescribeImages",
          "ec2:DescribeInstanceTypes",
          "ec2:DescribeLaunchTemplateVersions",
          "ec2:GetInstanceTypesFromInstanceRequirements",
          "eks:DescribeNodegroup",
        ]
        Resource = ["*"]
      },
      {
        # EKS tags the auto scaling groups of its managed node groups with this key.
        Sid      = "ResizeOwnGroups"
        Effect   = "Allow"
        Action   = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]
        Resource = ["*"]
        Condition = {
          StringEquals = { "aws:ResourceTag/k8s.io/cluster-autoscaler/${local.cluster_name}" = "owned" }
        }
      },
    ]
  })
}
