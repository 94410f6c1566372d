"""Tests of i2a_tf.density: KDE, bandwidth rules, reliability, ranks, schedules."""

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from sklearn.neighbors import KernelDensity

from i2a_tf import density


def _exact_kde(queries, bank, bandwidth):
    """log((1/N) Σ_j N(q; b_j, h² I)) in float64 NumPy."""
    queries = np.asarray(queries, np.float64)
    bank = np.asarray(bank, np.float64)
    squared = ((queries[:, None, :] - bank[None, :, :]) ** 2).sum(-1)
    dim = queries.shape[1]
    return (
        logsumexp(-squared / (2 * bandwidth**2), axis=1)
        - np.log(len(bank))
        - 0.5 * dim * np.log(2 * np.pi * bandwidth**2)
    )


def _clustered(rng, num_rows, dim, num_centres=3, offset=0.0):
    centres = rng.normal(scale=3.0, size=(num_centres, dim))
    rows = centres[rng.integers(0, num_centres, num_rows)] + rng.normal(size=(num_rows, dim))
    return (rows + offset).astype(np.float32)


@pytest.mark.parametrize("dim", [3, 16])
def test_kde_matches_exact_sklearn_and_tfp_mixture(dim):
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    rng = np.random.default_rng(dim)
    bank = _clustered(rng, 60, dim)
    queries = _clustered(rng, 25, dim)
    bandwidth = 0.9
    ours = density.kde_log_prob(queries, bank, bandwidth).numpy()

    # leaf_size >= N makes sklearn's tree a single leaf, i.e. exact; its default
    # leaf_size=40 is off by tens of nats in high dimension.
    sklearn_kde = KernelDensity(bandwidth=bandwidth, leaf_size=len(bank)).fit(bank)
    np.testing.assert_allclose(ours, sklearn_kde.score_samples(queries), atol=1e-4, rtol=0)

    mixture = tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=tf.zeros([len(bank)], tf.float64)),
        components_distribution=tfd.MultivariateNormalDiag(
            loc=tf.constant(bank, tf.float64),
            scale_diag=tf.fill([len(bank), dim], tf.constant(bandwidth, tf.float64)),
        ),
    )
    np.testing.assert_allclose(
        ours, mixture.log_prob(queries.astype(np.float64)).numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        ours, density.kde_distribution(bank, bandwidth).log_prob(queries).numpy(), atol=1e-3, rtol=0
    )


def test_kde_is_exact_in_128_dimensions_and_far_from_origin():
    rng = np.random.default_rng(1)
    bank = _clustered(rng, 300, 128, offset=50.0)
    queries = _clustered(rng, 40, 128, offset=50.0)
    ours = density.kde_log_prob(queries, bank, 2.0).numpy()
    np.testing.assert_allclose(ours, _exact_kde(queries, bank, 2.0), rtol=1e-5, atol=1e-3)


def test_kde_blocks_do_not_change_the_result():
    rng = np.random.default_rng(2)
    bank = _clustered(rng, 50, 4)
    queries = _clustered(rng, 37, 4)
    whole = density.kde_log_prob(queries, bank, 0.7)
    # 100 elements per block = 2 query rows of 50 columns: 19 blocks, the last padded.
    blocked = density.kde_log_prob(queries, bank, 0.7, block_elements=100)
    np.testing.assert_allclose(blocked.numpy(), whole.numpy(), rtol=1e-6)


def test_masked_bank_equals_bank_of_valid_rows():
    rng = np.random.default_rng(3)
    bank = _clustered(rng, 40, 5)
    queries = _clustered(rng, 10, 5)
    bank_mask = rng.random(40) < 0.5
    masked = density.kde_log_prob(queries, bank, 0.8, bank_mask=bank_mask).numpy()
    np.testing.assert_allclose(masked, _exact_kde(queries, bank[bank_mask], 0.8), atol=1e-4)
    empty = density.kde_log_prob(queries, bank, 0.8, bank_mask=np.zeros(40, bool)).numpy()
    assert np.all(np.isneginf(empty))


