"""Any bytes into ``data prepare``: a valid store or a one-line error naming the file, never a
traceback and never a partial store (the inputs and the check: tests/fuzz_inputs.py; the
10,000-input run and its figures: benchmarks/fuzz_readers.py, docs/reliability.md)."""

import gzip

import pytest
from fuzz_inputs import FORMATS, TEXT_FORMATS, check_outcome, check_prepared, make_input
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("skip_bad_rows", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_inputs_give_a_store_or_a_clear_error(fmt, skip_bad_rows, tmp_path):
    outcomes = set()
    for seed in range(60):
        data, gzipped = make_input(fmt, seed)
        work = tmp_path / str(seed)
        outcomes.add(check_outcome(fmt, data, gzipped, work, skip_bad_rows=skip_bad_rows))
    assert outcomes == {"store", "error"}  # both kinds of input were met


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=300), gzipped=st.booleans())
def test_arbitrary_bytes_give_a_store_or_a_clear_error(fmt, data, gzipped, tmp_path_factory):
    gzipped = gzipped and fmt in TEXT_FORMATS
    if gzipped:
        data = gzip.compress(data)
    check_outcome(fmt, data, gzipped, tmp_path_factory.mktemp("bytes"))


@pytest.mark.parametrize(
    "fmt, seed",
    [
        ("movielens", 20),  # every row bad: the error did not name the file
        ("movielens", 124),  # a corrupt gzip stream: zlib.error
        ("recbole", 29),  # the same, in the header line
        ("amazon", 5),  # a number too long for Python's int
        ("amazon", 14),  # bad UTF-8 let into an id by pyarrow's JSON reader
        ("csv", 3),  # a lone CR in the header: csv.Error
        ("csv", 5),  # a field over the csv module's size limit
        ("parquet", 7),  # a nested time column: the error did not name the file
        ("parquet", 13),  # a nested id column: ArrowNotImplementedError
        ("parquet", 20),  # a damaged page: OSError from pyarrow
        ("parquet", 76),  # corrupt snappy data
    ],
)
def test_the_inputs_that_once_gave_a_traceback(fmt, seed, tmp_path):
    data, gzipped = make_input(fmt, seed)
    assert check_outcome(fmt, data, gzipped, tmp_path) in {"store", "error"}


@pytest.mark.parametrize("skip_bad_rows", [False, True])
def test_tfds_datasets_with_random_features_and_damage_give_a_store_or_a_clear_error(
    skip_bad_rows, tmp_path
):
    from fuzz_tfds import make_tfds_input

    outcomes = set()
    for seed in range(40):
        work = tmp_path / str(seed)
        work.mkdir()
        dataset, options = make_tfds_input(seed, work)
        outcomes.add(check_prepared(dataset, "tfds", work, options, skip_bad_rows=skip_bad_rows))
    assert outcomes == {"store", "error"}
