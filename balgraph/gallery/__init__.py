"""Networks to test, benchmark and demonstrate on: random graphs and the workloads W1–W6.

Everything here is generated from a seed; nothing is downloaded.
"""

from .networks import WORKLOADS, as_graph, random_network, workload
from .workloads import (
    autoencoder,
    deep_mlp,
    dense_mlp,
    layer_scales,
    locally_connected,
    recurrent,
    resnet_channels,
    wide_mlp,
)

__all__ = ["WORKLOADS", "as_graph", "autoencoder", "deep_mlp", "dense_mlp", "layer_scales", "locally_connected",
           "random_network", "recurrent", "resnet_channels", "wide_mlp", "workload"]
