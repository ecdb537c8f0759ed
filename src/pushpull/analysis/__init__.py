"""Why push-pull helps: response maps under noise, frequency tuning, and weight/activation sparsity."""

from .figures import new_figure, save_figure
from .inputs import SHORT_NOISES, corruption_table, image_from_spec, is_test_index, noise_corruption, noisy_versions
from .layers import conv_layers, layer_kernel, layer_output, select_layers
from .responses import (ResponseSet, filter_responses, kernel_similarity, mean_correlations, most_similar_channels,
                        pearson, plot_responses)
from .sparsity import (DEFAULT_THRESHOLDS, SparsityReport, activations, excess_kurtosis, first_block, hoyer_sparsity,
                       measure_sparsity, plot_sparsity, sparsity_stats, stem_activation, weight_values)
from .spectrum import Spectrum, frequency_response, gratings, kernel_response, plot_spectrum

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SHORT_NOISES",
    "ResponseSet",
    "SparsityReport",
    "Spectrum",
    "activations",
    "conv_layers",
    "corruption_table",
    "excess_kurtosis",
    "filter_responses",
    "first_block",
    "frequency_response",
    "gratings",
    "hoyer_sparsity",
    "image_from_spec",
    "is_test_index",
    "kernel_response",
    "kernel_similarity",
    "layer_kernel",
    "layer_output",
    "mean_correlations",
    "measure_sparsity",
    "most_similar_channels",
    "new_figure",
    "noise_corruption",
    "noisy_versions",
    "pearson",
    "plot_responses",
    "plot_sparsity",
    "plot_spectrum",
    "save_figure",
    "select_layers",
    "sparsity_stats",
    "stem_activation",
    "weight_values",
]
