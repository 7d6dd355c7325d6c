"""The hardware dtype choice: bfloat16 only where matrix multiplication is native."""

import torch

from r1probe.models.loader import auto_dtype, cpu_flags, resolve_dtype


def test_cpu_with_amx_or_avx512_bf16_gets_bfloat16(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    for flags in ({"avx2", "amx_bf16", "amx_tile"}, {"avx2", "avx512f", "avx512_bf16"}):
        dtype, why = auto_dtype("cpu", flags)
        assert dtype == torch.bfloat16 and ("amx_bf16" in why or "avx512_bf16" in why)


def test_avx2_only_cpu_gets_float32_with_the_reason():
    dtype, why = auto_dtype("cpu", {"sse4_2", "avx", "avx2", "fma", "avx512f"})
    assert dtype == torch.float32 and "lacks" in why


def test_named_dtype_wins_over_the_hardware():
    assert resolve_dtype("float32", "cpu") == (torch.float32, "requested")
    assert resolve_dtype("bf16", "cpu")[0] == torch.bfloat16
    assert resolve_dtype(None, "cpu") == auto_dtype("cpu")


def test_this_machine_matches_its_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    flags = cpu_flags()
    want = torch.bfloat16 if {"amx_bf16", "avx512_bf16"} & flags else torch.float32
    assert auto_dtype("cpu")[0] == want


def test_machine_names_the_cpu_its_speed_flags_and_the_auto_dtype():
    import torch

    from r1probe.models.loader import SPEED_CPU_FLAGS, auto_dtype, cpu_flags, machine

    m = machine()
    assert m["cpu"] and m["cores"] >= 1 and m["torch_threads"] == torch.get_num_threads()
    assert m["flags"] == [f for f in SPEED_CPU_FLAGS if f in cpu_flags()]
    dt, why = auto_dtype("cpu")
    assert m["cpu_dtype_auto"] == str(dt).replace("torch.", "") and m["cpu_dtype_reason"] == why


def test_onednn_isa_cap_below_bfloat16_gets_float32(monkeypatch):
    """A CPU with native bfloat16 whose oneDNN is capped (ONEDNN_MAX_CPU_ISA) runs bfloat16 on the slow path."""
    flags = {"avx2", "avx512f", "avx512_bf16"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    dtype, why = auto_dtype("cpu", flags)
    assert dtype == torch.float32 and "ONEDNN_MAX_CPU_ISA=AVX2" in why
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert auto_dtype("cpu", flags)[0] == torch.bfloat16
