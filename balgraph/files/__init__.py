"""File formats behind :mod:`balgraph.io`: streaming GraphML, model files of layer chains."""

from .graphml import GraphMLData, Unsupported, read_graphml_data
from .models import LayerChain, load_tensors, read_layer_chain, save_tensors

__all__ = ["GraphMLData", "LayerChain", "Unsupported", "load_tensors", "read_graphml_data",
           "read_layer_chain", "save_tensors"]
