"""Batched fingertip inverse kinematics: projected Levenberg–Marquardt with seeds and restarts.

Shape legend: ``B`` problems (frames × hands), ``N`` rows (problem × starting point), ``A``
actuated joints, ``F`` = 5 fingertips.

Robust defaults for hands up to ~25 joints, in two passes:

1. Every problem starts from its warm start (the previous frame's solution) when one is given,
   otherwise from a small set of canonical poses (the middle of the joint ranges, the open hand,
   a quarter and three quarters of the ranges). All starting points of all problems are stacked
   into one batch of rows, so that each iteration is a handful of tensor operations.
2. Problems whose best fingertip error is still above ``restart_threshold_m`` (a local minimum,
   typically of a many-DoF thumb, or a warm start from another branch) are solved again from the
   canonical poses and ``restart_seeds`` fixed quasi-random points.

Fingers that share no joint move independently, so the best row is chosen per finger (per
independent fingertip group, see :meth:`~metis_embodiments.kinematics.HandKinematics.fingertip_groups`):
one starting point's thumb combines with another's index finger, which makes local minima of a
single finger far less likely to survive.

Each row stops on its own: when its problem has a row within ``tolerance_m`` on every fingertip,
or when its cost stops decreasing (a minimum, possibly of an unreachable target). Only the rows
still running are computed, so a few slow problems do not make the whole batch run to the
iteration cap.

Joint limits are kept by projection (clamping) and by freezing joints that sit on a bound while
the gradient pushes them out of it (a simple active set), which keeps the damped normal
equations well posed. The damping adapts per row: a step that lowers the squared fingertip
error is accepted and the damping shrinks; otherwise the step is rejected and damping grows.

Gradients: the iterations run without autograd; if the targets require grad, one extra
Gauss–Newton step at the solution carries the implicit derivative ``∂q/∂target = H⁻¹ Jᵀ`` (with
``H = JᵀJ + λI``), which is exact at a zero-residual solution and a damped approximation otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LMSettings", "canonical_starts", "solve_fingertip_ik"]

FingertipJacobianFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

#: Fractions of each joint range used as canonical starting points, after the open hand.
_CANONICAL_FRACTIONS = (0.5, 0.25, 0.75)
#: A row whose cost decreased by less than this fraction (or by less than 1 % of the squared
#: tolerance) this many iterations in a row has stopped.
_STALL_RATIO, _STALL_STEPS = 1e-3, 4


@dataclass(frozen=True)
class LMSettings:
    """Settings of :func:`solve_fingertip_ik`.

    Args:
        max_iterations: Upper bound on LM iterations per pass.
        tolerance_m: A problem is solved once one of its rows has every fingertip this close.
        seeds: Canonical starting points per problem without a warm start (middle of the ranges,
            open hand, 1/4 and 3/4 of the ranges, then quasi-random points).
        damping: Initial Levenberg–Marquardt damping ``λ`` (relative to ``diag(JᵀJ)``).
        dtype: Arithmetic of the iterations (float32 is faster; float64 more exact).
        restart_threshold_m: Problems whose best worst-fingertip error exceeds this after a pass
            are solved again from more starting points.
        restart_seeds: Quasi-random starting points per restarted problem (besides the
            canonical ones).
        restarts: How many restart passes at most (0 = none).
    """

    max_iterations: int = 40
    tolerance_m: float = 1e-5
    seeds: int = 4
    damping: float = 1e-3
    dtype: torch.dtype = torch.float32
    restart_threshold_m: float = 2e-4
    restart_seeds: int = 32
    restarts: int = 2


def canonical_starts(
    limits: torch.Tensor, count: int, *, open_joints: torch.Tensor | None = None, offset: int = 0
) -> torch.Tensor:
    """``(count, A)`` deterministic starting points inside the limits.

    The middle of the ranges, the open hand (``open_joints``, default zeros clamped into the
    limits), 1/4 and 3/4 of the ranges, then a fixed scrambled Sobol sequence (skipping its first
    ``offset`` points). The same points every call: results are reproducible and independent of
    the global random generator.
    """
    low, high = limits[:, 0], limits[:, 1]
    if open_joints is None:
        open_joints = torch.zeros_like(low)
    points = [low + 0.5 * (high - low), open_joints.to(low).clamp(low, high)]
    points += [low + f * (high - low) for f in _CANONICAL_FRACTIONS[1:]]
    points = points[:count]
    if count > len(points):
        engine = torch.quasirandom.SobolEngine(limits.shape[0], scramble=True, seed=1234)
        if offset:
            engine.fast_forward(offset)
        fractions = engine.draw(count - len(points), dtype=torch.float64).to(limits.dtype)
        points.extend(low + fractions * (high - low))
    return torch.stack(points)


def _group_choice(
    tip_sq: torch.Tensor, tip_group: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``(B, S, F)`` squared fingertip errors, the best of ``S`` rows per fingertip group.

    Returns:
        ``(choice (B, G + 1), best_tip_sq (B, F))``: the chosen row per group (the last column
        is the row with the lowest total cost, for joints that move no fingertip) and the
        squared errors of the assembled solution.
    """
    batch, seeds, _ = tip_sq.shape
    slot = torch.where(tip_group < 0, num_groups, tip_group)  # absent tips: a dummy group
    cost = tip_sq.new_zeros(batch, seeds, num_groups + 1).index_add_(2, slot, tip_sq)
    choice = cost[..., :num_groups].argmin(1)  # (B, G)
    overall = tip_sq.sum(-1).argmin(1, keepdim=True)  # (B, 1)
    choice = torch.cat([choice, overall], dim=1)
    rows = choice[:, slot]  # (B, F)
    best = tip_sq.gather(1, rows[:, None, :])[:, 0]
    return choice, best


