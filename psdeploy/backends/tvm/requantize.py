"""Requantization folded to one multiply-add per input: the arithmetic an int8 kernel's write-back runs.

Between two roundings the QDQ graph computes in fp32 one op at a time: a conv's accumulator scaled,
its bias added, the sum divided by the output's scale; at a residual add, each operand dequantized
first (a clamped value cast to uint8 and back, its zero point subtracted, its scale multiplied) and
the sum divided again. ``FuseOps`` puts all of it in the conv kernel, where it runs once per output
beside a reduction that may be short (a bottleneck's closing 1x1 sums 64 channels: 16 VNNI steps per
vector of 16 outputs), so two divides and a round trip through uint8 per output cost as much as the
conv. Each such chain is affine in its inputs with per-channel constants; this pass computes the
argument of every ``round`` as ``x_0 * c_0 + (x_1 * c_1 + k)`` (multiply-adds), the constants
combined here in float64, and reads a clamped integral value cast to uint8 and back as that value
(exact). Only the float rounding of the arithmetic changes, which moves an output by one step where
it lies within an ulp of a half; onnxruntime's QLinearConv likewise requantizes with one multiplier.
"""

from __future__ import annotations

import numpy as np

from psdeploy.backends.tvm.qdq import QUANTIZED_RANGE, op_name, per_axis

AFFINE_OPS = {"relax.multiply", "relax.divide", "relax.add", "relax.subtract"}


class Affine:
    """``sum(leaf * coefficient) + constant``, the coefficients and constant broadcastable per channel."""

    def __init__(self, terms: dict | None = None, constant: np.ndarray | float = 0.0) -> None:
        self.terms = terms or {}
        self.constant = np.asarray(constant, np.float64)

    @classmethod
    def leaf(cls, var) -> Affine:
        return cls({var: np.float64(1.0)})

    def scaled(self, factor: np.ndarray) -> Affine:
        return Affine({v: c * factor for v, c in self.terms.items()}, self.constant * factor)

    def plus(self, other: Affine) -> Affine:
        terms = dict(self.terms)
        for v, c in other.terms.items():
            terms[v] = terms[v] + c if v in terms else c
        return Affine(terms, self.constant + other.constant)


