"""Annealing schedules of the density-rank threshold τ(t).

τ starts at 1 (only translations as dense as the densest real clip of their
class get weight ≈ ½ or more) and decreases to `tau_min` over `annealing_epochs`
epochs, then stays at `tau_min`, letting reliable low-density translations in.
With progress `s = clip(t / annealing_epochs, 0, 1)`:

    linear:  τ = 1 − (1 − τ_min) · s
    cosine:  τ = τ_min + (1 − τ_min) · (1 + cos(π s)) / 2
    step:    τ = 1 − (1 − τ_min) · floor(s · num_steps) / num_steps

(`annealing_epochs ≤ 0` means τ = τ_min from the start.) The epoch may be a
tensor, so the schedule can be evaluated inside a compiled `train_step`.
"""

import math

import tensorflow as tf

ANNEALING_SCHEDULES = ("linear", "cosine", "step")


def _progress(epoch, annealing_epochs):
    """`clip(epoch / annealing_epochs, 0, 1)` as float32 (1 if no annealing)."""
    epoch = tf.cast(tf.convert_to_tensor(epoch), tf.float32)
    annealing_epochs = tf.cast(tf.convert_to_tensor(annealing_epochs), tf.float32)
    safe_epochs = tf.maximum(annealing_epochs, 1.0)
    return tf.where(annealing_epochs > 0.0, tf.clip_by_value(epoch / safe_epochs, 0.0, 1.0), 1.0)


def linear_threshold(epoch, annealing_epochs, tau_min):
    """Linear schedule `τ = 1 − (1 − τ_min) · s`.

    Args:
      epoch: scalar int or float tensor/number ≥ 0, current epoch t (may be
        fractional, e.g. steps / steps_per_epoch).
      annealing_epochs: scalar number of epochs to reach τ_min.
      tau_min: scalar float in [0, 1], final threshold.

    Returns:
      Scalar float32 in [τ_min, 1].
    """
    tau_min = tf.cast(tau_min, tf.float32)
    return 1.0 - (1.0 - tau_min) * _progress(epoch, annealing_epochs)


def cosine_threshold(epoch, annealing_epochs, tau_min):
    """Cosine schedule `τ = τ_min + (1 − τ_min) (1 + cos(π s)) / 2`.

    Args and returns as `linear_threshold`.
    """
    tau_min = tf.cast(tau_min, tf.float32)
    progress = _progress(epoch, annealing_epochs)
    return tau_min + (1.0 - tau_min) * 0.5 * (1.0 + tf.cos(math.pi * progress))


def step_threshold(epoch, annealing_epochs, tau_min, num_steps=4):
    """Staircase schedule `τ = 1 − (1 − τ_min) · floor(s · num_steps) / num_steps`.

    Args:
      epoch, annealing_epochs, tau_min: as `linear_threshold`.
      num_steps: Python int ≥ 1, number of equal drops from 1 to τ_min (the
        last one lands exactly at `annealing_epochs`).

    Returns:
      Scalar float32 in [τ_min, 1].
    """
    tau_min = tf.cast(tau_min, tf.float32)
    progress = _progress(epoch, annealing_epochs)
    # The small slack absorbs rounding in t / E · num_steps at step boundaries.
    steps_taken = tf.floor(progress * num_steps + 1e-6) / num_steps
    return 1.0 - (1.0 - tau_min) * steps_taken


def annealing_threshold(epoch, annealing_epochs, tau_min, schedule="linear", num_steps=4):
    """Threshold τ(t) of the named schedule (see the module docstring).

    Args:
      epoch: scalar int or float tensor/number ≥ 0.
      annealing_epochs: scalar, epochs to go from 1 to τ_min.
      tau_min: scalar float in [0, 1].
      schedule: Python str, one of `ANNEALING_SCHEDULES`.
      num_steps: Python int, number of drops of the "step" schedule.

    Returns:
      Scalar float32 in [τ_min, 1], non-increasing in `epoch`.
    """
    if schedule == "linear":
        return linear_threshold(epoch, annealing_epochs, tau_min)
    if schedule == "cosine":
        return cosine_threshold(epoch, annealing_epochs, tau_min)
    if schedule == "step":
        return step_threshold(epoch, annealing_epochs, tau_min, num_steps)
    raise ValueError(
        f"unknown annealing schedule {schedule!r}; expected one of {ANNEALING_SCHEDULES}"
    )
