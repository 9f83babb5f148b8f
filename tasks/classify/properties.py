"""Neuroglancer's segment properties (the precomputed ``segment_properties`` info): per segment,
a label (class and probability), the class as a tag (the viewer's segment list filters by
``#class``) and numbers (probability, size, shape) it can sort and filter by.

The format holds every id inline in one JSON file, so `min_voxels` leaves small segments out
at scale; a NaN number (no skeleton, no image) is written as 0, JSON having no NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: morphology columns shown as numbers when the table has them
NUMBERS = ("volume_um3", "surface_um2", "cable_nm", "max_radius_nm", "synapses_in", "synapses_out")


def segment_properties(
    ids: np.ndarray,
    classes: Sequence[str],
    label: np.ndarray,
    probability: np.ndarray,
    numbers: Mapping[str, np.ndarray],
) -> dict:
    """The info of a segment_properties folder; `label` holds indices into `classes`."""
    label = np.asarray(label, np.int64)
    properties: list[dict] = [
        {
            "id": "label",
            "type": "label",
            "values": [f"{classes[c]} {p:.2f}" for c, p in zip(label.tolist(), probability)],
        },
        {
            "id": "class",
            "type": "tags",
            "tags": list(classes),
            "values": [[c] for c in label.tolist()],
        },
        _number("probability", probability),
    ]
    properties += [_number(name, values) for name, values in numbers.items()]
    return {
        "@type": "neuroglancer_segment_properties",
        "inline": {"ids": [str(int(i)) for i in ids], "properties": properties},
    }


def _number(name: str, values: np.ndarray) -> dict:
    values = np.nan_to_num(np.asarray(values, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return {"id": name, "type": "number", "data_type": "float32", "values": values.tolist()}
