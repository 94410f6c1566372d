"""Kernel density estimates, translation reliability and annealed weights.

Pure TensorFlow math on tensors: no Keras models, no flags. Settings arrive as
plain arguments (the trainer passes config values in).
"""

from i2a_tf.density.annealing import ANNEALING_SCHEDULES
from i2a_tf.density.annealing import annealing_threshold
from i2a_tf.density.annealing import cosine_threshold
from i2a_tf.density.annealing import linear_threshold
from i2a_tf.density.annealing import step_threshold
from i2a_tf.density.bandwidth import BANDWIDTH_RULES
from i2a_tf.density.bandwidth import class_kde_bandwidths
from i2a_tf.density.bandwidth import kde_bandwidth
from i2a_tf.density.bandwidth import median_heuristic_bandwidth
from i2a_tf.density.bandwidth import pooled_std
from i2a_tf.density.bandwidth import scott_bandwidth
from i2a_tf.density.bandwidth import silverman_bandwidth
from i2a_tf.density.kde import class_kde_log_prob
from i2a_tf.density.kde import class_leave_one_out_kde_log_prob
from i2a_tf.density.kde import kde_distribution
from i2a_tf.density.kde import kde_log_prob
from i2a_tf.density.kde import leave_one_out_kde_log_prob
from i2a_tf.density.kde import own_class_kde_log_prob
from i2a_tf.density.weighting import TranslationDensityWeights
from i2a_tf.density.weighting import class_log_posterior
from i2a_tf.density.weighting import dense_log_density
from i2a_tf.density.weighting import density_rank
from i2a_tf.density.weighting import density_shortfall
from i2a_tf.density.weighting import reliability
from i2a_tf.density.weighting import translation_density_weights
from i2a_tf.density.weighting import translation_weights

__all__ = [
    "ANNEALING_SCHEDULES",
    "BANDWIDTH_RULES",
    "TranslationDensityWeights",
    "annealing_threshold",
    "class_kde_bandwidths",
    "class_kde_log_prob",
    "class_leave_one_out_kde_log_prob",
    "class_log_posterior",
    "cosine_threshold",
    "dense_log_density",
    "density_rank",
    "density_shortfall",
    "kde_bandwidth",
    "kde_distribution",
    "kde_log_prob",
    "leave_one_out_kde_log_prob",
    "linear_threshold",
    "median_heuristic_bandwidth",
    "own_class_kde_log_prob",
    "pooled_std",
    "reliability",
    "scott_bandwidth",
    "silverman_bandwidth",
    "step_threshold",
    "translation_density_weights",
    "translation_weights",
]
