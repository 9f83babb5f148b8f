"""The classifier's features, derived from a morphology table's columns (`morphology.table`):
scale-free shape figures and logs of sizes, so a model trained at one resolution or volume
size applies to another. NaN stays NaN (the forest treats it as missing)."""

from __future__ import annotations

import numpy as np

Table = dict[str, np.ndarray]

FEATURES = (
    "log_volume",  # log10 µm³
    "sphericity",  # π^(1/3) (6V)^(2/3) / A: 1 for a ball, small for sheets and thin tubes
    "surface_per_volume",  # A / V (1/µm)
    "elongation",
    "flatness",
    "intensity_mean",
    "intensity_std",
    "texture",
    "log_cable",  # log10 (1 + cable in µm)
    "branch_points",
    "end_points",
    "log_max_radius",  # log10 of the widest inscribed radius (nm)
    "radius_ratio",  # widest radius / the mean radius of a tube of that volume and cable
    "thick_fraction",  # of the cable, at least half the widest radius: small for a soma's cell
    "skeleton_alignment",
    "log_synapses",  # log10 (1 + synapses in + out)
    "synapse_density",  # synapses per µm of cable
)

#: the morphology inputs each feature needs (see the morphology stage's `TABLE_INPUTS`)
NEEDS = {
    "intensity_mean": "image",
    "intensity_std": "image",
    "texture": "image",
    "log_cable": "skeletons",
    "branch_points": "skeletons",
    "end_points": "skeletons",
    "log_max_radius": "skeletons",
    "radius_ratio": "skeletons",
    "thick_fraction": "skeletons",
    "skeleton_alignment": "skeletons",
    "log_synapses": "connectome",
    "synapse_density": "connectome",
}


def feature_matrix(table: Table) -> np.ndarray:
    """(rows, len(FEATURES)) float64 from a morphology table."""
    with np.errstate(divide="ignore", invalid="ignore"):
        volume = np.asarray(table["volume_um3"], np.float64)
        area = np.asarray(table["surface_um2"], np.float64)
        cable_um = np.asarray(table["cable_nm"], np.float64) / 1000
        radius = np.asarray(table["max_radius_nm"], np.float64)
        synapses = np.asarray(table["synapses_in"], np.float64) + table["synapses_out"]
        tube_radius_nm = np.sqrt(volume / (np.pi * cable_um)) * 1000
        columns = {
            "log_volume": np.log10(volume),
            "sphericity": np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
            "surface_per_volume": area / volume,
            "elongation": table["elongation"],
            "flatness": table["flatness"],
            "intensity_mean": table["intensity_mean"],
            "intensity_std": table["intensity_std"],
            "texture": table["texture"],
            "log_cable": np.log10(1 + cable_um),
            "branch_points": table["branch_points"],
            "end_points": table["end_points"],
            "log_max_radius": np.log10(radius),
            "radius_ratio": radius / tube_radius_nm,
            "thick_fraction": table["thick_fraction"],
            "skeleton_alignment": table["skeleton_alignment"],
            "log_synapses": np.log10(1 + synapses),
            "synapse_density": synapses / cable_um,
        }
    x = np.column_stack([np.asarray(columns[f], np.float64) for f in FEATURES])
    x[~np.isfinite(x) & ~np.isnan(x)] = np.nan  # a ratio over 0: not a value to learn from
    return x
