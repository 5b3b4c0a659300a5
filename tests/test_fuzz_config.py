"""Random config documents, ``--set`` overrides and sweep specs: a valid config (or spec) or a
ConfigError-family error, never another exception."""

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from srt_jax.config import flat_dict, load_config, to_dict
from srt_jax.errors import SrtJaxError
from srt_jax.sweep.spec import load_spec

KEYS = sorted(flat_dict(to_dict(load_config(None, ["train.optimizer=prodigy"]))))
KEYS += ["model.mamba.d_state", "train.usgm.epsilon", "train.orpo.weight", "nosuch.key", "data"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["mamba", "orpo", "usgm", "synthetic", "sliding", "1e-3", "null", "[1, 2]"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def nested(assignments: dict) -> dict:
    """``{"a.b": v}`` as ``{"a": {"b": v}}`` (a later key wins over a clashing earlier one)."""
    tree: dict = {}
    for dotted, value in assignments.items():
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return tree


def loads_or_refuses(load) -> None:
    try:
        load()
    except SrtJaxError as err:
        assert str(err).strip() and "Traceback" not in str(err)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
@example({"data.max_len": float("inf")})  # once an OverflowError (int of infinity)
def test_random_config_documents(tmp_path_factory, assignments):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(nested(assignments)))
    loads_or_refuses(lambda: load_config(path))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_as_a_config(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loads_or_refuses(lambda: load_config(path))


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(KEYS) | st.text(max_size=10), st.text(max_size=10) | SCALARS.map(str)
        ),
        max_size=4,
    )
)
def test_random_overrides(overrides):
    loads_or_refuses(lambda: load_config(None, [f"{key}={value}" for key, value in overrides]))


SPEC_KEYS = [
    "name",
    "config",
    "grid",
    "shapes",
    "isoflop",
    "isoflop.budgets",
    "isoflop.evals_per_run",
]
SPEC_KEYS += [
    "isoflop.tokens_per_param",
    "grid.model.d_model",
    "config.model.d_model",
    "seeds",
    "x",
]


@SETTINGS
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), VALUES, max_size=5))
def test_random_sweep_specs(tmp_path_factory, assignments):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(yaml.safe_dump(nested(assignments)))
    loads_or_refuses(lambda: load_spec(path))