def test_class_kde_matches_per_class_kde_with_per_class_bandwidths():
    rng = np.random.default_rng(4)
    class_banks = np.stack([_clustered(rng, 30, 6) for _ in range(3)])
    class_bank_mask = rng.random((3, 30)) < 0.7
    queries = _clustered(rng, 12, 6)
    bandwidths = np.array([0.5, 1.0, 2.0], np.float32)
    ours = density.class_kde_log_prob(queries, class_banks, bandwidths, class_bank_mask).numpy()
    for c in range(3):
        expected = _exact_kde(queries, class_banks[c][class_bank_mask[c]], bandwidths[c])
        np.testing.assert_allclose(ours[:, c], expected, atol=1e-4)


def test_leave_one_out_kde_excludes_each_row_only_from_itself():
    rng = np.random.default_rng(5)
    bank = _clustered(rng, 25, 4)
    bank[3] = bank[4]  # duplicates are other rows, not self: they still count
    bank_mask = np.ones(25, bool)
    bank_mask[7] = False
    ours = density.leave_one_out_kde_log_prob(bank, 0.6, bank_mask).numpy()
    valid = np.flatnonzero(bank_mask)
    for i in valid:
        others = bank[valid[valid != i]]
        np.testing.assert_allclose(ours[i], _exact_kde(bank[i : i + 1], others, 0.6)[0], atol=1e-4)
    assert np.isneginf(ours[7])

    per_class = density.class_leave_one_out_kde_log_prob(
        np.stack([bank, bank]), [0.6, 1.2], np.stack([bank_mask, bank_mask])
    ).numpy()
    np.testing.assert_allclose(per_class[0], ours, atol=1e-5)
    np.testing.assert_allclose(
        per_class[1], density.leave_one_out_kde_log_prob(bank, 1.2, bank_mask).numpy(), atol=1e-5
    )


def test_kde_functions_compile_under_xla():
    rng = np.random.default_rng(6)
    class_banks = tf.constant(np.stack([_clustered(rng, 20, 8) for _ in range(2)]))
    class_bank_mask = tf.constant(rng.random((2, 20)) < 0.8)
    queries = tf.constant(_clustered(rng, 9, 8))
    labels = tf.constant([0, 1, 0, 1, 0, 1, 0, 1, 0])

    @tf.function(jit_compile=True)
    def compiled(queries, labels, epoch):
        bandwidths = density.class_kde_bandwidths(class_banks, "scott", class_bank_mask)
        median = density.median_heuristic_bandwidth(class_banks[0], class_bank_mask[0])
        bank_log_densities = density.class_leave_one_out_kde_log_prob(
            class_banks, bandwidths, class_bank_mask
        )
        threshold = density.annealing_threshold(epoch, 10, 0.2, "cosine")
        result = density.translation_density_weights(
            queries,
            labels,
            class_banks,
            class_bank_mask,
            bandwidths,
            bank_log_densities,
            threshold,
            0.5,
            0.1,
        )
        return result.weights, result.class_log_densities, bandwidths, median

    weights, class_log_densities, bandwidths, median = compiled(queries, labels, tf.constant(3))
    eager = density.class_kde_log_prob(queries, class_banks, bandwidths, class_bank_mask)
    np.testing.assert_allclose(class_log_densities.numpy(), eager.numpy(), rtol=1e-5)
    assert weights.shape == [9]
    assert np.all((weights.numpy() >= 0) & (weights.numpy() < 1))
    assert median.numpy() > 0


def _pooled_std(rows):
    return math.sqrt(np.var(rows.astype(np.float64), axis=0, ddof=1).mean())