class _Chains:
    """Reads one Relax function's bindings: which values are constants per channel, which vars are used once."""

    def __init__(self, func) -> None:
        from tvm import relax

        self.values = relax.analysis.get_var2val(func)
        self.order = {b.var: i for i, b in enumerate(b for block in func.body.blocks for b in block.bindings)}
        self.uses: dict = {}
        for value in [*self.values.values(), func.body.body]:
            for var in relax.analysis.free_vars(value):
                self.uses[var] = self.uses.get(var, 0) + 1

    def bound(self, expr):
        """The value a var used only here is bound to (its chain may be folded into its reader), else None."""
        from tvm import relax

        if isinstance(expr, relax.Var) and self.uses.get(expr, 0) == 1:
            return self.values.get(expr)
        return None

    def per_channel(self, expr) -> np.ndarray | None:
        """A float constant (through vars and reshapes) whose every axis but the channels' has length 1, in
        float64; else None."""
        value = self._constant(expr)
        if value is None or not np.issubdtype(value.dtype, np.floating):
            return None
        if any(n != 1 for i, n in enumerate(value.shape) if i != 1):
            return None
        return value.astype(np.float64)

    def _constant(self, expr) -> np.ndarray | None:
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, relax.Var):
            expr = self.values.get(expr, expr)
        if op_name(expr) == "relax.reshape":
            inner = self._constant(expr.args[0])
            return None if inner is None else inner.reshape([int(v) for v in expr.ty.shape])
        return expr.value.numpy() if isinstance(expr, Constant) else None

    def affine(self, expr) -> Affine:
        """``expr`` as an affine form of the values its chain starts from (the leaves)."""
        value = self.bound(expr)
        name = op_name(value) if value is not None else ""
        if name in AFFINE_OPS and str(value.ty.dtype) == "float32":
            a, b = value.args
            ca, cb = self.per_channel(a), self.per_channel(b)
            if name == "relax.divide" and cb is not None:
                return self.affine(a).scaled(1.0 / cb)
            if name == "relax.multiply" and (ca is not None or cb is not None):
                return self.affine(b).scaled(ca) if ca is not None else self.affine(a).scaled(cb)
            if name in ("relax.add", "relax.subtract"):
                sign = -1.0 if name == "relax.subtract" else 1.0
                left = Affine(constant=ca) if ca is not None else self.affine(a)
                right = Affine(constant=cb) if cb is not None else self.affine(b)
                return left.plus(right.scaled(np.float64(sign)))
        return Affine.leaf(expr)

    def without_round_trip(self, form: Affine) -> Affine:
        """``form`` reading, in place of one leaf that casts a rounded, clamped value to an integer type and
        back, that value itself (exact). Only the latest such value: where two chains meet (a residual add of
        two convs' outputs) ``FuseOps`` puts the add in the kernel of the one computed last, so only that
        round trip is sure to lie inside one kernel; the other's value crosses between kernels, and is left
        to cross as the graph has it."""
        found = {}
        for leaf in form.terms:
            cast = self.values.get(leaf)
            if op_name(cast) == "relax.astype" and str(cast.ty.dtype) == "float32":
                clamped = self._integral_before(cast.args[0])
                if clamped is not None:
                    found[leaf] = clamped
        if not found:
            return form
        leaf = max(found, key=lambda v: self.order[found[v]])
        terms = {found[leaf] if v.same_as(leaf) else v: c for v, c in form.terms.items()}
        return Affine(terms, form.constant)

    def _integral_before(self, expr):
        """For a cast to an integer type used only here, of a value rounded and clamped to that type's range:
        the clamped fp32 value (its cast there and back is exact); else None."""
        cast = self.bound(expr)
        if op_name(cast) != "relax.astype" or str(cast.ty.dtype) not in QUANTIZED_RANGE:
            return None
        low, high = QUANTIZED_RANGE[str(cast.ty.dtype)]
        clamped = cast.args[0]
        value, bounds = self.values.get(clamped), []
        while op_name(value) in ("relax.minimum", "relax.maximum"):
            bound = self.per_channel(value.args[1])
            if bound is None:
                return None
            bounds.append(bound)
            value = self.values.get(value.args[0])
        in_range = len(bounds) == 2 and all(np.all((b >= low) & (b <= high)) for b in bounds)
        integral = op_name(value) == "relax.round" or (
            op_name(value) == "relax.add" and op_name(self.values.get(value.args[0])) == "relax.round"
            and (c := self.per_channel(value.args[1])) is not None and np.all(c == np.round(c)))
        return clamped if in_range and integral else None


def _channel_constant(values: np.ndarray, shape: tuple[int, ...]):
    """A coefficient as an fp32 constant over the channels of data of ``shape`` (``per_axis``: a tensor even where
    it is one number)."""
    from tvm import relax

    return relax.const(per_axis(np.asarray(values, np.float32), 1, shape))


def _emit(form: Affine, shape: tuple[int, ...], remap):
    """``x_0 * c_0 + (x_1 * c_1 + (... + k))``: each product added to the rest, a multiply-add for LLVM."""
    from tvm import relax

    total = _channel_constant(form.constant, shape) if np.any(form.constant) else None
    for leaf, coefficient in reversed(list(form.terms.items())):
        term = remap(leaf)
        if np.any(coefficient != 1.0):
            term = relax.op.multiply(term, _channel_constant(coefficient, shape))
        total = term if total is None else relax.op.add(term, total)
    return total


def requantization_pass():
    """The Relax pass: every ``round``'s argument, where it is an affine chain, as one multiply-add per input."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Folder(PyExprMutator):
        def __init__(self, mod, chains: _Chains) -> None:
            super().__init__(mod)
            self.chains = chains

        def visit_call_(self, call):
            if op_name(call) != "relax.round" or len(call.args[0].ty.shape) < 2:
                return super().visit_call_(call)
            form = self.chains.without_round_trip(self.chains.affine(call.args[0]))
            if len(form.terms) == 1 and call.args[0] in form.terms and not np.any(form.constant):
                return super().visit_call_(call)
            shape = tuple(int(v) for v in call.ty.shape)
            return relax.op.round(_emit(form, shape, self.visit_expr))

    @tvm.transform.module_pass(opt_level=0, name="psdeploy.FoldRequantization")
    def transform(mod, _ctx):
        for gv, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mod[gv] = Folder(mod, _Chains(func)).visit_expr(func)
        return relax.transform.DeadCodeElimination()(mod)

    return transform
