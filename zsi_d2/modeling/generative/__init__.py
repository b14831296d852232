"""Feature generators, their losses, the second-stage criterion and the feature bank, shared by PADing
(query embeddings) and the pixel-level generative methods (ZS3Net, CaGNet, SIGN): all take (n, D)
features and (n, E) class embeddings."""
from .alignment import RelationNet, cosine_similarity_matrix, relationship_alignment_loss, softmax_kl
from .build import GENERATOR_REGISTRY, build_generator
from .criterion import GenerativeCriterion
from .disentangle import FeatureDisentangler
from .feature_bank import IGNORE, NO_OBJECT, EpochSampler, FeatureBank
from .gmmn import GMMNGenerator
from .mmd import DEFAULT_SIGMAS, class_conditional_mmd, gaussian_kernel_matrix, mmd_loss
from .primitive_generator import PrimitiveGenerator
from .stage import GenerativeStage

__all__ = [
    "DEFAULT_SIGMAS",
    "EpochSampler",
    "FeatureBank",
    "GenerativeCriterion",
    "GenerativeStage",
    "IGNORE",
    "NO_OBJECT",
    "GENERATOR_REGISTRY",
    "FeatureDisentangler",
    "GMMNGenerator",
    "PrimitiveGenerator",
    "RelationNet",
    "build_generator",
    "class_conditional_mmd",
    "cosine_similarity_matrix",
    "gaussian_kernel_matrix",
    "mmd_loss",
    "relationship_alignment_loss",
    "softmax_kl",
]
