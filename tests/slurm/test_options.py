"""The allow-list of SLURM options: what passes, what is refused, and what the scripts get."""

from __future__ import annotations

from typing import Any

import pytest

from services.slurm_bridge.errors import OptionRefused
from services.slurm_bridge.options import (
    ALLOWED,
    check_header,
    check_operator_options,
    check_option,
    check_options,
    request_options,
    sbatch_lines,
)

#: Values that try to add a flag, a line, or a shell word, in every way we could think of.
INJECTIONS = [
    "1 --wrap=rm", "00:10:00 --output=/etc/passwd", "1\n#SBATCH --wrap=id", "1;id", "$(id)",
    "`id`", "1|id", "1&&id", "a b", "'x'", '"x"', "1\t2", "x\\", "1\r\n", "--wrap=true",
    "", " ", "1 ", "x" * 600,
]
INJECTED_HEADERS = [
    "#SBATCH --time=1 --wrap=id", "#SBATCH --time=1\nid", "#SBATCH --wrap=id",
    "#SBATCH --output=/tmp/x", "#SBATCH -t 10", "#SBATCH --time 10", "--time=1",
    "#SBATCH --time=$(id)", "#!/bin/sh", "#SBATCH --mem=2G; rm -rf ~",
]


@pytest.mark.parametrize(("name", "value"), [
    ("time", "00:59:59"), ("time", "10"), ("time", "1-12"), ("time", "2-00:30:00"),
    ("time", "5:30"), ("time", "UNLIMITED"), ("partition", "plgrid"),
    ("partition", "plgrid,plgrid-testing"), ("account", "plgxxx-cpu"), ("mem", "2G"),
    ("mem", 4000), ("mem-per-cpu", "500M"), ("cpus-per-task", "4"), ("qos", "normal"),
    ("gres", "gpu:tesla:2"), ("gpus", "a100:1"), ("constraint", "intel&ib"),
    ("mail-type", "END,FAIL"), ("mail-user", "someone@example.org"), ("exclusive", ""),
    ("nodelist", "node[01-04]"), ("signal", "B:USR1@60"), ("comment", "run-42"),
])
def test_allowed_values_pass_unchanged(name: str, value: str | int) -> None:
    assert check_option("f", name, value) == (name, str(value))


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("name", sorted(set(ALLOWED) - {"exclusive"}))
def test_injected_values_are_refused_for_every_allowed_name(name: str, value: str) -> None:
    if name == "constraint" and value in ("1|id", "1&&id"):
        value = value.replace("1", "1 ")  # & and | are feature operators there; a space is not
    with pytest.raises(OptionRefused, match=f"not valid for SLURM option '{name}'"):
        check_option("batch_options.array_options", name, value)


@pytest.mark.parametrize("name", ["output", "error", "array", "chdir", "wrap", "export",
                                  "job-name", "dependency", "parsable", "requeue"])
def test_options_the_bridge_owns_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(OptionRefused, match="set by the bridge itself"):
        check_option("batch_options.slurm_options", name, "x")


@pytest.mark.parametrize("name", ["bogus", "TIME", "--time", "t", "time ", "time\n", "",
                                  "uid"])
def test_unknown_names_are_refused(name: str) -> None:
    with pytest.raises(OptionRefused):
        check_option("f", name, "1")


def test_refusal_names_the_field_and_lists_the_allowed_names() -> None:
    with pytest.raises(OptionRefused) as caught:
        check_options("batch_options.collect_options", {"bogus": "1"})
    text = str(caught.value)
    assert text.startswith("batch_options.collect_options: SLURM option 'bogus' is not allowed")
    assert all(name in text for name in ALLOWED)


@pytest.mark.parametrize("options", [1, True, ["x"], "time=1"])
def test_options_must_be_an_object(options: Any) -> None:
    with pytest.raises(OptionRefused, match="must be an object"):
        check_options("f", options)


def test_absent_options_are_none() -> None:
    assert check_options("f", None) == {}
    assert check_header("f", None) == check_header("f", "") == {}


@pytest.mark.parametrize("value", [True, None, ["x"], 1.5, {"a": 1}])
def test_values_must_be_text_or_integers(value: Any) -> None:
    with pytest.raises(OptionRefused, match="not valid"):
        check_options("f", {"time": value})


def test_headers_parse_into_options_and_back() -> None:
    header = "#SBATCH --mem=2G\n\n  #SBATCH --exclusive \n#SBATCH --time=00:10:00\n"
    options = check_header("h", header)
    assert options == {"mem": "2G", "exclusive": "", "time": "00:10:00"}
    assert sbatch_lines(options) == ["#SBATCH --exclusive", "#SBATCH --mem=2G",
                                     "#SBATCH --time=00:10:00"]


@pytest.mark.parametrize("header", INJECTED_HEADERS)
def test_injected_headers_are_refused(header: str) -> None:
    with pytest.raises(OptionRefused):
        check_header("batch_options.array_header", header)


def test_request_options_layer_both_jobs_then_each_job() -> None:
    array, collect = request_options({
        "slurm_options": {"partition": "plgrid", "time": "01:00:00"},
        "array_options": {"time": "00:30:00"},
        "array_header": "#SBATCH --mem=1G",
        "collect_options": {"partition": "plgrid-testing"},
    })
    assert array == {"partition": "plgrid", "time": "00:30:00", "mem": "1G"}
    assert collect == {"partition": "plgrid-testing", "time": "01:00:00"}


@pytest.mark.parametrize("field", ["slurm_options", "array_options", "collect_options"])
def test_request_options_check_every_options_field(field: str) -> None:
    with pytest.raises(OptionRefused, match=f"batch_options.{field}"):
        request_options({field: {"time": "1 --wrap=id"}})


@pytest.mark.parametrize("field", ["array_header", "collect_header"])
def test_request_options_check_every_header_field(field: str) -> None:
    with pytest.raises(OptionRefused, match=f"batch_options.{field}"):
        request_options({field: "#SBATCH --wrap=id"})


def test_operator_options_are_checked_for_shape_only() -> None:
    check_operator_options("c", "array_options", {"partition": "debug", "reservation": "r1",
                                                  "exclusive": "", "mem": "4G"})
    for bad in ({"output": "/x"}, {"Time": "1"}, {"time": "1 2"}, {"time": "$(id)"}):
        with pytest.raises(ValueError, match="cluster 'c'"):
            check_operator_options("c", "array_options", bad)
