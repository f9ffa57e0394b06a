"""Batched fingertip inverse kinematics: projected Levenberg–Marquardt over several seeds.

Shape legend: ``B`` problems (frames × hands), ``S`` seeds per problem, ``A`` actuated joints,
``F`` = 5 fingertips.

Every problem is solved with ``S`` starting points at once (the previous frame's solution when
given, the middle of the joint ranges, and fixed quasi-random points), all stacked into one
batch of ``B·S`` so that each iteration is a handful of tensor operations regardless of ``B``.
Joint limits are kept by projection (clamping) and by freezing joints that sit on a bound while
the gradient pushes them out of it (a simple active set), which keeps the damped normal
equations well posed. The damping adapts per problem: a step that lowers the squared fingertip
error is accepted and the damping shrinks; otherwise the step is rejected and damping grows.

Gradients: the iterations run without autograd; if the targets require grad, one extra
Gauss–Newton step at the solution carries the implicit derivative ``∂q/∂target = H⁻¹ Jᵀ`` (with
``H = JᵀJ + λI``), which is exact at a zero-residual solution and a damped approximation otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LMSettings", "solve_fingertip_ik"]

FingertipJacobianFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LMSettings:
    """Settings of :func:`solve_fingertip_ik`.

    Args:
        max_iterations: Upper bound on LM iterations.
        tolerance_m: Stop once every problem's worst fingertip error is below this (metres).
        seeds: Starting points per problem besides the warm start: the middle of the ranges plus
            ``seeds - 1`` fixed quasi-random points.
        damping: Initial Levenberg–Marquardt damping ``λ`` (relative to ``diag(JᵀJ)``).
        dtype: Arithmetic of the iterations (float32 is faster; float64 more exact).
    """

    max_iterations: int = 40
    tolerance_m: float = 1e-5
    seeds: int = 2
    damping: float = 1e-3
    dtype: torch.dtype = torch.float32


def _seed_points(limits: torch.Tensor, count: int) -> torch.Tensor:
    """``(count, A)`` deterministic starting points inside the limits."""
    low, high = limits[:, 0], limits[:, 1]
    # Middle of the ranges first, then a fixed Sobol sequence (same seeds every call, so that
    # results are reproducible and independent of the global RNG).
    fractions = [torch.full_like(low, 0.5)]
    if count > 1:
        engine = torch.quasirandom.SobolEngine(limits.shape[0], scramble=True, seed=1234)
        fractions.extend(engine.draw(count - 1, dtype=limits.dtype))
    return low + torch.stack(fractions) * (high - low)


def solve_fingertip_ik(
    fingertips_and_jacobian: FingertipJacobianFn,
    targets: torch.Tensor,
    limits: torch.Tensor,
    *,
    initial_joints: torch.Tensor | None = None,
    settings: LMSettings = LMSettings(),
) -> tuple[torch.Tensor, int]:
    """Find joints whose fingertips reach ``targets`` (least squares), within ``limits``.

    Args:
        fingertips_and_jacobian: ``(N, A)`` joints → ``(N, F, 3)`` fingertips and
            ``(N, F*3, A)`` Jacobian, in the targets' frame.
        targets: ``(B, F, 3)``.
        limits: ``(A, 2)``.
        initial_joints: ``(B, A)`` warm start, e.g. the previous frame's solution.
        settings: Solver settings.

    Returns:
        ``(joints (B, A), iterations)``; joints in ``targets.dtype`` and within the limits.
    """
    dtype = settings.dtype
    batch = targets.shape[0]
    limits_c = limits.to(dtype)
    low, high = limits_c[:, 0], limits_c[:, 1]
    num_joints = limits.shape[0]
    target_flat = targets.detach().to(dtype).reshape(batch, -1)

    starts = _seed_points(limits_c, settings.seeds).expand(batch, -1, -1)
    if initial_joints is not None:
        warm = initial_joints.detach().to(dtype).clamp(low, high)[:, None, :]
        starts = torch.cat([warm, starts], dim=1)
    seeds = starts.shape[1]
    q = starts.reshape(batch * seeds, num_joints).contiguous()
    target_rep = target_flat.repeat_interleave(seeds, dim=0)

    tips, jac = fingertips_and_jacobian(q)
    residual = tips.reshape(q.shape[0], -1) - target_rep
    cost = residual.square().sum(-1)
    damping = torch.full_like(cost, settings.damping)
    eye = torch.eye(num_joints, dtype=dtype)
    tolerance_sq = settings.tolerance_m**2
    iterations = 0
    for iterations in range(1, settings.max_iterations + 1):  # noqa: B007
        gradient = torch.einsum("nka,nk->na", jac, residual)
        # Joints on a bound whose descent direction leaves the box are frozen for this step.
        active = ((q <= low + 1e-9) & (gradient > 0)) | ((q >= high - 1e-9) & (gradient < 0))
        free = (~active).to(dtype)
        jac_free = jac * free[:, None, :]
        hessian = jac_free.transpose(1, 2) @ jac_free
        diagonal = torch.diagonal(hessian, dim1=1, dim2=2)
        # Marquardt scaling plus an absolute floor: redundant hands (J > 15) and frozen joints
        # leave JᵀJ singular, and the floor keeps the system solvable in float32.
        damped = hessian + (damping[:, None] * diagonal + 1e-6)[:, :, None] * eye
        step = torch.linalg.solve(damped, -(gradient * free)[..., None])[..., 0]
        q_trial = torch.minimum(torch.maximum(q + step, low), high)
        tips_trial, jac_trial = fingertips_and_jacobian(q_trial)
        residual_trial = tips_trial.reshape(q.shape[0], -1) - target_rep
        cost_trial = residual_trial.square().sum(-1)
        better = cost_trial < cost
        q = torch.where(better[:, None], q_trial, q)
        jac = torch.where(better[:, None, None], jac_trial, jac)
        residual = torch.where(better[:, None], residual_trial, residual)
        cost = torch.where(better, cost_trial, cost)
        damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-7, 1e7)
        # Converged when every problem has one seed whose worst fingertip is within tolerance.
        worst_tip = residual.reshape(batch, seeds, -1, 3).square().sum(-1).amax(-1)
        if bool((worst_tip.amin(-1) <= tolerance_sq).all()):
            break

    best = cost.reshape(batch, seeds).argmin(-1)
    rows = torch.arange(batch) * seeds + best
    joints = q[rows].to(targets.dtype)
    if targets.requires_grad:
        joints = _implicit_gradient_step(
            fingertips_and_jacobian, joints, targets, limits.to(targets.dtype)
        )
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
