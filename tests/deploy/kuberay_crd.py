"""JSON schemas of KubeRay's RayCluster and RayJob (ray.io/v1), written from the published CRD
and its Go types (ray-operator/apis/ray/v1/raycluster_types.go, rayjob_types.go, KubeRay 1.3,
plus the RayCluster's `authOptions` of KubeRay 1.6: mode, secretName, enableK8sTokenAuth):
field names, types, enums and required fields, with unknown fields rejected (the API server
would silently prune them). Pod templates are only typed as objects here; the tests validate
them against Kubernetes' own PodTemplateSpec schema."""

from __future__ import annotations

from typing import Any

INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
QUANTITY_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?\d+)?$"
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": QUANTITY_PATTERN}]}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "object", "additionalProperties": QUANTITY},
        "requests": {"type": "object", "additionalProperties": QUANTITY},
    },
}
POD_TEMPLATE = {"type": "object"}  # validated as a Kubernetes PodTemplateSpec elsewhere
LIST_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema with only these properties."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


AUTOSCALER_OPTIONS = closed(
    {
        "resources": RESOURCES,
        "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "securityContext": {"type": "object"},
        "idleTimeoutSeconds": INT32,
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "env": LIST_OF_OBJECTS,
        "envFrom": LIST_OF_OBJECTS,
        "volumeMounts": LIST_OF_OBJECTS,
    }
)

HEAD_GROUP_SPEC = closed(
    {
        "template": POD_TEMPLATE,
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "rayStartParams": STRING_MAP,
        "serviceType": {"type": "string"},
    },
    required=("template", "rayStartParams"),
)

WORKER_GROUP_SPEC = closed(
    {
        "suspend": {"type": "boolean"},
        "groupName": {"type": "string", "minLength": 1},
        "replicas": INT32,
        "minReplicas": INT32,
        "maxReplicas": INT32,
        "idleTimeoutSeconds": INT32,
        "rayStartParams": STRING_MAP,
        "template": POD_TEMPLATE,
        "scaleStrategy": closed(
            {"workersToDelete": {"type": "array", "items": {"type": "string"}}}
        ),
        "numOfHosts": INT32,
    },
    required=("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"),
)

AUTH_OPTIONS = closed(
    {
        "mode": {"enum": ["disabled", "token"]},
        "secretName": {"type": "string", "minLength": 1},
        "enableK8sTokenAuth": {"type": "boolean"},
    }
)

RAY_CLUSTER_SPEC = closed(
    {
        "suspend": {"type": "boolean"},
        "authOptions": AUTH_OPTIONS,
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "autoscalerOptions": AUTOSCALER_OPTIONS,
        "headServiceAnnotations": STRING_MAP,
        "enableInTreeAutoscaling": {"type": "boolean"},
        "gcsFaultToleranceOptions": {"type": "object"},
        "headGroupSpec": HEAD_GROUP_SPEC,
        "rayVersion": {"type": "string"},
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP_SPEC},
    },
    required=("headGroupSpec",),
)

RAY_JOB_SPEC = closed(
    {
        "activeDeadlineSeconds": INT32,
        "backoffLimit": INT32,
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": POD_TEMPLATE,
        "metadata": STRING_MAP,
        "clusterSelector": STRING_MAP,
        "submitterConfig": closed({"backoffLimit": INT32}),
        "managedBy": {"enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"]},
        "deletionPolicy": {"enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"]},
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "ttlSecondsAfterFinished": INT32,
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
    }
)

METADATA = closed(
    {
        "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    required=("name",),
)


def resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of a whole ray.io/v1 object of `kind`."""
    return closed(
        {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        required=("apiVersion", "kind", "metadata", "spec"),
    )


SCHEMAS = {
    "RayCluster": resource("RayCluster", RAY_CLUSTER_SPEC),
    "RayJob": resource("RayJob", RAY_JOB_SPEC),
}
