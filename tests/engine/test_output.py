"""The estimator JSON the engine writes: YAPTIDE's estimator/page shape, Fortran order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.engine.helpers import beam, estimator, files, run_in_process

DETECT = """Geometry Mesh
    Name YZ
    X -0.5 0.5 1
    Y -2 2 8
    Z 0 10 50
Filter
    Name Fast
    E > 50
Output
    Filename yz.bdo
    Geo YZ
    Quantity Dose
    Quantity DoseGy
    Quantity dLET
    Quantity Fluence Fast
Geometry Cyl
    Name Entrance
    R 0 3 1
    Z 0 0.5 1
Output
    Filename entrance.bdo
    Geo Entrance
    Quantity Energy
    Quantity AvgEnergy
    Quantity tLET
"""


def test_estimator_pages(tmp_path: Path) -> None:
    run_in_process(files(beam(100.0, 500), DETECT), tmp_path, seed=2)
    yz = estimator(tmp_path, "yz")
    assert yz["name"] == "yz"
    assert all(isinstance(v, str) for v in yz["metadata"].values())
    assert yz["metadata"]["number_of_primaries"] == "500"
    assert yz["metadata"]["geotyp"] == "MSH" and yz["metadata"]["page_count"] == "4"
    dose, gray, let, fast = yz["pages"]
    assert dose["dimensions"] == 2
    assert dose["axis_dim1"]["name"] == "Position (Y)" and len(dose["axis_dim1"]["values"]) == 8
    assert dose["axis_dim2"]["name"] == "Position (Z)" and len(dose["axis_dim2"]["values"]) == 50
    assert dose["data"]["name"] == "DOSE" and dose["data"]["unit"] == "MeV/g/prim"
    assert all(isinstance(v, str) for v in dose["metadata"].values())
    assert dose["metadata"]["page_number"] == "0" and dose["metadata"]["detector_type"] == "5"
    values = np.asarray(dose["data"]["values"]).reshape((8, 50), order="F")  # (Y, Z)
    assert values[:, :].sum(axis=1)[3:5].sum() > 0.9 * values.sum()  # on the axis in Y
    depth = np.asarray(dose["axis_dim2"]["values"])
    assert abs(depth[np.argmax(values.sum(axis=0))] - 7.6) < 0.4  # Bragg peak in Z
    assert np.allclose(np.asarray(gray["data"]["values"]),
                       np.asarray(dose["data"]["values"]) * 1.602176634e-10)
    assert len(dose["data"]["error"]) == 400
    assert "error" not in let["data"] and let["metadata"]["page_normalized"] == "3"
    let_values = np.asarray(let["data"]["values"]).reshape((8, 50), order="F")
    assert let_values[3, 0] > 5 and let_values[3, 0] < 9  # ~7.3 MeV/cm at 100 MeV
    # The filter E > 50 MeV keeps fluence only where protons are still fast.
    fluence = np.asarray(fast["data"]["values"]).reshape((8, 50), order="F")
    assert fast["metadata"]["page_filter_name"] == "Fast"
    assert fluence[:, depth > 6.0].sum() == 0 and fluence[:, depth < 2.0].sum() > 0
    entrance = estimator(tmp_path, "entrance")
    energy, average, tlet = entrance["pages"]
    assert energy["dimensions"] == 0 and "axis_dim1" not in energy
    assert 0.4 * 7.3 < energy["data"]["values"][0] < 0.6 * 7.3  # 0.5 cm at ~7.3 MeV/cm
    assert 98 < average["data"]["values"][0] < 100 and average["data"]["unit"] == "MeV/nucl"
    assert 7.0 < tlet["data"]["values"][0] < 7.6
