"""neural-tangents' side of the benchmarks, run in the peer environment (neural-tangents 0.6.5,
JAX 0.4.23): ``python benchmarks/bench_peer.py SIZE OUTDIR``. Never imports ntklib.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import workloads as W  # noqa: E402

IMPLS = {
    "nt jacobian contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "nt ntk-vector products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    "nt structured derivatives": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
}


def mlp(depth, width):
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(width, W_std=W.W_STD, b_std=W.B_STD), stax.Relu()]
    return stax.serial(*layers, stax.Dense(1, W_std=W.W_STD, b_std=W.B_STD))


def stax_params(depth, width, dtype):
    out = []
    for w, b in W.weights(depth, width, dtype):
        out += [(jnp.asarray(w), jnp.asarray(b)[None, :]), ()]
    return out[:-1]


def bench_gram(size, outdir):
    timed = {}
    for wl in W.SIZES[size]["gram"]:
        depth, width, batch, dt = wl
        _, apply_fn, _ = mlp(depth, width)
        params = stax_params(depth, width, dt)
        x = jnp.asarray(W.inputs(batch, dt))
        label = W.label("gram", wl)
        for name, impl in IMPLS.items():
            jac_bytes = batch * W.n_params(depth, width) * np.dtype(dt).itemsize
            skip = W.over_budget(timed, name, wl)
            if (
                impl == nt.NtkImplementation.JACOBIAN_CONTRACTION
                and jac_bytes > W.JACOBIAN_BYTES_LIMIT
            ):
                skip = f"Jacobian of {jac_bytes / 1e9:.1f} GB"
            if skip:
                W.emit(bench="gram", workload=label, impl=name, skipped=skip)
                continue
            f = jax.jit(
                nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=impl)
            )
            first, t = W.timeit(lambda f=f: f(x, None, params).block_until_ready())
            timed.setdefault(name, []).append((wl, t))
            tag = name.split()[1]
            np.save(
                W.result_file(outdir, "gram", wl, tag),
                np.asarray(f(x, None, params)).reshape(batch, batch),
            )
            W.emit(bench="gram", workload=label, impl=name, seconds=t, compile_seconds=first - t)


def bench_kernel(size, outdir):
    for wl in W.SIZES[size]["kernel"]:
        act, depth, batch = wl
        nonlin = stax.Relu() if act == "relu" else stax.Erf()
        block = stax.serial(stax.Dense(1, W_std=W.W_STD, b_std=W.B_STD), nonlin)
        # stax.repeat (a lax.scan) is neural-tangents' own way to make deep networks cheap to compile
        body = block if depth == 1 else stax.serial(block, stax.repeat(block, depth - 1))
        _, _, kernel_fn = stax.serial(body, stax.Dense(1, W_std=W.W_STD, b_std=W.B_STD))
        kfn = jax.jit(kernel_fn, static_argnames="get")
        xb = jnp.asarray(W.inputs(batch, "float64"))
        W.emit_timed(
            lambda kfn=kfn, xb=xb: kfn(xb, None, get="ntk").block_until_ready(),
            bench="kernel",
            workload=W.label("kernel", wl),
            impl="nt stax kernel_fn (repeat)",
        )
        np.save(W.result_file(outdir, "kernel", wl, "nt"), np.asarray(kfn(xb, None, get="ntk")))


def bench_mc(size, outdir):
    for wl in W.SIZES[size]["mc"]:
        depth, width, n = wl
        # He-initialized ReLU layers as on ntklib's side (NTK parameterization, sigma_w^2 = 2),
        # one float64 input; stax draws the biases, which changes nothing in the cost
        layers = []
        for _ in range(depth):
            layers += [stax.Dense(width, W_std=2**0.5, b_std=1.0), stax.Relu()]
        init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(1, W_std=2**0.5, b_std=1.0))
        x = jnp.asarray(W.inputs(1, "float64"))
        ntk = nt.empirical_ntk_fn(
            apply_fn,
            trace_axes=(),
            vmap_axes=0,
            implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES,
        )

        def one(k):
            _, p = init_fn(k, x.shape)
            return jnp.diagonal(ntk(x, None, p).reshape(1, 1))

        f = jax.jit(jax.vmap(one))
        keys = jax.random.split(jax.random.PRNGKey(0), n)
        chunk = 1024
        run = lambda: [f(keys[i : i + chunk]).block_until_ready() for i in range(0, n, chunk)]  # noqa: E731
        W.emit_timed(
            run,
            repeats=2,
            rate={"networks_per_s": n},
            bench="mc",
            workload=W.label("mc", wl),
            impl="nt empirical NTK in vmap",
        )


def bench_accuracy(size, outdir):
    """neural-tangents on the accuracy row's inputs: tanh by ``ElementwiseNumerical`` (its
    Gauss-Hermite rule, deg 64), GELU by ``stax.Gelu(approximate=False)``."""
    x = jnp.asarray(W.accuracy_inputs())
    for act, depth, batch in W.SIZES[size].get("accuracy", []):
        if act == "tanh":
            nonlin, impl = (
                stax.ElementwiseNumerical(jnp.tanh, deg=64),
                "nt ElementwiseNumerical deg 64",
            )
        else:
            nonlin, impl = stax.Gelu(approximate=False), "nt stax.Gelu"
        dense = stax.Dense(1, W_std=W.ACC_W_STD, b_std=W.ACC_B_STD)
        _, _, kernel_fn = stax.serial(dense, nonlin, dense)
        k = np.asarray(kernel_fn(x, None, get="ntk"))
        np.save(W.result_file(outdir, "accuracy", (act,), "nt"), k)
        # the time per layer on ntklib's timing run (bench_ntklib.bench_accuracy): same depth,
        # batch and variances
        xb = jnp.asarray(W.inputs(batch, "float64"))
        deep = stax.Dense(1, W_std=W.W_STD, b_std=W.B_STD)
        deep_fn = jax.jit(stax.serial(*[deep, nonlin] * depth, deep)[2], static_argnames="get")
        W.emit_accuracy_timing(
            lambda fn=deep_fn, xb=xb: fn(xb, None, get="ntk").block_until_ready(),
            act,
            impl,
            depth,
            batch,
        )


def main():
    size, outdir = sys.argv[1], Path(sys.argv[2])
    W.emit(
        bench="env",
        workload="peer",
        impl=f"neural-tangents {nt.__version__}, jax {jax.__version__}",
    )
    bench_gram(size, outdir)
    bench_kernel(size, outdir)
    bench_mc(size, outdir)
    bench_accuracy(size, outdir)


if __name__ == "__main__":
    main()
