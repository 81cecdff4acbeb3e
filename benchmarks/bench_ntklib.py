"""ntklib's side of the benchmarks: ``python benchmarks/bench_ntklib.py SIZE OUTDIR``.

Prints one JSON record per line and saves each result array to OUTDIR for the agreement check.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import ntklib as nl  # noqa: E402
from ntkbook.params import available_memory  # noqa: E402
from ntklib import trig  # noqa: E402
from ntklib.empirical import ntk_diagonal_mc  # noqa: E402
from ntklib.hierarchy import k3, k3_hessian  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import workloads as W  # noqa: E402


def params_from(depth, width, dtype):
    return [(jnp.asarray(w.T), jnp.asarray(b)) for w, b in W.weights(depth, width, dtype)]


def matmul_rate(n: int) -> dict[str, float]:
    out = {}
    for dt in ("float32", "float64"):
        a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dt)
        f = jax.jit(lambda a: a @ a)
        _, t = W.timeit(lambda: f(a).block_until_ready())
        out[dt] = 2.0 * n**3 / t
        W.emit(
            bench="matmul",
            workload=f"{n}x{n} {dt}",
            impl="jnp.matmul",
            seconds=t,
            flops_per_s=out[dt],
        )
    return out


def bench_gram(size, outdir, rates):
    timed = {}
    for wl in W.SIZES[size]["gram"]:
        depth, width, batch, dt = wl
        net = nl.mlp(W.IN_DIM, depth, width, w_std=W.W_STD, b_std=W.B_STD)
        params = params_from(depth, width, dt)
        x = jnp.asarray(W.inputs(batch, dt))
        label = W.label("gram", wl)
        first, t = W.timeit(lambda: nl.ntk_gram(net, params, x).block_until_ready())
        np.save(
            W.result_file(outdir, "gram", wl, "ntklib"), np.asarray(nl.ntk_gram(net, params, x))
        )
        flops = W.gram_flops(depth, width, batch)
        W.emit(
            bench="gram",
            workload=label,
            params=list(wl),
            impl="ntklib structured",
            seconds=t,
            compile_seconds=first - t,
            flops=flops,
            matmul_fraction=flops / t / rates[dt],
        )
        jac_bytes = batch * W.n_params(depth, width) * np.dtype(dt).itemsize
        if jac_bytes <= W.JACOBIAN_BYTES_LIMIT and not W.over_budget(timed, "jacobian", wl):
            t = W.emit_timed(
                lambda: nl.ntk(net, params, x, implementation="jacobian").block_until_ready(),
                repeats=1,
                bench="gram",
                workload=label,
                impl="ntklib jacobian",
            )
            timed.setdefault("jacobian", []).append((wl, t))


def bench_kernel(size, outdir):
    for wl in W.SIZES[size]["kernel"]:
        act, depth, batch = wl
        xb = jnp.asarray(W.inputs(batch, "float64"))

        def run(act=act, depth=depth, xb=xb):
            return nl.kernels(
                xb, depth=depth, activation=act, w_std=W.W_STD, b_std=W.B_STD
            ).ntk.block_until_ready()

        W.emit_timed(
            run,
            bench="kernel",
            workload=W.label("kernel", wl),
            params=list(wl),
            impl="ntklib kernels",
        )
        np.save(W.result_file(outdir, "kernel", wl, "ntklib"), np.asarray(run()))
        # A floor for any recursion of this kind: one inverse trigonometric function per kernel
        # entry (the packed upper triangle) and layer, and nothing else.
        entries = batch * (batch + 1) // 2
        _, t_floor = W.timeit(lambda: atan2_floor(entries, depth).block_until_ready())
        W.emit(
            bench="kernel-floor",
            workload=W.label("kernel", wl),
            impl="one ntklib.trig.atan2 per entry and layer",
            seconds=t_floor,
            entries=entries,
        )


@partial(jax.jit, static_argnums=(0, 1))
def atan2_floor(entries: int, depth: int) -> jax.Array:
    """``depth`` rounds of ``t <- atan2(d, t)`` on ``entries`` values (a lax.scan, as the
    recursion): the cost of the one transcendental function each entry needs per layer."""
    d = jnp.linspace(0.1, 1.0, entries)

    def step(t, _):
        return trig.atan2(d, t), None

    return jax.lax.scan(step, d, None, length=depth)[0]


def bench_mc(size, outdir):
    """K(x, x) of many He-initialized ReLU networks (the finite-width chapter's quantity):
    the scalar chain the chapter uses, real networks vmapped, and a per-network loop."""
    for wl in W.SIZES[size]["mc"]:
        depth, width, n = wl
        widths = (width,) * depth
        net = nl.finite.he_net(W.IN_DIM, widths)
        x = jnp.asarray(W.inputs(1, "float64"))
        key = jax.random.PRNGKey(0)
        label = W.label("mc", wl)
        x2 = float(jnp.sum(x**2))
        for impl, fn in (
            (
                "ntklib scalar chain (ntklib.finite, exact in law)",
                lambda: nl.finite.sample_diagonal(key, W.IN_DIM, widths, n, x_norm2=x2),
            ),
            ("ntklib vmap (sharded)", lambda: ntk_diagonal_mc(net, key, n, x, chunk=1024)),
        ):
            W.emit_timed(
                fn,
                repeats=2,
                rate={"networks_per_s": n},
                bench="mc",
                workload=label,
                impl=impl,
            )
        one = jax.jit(lambda k: nl.ntk_diagonal(net, nl.init(net, k, x.dtype), x))
        keys = jax.random.split(key, n)
        m = min(n, 256)  # the loop is timed on a subset and scaled
        one(keys[0]).block_until_ready()
        first, t = W.timeit(lambda: [one(k).block_until_ready() for k in keys[:m]], repeats=1)
        W.emit(
            bench="mc",
            workload=label,
            impl="per-network loop",
            seconds=t * n / m,
            networks_per_s=m / t,
        )


def bench_k3(size, outdir):
    for width in W.SIZES[size]["k3"]:
        net = nl.MLP(W.IN_DIM, (width, width), "tanh", "ntk", 1.2, 0.1)
        params = nl.init(net, jax.random.PRNGKey(0))
        x = jnp.asarray(W.inputs(4, "float64"))
        label = W.label("k3", width)
        res = {}
        for impl, fn in (
            ("ntklib k3 (jvp, contract as you go)", k3),
            ("naive full-Hessian contraction", k3_hessian),
        ):
            mem = fn.lower(net, params, x).compile().memory_analysis()
            peak = None if mem is None else int(mem.temp_size_in_bytes + mem.output_size_in_bytes)
            if peak is not None and peak > 0.5 * (available_memory() or 8e9):
                W.emit(
                    bench="k3",
                    workload=label,
                    impl=impl,
                    skipped=f"needs {peak / 1e9:.1f} GB, over half of this machine's free memory",
                )
                continue
            W.emit_timed(
                lambda fn=fn: fn(net, params, x).block_until_ready(),
                repeats=2,
                bench="k3",
                workload=label,
                impl=impl,
                peak_bytes=peak,
            )
            res[impl] = np.asarray(fn(net, params, x))
        if len(res) < 2:
            continue
        a, b = res.values()
        W.emit(
            bench="k3-agreement",
            workload=label,
            impl="max rel diff",
            value=float(np.abs(a - b).max() / np.abs(b).max()),
        )


def bench_accuracy(size, outdir):
    """The accuracy row: the NTK of :func:`workloads.accuracy_inputs` at depth 1 by the new
    Gauss-Kronrod map and the old 64-point Gauss-Hermite rule (saved for the comparison with
    the high-precision reference), and each map's time per layer on a deeper, larger run."""
    x = jnp.asarray(W.accuracy_inputs())
    for act, depth, batch in W.SIZES[size].get("accuracy", []):
        xb = jnp.asarray(W.inputs(batch, "float64"))
        for impl, method in (
            ("ntklib gauss-kronrod", "auto"),
            ("ntklib gauss-hermite 64", "hermite"),
        ):
            k = nl.kernels(
                x, depth=1, activation=act, w_std=W.ACC_W_STD, b_std=W.ACC_B_STD, method=method
            ).ntk
            np.save(W.result_file(outdir, "accuracy", (act,), impl.split()[1]), np.asarray(k))

            def run(act=act, depth=depth, xb=xb, method=method):
                return nl.kernels(
                    xb, depth=depth, activation=act, w_std=W.W_STD, b_std=W.B_STD, method=method
                ).ntk.block_until_ready()

            W.emit_accuracy_timing(run, act, impl, depth, batch)


def main():
    size, outdir = sys.argv[1], Path(sys.argv[2])
    W.emit(
        bench="env",
        workload="ntklib",
        impl=f"jax {jax.__version__}",
        devices=[str(d) for d in jax.devices()],
    )
    rates = matmul_rate(W.SIZES[size]["matmul"])
    bench_gram(size, outdir, rates)
    bench_kernel(size, outdir)
    bench_mc(size, outdir)
    bench_k3(size, outdir)
    bench_accuracy(size, outdir)


if __name__ == "__main__":
    main()
