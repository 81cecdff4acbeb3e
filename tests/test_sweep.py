"""Sharded Monte Carlo over devices, resumable sweeps, and the hierarchy's K3."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import FAST_COMPILE

import ntklib as nl
from ntklib.empirical import ntk_diagonal_mc
from ntklib.hierarchy import k3, k3_hessian
from ntklib.sweep import map_keys, map_points


def test_diagonal_mc_matches_per_network_loop(key):
    net = nl.MLP(3, (16, 8, 12), "relu", "ntk", 2**0.5, 0.1)
    x = jax.random.normal(key, (5, 3))
    mc = ntk_diagonal_mc(net, key, 13, x, chunk=4)
    keys = jax.random.split(key, 13)
    loop = np.stack([np.asarray(nl.ntk_diagonal(net, nl.init(net, k), x)) for k in keys])
    np.testing.assert_allclose(mc, loop, rtol=1e-12)
    assert np.array_equal(mc, ntk_diagonal_mc(net, key, 13, x, chunk=13))


SHARDED = textwrap.dedent(
    """
    import sys, jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import ntklib as nl
    from ntklib.empirical import ntk_diagonal_mc
    assert len(jax.devices()) == int(sys.argv[2]), jax.devices()
    net = nl.MLP(3, (16, 8), "erf", "ntk", 1.2, 0.1)
    key = jax.random.PRNGKey(7)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    np.save(sys.argv[1], ntk_diagonal_mc(net, key, 22, x, chunk=8))
    """
)


@pytest.mark.parametrize("devices", [1, 4])
def test_sharded_over_devices_gives_identical_results(tmp_path, devices):
    """4 forced host devices (a 1-D mesh over networks) give the single-device numbers."""
    out = tmp_path / f"d{devices}.npy"
    env = dict(
        os.environ, XLA_FLAGS=f"{FAST_COMPILE} --xla_force_host_platform_device_count={devices}"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SHARDED, str(out), str(devices)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    net = nl.MLP(3, (16, 8), "erf", "ntk", 1.2, 0.1)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    ref = ntk_diagonal_mc(net, jax.random.PRNGKey(7), 22, x, chunk=22)
    assert got.shape == (22, 4)
    assert np.array_equal(got, ref)


MULTIPROCESS = textwrap.dedent(
    """
    import sys, jax, numpy as np
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=60)
    assert jax.process_count() == 2 and len(jax.devices()) == 4, jax.devices()
    import ntklib as nl
    from ntklib.empirical import ntk_diagonal_mc
    net = nl.MLP(3, (16, 8), "erf", "ntk", 1.2, 0.1)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    np.save(out, ntk_diagonal_mc(net, jax.random.PRNGKey(7), 22, x, chunk=8))
    jax.distributed.shutdown()
    """
)


def test_two_processes_with_jax_distributed_give_identical_results(tmp_path):
    """The multi-host path: two processes on this machine (2 CPU devices each, gloo
    collectives, coordinator on 127.0.0.1) form one 4-device mesh; each gets every network's
    result, equal to the single-device numbers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS=f"{FAST_COMPILE} --xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                MULTIPROCESS,
                str(pid),
                str(port),
                str(tmp_path / f"p{pid}.npy"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    net = nl.MLP(3, (16, 8), "erf", "ntk", 1.2, 0.1)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))
    ref = ntk_diagonal_mc(net, jax.random.PRNGKey(7), 22, x, chunk=22)
    for pid in (0, 1):
        assert np.array_equal(np.load(tmp_path / f"p{pid}.npy"), ref)


def test_map_keys_passes_compiler_options_to_its_program(key):
    """The options reach XLA (an unknown one is refused by it) and a level other than the
    suite's 0 changes the result by rounding at most."""
    net = nl.mlp(3, 2, 16)
    x = jax.random.normal(jax.random.PRNGKey(8), (4, 3))

    def fn(k):
        return nl.ntk(functools.partial(nl.apply, net), nl.init(net, k), x)

    base = map_keys(fn, key, 4)
    level2 = map_keys(fn, key, 4, compiler_options={"xla_backend_optimization_level": 2})
    np.testing.assert_allclose(level2, base, rtol=1e-12)
    with pytest.raises(Exception, match="no_such_option"):
        map_keys(fn, key, 4, compiler_options={"no_such_option": 1})