def _assemble(q: torch.Tensor, choice: torch.Tensor, joint_group: torch.Tensor) -> torch.Tensor:
    """``(B, S, A)`` rows and ``(B, G + 1)`` choices → ``(B, A)`` joints, group by group."""
    num_groups = choice.shape[1] - 1
    slot = torch.where(joint_group < 0, num_groups, joint_group)
    rows = choice[:, slot]  # (B, A)
    return q.gather(1, rows[:, None, :])[:, 0]


def _run_lm(
    fingertips_and_jacobian: FingertipJacobianFn,
    q: torch.Tensor,
    targets: torch.Tensor,
    problem: torch.Tensor,
    num_problems: int,
    tip_group: torch.Tensor,
    num_groups: int,
    limits: torch.Tensor,
    settings: LMSettings,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """LM on rows ``q (N, A)`` towards ``targets (N, F*3)``; row ``i`` belongs to ``problem[i]``.

    A problem is done once, for every fingertip group, one of its rows has that group's
    fingertips within tolerance (groups move independently, so those rows combine); a row is
    done when its problem is, or when it stalls.

    Returns:
        ``(q (N, A), tip_sq (N, F), iterations)``: each row's joints and squared fingertip errors.
    """
    dtype = q.dtype
    low, high = limits[:, 0], limits[:, 1]
    rows, num_joints = q.shape
    tips, jac = fingertips_and_jacobian(q)
    residual = tips.reshape(rows, -1) - targets
    tip_sq = residual.reshape(rows, -1, 3).square().sum(-1)
    cost = tip_sq.sum(-1)
    damping = torch.full_like(cost, settings.damping)
    stalled = torch.zeros(rows, dtype=torch.long)
    eye = torch.eye(num_joints, dtype=dtype)
    tolerance_sq = settings.tolerance_m**2
    slot = torch.where(tip_group < 0, num_groups, tip_group)
    group_hits = torch.zeros(num_problems, num_groups + 1, dtype=torch.long)

    def record(indices: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
        # Per row and group: is every fingertip of the group within tolerance?
        bad = torch.zeros(sq.shape[0], num_groups + 1, dtype=torch.long)
        bad.index_add_(1, slot, (sq > tolerance_sq).long())
        group_hits.index_add_(0, problem[indices], (bad == 0).long())
        return (group_hits[:, :num_groups] > 0).all(-1)  # (B,) solved

    solved = record(torch.arange(rows), tip_sq)
    active = (~solved[problem]).nonzero()[:, 0]
    iterations = 0
    while active.numel() and iterations < settings.max_iterations:
        iterations += 1
        everything = active.numel() == rows
        if everything:
            qa, ja, ra, ca, da = q, jac, residual, cost, damping
        else:
            qa, ja, ra, ca = q[active], jac[active], residual[active], cost[active]
            da = damping[active]
        gradient = torch.einsum("nka,nk->na", ja, ra)
        # Joints on a bound whose descent direction leaves the box are frozen for this step.
        frozen = ((qa <= low + 1e-9) & (gradient > 0)) | ((qa >= high - 1e-9) & (gradient < 0))
        free = (~frozen).to(dtype)
        jac_free = ja * free[:, None, :]
        hessian = jac_free.transpose(1, 2) @ jac_free
        diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
        # Marquardt scaling plus an absolute floor: redundant hands (J > 15) and frozen joints
        # leave JᵀJ singular, and the floor keeps the system solvable in float32.
        damped = hessian + (da[:, None] * diagonal + 1e-6)[:, :, None] * eye
        step = torch.linalg.solve(damped, -(gradient * free)[..., None])[..., 0]
        q_trial = torch.minimum(torch.maximum(qa + step, low), high)
        tips_trial, jac_trial = fingertips_and_jacobian(q_trial)
        r_trial = tips_trial.reshape(active.numel(), -1) - (
            targets if everything else targets[active]
        )
        sq_trial = r_trial.reshape(active.numel(), -1, 3).square().sum(-1)
        c_trial = sq_trial.sum(-1)
        better = c_trial < ca
        # Progress: relative, and above float32's noise near the tolerance (1 % of tol²).
        gain = (ca - c_trial) / ca.clamp_min(1e-30)
        gain = torch.where(ca - c_trial > 1e-2 * tolerance_sq, gain, 0.0)
        new_q = torch.where(better[:, None], q_trial, qa)
        new_jac = torch.where(better[:, None, None], jac_trial, ja)
        new_r = torch.where(better[:, None], r_trial, ra)
        new_sq = torch.where(better[:, None], sq_trial, tip_sq if everything else tip_sq[active])
        new_c = torch.where(better, c_trial, ca)
        new_d = torch.where(better, da * 0.3, da * 10.0).clamp(1e-7, 1e7)
        new_stall = torch.where(
            gain > _STALL_RATIO, 0, (stalled if everything else stalled[active]) + 1
        )
        if everything:
            q, jac, residual, tip_sq, cost, damping, stalled = (
                new_q, new_jac, new_r, new_sq, new_c, new_d, new_stall
            )  # fmt: skip
        else:
            q[active], jac[active], residual[active], tip_sq[active] = new_q, new_jac, new_r, new_sq
            cost[active], damping[active], stalled[active] = new_c, new_d, new_stall
        solved = record(active, new_sq)
        keep = ~solved[problem[active]] & (new_stall < _STALL_STEPS)
        active = active[keep]
    return q, tip_sq, iterations


def solve_fingertip_ik(
    fingertips_and_jacobian: FingertipJacobianFn,
    targets: torch.Tensor,
    limits: torch.Tensor,
    *,
    initial_joints: torch.Tensor | None = None,
    settings: LMSettings = LMSettings(),
    open_joints: torch.Tensor | None = None,
    groups: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_errors: bool = False,
) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, torch.Tensor]:
    """Find joints whose fingertips reach ``targets`` (least squares), within ``limits``.

    Args:
        fingertips_and_jacobian: ``(N, A)`` joints → ``(N, F, 3)`` fingertips and
            ``(N, F*3, A)`` Jacobian, in the targets' frame.
        targets: ``(B, F, 3)``.
        limits: ``(A, 2)``.
        initial_joints: ``(B, A)`` warm start, e.g. the previous frame's solution; without it
            every problem starts from the canonical poses.
        settings: Solver settings.
        open_joints: ``(A,)`` the open hand, one of the canonical starting points.
        groups: ``(tip_group (F,), joint_group (A,))`` long tensors: independent fingertip
            groups (fingers that share no joint) and the group of each joint (-1: none). The
            best row is then chosen per group, so one seed's thumb can combine with another
            seed's index finger. Default: one group.
        return_errors: Also return the ``(B, F)`` fingertip errors (metres) of the solution.

    Returns:
        ``(joints (B, A), iterations)`` (plus the errors if asked); joints in ``targets.dtype``
        and within the limits; ``iterations`` counts the LM iterations of all passes.
    """
    dtype = settings.dtype
    batch, num_tips = targets.shape[0], targets.shape[1]
    num_joints = limits.shape[0]
    if batch == 0:
        empty = targets.new_zeros(0, num_joints)
        return (empty, 0, targets.new_zeros(0, num_tips)) if return_errors else (empty, 0)
    if groups is None:
        tip_group = torch.zeros(num_tips, dtype=torch.long)
        joint_group = torch.zeros(num_joints, dtype=torch.long)
    else:
        tip_group, joint_group = groups
    num_groups = int(tip_group.max()) + 1
    limits_c = limits.to(dtype)
    low, high = limits_c[:, 0], limits_c[:, 1]
    target_flat = targets.detach().to(dtype).reshape(batch, -1)
    open_c = None if open_joints is None else open_joints.to(dtype)

    if initial_joints is not None:
        starts = initial_joints.detach().to(dtype).clamp(low, high)[:, None, :]
    else:
        starts = canonical_starts(limits_c, settings.seeds, open_joints=open_c)
        starts = starts.expand(batch, -1, -1)
    seeds = starts.shape[1]
    q, tip_sq, iterations = _run_lm(
        fingertips_and_jacobian,
        starts.reshape(batch * seeds, num_joints).clone(),
        target_flat.repeat_interleave(seeds, dim=0),
        torch.arange(batch).repeat_interleave(seeds),
        batch,
        tip_group,
        num_groups,
        limits_c,
        settings,
    )
    q, tip_sq = q.reshape(batch, seeds, num_joints), tip_sq.reshape(batch, seeds, num_tips)
    choice, best_sq = _group_choice(tip_sq, tip_group, num_groups)
    best_q = _assemble(q, choice, joint_group)

    threshold_sq = settings.restart_threshold_m**2
    n_canonical = len(_CANONICAL_FRACTIONS) + 1
    canonical_used = 0 if initial_joints is not None else min(settings.seeds, n_canonical)
    sobol_used = 0 if initial_joints is not None else max(0, settings.seeds - n_canonical)
    for attempt in range(settings.restarts):
        failing = (best_sq.amax(-1) > threshold_sq).nonzero()[:, 0]
        if failing.numel() == 0:
            break
        # Restart from the canonical poses the first pass did not use and from quasi-random
        # points not used before; the best so far competes group by group.
        fresh = canonical_starts(
            limits_c,
            n_canonical + settings.restart_seeds,
            open_joints=open_c,
            offset=sobol_used + attempt * settings.restart_seeds,
        )
        fresh = fresh[canonical_used if attempt == 0 else n_canonical :]
        count, fail = fresh.shape[0], failing.numel()
        q_r, sq_r, its = _run_lm(
            fingertips_and_jacobian,
            fresh.repeat(fail, 1),
            target_flat[failing].repeat_interleave(count, dim=0),
            torch.arange(fail).repeat_interleave(count),
            fail,
            tip_group,
            num_groups,
            limits_c,
            settings,
        )
        iterations += its
        candidates_q = torch.cat([best_q[failing, None], q_r.reshape(fail, count, -1)], dim=1)
        candidates_sq = torch.cat([best_sq[failing, None], sq_r.reshape(fail, count, -1)], dim=1)
        choice, merged_sq = _group_choice(candidates_sq, tip_group, num_groups)
        best_q[failing] = _assemble(candidates_q, choice, joint_group)
        best_sq[failing] = merged_sq

    # Clamp again in the targets' dtype: float32 limits rounded outwards would leak out.
    limits_t = limits.to(targets.dtype)
    joints = torch.minimum(torch.maximum(best_q.to(targets.dtype), limits_t[:, 0]), limits_t[:, 1])
    if targets.requires_grad:
        joints = _implicit_gradient_step(
            fingertips_and_jacobian, joints, targets, limits.to(targets.dtype)
        )
    if return_errors:
        return joints, iterations, best_sq.sqrt().to(targets.dtype)
    return joints, iterations


def _implicit_gradient_step(
    fingertips_and_jacobian: FingertipJacobianFn,
    joints: torch.Tensor,
    targets: torch.Tensor,
    limits: torch.Tensor,
) -> torch.Tensor:
    """One Gauss–Newton step with autograd on, so that ``joints`` depend on ``targets``."""
    with torch.no_grad():
        tips, jac = fingertips_and_jacobian(joints)
    at_bound = (joints <= limits[:, 0] + 1e-9) | (joints >= limits[:, 1] - 1e-9)
    jac = jac * (~at_bound).to(jac.dtype)[:, None, :]
    hessian = jac.transpose(1, 2) @ jac
    hessian = hessian + 1e-6 * torch.eye(joints.shape[-1], dtype=jac.dtype)
    residual = targets.reshape(joints.shape[0], -1) - tips.reshape(joints.shape[0], -1)
    step = torch.linalg.solve(hessian, (jac.transpose(1, 2) @ residual[..., None]))[..., 0]
    return joints + step - step.detach()