def test_bandwidth_rules_match_hand_computation():
    rng = np.random.default_rng(7)
    rows = _clustered(rng, 50, 4)
    row_mask = rng.random(50) < 0.6
    valid = rows[row_mask]
    n, d = valid.shape
    sigma = _pooled_std(valid)
    np.testing.assert_allclose(
        density.scott_bandwidth(rows, row_mask).numpy(), sigma * n ** (-1 / (d + 4)), rtol=1e-5
    )
    np.testing.assert_allclose(
        density.kde_bandwidth(rows, "silverman", row_mask).numpy(),
        sigma * (n * (d + 2) / 4) ** (-1 / (d + 4)),
        rtol=1e-5,
    )
    pairs = [np.linalg.norm(valid[i] - valid[j]) for i in range(n) for j in range(i + 1, n)]
    np.testing.assert_allclose(
        density.median_heuristic_bandwidth(rows, row_mask).numpy(), np.median(pairs), rtol=1e-5
    )
    # Only the first `max_points` valid rows are used.
    first = valid[:5]
    first_pairs = [np.linalg.norm(first[i] - first[j]) for i in range(5) for j in range(i + 1, 5)]
    np.testing.assert_allclose(
        density.kde_bandwidth(rows, "median", row_mask, max_points=5).numpy(),
        np.median(first_pairs),
        rtol=1e-5,
    )
    assert density.kde_bandwidth(rows, "fixed", fixed_bandwidth=0.3).numpy() == pytest.approx(0.3)
    with pytest.raises(ValueError):
        density.kde_bandwidth(rows, "fixed")
    with pytest.raises(ValueError):
        density.kde_bandwidth(rows, "unknown")


def test_bandwidth_on_tiny_hand_example():
    # Two points at distance 5 in 2-d: per-dim variances (ddof=1) 4.5 and 8.
    rows = np.array([[0.0, 0.0], [3.0, 4.0]], np.float32)
    sigma = math.sqrt((4.5 + 8.0) / 2)
    assert density.pooled_std(rows).numpy() == pytest.approx(sigma, rel=1e-6)
    assert density.scott_bandwidth(rows).numpy() == pytest.approx(sigma * 2 ** (-1 / 6), rel=1e-6)
    assert density.median_heuristic_bandwidth(rows).numpy() == pytest.approx(5.0, rel=1e-6)


def test_reliability_is_the_prior_weighted_class_posterior():
    class_log_densities = np.log([[0.2, 0.6], [0.5, 0.5], [1e-30, 1.0]])
    labels = [0, 1, 0]
    np.testing.assert_allclose(
        density.reliability(class_log_densities, labels).numpy(), [0.25, 0.5, 1e-30], rtol=1e-4
    )
    # Priors (unnormalised) 3:1 → r = 0.2·3 / (0.2·3 + 0.6·1) = 0.5.
    np.testing.assert_allclose(
        density.reliability(class_log_densities, labels, class_priors=[3.0, 1.0]).numpy()[0],
        0.5,
        rtol=1e-5,
    )
    nowhere = density.reliability(np.full((1, 2), -np.inf), [0]).numpy()
    assert nowhere[0] == 0.0


def test_density_rank_is_the_quantile_among_valid_bank_densities():
    bank_log_densities = np.array([[1.0, 2.0, 3.0, 100.0], [-5.0, -4.0, 0.0, 0.0]], np.float32)
    class_bank_mask = np.array([[True, True, True, False], [True, True, False, False]])
    log_densities = np.array([2.5, 3.0, 0.0, -4.5, -3.0], np.float32)
    labels = np.array([0, 0, 0, 1, 1])
    ranks = density.density_rank(log_densities, labels, bank_log_densities, class_bank_mask)
    np.testing.assert_allclose(ranks.numpy(), [2 / 3, 1.0, 0.0, 0.5, 1.0])


def test_own_class_kde_is_the_class_kde_of_each_querys_own_class():
    rng = np.random.default_rng(3)
    banks = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = rng.uniform(size=(3, 6)) < 0.7
    mask[2] = False
    bandwidths = np.array([0.7, 1.1, 0.9], np.float32)
    queries = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 1, 1, 0, 2])
    full = density.class_kde_log_prob(queries, banks, bandwidths, mask).numpy()
    own = density.own_class_kde_log_prob(queries, labels, banks, bandwidths, mask).numpy()
    np.testing.assert_allclose(own[:4], full[np.arange(4), labels[:4]], rtol=1e-5)
    assert own[4] == -np.inf  # class 2's bank is empty


