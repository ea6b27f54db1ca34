"""The VNNI dot product (``vpdpbusd``: 16 int32 lanes += 4 uint8 x 4 int8 each) as a TVM tensor intrinsic.

TVM 0.27 ships one (``dot_16x4_vnni``, ``tvm/s_tir/tensor_intrin/x86.py``), but its implementation
calls ``llvm.x86.avx512.vpdpbusd.512`` with ``<16 x i32>`` operands, the signature of LLVM before 20;
the LLVM TVM 0.27 is built with declares ``<64 x i8>`` ones, and module verification fails. This is
the same description with the operands passed as bytes, its accumulator in the ``local`` scope that
the int8 rule's register tile is cached in.
"""

from __future__ import annotations

INTRIN = "psdeploy_dot_16x4_vnni"


def register_vnni_intrinsic() -> None:
    """Register ``INTRIN`` with TVM (idempotent)."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    if TensorIntrin.get(INTRIN, allow_missing=True) is not None:
        return

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1, scope="local")) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            A_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(A_i32, 16), dtype="int8x64"),
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(INTRIN, desc, impl)
