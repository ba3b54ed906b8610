"""Specs and cases: defaults, reproducibility, and a clear error for every kind of bad input."""

import json

import numpy as np
import pytest

import revlearn
from revlearn import InputError, make_case

from conftest import small_spec


def test_make_case_fills_defaults_and_is_reproducible():
    spec = dict(layer_sizes=[4, 5, 3], n_iters=7, batch_size=16, alpha=0.1, gamma=0.9,
                init_scale=0.2)
    a, b = make_case(spec), make_case(spec)
    assert a.spec["activation"] == "tanh" and a.spec["dataset"] == "synthetic"
    assert a.spec["l2"] == 0.0 and a.spec["seed"] == 0
    json.dumps(a.spec)  # the completed spec is plain JSON
    for key in ("X_train", "y_train", "X_valid", "y_valid", "batches", "eps", "alpha", "gamma"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.X_train.shape == (1000, 4) and a.batches.shape == (7, 16)
    assert a.alpha.shape == a.gamma.shape == (7, 4) and a.init_scale.shape == a.l2.shape == (4,)
    c = make_case(dict(spec, seed=1))
    assert not np.array_equal(a.eps, c.eps) and not np.array_equal(a.batches, c.batches)


def test_gamma_is_stored_quantised():
    case = make_case(small_spec(gamma=0.9))
    assert np.all(case.gamma == 58982 / 65536)


def test_batches_are_epochs_of_permutations():
    case = make_case(small_spec(n_train=30, batch_size=10, n_iters=7))
    epoch = case.batches[:3].ravel()
    assert sorted(epoch) == list(range(30))
    assert sorted(case.batches[3:6].ravel()) == list(range(30))


def test_synthetic_problem_is_learnable():
    case = make_case(dict(layer_sizes=[10, 20, 4], n_iters=200, batch_size=50, alpha=0.5,
                          gamma=0.9, init_scale=0.3))
    res = revlearn.hypergradient(case)
    assert res.valid_loss < 0.6 * np.log(4)


def test_npz_dataset(tmp_path, rng):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=rng.normal(size=(30, 4)), y_train=rng.integers(0, 3, 30),
             X_valid=rng.normal(size=(20, 4)), y_valid=rng.integers(0, 3, 20))
    case = make_case(small_spec(layer_sizes=[4, 5, 3], dataset=str(path), n_train=None,
                                n_valid=10, batch_size=5, n_iters=3))
    assert len(case.X_train) == 30 and len(case.X_valid) == 10


def test_case_replace_checks_again(small_case):
    with pytest.raises(InputError, match="gamma"):
        small_case.replace(gamma=np.full_like(small_case.gamma, 1.5))


# --- bad specs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (dict(learning_rate=0.1), "unknown spec key.*'learning_rate'"),
    (dict(n_iters="10"), "'n_iters' must be a positive integer; received str \"10\""),
    (dict(n_iters=0), "'n_iters' must be a positive integer"),
    (dict(batch_size=True), "'batch_size' must be a positive integer"),
    (dict(layer_sizes=[6]), "at least an input and an output"),
    (dict(layer_sizes=[6, 0, 3]), "'layer_sizes' must be a list of positive integers"),
    (dict(layer_sizes=[6, 8, 1]), "softmax needs K >= 2"),
    (dict(alpha="fast"), "'alpha' must be a number or an array"),
    (dict(l2_per_weight=1), "'l2_per_weight' must be true or false"),
    (dict(activation="sigmoid"), "unknown activation 'sigmoid'.*'tanh', 'relu'"),
    (dict(dataset="cifar"), "unknown dataset 'cifar'; use one of synthetic, mnist, PATH.npz"),
    (dict(dataset="/nonexistent/d.npz"), "does not exist"),
    (dict(batch_size=61), "batch_size 61 is larger than the 60 training rows"),
    (dict(n_train=10**9, layer_sizes=[10**3, 3]), "GiB"),
])
def test_bad_spec_is_refused_before_any_work(change, message):
    with pytest.raises(InputError, match=message):
        make_case(small_spec(**change))


def test_spec_must_be_a_dict():
    with pytest.raises(InputError, match="received list"):
        make_case([1, 2])


def test_missing_required_key():
    spec = small_spec()
    del spec["alpha"]
    with pytest.raises(InputError, match="the spec needs 'alpha'"):
        make_case(spec)


# --- bad hyperparameters -----------------------------------------------------------------------

@pytest.mark.parametrize("gamma", [1.5, 0.0, 2.0**-17, float("nan"), -0.5])
def test_gamma_outside_range_or_nan(gamma):
    spec = small_spec(gamma=[[0.9] * 6] * 23 + [[0.9] * 5 + [gamma]])
    with pytest.raises(InputError, match=r"gamma\[23, 5\] = .* outside \[2\*\*-16, 1\]"):
        make_case(spec)


