"""Save/load round trip and every documented failure mode."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxstars.flows import Flow, maf
from jaxstars.flows.io import FlowFileError, load_flow, save_flow


@pytest.fixture
def saved(tmp_path):
    flow = Flow(maf(3, 2, 8, context_dim=1))
    params = flow.init(jax.random.PRNGKey(0))
    path = tmp_path / "flow.npz"
    save_flow(path, flow, params, metadata={"bands": ["G", "BP", "RP"]})
    return flow, params, path


def test_round_trip_is_exact(saved):
    flow, params, path = saved
    flow2, params2, meta = load_flow(path)
    assert flow2 == flow
    assert meta == {"bands": ["G", "BP", "RP"]}
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    c = jnp.ones((4, 1))
    np.testing.assert_array_equal(np.asarray(flow.log_prob(params, x, c)), np.asarray(flow2.log_prob(params2, x, c)))


def test_ensemble_round_trip(tmp_path):
    flow = Flow(maf(2, 2, 8))
    params = jax.vmap(flow.init)(jax.random.split(jax.random.PRNGKey(0), 3))
    save_flow(tmp_path / "ens.npz", flow, params, members=3)
    _, params2, _ = load_flow(tmp_path / "ens.npz")
    assert jax.tree_util.tree_leaves(params2)[0].shape[0] == 3


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no flow file"):
        load_flow(tmp_path / "nope.npz")


def test_truncated_file(saved):
    _, _, path = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlowFileError, match="corrupt"):
        load_flow(path)


def test_bit_flipped_array(saved):
    _, _, path = saved
    data = bytearray(path.read_bytes())
    # flip bytes inside the stored data of the first array (after its local zip header)
    start = data.index(b"leaf_00000.npy") + 200
    for i in range(start, start + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FlowFileError):
        load_flow(path)


def _rewrite(path, mutate_header=None, mutate_arrays=None):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(bytes(arrays["__jaxstars__"]).decode())
    if mutate_header:
        mutate_header(header)
    if mutate_arrays:
        mutate_arrays(arrays)
    arrays["__jaxstars__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)


def test_incompatible_version(saved):
    _, _, path = saved
    _rewrite(path, mutate_header=lambda h: h.update(version=99))
    with pytest.raises(FlowFileError, match="version 99"):
        load_flow(path)


def test_not_a_flow_file(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FlowFileError, match="not a jaxstars flow file"):
        load_flow(tmp_path / "other.npz")


def test_wrong_shape_names_the_parameter(saved):
    _, _, path = saved
    _rewrite(path, mutate_arrays=lambda a: a.update(leaf_00000=np.zeros((7, 7), np.float32)))
    with pytest.raises(FlowFileError, match="shape"):
        load_flow(path)


def test_nan_array(saved):
    _, _, path = saved

    def poison(arrays):
        bad = arrays["leaf_00001"].copy()
        bad.flat[0] = np.nan
        arrays["leaf_00001"] = bad

    _rewrite(path, mutate_arrays=poison)
    with pytest.raises(FlowFileError, match="NaN"):
        load_flow(path)


def test_unknown_bijector_type(saved):
    _, _, path = saved
    _rewrite(path, mutate_header=lambda h: h["bijector"].update(type="NoSuchLayer"))
    with pytest.raises(FlowFileError, match="NoSuchLayer"):
        load_flow(path)


def test_save_refuses_params_that_do_not_match_the_spec(tmp_path):
    params3 = Flow(maf(3, 2, 8)).init(jax.random.PRNGKey(0))
    with pytest.raises(FlowFileError, match="shape"):
        save_flow(tmp_path / "bad.npz", Flow(maf(2, 2, 8)), params3)
    assert not (tmp_path / "bad.npz").exists()


def test_malformed_header_and_integer_arrays(saved):
    _, _, path = saved
    _rewrite(path, mutate_header=lambda h: h.pop("bijector"))
    with pytest.raises(FlowFileError, match="spec"):
        load_flow(path)


def test_integer_arrays_rejected(tmp_path, saved):
    _, _, path = saved
    _rewrite(path, mutate_arrays=lambda a: a.update(leaf_00001=a["leaf_00001"].astype(np.int32)))
    with pytest.raises(FlowFileError, match="dtype"):
        load_flow(path)
