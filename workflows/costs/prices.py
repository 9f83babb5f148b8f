"""Cloud prices the plan's dollars come from: dated defaults a run config may override.

The defaults, dated `DATE`, are the published list prices of these pages for the instance
types the Terraform in `infra/` starts (us-east-1 and us-central1). The request and storage
prices were checked against copies of the S3 and Cloud Storage pages on that date; the
instance prices are the long-standing list prices, not re-read online when they were written
down: look them up (and the day's spot prices) before relying on a figure, and override.

- compute, on demand: aws.amazon.com/ec2/pricing/on-demand/ (m6i.2xlarge $0.384/h for 8 vCPUs,
  the CPU pool; g4dn.xlarge $0.526/h, one T4, the GPU pool) and
  cloud.google.com/compute/vm-instance-pricing (n2-standard-8 $0.3885/h; n1-standard-4
  $0.19/h plus one T4 $0.35/h, cloud.google.com/compute/gpus-pricing);
- compute, spot: both change daily (aws.amazon.com/ec2/spot/pricing/,
  cloud.google.com/spot-vms/pricing); taken as one third of on demand, as infra/README.md
  says they typically cost (a third or less);
- requests and storage: aws.amazon.com/s3/pricing/ (S3 Standard: PUT, COPY, POST, LIST
  $0.005 per 1,000; GET $0.0004 per 1,000; $0.023 per GB-month, first 50 TB) and
  cloud.google.com/storage/pricing (Standard, us-central1: Class A, inserts and lists, $0.005
  per 1,000; Class B, gets, $0.0004 per 1,000; $0.020 per GB-month).

A "core-hour" is a vCPU-hour (what the benchmarks call a core: a VM's CPU); a "GPU-hour" is an
hour of a one-GPU node. GB is 2^30 bytes. Override any figure in the run config::

    prices:
      date: 2027-01-10          # say when you looked them up
      aws: {cpu_spot: 0.021, storage_gb_month: 0.021}
      gcp: {gpu_on_demand: 0.70}
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, create_model

from petavox.workflows.params import Strict

DATE = "2026-12-05"


class ProviderPrices(Strict):
    """One cloud's prices in US dollars."""

    cpu_spot: float = Field(ge=0, description="per core-hour (vCPU-hour), spot")
    cpu_on_demand: float = Field(ge=0, description="per core-hour (vCPU-hour), on demand")
    gpu_spot: float = Field(ge=0, description="per GPU-hour (a one-GPU node), spot")
    gpu_on_demand: float = Field(ge=0, description="per GPU-hour (a one-GPU node), on demand")
    put_per_1000: float = Field(ge=0, description="per 1,000 PUT (class A) requests")
    get_per_1000: float = Field(ge=0, description="per 1,000 GET (class B) requests")
    list_per_1000: float = Field(ge=0, description="per 1,000 LIST (class A) requests")
    storage_gb_month: float = Field(ge=0, description="per GB (2^30 bytes) stored a month")


class Prices(Strict):
    date: str
    aws: ProviderPrices
    gcp: ProviderPrices

    def providers(self) -> dict[str, ProviderPrices]:
        return {"aws": self.aws, "gcp": self.gcp}


#: the defaults, in the order of `ProviderPrices`' fields: cpu_spot, cpu_on_demand, gpu_spot,
#: gpu_on_demand, put_per_1000, get_per_1000, list_per_1000, storage_gb_month
_TABLE = {
    "aws": (0.016, 0.048, 0.175, 0.526, 0.005, 0.0004, 0.005, 0.023),
    "gcp": (0.0162, 0.0486, 0.18, 0.54, 0.005, 0.0004, 0.005, 0.020),
}
DEFAULT = Prices(
    date=DATE,
    **{
        name: ProviderPrices(**dict(zip(ProviderPrices.model_fields, row)))
        for name, row in _TABLE.items()
    },
)

#: `ProviderPrices` with every field optional: what the config may override
ProviderOverride = create_model(  # type: ignore[call-overload]
    "ProviderOverride",
    __base__=Strict,
    **{
        name: (float | None, Field(None, ge=0, description=f.description))
        for name, f in ProviderPrices.model_fields.items()
    },
)


class PriceOverrides(Strict):
    """The config's `prices:` section: any default price replaced (runtime context, never part
    of a stage's identity)."""

    date: str | None = Field(None, description="when the prices given were looked up")
    aws: ProviderOverride = Field(default_factory=ProviderOverride)  # type: ignore[valid-type]
    gcp: ProviderOverride = Field(default_factory=ProviderOverride)  # type: ignore[valid-type]

    def apply(self, base: Prices = DEFAULT) -> Prices:
        """`base` with the prices given here."""
        update: dict[str, Any] = {}
        for name in ("aws", "gcp"):
            given = getattr(self, name).model_dump(exclude_none=True)
            update[name] = getattr(base, name).model_copy(update=given)
        if self.date or any(getattr(self, n).model_dump(exclude_none=True) for n in ("aws", "gcp")):
            update["date"] = f"{base.date}, overridden by the config" + (
                f" ({self.date})" if self.date else ""
            )
        return base.model_copy(update=update)


def dollars(prices: ProviderPrices, totals: Any) -> dict[str, float]:
    """Compute (spot and on demand), requests and storage a month of a run's `totals`."""
    requests = (
        totals.puts * prices.put_per_1000
        + totals.gets * prices.get_per_1000
        + totals.lists * prices.list_per_1000
    ) / 1000
    return {
        "compute_spot": totals.core_hours * prices.cpu_spot + totals.gpu_hours * prices.gpu_spot,
        "compute_on_demand": totals.core_hours * prices.cpu_on_demand
        + totals.gpu_hours * prices.gpu_on_demand,
        "requests": requests,
        "storage_per_month": totals.stored_bytes / 2**30 * prices.storage_gb_month,
    }