@pytest.mark.parametrize("alpha, message", [(-0.1, "negative"), (float("inf"), "NaN or infinite"),
                                             (float("nan"), "NaN or infinite")])
def test_negative_or_non_finite_alpha(alpha, message):
    with pytest.raises(InputError, match=f"alpha.*{message}"):
        make_case(small_spec(alpha=[[0.3] * 6] * 23 + [[0.3] * 5 + [alpha]]))


@pytest.mark.parametrize("key, value, message", [
    ("alpha", [[0.1] * 6] * 23, r"alpha has shape \(23, 6\); give a single number or an array of "
                                r"shape \(24, 6\)"),
    ("gamma", [0.9] * 6, r"gamma has shape \(6,\)"),
    ("init_scale", [0.1] * 5, r"init_scale has shape \(5,\).*\(6,\)"),
    ("l2", [0.1] * 7, r"l2 has shape \(7,\).*\(6,\)"),
])
def test_hyperparameter_shapes(key, value, message):
    with pytest.raises(InputError, match=message):
        make_case(small_spec(**{key: value}))


def test_per_weight_l2_shape_and_sign(small_case):
    with pytest.raises(InputError, match=r"l2 must have shape \(6,\) \(one per group\) or \(143"):
        small_case.replace(l2=np.zeros(142))
    with pytest.raises(InputError, match="l2 has negative values"):
        small_case.replace(l2=-np.ones(small_case.P))


def test_eps_and_init_scale(small_case):
    with pytest.raises(InputError, match=r"eps must have shape \(143,\)"):
        small_case.replace(eps=np.zeros(3))
    with pytest.raises(InputError, match="init_scale has negative values"):
        small_case.replace(init_scale=-np.ones(6))


# --- bad data ----------------------------------------------------------------------------------

def test_labels_outside_classes(small_case):
    y = small_case.y_train.copy()
    y[4] = 3
    with pytest.raises(InputError, match=r"y_train\[4\] = 3 is not a class label in \[0, 3\)"):
        small_case.replace(y_train=y)
    with pytest.raises(InputError, match=r"y_valid\[0\] = -1"):
        small_case.replace(y_valid=np.r_[-1, small_case.y_valid[1:]])


def test_labels_must_be_integers_one_per_row(small_case):
    with pytest.raises(InputError, match="60 integer class labels"):
        small_case.replace(y_train=small_case.y_train.astype(float))
    with pytest.raises(InputError, match="60 integer class labels"):
        small_case.replace(y_train=small_case.y_train[:-1])


def test_batch_indices_out_of_range(small_case):
    b = small_case.batches.copy()
    b[2, 1] = 60
    with pytest.raises(InputError, match=r"batches\[2, 1\] = 60 is not a row of X_train"):
        small_case.replace(batches=b)


def test_inputs_with_the_wrong_width(small_case):
    with pytest.raises(InputError, match="X_valid has 5 inputs per row but layer_sizes starts "
                                         "with 6"):
        small_case.replace(X_valid=small_case.X_valid[:, :5])


def test_non_finite_inputs(small_case):
    X = small_case.X_train.copy()
    X[7, 2] = np.nan
    with pytest.raises(InputError, match=r"X_train has NaN or infinite entries \(first at row 7\)"):
        small_case.replace(X_train=X)


def test_npz_dataset_missing_arrays(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=np.zeros((3, 6)))
    with pytest.raises(InputError, match="lacks y_train, X_valid, y_valid"):
        make_case(small_spec(dataset=str(path)))


def test_npz_dataset_not_a_zip(tmp_path):
    path = tmp_path / "d.npz"
    path.write_text("not a zip")
    with pytest.raises(InputError, match="dataset .*d.npz is a text file, not an .npz file"):
        make_case(small_spec(dataset=str(path)))


def test_npz_dataset_lacking_everything(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path)
    with pytest.raises(InputError, match="lacks X_train, y_train, X_valid, y_valid.*it has none"):
        make_case(small_spec(dataset=str(path)))


# --- what NumPy users pass -----------------------------------------------------------------------

