"""Why push-pull helps: response maps under noise, frequency tuning, and weight/activation sparsity."""

from .layers import conv_layers, layer_kernel, layer_output, select_layers
from .responses import ResponseSet, filter_responses, kernel_similarity, most_similar_channels, pearson
from .sparsity import excess_kurtosis, first_block, hoyer_sparsity, sparsity_stats, stem_activation
from .spectrum import Spectrum, frequency_response, gratings, kernel_response

__all__ = [
    "ResponseSet",
    "Spectrum",
    "conv_layers",
    "excess_kurtosis",
    "filter_responses",
    "first_block",
    "frequency_response",
    "gratings",
    "hoyer_sparsity",
    "kernel_response",
    "kernel_similarity",
    "layer_kernel",
    "layer_output",
    "most_similar_channels",
    "pearson",
    "select_layers",
    "sparsity_stats",
    "stem_activation",
]
