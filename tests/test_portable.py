"""Portable CPU kernels (:mod:`benchmark.core.kernels`) and host-independent simulated data.

Two instruction sets are emulated on this one machine by capping the kernels below the host's best
(AVX2 on an AVX-512 host, SSE4.1 on an AVX2 host): oneDNN (``ONEDNN_MAX_CPU_ISA``), ATen
(``ATEN_CPU_CAPABILITY``), MKL (``MKL_ENABLE_INSTRUCTIONS``), numpy (``NPY_DISABLE_CPU_FEATURES``) and
glibc's libm (``GLIBC_TUNABLES``). The same tiny matrix is trained four times: native and capped, each
with native and with portable kernels. Portable checkpoints are byte-identical; native ones are not,
which shows that the cap changes the arithmetic and so that the test can fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import dump_yaml, load_matrix
from benchmark.core.errors import UserError
from benchmark.core.kernels import GLIBC_MASK, MARKER, UNPINNED, pinned_threads, portable_env, shell_exports
from benchmark.entry import requested_threads
from benchmark.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def host_cap() -> dict[str, str] | None:
    """Environment capping every kernel family one level below this host's best instruction set, or
    None where the host has neither AVX-512 nor AVX2 (nothing below to emulate)."""
    flags = _cpu_flags()
    if "avx512f" in flags:
        return {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                "NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR",
                "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX512DQ,-AVX512BW,-AVX512VL,-AVX512CD"}
    if "avx2" in flags:
        return {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "NPY_DISABLE_CPU_FEATURES": "X86_V3,X86_V4,AVX512_ICL,AVX512_SPR",
                "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2,-FMA,-AVX"}
    return None


def _clean_env(cache: Path, **extra: str) -> dict[str, str]:
    drop = {MARKER, MARKER + "_EXEC", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "NPY_ENABLE_CPU_FEATURES", "GLIBC_TUNABLES", "OPENBLAS_CORETYPE",
            "OPENBLAS_NUM_THREADS", *UNPINNED}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(LDCT_BENCH_CACHE=str(cache), OMP_NUM_THREADS="2", **extra)
    return env


# --- the environment and the launcher ------------------------------------------------------------


def test_portable_env_pins_every_family_and_drops_caps():
    env = portable_env({"MKL_ENABLE_INSTRUCTIONS": "AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4", "KEEP": "1",
                        "GLIBC_TUNABLES": "glibc.malloc.check=3:glibc.cpu.hwcaps=-AVX2"}, 3, baseline="X86_V2")
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["ONEDNN_MAX_CPU_ISA"] == "SSE41"
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["NPY_ENABLE_CPU_FEATURES"] == "X86_V2"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"
    assert env[MARKER] == "portable:3" and env["OPENBLAS_CORETYPE"] == "Prescott"
    assert "MKL_ENABLE_INSTRUCTIONS" not in env and "NPY_DISABLE_CPU_FEATURES" not in env and env["KEEP"] == "1"
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.check=3:glibc.cpu.hwcaps=" + ",".join(f"-{f}" for f in GLIBC_MASK)
    assert pinned_threads(env) == 3 and pinned_threads({}) is None
    with pytest.raises(UserError, match=r"reproducibility\.threads"):
        portable_env({}, 0, baseline="X86_V2")
    assert "export ATEN_CPU_CAPABILITY='default'" in shell_exports(2)


def test_numpy_baseline_is_accepted_by_numpy(tmp_path):
    """The pinned environment loads numpy with no dispatched feature on (the launcher's list is valid)."""
    code = ("import numpy._core._multiarray_umath as u;"
            "print(sum(bool(u.__cpu_features__.get(f)) for f in u.__cpu_dispatch__))")
    out = subprocess.run([sys.executable, "-c", code], env=portable_env(_clean_env(tmp_path), 1),
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "0", out.stderr


def test_launcher_reads_the_mode_from_the_matrix_flag_and_run_folder(tmp_path):
    assert requested_threads(["run", "--matrix", "small.yaml", "--out", "x"]) == 2  # the shipped preset
    data = load_matrix("small.yaml").model_dump(mode="json")
    data["reproducibility"] = {"kernels": "native", "threads": 4}
    (tmp_path / "m.yaml").write_text(dump_yaml(data))
    assert requested_threads(["run", "-m", str(tmp_path / "m.yaml"), "-o", "x"]) is None
    assert requested_threads(["run", f"--matrix={tmp_path / 'm.yaml'}", "--portable"]) == 4
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "matrix.resolved.yaml").write_text(dump_yaml({**data, "reproducibility": {"kernels": "portable"}}))
    assert requested_threads(["report", "--out", str(tmp_path / "run")]) == 1
    assert requested_threads(["analyze", "--out", str(tmp_path / "nowhere")]) is None  # the CLI reports it


def test_a_natively_loaded_process_is_refused_portable_kernels():
    from benchmark.runner import setup_process

    data = load_matrix("small.yaml").model_dump(mode="json")
    import torch

    from benchmark.config import MatrixConfig

    with pytest.raises(UserError, match="ldct-bench") as err:
        setup_process(MatrixConfig.model_validate(data), torch.device("cpu"))
    assert err.value.field == "reproducibility.kernels"


def test_portable_cells_record_kernels_and_threads_in_their_config():
    from benchmark.cells import cell_config, expand_cells
    from benchmark.config import MatrixConfig

    m = load_matrix("small.yaml")
    assert cell_config(expand_cells(m)[0], m)["reproducibility"] == {"kernels": "portable", "threads": 2}
    data = m.model_dump(mode="json")
    for rep, recorded in (({"kernels": "native"}, None),  # old native cells still resume
                          ({"kernels": "native", "threads": 1}, {"kernels": "native", "threads": 1}),
                          ({"kernels": "portable"}, {"kernels": "portable", "threads": 1})):
        other = MatrixConfig.model_validate({**data, "reproducibility": rep})
        assert cell_config(expand_cells(other)[0], other).get("reproducibility") == recorded, rep
    assert MatrixConfig.model_validate({**data, "reproducibility": {"kernels": "native"}}).reproducibility.threads is None


def test_matrix_rejects_bad_reproducibility_values(tmp_path):
    data = load_matrix("small.yaml").model_dump(mode="json")
    for bad in ({"kernels": "fast"}, {"threads": 0}, {"threads": True}, {"thread": 2}):
        (tmp_path / "m.yaml").write_text(dump_yaml({**data, "reproducibility": bad}))
        with pytest.raises(UserError, match="reproducibility"):
            load_matrix(str(tmp_path / "m.yaml"))


# --- data: the same bytes under every instruction set ---------------------------------------------

_BUILD = """
import hashlib, sys
import numpy as np
from benchmark.data import open_dataset
ds = open_dataset("synth", {"size": "tiny", "patients": 5, "slices_per_patient": 2, "val_patients": 1,
                            "test_patients": 1, "target": "ndct"})
ds.prepare(progress=False)
for f in sorted(ds.cache_folder.rglob("*.npy")):
    print(f.relative_to(ds.cache_folder), hashlib.sha256(np.load(f).tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_simulated_data_is_the_same_bytes_under_a_capped_instruction_set(tmp_path):
    cap = host_cap()
    if cap is None:
        pytest.skip("no AVX2 on this host: no lower instruction set to emulate")
    runs = []
    for name, extra in (("native", {}), ("capped", cap)):
        out = subprocess.run([sys.executable, "-c", _BUILD], env=_clean_env(tmp_path / name, **extra),
                             capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert out.returncode == 0, out.stderr
        runs.append(dict(line.split() for line in out.stdout.splitlines()))
    assert len(runs[0]) > 20 and "train/10_180.npy" in runs[0] and "train/ndct.npy" in runs[0]
    assert runs[0] == runs[1], sorted(k for k in runs[0] if runs[0][k] != runs[1].get(k))


def test_stored_hu_lies_on_the_grid(tmp_cache):
    from benchmark.data import open_dataset
    from benchmark.data.simulate import HU_QUANTUM

    ds = open_dataset("synth", {"size": "tiny", "patients": 3, "slices_per_patient": 1})
    pairs = ds.load("test", "25_360")
    for arr in (pairs.inputs, pairs.targets, pairs.extra["clean_fbp"]):
        q = np.asarray(arr, dtype=np.float64) / HU_QUANTUM
        np.testing.assert_array_equal(q, np.round(q))
    # the grid's own noise is far below the data's: std(input - clean) >> HU_QUANTUM / sqrt(12)
    assert np.std(np.asarray(pairs.inputs) - np.asarray(pairs.extra["clean_fbp"])) > 50 * HU_QUANTUM / np.sqrt(12)


# --- training: portable is the same bytes, native is not --------------------------------------------


def _tiny_matrix(path: Path, kernels: str, threads: int | None = 2) -> Path:
    data = load_matrix("small.yaml").model_dump(mode="json")
    data["dataset"]["options"] = {"size": "tiny", "patients": 5, "val_patients": 1, "test_patients": 1}
    data["doses"] = ["25_360"]
    data["losses"] = ["mse"]
    data["training"].update(epochs=1, batch_size=4, patch_size=32, patches_per_epoch=32, val_max_images=1)
    data["training"]["scheduler"]["warmup"] = 2
    data["reproducibility"] = {"kernels": kernels, **({"threads": threads} if threads is not None else {})}
    path.write_text(dump_yaml(data))
    return path


def _train(matrix: Path, out: Path, cache: Path, extra: dict[str, str], *args: str) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--matrix", str(matrix), "--out", str(out),
                           "--quiet", *args], env=_clean_env(cache, **extra), capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    layout = RunLayout(out)
    hashes = {f"{c.cell_id}/{e}": hashlib.sha256(p.read_bytes()).hexdigest()
              for c in layout.cells() for e, p in layout.checkpoints(c.cell_id).items()}  # fmt: skip
    assert len(hashes) == 2, proc.stderr[-2000:]
    return hashes


@pytest.mark.slow
@pytest.mark.heavy
def test_portable_checkpoints_are_identical_under_a_capped_instruction_set_and_native_ones_are_not(tmp_path):
    cap = host_cap()
    if cap is None:
        pytest.skip("no AVX2 on this host: no lower instruction set to emulate")
    cache = tmp_path / "cache"  # one dataset for all four runs (its own identity is tested above)
    portable, native = _tiny_matrix(tmp_path / "p.yaml", "portable"), _tiny_matrix(tmp_path / "n.yaml", "native")
    p_host = _train(portable, tmp_path / "p_host", cache, {})
    p_cap = _train(portable, tmp_path / "p_cap", cache, cap)
    n_host = _train(native, tmp_path / "n_host", cache, {})
    n_cap = _train(native, tmp_path / "n_cap", cache, cap)
    assert p_host == p_cap
    assert all(n_host[k] != n_cap[k] for k in n_host), "the cap did not change native arithmetic: the test proves nothing"
    env = RunLayout(tmp_path / "p_cap").cell_dir(next(iter(RunLayout(tmp_path / "p_cap").cells())).cell_id)
    facts = (env / "environment.json").read_text()
    assert '"kernels": "portable"' in facts and '"cpu_capability": "DEFAULT"' in facts


@pytest.mark.slow
@pytest.mark.heavy
def test_portable_jobs_2_equals_jobs_1(tmp_path):
    cache = tmp_path / "cache"
    matrix = _tiny_matrix(tmp_path / "p.yaml", "portable")
    one = _train(matrix, tmp_path / "one", cache, {})
    two = _train(matrix, tmp_path / "two", cache, {}, "--jobs", "2")
    assert one == two


def _threads_trained(out: Path) -> set[int]:
    layout = RunLayout(out)
    return {json.loads((layout.cell_dir(c.cell_id) / "environment.json").read_text())[0]["threads"]
            for c in layout.cells()}


@pytest.mark.slow
@pytest.mark.heavy
def test_native_kernels_with_pinned_threads_write_the_same_bytes_with_any_jobs(tmp_path):
    """Native kernels with ``threads: 1``: ``--jobs 1`` (which would otherwise run every core in one
    process) and ``--jobs 2`` train each cell with one thread, hence the same bytes on one CPU kind."""
    # what an unpinned process runs (torch's default: physical cores, not always os.cpu_count())
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           env=_clean_env(tmp_path / "probe"), capture_output=True, text=True, check=True)  # fmt: skip
    default = int(probe.stdout)
    if default < 2:
        pytest.skip("one default thread: --jobs 1 runs one thread anyway, so the test would prove nothing")
    cache = tmp_path / "cache"
    matrix = _tiny_matrix(tmp_path / "n.yaml", "native", threads=1)
    one = _train(matrix, tmp_path / "one", cache, {})
    two = _train(matrix, tmp_path / "two", cache, {}, "--jobs", "2")
    assert _threads_trained(tmp_path / "one") == _threads_trained(tmp_path / "two") == {1}
    assert one == two
    # without the pin, --jobs 1 trains on every core: the pin is what made the two runs agree
    _train(_tiny_matrix(tmp_path / "u.yaml", "native", threads=None), tmp_path / "unpinned", cache, {})
    assert _threads_trained(tmp_path / "unpinned") == {default}


# --- vendor-independent replacements of VML-routed ops (benchmark.core.portable_ops) ---------------


def _positive_floats(n: int) -> np.ndarray:
    """``n`` float32 drawn uniformly over the bit patterns of positive finite floats (subnormals included),
    plus the special values."""
    bits = np.random.default_rng(0).integers(0, 0x7F800000, n, dtype=np.uint32).view(np.float32)
    tiny = np.finfo(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -1.0, tiny.max, tiny.tiny, 1e-45, 1.0, 2.0, 4.0], np.float32)
    return np.concatenate([bits, special])


def test_exact_sqrt_is_ieee_sqrt_in_float32_and_within_an_ulp_in_float64():
    """Reference: numpy's float32 ``sqrt`` (the IEEE-exact ``sqrtps``) and, independently, the float64 square
    root rounded once to float32 (exact too: double rounding is harmless for sqrt)."""
    import torch

    from benchmark.core.portable_ops import exact_sqrt

    x = _positive_floats(1_000_000)
    got = exact_sqrt(torch.from_numpy(x)).numpy()
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(got, np.sqrt(x))
        np.testing.assert_array_equal(got, np.sqrt(x.astype(np.float64)).astype(np.float32))
    assert np.signbit(got[np.flatnonzero(np.signbit(x) & (x == 0))]).all()
    d = np.random.default_rng(1).uniform(0, 1e6, 100_000) ** np.random.default_rng(2).uniform(-3, 3, 100_000)
    ulps = np.abs(exact_sqrt(torch.from_numpy(d)).numpy().view(np.int64) - np.sqrt(d).view(np.int64))
    assert ulps.max() <= 1
    half = torch.from_numpy(x[:1000]).to(torch.bfloat16)  # exact in float32, then rounded once to bfloat16
    with np.errstate(invalid="ignore"):
        want = torch.from_numpy(np.sqrt(half.float().numpy())).to(torch.bfloat16)
    torch.testing.assert_close(exact_sqrt(half), want, rtol=0, atol=0, equal_nan=True)
    z = torch.randn(100, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    z = torch.cat([z, torch.tensor([-4 + 0j, -4 - 0j, 0j, 3 + 4j], dtype=torch.complex64)])
    np.testing.assert_allclose(exact_sqrt(z).numpy(), np.sqrt(z.numpy()), rtol=1e-6, atol=1e-7)
    assert exact_sqrt(torch.tensor([-4 + 0j])).real.item() == 0.0  # the principal root, no rounding residue
    assert exact_sqrt(torch.tensor([4, 9])).tolist() == [2.0, 3.0]


def test_replacements_agree_with_numpy_and_keep_the_in_place_and_out_contracts():
    import torch

    from benchmark.core.portable_ops import exact_sqrt, replacements

    table = replacements()
    x = torch.rand(20_000, generator=torch.Generator().manual_seed(0)) * 100 + 1e-3
    xd = x.double().numpy()
    for name, ref in (("log2", np.log2), ("log10", np.log10), ("atan", np.arctan)):
        got = table[name](x).numpy()
        want = ref(xd).astype(np.float32)
        assert np.abs(got.view(np.int32) - want.view(np.int32)).max() <= 1, name  # the float64 route rounds once
        np.testing.assert_allclose(table[name](x.double()).numpy(), ref(xd), rtol=1e-15, err_msg=name)
    u = torch.rand(20_000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name, ref in (("asin", np.arcsin), ("acos", np.arccos), ("tan", np.tan)):
        want = ref(u.double().numpy())
        got = table[name](u).numpy()  # float64 formulas rounded once: within an ulp of numpy's
        assert np.abs(got.view(np.int32) - want.astype(np.float32).view(np.int32)).max() <= 1, name
        np.testing.assert_allclose(table[name](u.double()).numpy(), want, rtol=1e-14, atol=1e-15, err_msg=name)
    assert np.array_equal(table["pow.Tensor_Scalar"](x, 0.5).numpy(), np.sqrt(x.numpy()))
    for e in (2, 3, -1, 1.7, 0, 1):
        np.testing.assert_allclose(table["pow.Tensor_Scalar"](x, e).numpy(), xd**e, rtol=1e-6, err_msg=str(e))
        np.testing.assert_allclose(table["pow.Tensor_Scalar"](x.double(), e).numpy(), xd**e, rtol=1e-15, err_msg=str(e))
    assert torch.equal(table["pow.Tensor_Scalar"](x, 2), x * x) and torch.equal(table["pow.Tensor_Scalar"](x, 3), x * x * x)
    assert table["pow.Tensor_Scalar"](torch.tensor([2, 3]), 2).tolist() == [4, 9]
    with pytest.raises(RuntimeError, match="negative integer powers"):
        table["pow.Tensor_Scalar"](torch.tensor([2, 3]), -1)
    exact = torch.tensor([1000.0, 1e15, 1e-3, 2.0**29], dtype=torch.float64)
    assert table["log10"](exact[:3]).tolist() == [3.0, 15.0, -3.0] and table["log2"](exact[3:]).tolist() == [29.0]
    y = x.clone()
    assert table["sqrt_"](y) is y and torch.equal(y, exact_sqrt(x))
    out = torch.empty(0)
    assert table["log10.out"](x, out=out) is out and out.shape == x.shape
    with pytest.raises(RuntimeError, match="can't be cast"):
        table["sqrt_"](torch.tensor([4, 9]))
    with pytest.raises(RuntimeError, match="can't be cast"):
        table["log2.out"](x, out=torch.empty(0, dtype=torch.long))
    with pytest.raises(NotImplementedError):
        table["atan"](torch.tensor([1 + 1j]))


def test_a_pinned_process_computes_torch_sqrt_and_adam_with_the_replacements(tmp_path):
    """In a process started with the portable pins the replacements run through PyTorch's dispatcher:
    ``torch.sqrt`` and ``x ** 0.5`` are IEEE-exact (ATen's own CPU sqrt, MKL VML's, is not on the hosts
    measured), ``out=`` and in-place forms keep their contracts, and ATen's errors stay errors."""
    code = ("import numpy as np, torch; from benchmark.core.kernels import apply_portable; "
            "from benchmark.core.portable_ops import installed; apply_portable(1); "
            "x = torch.rand(200000, generator=torch.Generator().manual_seed(0)); r = np.sqrt(x.numpy()); "
            "o = torch.empty(0); torch.sqrt(x, out=o); y = x.clone(); y.sqrt_()\n"
            "try:\n    torch.tensor([2, 3]) ** -1; e = 'no error'\nexcept RuntimeError as err:\n    e = 'raised'\n"
            "print(installed(), int((torch.sqrt(x).numpy() != r).sum()), int(((x ** 0.5).numpy() != r).sum()), "
            "int((o.numpy() != r).sum()), int((y.numpy() != r).sum()), torch.equal(x.double() ** 2, x.double() * x.double()), "
            "torch.log10(torch.tensor([1000.0], dtype=torch.float64)).item(), e)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], env=portable_env(_clean_env(tmp_path), 1), capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "0", "0", "0", "0", "True", "3.0", "raised"], proc.stdout


QEMU = shutil.which("qemu-x86_64")
EMULATED_CPU = "Haswell-v4"


def _probe(tmp_path: Path, *args: str, emulate: bool = False) -> dict[str, str]:
    command = [sys.executable, str(ROOT / "tests" / "portable_probe.py"), *args]
    if emulate:
        assert QEMU is not None
        command = [QEMU, "-cpu", EMULATED_CPU, *command]
    env = portable_env(_clean_env(tmp_path, PYTHONPATH=str(ROOT)), 2)  # the checkout's modules, as `-m` would
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                    reason="needs qemu-user's qemu-x86_64 (Debian/Ubuntu: apt install qemu-user)")  # fmt: skip
def test_portable_kernels_give_the_same_bytes_on_an_emulated_processor(tmp_path):
    """``tests/portable_probe.py`` (~70 ops forward and backward in float32 and float64, optimisers, three
    DnCNN training steps, numpy and scipy BLAS) natively and under ``qemu-x86_64 -cpu Haswell-v4``: a
    GenuineIntel AVX2 processor whose approximate reciprocal instructions (``rsqrtps``, ``rcpps``) qemu
    computes exactly, unlike any real CPU, and whose maker and features differ from an AMD or AVX-512 host's.
    Every hash is equal. The control (the pins without :mod:`benchmark.core.portable_ops`) differs in
    ``sqrt``, Adam and training, so the emulation does tell processors apart (measured on an AMD Zen 5: 29 of
    261, also ``log2``, ``log10``, ``atan``, float64 ``asin`` and ``tan``, ``cdist`` and RMSprop)."""
    native, emulated = _probe(tmp_path), _probe(tmp_path, emulate=True)
    assert native.keys() == emulated.keys() and len(native) > 250
    assert [k for k in native if native[k] != emulated[k]] == []
    control, control_emulated = _probe(tmp_path, "--control"), _probe(tmp_path, "--control", emulate=True)
    differ = {k for k in control if control[k] != control_emulated[k]}
    assert {"sqrt/pos/torch.float32", "optim/Adam", "train/dncnn"} <= differ, sorted(differ)
