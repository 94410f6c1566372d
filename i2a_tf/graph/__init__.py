"""kNN graphs, density edge strengths and label propagation for pseudo-labels.

Pure TensorFlow math on tensors (may use `i2a_tf.density`); no Keras models, no
flags. Neighbour lists are padded `[N, k]` tensors: index −1 with strength 0
means "no edge".
"""

from i2a_tf.graph.edge_strength import EDGE_STRENGTH_MODES
from i2a_tf.graph.edge_strength import edge_strengths
from i2a_tf.graph.edge_strength import log_density_to_strength
from i2a_tf.graph.edge_strength import midpoint_edge_strengths
from i2a_tf.graph.edge_strength import min_endpoint_edge_strengths
from i2a_tf.graph.knn import ApproximateSearch
from i2a_tf.graph.knn import KnnGraph
from i2a_tf.graph.knn import knn_graph
from i2a_tf.graph.knn import knn_graph_with_density
from i2a_tf.graph.knn import symmetrize_knn_graph
from i2a_tf.graph.propagation import label_spreading
from i2a_tf.graph.pseudo_labels import PROPAGATION_METHODS
from i2a_tf.graph.pseudo_labels import SELECTION_RULES
from i2a_tf.graph.pseudo_labels import PseudoLabels
from i2a_tf.graph.pseudo_labels import pseudo_label_confidences
from i2a_tf.graph.pseudo_labels import pseudo_labels_from_embeddings
from i2a_tf.graph.pseudo_labels import select_pseudo_labels
from i2a_tf.graph.propagation import widest_path

__all__ = [
    "ApproximateSearch",
    "EDGE_STRENGTH_MODES",
    "KnnGraph",
    "PROPAGATION_METHODS",
    "PseudoLabels",
    "SELECTION_RULES",
    "edge_strengths",
    "knn_graph",
    "knn_graph_with_density",
    "label_spreading",
    "log_density_to_strength",
    "midpoint_edge_strengths",
    "min_endpoint_edge_strengths",
    "pseudo_label_confidences",
    "pseudo_labels_from_embeddings",
    "select_pseudo_labels",
    "symmetrize_knn_graph",
    "widest_path",
]
