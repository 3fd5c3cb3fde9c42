"""Forward+backward time of every loss, as a ratio to ``F.cross_entropy`` on the same input.

Two inputs: classification logits (128, 200) and segmentation logits (4, 21, 256, 256) with
about 10% of the pixels ignored (``ignore_index=255``). Logits are ``5 * randn`` so that both
ACLS terms and the MbLS hinge are active (``max_k z > 10`` on many rows, distances above 10).

For ACLS, MbLS and FLSD the table also times a *plain* formulation of the same formula, written
the way the public code writes it (flatten and mask copy, ``max``, ``repeat``, indicator,
``relu``, square, sum; FLSD's gamma picked in a per-sample Python loop), and checks in float64
that ours gives the same loss and gradient (``max |diff|``).

Every function is timed in the same rounds, interleaved (in rotating order; each timing is a
run of back-to-back calls lasting ~10 ms after one untimed call, as a training loop calls
its loss every step), after warm-up;
a ratio is the median over rounds of time / time(CE) in that round, which cancels most of
the drift of a shared machine. On a busy machine, ``--clock
cpu`` (with ``--threads 1``) times the CPU time of the calling thread, which leaves out the
time other processes take from it. Never a timed test: run it by hand.

    python benchmarks/losses.py                                   # wall clock, default threads
    python benchmarks/losses.py --threads 1 --clock cpu --rounds 31
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import losses._native as native
from lightning_calib.rows import to_rows
from losses import (
    ACLS,
    CPC,
    FLSD,
    MMCE,
    CrossEntropy,
    EntropyPenalty,
    FocalLoss,
    LabelSmoothing,
    MbLS,
)

IGNORE = 255
LossFn = Callable[[Tensor, Tensor], Tensor]


# --- plain formulations, as the public code writes them -------------------------------------


def plain_acls(logits, target, alpha=0.1, pos_lambda=1.0, neg_lambda=0.1, margin=10.0):
    rows, target = to_rows(logits, target, IGNORE)
    ce = F.cross_entropy(rows, target)
    n_cls = rows.shape[1]
    max_values = rows.max(dim=1).values.unsqueeze(1).repeat(1, n_cls)
    indicator = (max_values.clone().detach() == rows.clone().detach()).to(rows.dtype)
    neg_dist = max_values.clone().detach() - rows
    pos_dist_margin = F.relu(max_values - margin)
    neg_dist_margin = F.relu(neg_dist - margin)
    pos = indicator * pos_dist_margin**2
    neg = (1.0 - indicator) * neg_dist_margin**2
    reg = pos_lambda * pos.sum(dim=1) + neg_lambda * neg.sum(dim=1) / (n_cls - 1)
    return ce + alpha * reg.mean()


def plain_mbls(logits, target, margin=10.0, alpha=0.1):
    rows, target = to_rows(logits, target, IGNORE)
    ce = F.cross_entropy(rows, target)
    max_values = rows.max(dim=1).values.unsqueeze(1).repeat(1, rows.shape[1])
    diff = max_values - rows
    return ce + alpha * F.relu(diff - margin).mean()


def loop_gammas(p_target: Tensor, gamma: float = 3.0) -> Tensor:
    gamma_dic = {0.2: 5.0, 0.5: 3.0}
    gammas = []
    for i in range(p_target.shape[0]):
        p = p_target[i].item()
        if p >= 0.5:
            gammas.append(gamma)
            continue
        for key in sorted(gamma_dic):
            if p < key:
                gammas.append(gamma_dic[key])
                break
    return torch.tensor(gammas, dtype=p_target.dtype, device=p_target.device)


def plain_flsd(logits, target, gamma=3.0):
    rows, target = to_rows(logits, target, IGNORE)
    logpt = F.log_softmax(rows, dim=1).gather(1, target.unsqueeze(1)).view(-1)
    pt = logpt.exp()
    gammas = loop_gammas(pt.detach(), gamma)
    return (-1 * (1 - pt) ** gammas * logpt).mean()


def eager(loss: LossFn) -> LossFn:
    """``loss`` on its PyTorch implementation (losses/_fused.py), the C kernel switched off."""
    default = native._enabled

    def call(logits: Tensor, target: Tensor) -> Tensor:
        native._enabled = False
        try:
            return loss(logits, target)
        finally:
            native._enabled = default

    return call


# --- timing ----------------------------------------------------------------------------------

CLOCK = time.perf_counter  # main() switches to time.thread_time with --clock cpu


def fwd_bwd(fn: LossFn, logits: Tensor, target: Tensor) -> Callable[[], None]:
    leaf = logits.detach().clone().requires_grad_()

    def step() -> None:
        leaf.grad = None
        fn(leaf, target).backward()

    return step


def time_interleaved(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, number: int = 1
) -> dict[str, list[float]]:
    """Per function, the list of per-round seconds per call, in rotating order: per round, one
    untimed call, then ``number`` timed back-to-back calls (the steady state of a training loop
    that calls the same loss every step, not the first call after another function's)."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step = steps[name]
            step()  # untimed: caches and allocator as this function leaves them
            start = CLOCK()
            for _ in range(number):
                step()
            times[name].append((CLOCK() - start) / number)
    return times


def calls_per_sample(step: Callable[[], None], target: float = 10e-3) -> int:
    """How many back-to-back calls of ``step`` take about ``target`` seconds (at least 1)."""
    start = time.perf_counter()
    step()
    return max(1, int(target / max(time.perf_counter() - start, 1e-7)))


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median over rounds of ``time(name) / time(base)`` in the same round."""
    return statistics.median(t / c for t, c in zip(times[name], times[base]))


def float64_gap(ours: LossFn, plain: LossFn, logits: Tensor, target: Tensor) -> float:
    """Largest difference of loss or gradient between ours and plain, in float64."""
    values, grads = [], []
    for fn in (ours, plain):
        leaf = logits.detach().double().requires_grad_()
        value = fn(leaf, target)
        value.backward()
        values.append(value.detach())
        grads.append(leaf.grad)
    return max(float((values[0] - values[1]).abs()), float((grads[0] - grads[1]).abs().max()))


def make_input(shape: tuple[int, ...], seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = 5.0 * torch.randn(shape, generator=gen)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    if logits.ndim > 2:
        target[torch.rand(target.shape, generator=gen) < 0.1] = IGNORE
    return logits, target


def bench(shape: tuple[int, ...], rounds: int, warmup: int, slow_rounds: int) -> None:
    logits, target = make_input(shape)
    ours = {
        "CrossEntropy": CrossEntropy(ignore_index=IGNORE),
        "LabelSmoothing": LabelSmoothing(ignore_index=IGNORE),
        "FocalLoss": FocalLoss(ignore_index=IGNORE),
        "EntropyPenalty": EntropyPenalty(ignore_index=IGNORE),
        "MMCE": MMCE(ignore_index=IGNORE),
        "FLSD": FLSD(ignore_index=IGNORE),
        "MbLS": MbLS(ignore_index=IGNORE),
        "ACLS": ACLS(ignore_index=IGNORE),
        "CPC": CPC(ignore_index=IGNORE),
    }
    plain = {"MbLS": plain_mbls, "ACLS": plain_acls, "FLSD": plain_flsd}
    slow = {"CPC", "FLSD plain"}  # a Python loop, or O(K^2) pairs per row: fewer rounds

    def ce(z: Tensor, t: Tensor) -> Tensor:
        return F.cross_entropy(z, t, ignore_index=IGNORE)

    steps = {"CE": fwd_bwd(ce, logits, target)}
    for name, loss in ours.items():
        steps[name] = fwd_bwd(loss, logits, target)
        if name in ("CrossEntropy", "FLSD", "MbLS", "ACLS"):
            unchecked = type(loss)(ignore_index=IGNORE, validate=False)
            steps[name + " nv"] = fwd_bwd(unchecked, logits, target)
        if name in ("MbLS", "ACLS") and native.library() is not None:
            steps[name + " eager"] = fwd_bwd(eager(loss), logits, target)
    for name, fn in plain.items():
        steps[name + " plain"] = fwd_bwd(fn, logits, target)
    steps["CE"]()  # warm
    number = calls_per_sample(steps["CE"])
    times = time_interleaved(
        {k: v for k, v in steps.items() if k not in slow}, rounds, warmup, number
    )
    slow_times = time_interleaved(
        {"CE": steps["CE"], **{k: v for k, v in steps.items() if k in slow}}, slow_rounds, 1
    )

    def of(name: str) -> float:
        if name in slow:
            return ratio(slow_times, name, "CE")
        return ratio(times, name, "CE")

    ce_ms = statistics.median(times["CE"]) * 1e3
    print(
        f"\n{tuple(shape)}: F.cross_entropy forward+backward {ce_ms:.3f} ms = 1.00 "
        f"({number} back-to-back calls per timing)"
    )
    print(
        f"{'loss':<16}{'ours':>7}{'nv':>7}{'eager':>7}{'plain':>8}{'plain/ours':>12}"
        f"{'f64 max|diff|':>15}{'eager f64 |diff|':>18}"
    )
    for name in ours:
        nv = f"{of(name + ' nv'):.2f}" if name + " nv" in times else "-"
        fallback = f"{of(name + ' eager'):.2f}" if name + " eager" in times else "-"
        line = f"{name:<16}{of(name):>7.2f}{nv:>7}{fallback:>7}"
        if name in plain:
            gap = float64_gap(ours[name], plain[name], logits, target)
            p = of(name + " plain")
            line += f"{p:>8.2f}{p / of(name):>11.1f}x{gap:>15.1e}"
            if name + " eager" in times:
                line += f"{float64_gap(ours[name], eager(ours[name]), logits, target):>18.1e}"
        print(line)


def bench_gamma(shape: tuple[int, ...], rounds: int) -> None:
    """The gamma rule alone: one ``bucketize`` and one ``take`` vs the per-sample loop."""
    logits, target = make_input(shape)
    rows, labels = to_rows(logits, target, IGNORE)
    p = F.softmax(rows, 1).gather(1, labels.unsqueeze(1)).view(-1)
    flsd = FLSD()

    def vectorized() -> None:
        flsd.gammas(p)

    vec = time_interleaved({"v": vectorized}, rounds, 2, calls_per_sample(vectorized))["v"]
    loop = time_interleaved({"l": lambda: loop_gammas(p)}, max(1, rounds // 5), 0)["l"]
    same = torch.equal(flsd.gammas(p), loop_gammas(p))
    v, lp = statistics.median(vec), statistics.median(loop)
    print(
        f"{tuple(shape)}: {p.numel()} rows, vectorized {v * 1e3:.4f} ms, loop {lp * 1e3:.2f} ms "
        f"({lp / v:.0f}x), identical: {same}"
    )


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--rounds", type=int, default=21, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--slow-rounds", type=int, default=3, help="rounds of the slow ones")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            parser.error("--clock cpu needs --threads 1 (other threads' time is not counted)")
        CLOCK = time.thread_time
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
        f"median of {args.rounds} interleaved rounds after {args.warmup} warm-up.\n"
        "Forward+backward time / F.cross_entropy's on the same input. ours: default "
        "(validate=True; ACLS/MbLS on the C kernel); nv: validate=False;\neager: ACLS/MbLS on "
        "their PyTorch implementation (the fallback); plain: the same formula written as the "
        "public code\nwrites it; f64 max|diff|: ours vs plain (or vs eager), loss and gradient, "
        "in float64.\n"
        f"C kernel: {'built, ' + native.build().name if native.library() else 'unavailable'}"
    )
    bench((128, 200), args.rounds, args.warmup, args.rounds)
    bench((4, 21, 256, 256), args.rounds, args.warmup, args.slow_rounds)
    print("\nFLSD gamma rule alone (vectorized vs per-sample Python loop):")
    bench_gamma((128, 200), args.rounds)
    bench_gamma((4, 21, 256, 256), args.rounds)


if __name__ == "__main__":
    main()
