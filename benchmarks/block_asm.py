"""The hot loop of a per-sample model's block kernel, instruction by instruction (issue #15).

Builds W4's model (y = a*exp(-b*x)*sin(c*x + d) + e, squared error; edit ``loss`` in
``main`` for another per-sample model), compiles its block kernel
(``model.trainer.block``, a ``numba.cfunc``) and prints the innermost vectorized loop of
its machine code: instructions per iteration, by class (multiplies/FMAs, adds, moves,
integer and mask work, operands read from the stack, i.e. spilled constants), and the
vector width. A diagnostic for levers, not a benchmark: counts, no timings.

What it showed for W4 (session 10; 2 vCPUs AMD EPYC Zen 4 under KVM, ~3.6 GHz, numba
0.68.1; timings are one-thread block passes, in-process interleaved A/B on a pinned core,
thread time, the machine shared with two other measuring processes, load 3-4):

- The loop: 8 samples per iteration in zmm, 110 instructions (108 with the product reuse):
  51 multiplies/FMAs (exp 17, sincos 24, the residual and adjoints 10; 49 with the reuse),
  28 adds/subs/min/max, 16 moves (7 reloads of spilled constants, 9 register copies, most
  for the FMAs' destroyed operand), 12 integer/mask/blend/convert (exp's exponent, sin/cos
  quadrant, range check), 3 loop control; 33 operands are constants read from the stack.
  ~73 cycles per iteration (2.55 ns/sample).
  Neither the FMA pipes (51 zmm ops, one per cycle) nor dispatch explain it alone; latency
  chains (exp ~65 cycles deep, the residual after it) and the scheduler window share it.
- Without sin/cos 0.67x, without exp 0.78x, without both 0.31x the time: the math
  kernels are ~70 % of it, sub-additive (they overlap).
- 256-bit vectors (prefer-256-bit): the same 110 instructions for 4 samples, 1.71x slower.
  LLVM interleave 2 (16 samples per iteration): 0.99x (278 instructions, 64 reloads); two
  halves of the block in one iteration written out: 1.13x (83 stack operands).
- Shorter chains cost more instructions and gain nothing: Estrin exp polynomial 1.00x,
  sin/cos 1.00x, both 1.03x; the range check moved to sin/cos's argument (4 instructions
  fewer, one select more on the chain) 1.03x. Machine LICM off (constants re-broadcast
  each iteration, no spills, 146 instructions) 0.93x to 1.06x between runs: not kept.
- Each multiply/FMA saved is worth ~0.7-1 %: sin and cos one degree lower 0.987x, exp two
  degrees lower 0.98x (accuracy not kept, speed probes only); two adds fused into FMAs
  0.994x. The product reuse (2 multiplies) 0.973x, reverted: finite but imprecise
  gradients where a forward product underflows
  (test_block_keeps_a_precise_gradient_where_a_forward_product_underflows).
- Outside the samples: a step on one block (2048 samples) is ~5 us against ~2.6 ms on
  1e6 samples (0.2 %).

On AVX2 (session 11; 2 vCPUs AMD EPYC Zen 3 "Milan" under KVM, 2.45 GHz nominal, ~2.8 GHz
measured on a chain of dependent multiply-adds, 16 ymm registers; numba 0.68.1; one-thread
block passes over W4's 1e6 samples with ``block_ab.py``: in-process interleaved A/B, thread
time, 20-40 pairs a process, 2-5 processes; the machine shared with two other measuring
processes, load 2.5-6.5):

- The loop: 4 samples per iteration (ymm), 135 instructions: 51 multiplies/FMAs, 28
  adds/subs/min/max, 24 moves (reloads of spilled constants; the running sums spilled too),
  29 integer/mask/blend (7 blends: exp's 64-bit clamp of k, which AVX2 does as vpcmpgtq +
  vblendvpd, 2; exp's nan 1; sin/cos quadrant 2; sin/cos range check 2); 51 operands read
  from the stack. 6.0-7.2 ms per 1e6 samples (17-20 cycles a sample); the same code reads
  the same in one process to ~1 % (A/A 0.998-1.004) but ~20 % apart between processes.
- Bound by the instruction count more than by latency here (Zen 4 was the other way round):
  without exp 0.66-0.69x the time (49 instructions fewer), without sin/cos 0.60-0.61x (65
  fewer), without the range check 0.97x (7 fewer): ~0.45-0.65 % an instruction; 8 more
  multiplies +1 to +7 % (5 processes of 6; one read 0.87), 8 more adds +2 %. A loop of
  Horner polynomials reaches ~1.1 FMAs a cycle (of 2) with chains of 17 or of 5 alike.
- Tried and dropped:
  - Loop fission (exp, sin and cos of 64, 256 or 2048 samples into buffers, then the
    residual, adjoints and sums; one or two math passes): 1.21-1.27x slower. The passes
    take 75 + 106 + 25 instructions per 4 samples against 135 (LLVM re-broadcasts the
    constants in each inner loop rather than keeping them), plus the stores and loads.
  - exp's 2**k in doubles (k clamped by vminpd/vmaxpd, both powers of 2 from the low bits
    of k + 1.5*2**52 + 1023 shifted into the exponent, nan kept by the argument clamp's
    compares instead of a final select; the same doubles, tests pass): 134 instructions
    (the nan-keeping clamp is 3 instructions), 0.973, 1.011, 0.998: no gain.
  - Estrin for exp's polynomial, sin/cos's, both: 1.00x, 1.03x, 1.01x.
  - The range check on the argument (once for sin and cos): 131 instructions, 1.007 to
    1.011x (its select is on the chain).
  - ``fastmath={"contract"}`` on the block (its own multiplies and adds, and the products
    going into the sums, fused into FMAs; vecmath keeps its strict flags; the exact block
    strict): 133 instructions (6 multiplies and 5 adds fewer, 4 FMAs more). One-thread A/B:
    0.86-0.93x in 14 processes loading both blocks from Numba's cache, 0.98-1.11x (median
    ~1.02, two clusters) in 12 processes compiling both afresh; ``Model.fit`` on two threads
    (40 full-batch epochs, a fresh model per process, alternating): median 0.88x over 19
    pairs, 0.66-1.38x, 13 of them under 1, at load 5-7. Not kept: unproven at this noise
    (13 of 19 is p ~ 0.08 one-sided), and it changes the model's rounding (a line that
    cancels exactly, ``a*a - b*b``, may not); worth one measurement on a quiet machine.
- Measuring: two *different* compiled blocks compared in one process give a ratio steady to
  ~1 % within the process but clustered ~8 % apart between processes (the same source
  compiled twice reads 1.00 every time). Not loop alignment (``-align-loops=64``: 0.96-1.00)
  and not the stack's alignment at the block's entry (its frame address 0, 16, 32 or 48 mod
  64 read alike); the cause is open. So a lever under ~10 % needs many processes, each
  compiling afresh, before it is believed.
- The 15x-PyTorch target of issue #15 (<= ~1.73 ms a W4 step on two threads, ~3.5 ms per
  1e6 samples on one) needs about half the instructions; the hand-written ceiling in
  ``workloads/w4.py`` runs the same math (a serial copy of its loop: 130 instructions, 51
  stack operands) and reads within the noise of symgrad's row in ``run.py``.

Run: ``PYTHONPATH=. python benchmarks/block_asm.py``.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile

FMA = re.compile(r"^vf\w*(madd|msub)|^vmul|^vscalef")
ADD = re.compile(r"^v(add|sub|min|max)[ps]d")
MOVE = re.compile(r"^v?mov")


def hot_loop(asm: str) -> list[str]:
    """The instructions of the loop (label .. backward jump) with the most vector operands."""
    lines = asm.splitlines()
    labels = {line[:-1]: i for i, line in enumerate(lines) if re.match(r"^\.LBB\d+_\d+:$", line)}
    best: tuple[int, list[str]] = (-1, [])
    for i, line in enumerate(lines):
        jump = re.match(r"\s+j\w+\s+(\.LBB\d+_\d+)", line)
        if jump and labels.get(jump.group(1), i) < i:
            body = [x.strip() for x in lines[labels[jump.group(1)] + 1:i + 1]
                    if x.startswith("\t") and not x.startswith("\t.")]
            vector = sum("zmm" in x or "ymm" in x for x in body)  # packed, not the tail
            if vector > best[0]:
                best = (vector, body)
    return best[1]


def main() -> None:
    os.environ.setdefault("SYMGRAD_CACHE_DIR", tempfile.mkdtemp())  # compile, not load
    import sympy as sp

    import symgrad as sg

    a, b, c, d, e, x, y = sp.symbols("a b c d e x y")
    loss = (a * sp.exp(-b * x) * sp.sin(c * x + d) + e - y) ** 2
    params = {p: 0.5 for p in (a, b, c, d, e) if p in loss.free_symbols}
    model = sg.Model(loss=loss, params=params, data=[x, y])
    body = hot_loop(model.trainer.block._library.get_asm_str())
    ops = collections.Counter(line.split()[0] for line in body)
    width = next((w for w in ("zmm", "ymm") if any(w in x for x in body)), "xmm")
    group = collections.Counter()
    for op, n in ops.items():
        kind = ("multiply/FMA" if FMA.match(op) else "add/sub/min/max" if ADD.match(op)
                else "move" if MOVE.match(op) else "loop control" if not op.startswith("v")
                else "integer/mask/blend/convert")
        group[kind] += n
    print(f"loss {loss}: {len(body)} instructions per iteration ({width})")
    for kind, n in group.most_common():
        print(f"  {kind:28s} {n}")
    print(f"  operands read from the stack {sum('(%rsp)' in x for x in body)}")
    print("  " + ", ".join(f"{op} {n}" for op, n in ops.most_common()))


if __name__ == "__main__":
    main()