def test_dense_log_density_on_hand_values():
    bank_log_densities = np.array([[5.0, 1.0, 4.0, 2.0, 3.0],
                                   [-1.0, -np.inf, 7.0, 0.0, 0.0],
                                   [1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    mask = np.array([[True] * 5, [True, True, True, False, False], [False] * 5])
    floors = lambda tau: density.dense_log_density(bank_log_densities, tau, mask).numpy()
    # Class 0: five rows, ⌈τ·5⌉-th smallest. Class 1: two finite valid rows
    # (-1, 7; the −inf and masked rows are no reference). Class 2: empty.
    np.testing.assert_array_equal(floors(0.5), [3.0, -1.0, -np.inf])
    np.testing.assert_array_equal(floors(0.2), [1.0, -1.0, -np.inf])
    np.testing.assert_array_equal(floors(0.6), [3.0, 7.0, -np.inf])  # 0.6·5 is 3
    np.testing.assert_array_equal(floors(1.0), [5.0, 7.0, -np.inf])
    np.testing.assert_array_equal(floors(0.0), [-np.inf, -np.inf, -np.inf])


@pytest.mark.parametrize("seed", range(5))
def test_dense_log_density_is_the_least_value_density_rank_admits(seed):
    """Brute force through density_rank: the floor ranks ≥ τ, anything just
    below it ranks < τ."""
    rng = np.random.default_rng(seed)
    bank = rng.normal(size=(4, 7)).astype(np.float32)
    mask = rng.uniform(size=(4, 7)) < 0.8
    mask[:, 0] = True
    bank[rng.uniform(size=(4, 7)) < 0.1] = -np.inf
    bank[:, 1] = np.where(np.isfinite(bank[:, 1]), bank[:, 1], 0.5)
    mask[:, 1] = True
    for tau in rng.uniform(size=8).astype(np.float32):
        floors = density.dense_log_density(bank, tau, mask).numpy()
        labels = np.arange(4)
        for c in labels:
            assert np.isfinite(floors[c])
        at = density.density_rank(floors, labels, bank, mask).numpy()
        below = density.density_rank(np.nextafter(floors, -np.inf), labels, bank,
                                     mask).numpy()
        assert (at >= tau).all(), (tau, at)
        assert (below < tau).all(), (tau, below)


def test_density_shortfall_on_hand_values():
    bank_log_densities = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    mask = np.array([[True] * 4, [False] * 4])
    shortfall = density.density_shortfall(
        [0.5, 2.5, 10.0, -3.0], [0, 0, 0, 1], bank_log_densities, [2.0, 1.0], 0.75,
        mask).numpy()
    # Floor of class 0 at τ = 0.75: the 3rd smallest, 3; h² = 4. Class 1 is empty.
    np.testing.assert_allclose(shortfall, [4.0 * 2.5, 4.0 * 0.5, 0.0, 0.0])


def test_density_shortfall_pulls_towards_the_kernel_weighted_bank_mean():
    """∇_v s = −h² ∇ log p(v) = v − Σ_j softmax_j(−|v − b_j|² / 2h²) b_j for a
    sample below the floor (float64 NumPy reference)."""
    rng = np.random.default_rng(0)
    banks = rng.normal(size=(2, 5, 3)).astype(np.float32)
    mask = np.ones((2, 5), bool)
    bandwidths = np.array([0.8, 1.3], np.float32)
    bank_log_densities = density.class_leave_one_out_kde_log_prob(banks, bandwidths, mask)
    queries = tf.constant(rng.normal(loc=2.0, size=(3, 3)).astype(np.float32))
    labels = np.array([0, 1, 1])
    with tf.GradientTape() as tape:
        tape.watch(queries)
        own = density.own_class_kde_log_prob(queries, labels, banks, bandwidths, mask)
        shortfall = density.density_shortfall(own, labels, bank_log_densities,
                                              bandwidths, 1.0, mask)
        total = tf.reduce_sum(shortfall)
    assert (shortfall.numpy() > 0).all()
    gradient = tape.gradient(total, queries).numpy()
    for i, c in enumerate(labels):
        v = queries.numpy()[i].astype(np.float64)
        rows = banks[c].astype(np.float64)
        logits = -((v - rows) ** 2).sum(1) / (2 * bandwidths[c] ** 2)
        soft = np.exp(logits - logsumexp(logits))
        np.testing.assert_allclose(gradient[i], v - soft @ rows, rtol=1e-4, atol=1e-5)


def test_linear_schedule_on_hand_values():
    values = [density.annealing_threshold(t, 10, 0.2, "linear").numpy() for t in (0, 5, 10, 15)]
    np.testing.assert_allclose(values, [1.0, 0.6, 0.2, 0.2], atol=1e-6)


def test_cosine_and_step_schedules_on_hand_values():
    cosine = [
        density.annealing_threshold(t, 10, 0.2, "cosine").numpy() for t in (0, 2.5, 5, 10, 30)
    ]
    quarter = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))
    np.testing.assert_allclose(cosine, [1.0, quarter, 0.6, 0.2, 0.2], atol=1e-6)
    step = [
        density.annealing_threshold(t, 10, 0.2, "step", num_steps=4).numpy()
        for t in (0, 2, 2.5, 7.5, 9.9, 10, 12)
    ]
    np.testing.assert_allclose(step, [1.0, 1.0, 0.8, 0.4, 0.4, 0.2, 0.2], atol=1e-6)
    assert density.annealing_threshold(3, 0, 0.3).numpy() == pytest.approx(0.3)
    with pytest.raises(ValueError):
        density.annealing_threshold(0, 10, 0.2, "exponential")


def test_schedules_accept_a_tensor_epoch_inside_a_compiled_function():
    @tf.function(jit_compile=True)
    def thresholds(epoch):
        return tf.stack(
            [
                density.annealing_threshold(epoch, 10, 0.2, name)
                for name in density.ANNEALING_SCHEDULES
            ]
        )

    np.testing.assert_allclose(thresholds(tf.constant(5)).numpy(), [0.6, 0.6, 0.6], atol=1e-6)
    np.testing.assert_allclose(thresholds(tf.constant(20.0)).numpy(), [0.2, 0.2, 0.2], atol=1e-6)


def test_translation_weights_on_hand_values():
    weights = density.translation_weights(
        reliabilities=[0.9, 0.4, 0.5, 1.0],
        density_ranks=[0.5, 0.9, 0.7, 0.3],
        threshold=0.5,
        min_reliability=0.5,
        temperature=0.1,
    ).numpy()
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    np.testing.assert_allclose(weights, [0.5, 0.0, sigmoid(2.0), sigmoid(-2.0)], rtol=1e-6)


def test_single_row_class_bank_gets_pooled_bandwidth_and_rank_zero():
    rng = np.random.default_rng(2)
    class_banks = rng.normal(size=(2, 6, 3)).astype(np.float32)
    mask = np.ones((2, 6), bool)
    mask[1, 1:] = False  # class 1 has a single labeled clip
    bandwidths = density.class_kde_bandwidths(class_banks, "scott", mask).numpy()
    pooled = density.scott_bandwidth(class_banks.reshape(12, 3), mask.reshape(12)).numpy()
    assert bandwidths[1] == pytest.approx(pooled)  # not the degenerate 0 -> 1e-6 spike
    assert bandwidths[0] == pytest.approx(density.scott_bandwidth(class_banks[0]).numpy())
    bank_log_densities = density.class_leave_one_out_kde_log_prob(
        class_banks, bandwidths, mask).numpy()
    assert np.isneginf(bank_log_densities[1, 0])  # nothing else to be dense against
    ranks = density.density_rank([0.0, 0.0], [0, 1], bank_log_densities, mask).numpy()
    assert ranks[1] == 0.0  # no finite reference: not "as dense as the densest"
    assert ranks[0] > 0.0
