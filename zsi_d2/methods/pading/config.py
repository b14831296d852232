"""PADing's config keys (stage 2; stage 1 is the mask-classification core trained on seen classes).

Each component is an ablation away (a config change, no code change):
- generator:        MODEL.PADING.GENERATOR "primitive" (PADing) | "gmmn" (ZS3Net's)
- alignment:        MODEL.PADING.ALIGNMENT_WEIGHT / RELATION_WEIGHT (0 = off)
- disentanglement:  MODEL.PADING.DISENTANGLE (off: alignment acts on the fake features themselves)
- classifier:       MODEL.PADING.CLASSIFIER "reference" | "free_prototypes" | "shared_projection"
- everything structural is scaled by STRUCTURE_WEIGHT, as in PADing's code
Defaults are PADing's released panoptic settings (../shared/reference/zero_shot_facts.md §2, §5).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_pading_config"]


def add_pading_config(cfg):
    """Add PADing's keys (only keys with defaults). Safe to call twice."""
    if "PADING" in cfg.MODEL:
        return cfg
    p = cfg.MODEL.PADING = CN()
    # Stage 2's query classifier: "reference" (PADing's code: a free linear layer over all classes +
    # no object, seen rows and no object copied from a stage 1 trained with MODEL.MASK_FORMER.CLASSIFIER
    # "linear", unseen rows zero), "free_prototypes" (the name-embedding head of an "embedding" stage 1
    # with every class's prototype a free parameter starting at its name embedding) or
    # "shared_projection" (that head re-trained as it is: only its projection and no object move).
    p.CLASSIFIER = "reference"
    # Feature generator: "primitive" (class embedding queries learnable primitives) or "gmmn".
    p.GENERATOR = "primitive"
    p.NUM_PRIMITIVES = 400  # TRANS_MEMORY_NUM_QUERY
    p.GENERATOR_LAYERS = 3  # TRANS_NUM_LAYER
    p.GENERATOR_HEADS = 8
    p.GENERATOR_DIM_FEEDFORWARD = 1024
    p.GENERATOR_DROPOUT = 0.1  # TRANS_DROP_RATE
    p.GENERATOR_NOISE_STD = 1.0  # N(0, 1) noise in every generator layer (NOISE True)
    # GMMN (ZS3Net): noise width, hidden width, dropout.
    p.GMMN_NOISE_DIM = 300
    p.GMMN_HIDDEN_DIM = 256
    p.GMMN_DROPOUT = 0.5
    # Generator losses: MMD between fake and real seen query embeddings (kernels of these
    # bandwidths), and a small CE of the classifier on the fake seen embeddings.
    p.MMD_WEIGHT = 1.0
    p.MMD_SIGMAS = [2.0, 5.0, 10.0, 20.0, 40.0, 80.0]
    p.GENERATOR_CLASS_WEIGHT = 0.001
    # Structure losses, all multiplied by STRUCTURE_WEIGHT: relationship alignment (KL of cosine
    # similarity rows, temperature ALIGNMENT_TAU; WEIGHT_1), relation net CE (x 0.2; WEIGHT_2),
    # disentanglement: L1 reconstruction (WEIGHT_3) and unrelated part -> N(0, 1) (x 0.5 x WEIGHT_1).
    p.STRUCTURE_WEIGHT = 1e-4
    p.ALIGNMENT_WEIGHT = 1.0
    p.ALIGNMENT_TAU = 0.1
    p.RELATION_WEIGHT = 1.0
    p.DISENTANGLE = True
    p.DISENTANGLE_DROPOUT = 0.1  # DROP_OUT_ED
    p.RECONSTRUCTION_WEIGHT = 0.5
    p.UNRELATED_WEIGHT = 0.5
    # Classifier step: real query embeddings of every query (matched: its class; else no object)
    # + NUM_CHOOSE fake ones of random unseen classes; CE weight of unseen classes (CLASS_ECO).
    p.NUM_CHOOSE = 5
    p.UNSEEN_CLASS_WEIGHT = 5.0
    # Optimisers: the generator side uses SOLVER (Adam, BASE_LR, the LR schedule); the classifier
    # side SGD with these settings and a constant LR (PADing's).
    p.CLASSIFIER_LR = 1e-3
    p.CLASSIFIER_MOMENTUM = 0.9
    p.CLASSIFIER_WEIGHT_DECAY = 5e-4
    # Real query embeddings of the frozen stage-1 segmenter are computed once per (checkpoint, data,
    # config) and cached here as a .pt file ("" = OUTPUT_DIR/feature_bank), BANK_IMAGES_PER_FORWARD
    # images per forward pass; a stage-2 step takes IMAGES_PER_BATCH images' queries (all processes
    # together, drawn epoch by epoch without replacement).
    p.FEATURE_CACHE_DIR = ""
    p.BANK_IMAGES_PER_FORWARD = 8
    p.IMAGES_PER_BATCH = 8
    return cfg
