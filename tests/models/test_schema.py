"""Device-model schema and loading: errors name the file, the point and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import catalog
from models.errors import ConfigError

GOOD = """
id = "meter-test"
kind = "meter"
protocol = "modbus"
description = "test meter"

[[points]]
name = "active_power"
unit = "W"
register = "input"
address = 52
type = "float32"
order = "ABCD"

[[points]]
name = "import_energy"
unit = "kWh"
register = "input"
address = 72
type = "float32"
counter = true
"""


def write(tmp_path: Path, text: str, name: str = "model.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_model_loads_by_path(tmp_path: Path) -> None:
    model = catalog.load(str(write(tmp_path, GOOD)))
    assert model.id == "meter-test"
    assert model.point("import_energy").counter
    assert model.point("active_power").registers == 2


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("address = 72", "address = 72\nbogus = 1"), "points[1] (import_energy).bogus: unknown key"),
        (("address = 52", "address = 70000"), "points[0] (active_power).address"),
        (('unit = "W"', 'unit = "Watts"'), "points[0] (active_power).unit: unknown unit 'Watts'"),
        (('type = "float32"\norder', 'type = "float33"\norder'), "points[0] (active_power).type"),
        (('order = "ABCD"', 'order = "ABDC"'), "points[0] (active_power).order"),
        (('name = "active_power"', 'name = "ActivePower"'), "not snake_case"),
        (
            ('protocol = "modbus"', 'protocol = "snmp"'),
            "point 'active_power': 'register' belongs to modbus points, not snmp",
        ),
        (('kind = "meter"', 'kind = "toaster"'), "kind"),
        (('name = "import_energy"', 'name = "active_power"'), "'active_power' is defined twice"),
    ],
)
def test_errors_name_file_point_and_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = write(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ConfigError) as err:
        catalog.load(str(path))
    text = str(err.value)
    assert str(path) in text
    assert expected in text


def test_writable_limits_checked(tmp_path: Path) -> None:
    text = GOOD.replace("address = 52", "address = 52\nwritable = { min = 10, max = 5 }")
    text = text.replace('register = "input"\naddress = 52', 'register = "holding"\naddress = 52')
    with pytest.raises(ConfigError, match=r"min .* is greater than max"):
        catalog.load(str(write(tmp_path, text)))


def test_writable_on_input_register_refused(tmp_path: Path) -> None:
    text = GOOD.replace("address = 52", "address = 52\nwritable = { min = 0, max = 5 }")
    with pytest.raises(ConfigError, match="input registers cannot be written"):
        catalog.load(str(write(tmp_path, text)))


def test_bacnet_priorities_one_to_seven_refused(tmp_path: Path) -> None:
    text = """
id = "chiller-x"
kind = "chiller"
protocol = "bacnet"
[[points]]
name = "setpoint"
unit = "degC"
object = "analog-value:1"
writable = { min = 7, max = 16, max_step = 1, priority = 5 }
"""
    with pytest.raises(ConfigError, match=r"points\[0\] \(setpoint\)\.writable\.priority"):
        catalog.load(str(write(tmp_path, text)))


def test_broken_toml_names_file(tmp_path: Path) -> None:
    path = write(tmp_path, "id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        catalog.load(str(path))


def test_unknown_catalog_id_lists_catalog() -> None:
    with pytest.raises(ConfigError, match="no catalog model 'no-such-model'"):
        catalog.load("no-such-model")


def test_every_catalog_model_is_valid() -> None:
    for model_id in catalog.catalog_ids():
        model = catalog.load(model_id)
        assert model.id == model_id