def test_numpy_scalars_arrays_and_tuples_make_the_same_case_as_plain_values():
    plain = small_spec(gamma=[[0.9] * 6] * 24, init_scale=[0.4] * 6, l2_per_weight=False,
                       grad_train_inputs=True)
    numpy_like = dict(plain, layer_sizes=(6, 8, 7, 3), n_iters=np.int64(24),
                      batch_size=np.int32(10), seed=np.uint8(3), n_train=np.int64(60),
                      n_valid=np.int16(50), alpha=np.float32(0.25), gamma=np.full((24, 6), 0.9),
                      init_scale=np.array([0.4] * 6), l2=np.float64(0.01),
                      l2_per_weight=np.bool_(False), grad_train_inputs=np.bool_(True),
                      activation=np.str_("tanh"))
    a, b = make_case(dict(plain, alpha=float(np.float32(0.25)))), make_case(numpy_like)
    for key in ("X_train", "batches", "eps", "alpha", "gamma", "init_scale", "l2"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.spec == b.spec and b.grad_train_inputs is True
    json.dumps(b.spec)  # plain JSON again
    assert type(b.spec["n_iters"]) is int and b.spec["layer_sizes"] == [6, 8, 7, 3]
    c = make_case(small_spec(layer_sizes=np.array([6, 8, 7, 3], dtype=np.int64)))
    assert c.layer_sizes == (6, 8, 7, 3)


def test_a_path_object_names_an_npz_dataset(tmp_path, rng):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=rng.normal(size=(30, 4)), y_train=rng.integers(0, 3, 30),
             X_valid=rng.normal(size=(20, 4)), y_valid=rng.integers(0, 3, 20))
    case = make_case(small_spec(layer_sizes=[4, 5, 3], dataset=path, n_train=None, n_valid=None,
                                batch_size=5, n_iters=3))
    assert case.spec["dataset"] == str(path) and len(case.X_valid) == 20


@pytest.mark.parametrize("change, message", [
    (dict(n_iters=np.float64(24.0)), "'n_iters' must be a positive integer; received "
                                     "numpy.float64 24.0"),
    (dict(batch_size=np.bool_(True)), "'batch_size' must be a positive integer; received "
                                      r"numpy.bool_? true"),
    (dict(layer_sizes=np.array([6.0, 8.0, 3.0])), r"'layer_sizes' must be a list of positive "
                                                  r"integers; received a float64 array of shape "
                                                  r"\(3,\)"),
    (dict(layer_sizes=(6, 0, 3)), r"received tuple \[6, 0, 3\]"),
    (dict(alpha=np.array(["fast"])), r"'alpha' must be a number or an array.*received a <U4 array"),
    (dict(alpha=np.complex128(1j)), "received numpy.complex128"),
    (dict(l2_per_weight=np.int64(1)), "'l2_per_weight' must be true or false; received "
                                      "numpy.int64 1"),
    (dict(alpha=[[0.3] * 6] * 23 + [[0.3]]), "alpha is a ragged nested list"),
])
def test_what_make_case_cannot_use_is_refused_naming_its_type(change, message):
    with pytest.raises(InputError, match=message):
        make_case(small_spec(**change))


@pytest.mark.parametrize("function", ["hypergradient", "train", "valid_loss"])
@pytest.mark.parametrize("value, received", [(small_spec(), r"a dict \(a spec\?\)"),
                                             ("case.npz", "str"), (None, "NoneType")])
def test_the_engine_wants_a_case_and_says_how_to_make_one(function, value, received):
    with pytest.raises(InputError, match=rf"revlearn.{function} takes a revlearn.Case; received "
                                         rf"{received}. Build one from a spec with "
                                         r"revlearn.make_case\(spec\) first"):
        getattr(revlearn, function)(value)


# --- memory --------------------------------------------------------------------------------------

def test_a_spec_larger_than_memory_is_refused_before_any_allocation():
    import tracemalloc

    spec = small_spec(layer_sizes=[100_000, 100_000, 10], n_iters=10**9, dataset="synthetic",
                      n_train=100, n_valid=100)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"this spec needs an estimated .* TiB of memory "
                                             r"\(.*\), more than this machine's .* GiB; use "
                                             "fewer steps"):
            make_case(spec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_memory_estimate_counts_data_steps_and_parameters(monkeypatch):
    from revlearn import memory
    from revlearn import spec as spec_module

    spec = spec_module.complete_spec(small_spec(n_train=10**6, layer_sizes=[100, 10, 3]))
    parts = spec_module.memory_needed(spec)
    assert parts["data"] >= 8 * 10**6 * 100  # X_train alone
    assert parts["batches (T x B)"] >= 8 * 24 * 10
    assert parts["per-parameter vectors (P)"] >= 8 * 1043
    need = sum(parts.values())
    monkeypatch.setattr(memory, "physical_memory", lambda: need - 1)
    with pytest.raises(InputError, match=r"needs an estimated .* MiB of memory \(data .* MiB"):
        make_case(small_spec(n_train=10**6, layer_sizes=[100, 10, 3]))
    monkeypatch.setattr(memory, "physical_memory", lambda: need)  # the control: just fits
    spec_module.check_memory(spec)
    monkeypatch.setattr(memory, "physical_memory", lambda: None)  # unknown: no check
    spec_module.check_memory(spec_module.complete_spec(small_spec(n_iters=10**12)))


def test_layer_sizes_beyond_any_array_are_refused(small_case):
    with pytest.raises(InputError, match=r"describe \d+ parameters; revlearn handles at most"):
        small_case.replace(layer_sizes=(6, 2**40, 2**40, 3))
