import pyarrow as pa
import pytest

from sensorlake.lake.schema import TypeConflict, build_column, coerce, infer_type, merge_types


def test_numbers_are_double_and_objects_structs() -> None:
    assert infer_type(3) == pa.float64()
    expected = pa.struct([("value", pa.float64()), ("q", pa.string())])
    assert infer_type({"value": 1, "q": "5"}) == expected
    assert infer_type([1, 2.5]) == pa.list_(pa.float64())
    assert infer_type(None) is None
    assert infer_type([]) is None
    assert infer_type({}) is None


def test_merge_adds_struct_fields_and_keeps_the_old_type_on_conflict() -> None:
    old = pa.struct([("value", pa.float64())])
    new = pa.struct([("value", pa.string()), ("quality", pa.string())])
    assert merge_types(old, new) == pa.struct([("value", pa.float64()), ("quality", pa.string())])
    assert merge_types(pa.float64(), pa.string()) == pa.float64()


def test_numeric_strings_read_as_numbers_others_conflict() -> None:
    assert coerce("400", pa.float64(), "t") == 400.0
    assert coerce(" 1e3 ", pa.float64(), "t") == 1000.0
    with pytest.raises(TypeConflict, match="field 't': cannot read \"hot\" as double"):
        coerce("hot", pa.float64(), "t")
    with pytest.raises(TypeConflict):
        coerce(True, pa.float64(), "t")
    with pytest.raises(TypeConflict, match=r"air\.value"):
        coerce({"value": "x"}, pa.struct([("value", pa.float64())]), "air")


def test_build_column_reports_only_the_conflicting_rows() -> None:
    array, bad = build_column([1, "2", "hot", None, True], pa.float64(), "t")
    assert array.to_pylist() == [1.0, 2.0, None, None, None]
    assert sorted(bad) == [2, 4]