def test_map_keys_refuses_empty(key):
    with pytest.raises(ValueError):
        map_keys(lambda k: k, key, 0)


def test_map_keys_saves_chunks_and_resumes_from_them(tmp_path, key, capsys):
    def fn(k, scale):
        z = jax.random.normal(k, (3,))
        return {"z": z * scale, "norm": jax.numpy.sum(z**2)}

    args = (jax.numpy.asarray(2.0),)
    ref = map_keys(fn, key, 10, args=args, chunk=4)
    first = map_keys(fn, key, 10, args=args, chunk=4, store=tmp_path, progress=True)
    assert "3/3 chunks" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunk-000000.npz",
        "chunk-000001.npz",
        "chunk-000002.npz",
        "manifest.json",
    ]  # and no temporary file left
    for name in ("z", "norm"):
        assert np.array_equal(first[name], ref[name])
    # a rerun loads saved chunks (marked here, to see that it does) and computes lost ones
    with np.load(tmp_path / "chunk-000001.npz") as f:
        marked = {k: f[k] + 100.0 for k in f.files}
    np.savez(tmp_path / "chunk-000001.npz", **marked)
    (tmp_path / "chunk-000002.npz").unlink()
    again = map_keys(fn, key, 10, args=args, chunk=4, store=tmp_path)
    assert np.array_equal(again["z"][4:8], ref["z"][4:8] + 100.0)  # loaded, not recomputed
    assert np.array_equal(again["z"][8:], ref["z"][8:]) and (tmp_path / "chunk-000002.npz").exists()
    # another call (other n, chunk or key) is refused rather than mixed in
    for kw in (
        {"n": 11, "chunk": 4, "key": key},
        {"n": 10, "chunk": 5, "key": key},
        {"n": 10, "chunk": 4, "key": jax.random.PRNGKey(99)},
    ):
        with pytest.raises(ValueError, match="another call"):
            map_keys(fn, kw["key"], kw["n"], args=args, chunk=kw["chunk"], store=tmp_path)


def test_sweep_resumes_from_saved_points(tmp_path, capsys):
    calls = []

    def run(point):
        calls.append(point)
        return np.full(3, point["w"] * 1.5)

    points = [{"w": w, "d": 2} for w in (8, 16, 32)]
    first = map_points(points, run, tmp_path)
    assert len(calls) == 3 and "3/3" in capsys.readouterr().err
    (tmp_path / next(iter(sorted(os.listdir(tmp_path))))).unlink()  # lose one finished point
    again = map_points(points, run, tmp_path)
    assert len(calls) == 4  # only the lost point was recomputed
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)


def test_k3_equals_hessian_contraction_and_is_symmetric(key):
    net = nl.MLP(3, (7, 5), "tanh", "ntk", 1.3, 0.2)
    params = nl.init(net, key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (4, 3))
    a, b = k3(net, params, x), k3_hessian(net, params, x)
    assert a.shape == (4, 4, 4)
    np.testing.assert_allclose(a, b, atol=1e-12 * float(np.abs(b).max()))
    np.testing.assert_allclose(a, np.swapaxes(a, 0, 1), rtol=1e-12, atol=1e-15)


def test_k3_is_the_first_order_change_of_the_ntk(key):
    """K2(theta + e g_c) - K2(theta) = e K3[..., c] + O(e^2): the error quarters as e halves."""
    net = nl.MLP(2, (9, 6), "gelu", "ntk", 1.1, 0.3)
    params = nl.init(net, key)
    x = jax.random.normal(jax.random.fold_in(key, 2), (3, 2))
    kk = np.asarray(k3(net, params, x))
    g = jax.grad(lambda p: nl.apply(net, p, x[1:2])[0])(params)
    base = np.asarray(nl.ntk_gram(net, params, x))
    errs = []
    for eps in (1e-3, 5e-4):
        moved = jax.tree_util.tree_map(lambda p, d, e=eps: p + e * d, params, g)
        diff = np.asarray(nl.ntk_gram(net, moved, x)) - base
        errs.append(np.abs(diff - eps * kk[:, :, 1]).max())
    assert 3.0 < errs[0] / errs[1] < 5.0
